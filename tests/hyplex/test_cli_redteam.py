"""``hyplex redteam``: a report on a tiny bundle; refusals (no segmenter, wrong channels)."""

import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from tiny_bundles import tiny_bundle
from typer.testing import CliRunner

from hyplex.cli.app import app

torch.set_num_threads(1)
runner = CliRunner()
ENV = {"COLUMNS": "400", "HYPLEX_THREADS": "1"}


@pytest.fixture(scope="module")
def bundle_path(tmp_path_factory):
    return tiny_bundle(tmp_path_factory, n_train_scenes=4, n_val_scenes=2, steps=6)


def test_redteam_reports_clean_and_attacked_figures(bundle_path, tmp_path):
    out = tmp_path / "report.json"
    result = runner.invoke(
        app,
        [
            "redteam",
            "--bundle",
            str(bundle_path),
            "--scenes",
            "2",
            "--size",
            "16",
            "--samples",
            "1,3",
            "--json",
            str(out),
        ],  # fmt: skip
        env=ENV,
    )
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    for key in ("miou_clean", "miou_pgd", "success_pgd", "miou_etf_1", "success_etf_3",
                "psnr_clean", "psnr_pgd"):  # fmt: skip
        assert key in report, key
    assert report["miou_pgd"] <= report["miou_clean"] + 1e-9
    assert "success_etf_1" in result.output
    # the reconstructor's own worst case, beside its PSNR under the segmenter-aimed PGD
    assert "psnr_pgd_reconstructor" in result.output
    assert report["psnr_pgd_reconstructor"] < report["psnr_clean"]
    assert report["psnr_pgd_reconstructor"] <= report["psnr_pgd"] + 0.5


def test_redteam_refuses_a_bundle_without_a_segmenter(bundle_path, tmp_path):
    copy = tmp_path / "no_segmenter"
    shutil.copytree(bundle_path, copy)
    tensors = load_file(copy / "decoders.safetensors")
    save_file({k: v for k, v in tensors.items() if not k.startswith("segmenter.")},
              copy / "decoders.safetensors")  # fmt: skip
    result = runner.invoke(app, ["redteam", "--bundle", str(copy)], env=ENV)
    assert result.exit_code != 0
    assert "no segmenter weights" in result.output


def test_redteam_refuses_barcodes_with_the_wrong_channel_count(bundle_path, tmp_path):
    path = tmp_path / "scenes.npz"
    np.savez(path, barcodes=np.zeros((1, 3, 8, 8), np.float32), labels=np.zeros((1, 8, 8), int))
    result = runner.invoke(
        app, ["redteam", "--bundle", str(bundle_path), "--barcodes", str(path)], env=ENV
    )
    assert result.exit_code != 0
    assert "filters" in result.output and "(S, 9, H, W)" in result.output

"""``hyplex redteam``: a report on a tiny bundle; refusals (no segmenter, wrong channels)."""

import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from hyplex.cli.app import app
from hyplex.models.bundle import save_bundle
from hyplex.models.codesign import train_codesign
from hyplex.models.codesign_config import CodesignConfig

torch.set_num_threads(1)
runner = CliRunner()
ENV = {"COLUMNS": "400", "HYPLEX_THREADS": "1"}


@pytest.fixture(scope="module")
def bundle_path(tmp_path_factory):
    from hyplex.models.codesign_library import quick_library

    library = quick_library(tmp_path_factory.mktemp("lib") / "lib.h5", count=24)
    config = CodesignConfig(
        bands=8,
        wavelength_range_nm=(420.0, 700.0),
        scene_size=24,
        n_train_scenes=4,
        n_val_scenes=2,
        n_objects=3,
        patch_size=16,
        batch_size=2,
        steps=6,
        finetune_steps=1,
        evaluate_initial=False,
        reconstructor_config={"width": 8, "n_blocks": 1, "n_stages": 1},
        segmenter_config={"base_channels": 4, "depth": 1},
        device="cpu",
    )
    result = train_codesign(config, None, library=library, progress=False)
    return save_bundle(tmp_path_factory.mktemp("bundles") / "design", result, report=False)


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

"""``hyplex realfake fit`` and ``hyplex segment --fake``: a HierCon head stored in a bundle,
its ``/fake`` map in the labels HDF5, and every refused case."""

import json
import shutil

import numpy as np
import pytest
import torch
from tiny_bundles import tiny_bundle, tiny_recording
from typer.testing import CliRunner

from hyplex.cli.app import app
from hyplex.models.pretraining.realfake_files import (
    REALFAKE_JSON,
    load_realfake_head,
    read_realfake_record,
)
from hyplex.pipeline.outputs import read_decoded

torch.set_num_threads(1)
runner = CliRunner()
ENV = {"COLUMNS": "400", "HYPLEX_THREADS": "1"}


@pytest.fixture(scope="module")
def bundle_path(tmp_path_factory):
    return tiny_bundle(tmp_path_factory)


@pytest.fixture(scope="module")
def fitted(bundle_path, tmp_path_factory):
    """A copy of the tiny bundle with a real/fake head (5 steps) and the fit's summary."""
    target = tmp_path_factory.mktemp("fitted") / "bundle"
    shutil.copytree(bundle_path, target)
    args = ["realfake", "fit", "--bundle", str(target), "--quick", "--steps", "5"]
    result = runner.invoke(app, env=ENV, args=args)
    assert result.exit_code == 0, result.output
    return target, json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    return tiny_recording(tmp_path_factory.mktemp("rec"))


def _copy(source, tmp_path):
    target = tmp_path / "bundle"
    shutil.copytree(source, target)
    return target


def _segment(bundle, recording, out, *extra):
    args = ["segment", str(recording), "--bundle", str(bundle), "--out", str(out), "--no-video"]
    return runner.invoke(app, env=ENV, args=[*args, *extra])


def test_fit_stores_a_head_whose_threshold_is_the_summary(fitted):
    bundle, summary = fitted
    assert summary["method"] == "HierCon" and summary["criterion"] == "eer"
    assert 0.0 <= summary["eer"] <= 1.0 and summary["steps"] == 5
    assert summary["heldout_fake_pixels"] > 0 and summary["heldout_real_pixels"] > 0
    record = read_realfake_record(bundle)
    assert record["threshold_logit"] == summary["threshold_logit"]
    assert record["fake_classes"] == ["fake_vegetation"] and record["n_filters"] == 9
    head = load_realfake_head(bundle, n_filters=9)
    assert head(torch.zeros(1, 9, 4, 4)).shape == (1, 4, 4)


def test_segment_writes_the_fake_map(fitted, recording, tmp_path):
    bundle, summary = fitted
    result = _segment(bundle, recording, tmp_path / "out", "--fake")
    assert result.exit_code == 0, result.output
    decoded = read_decoded(tmp_path / "out" / "clip.labels.h5")
    fake = decoded["fake"].astype(np.float32)
    assert fake.shape == decoded["labels"].shape and len(fake) == 3
    assert np.isfinite(fake).all() and fake.min() >= 0.0 and fake.max() <= 1.0
    attrs = json.loads(decoded["attrs"]["fake_head"])
    assert attrs["method"] == "HierCon" and attrs["threshold_logit"] == summary["threshold_logit"]
    # --no-fake leaves the map out even though the bundle has a head
    result = _segment(bundle, recording, tmp_path / "none", "--no-fake")
    assert result.exit_code == 0, result.output
    assert "fake" not in read_decoded(tmp_path / "none" / "clip.labels.h5")


def test_segment_fake_refuses_a_bundle_without_a_head(bundle_path, recording, tmp_path):
    result = _segment(bundle_path, recording, tmp_path / "out", "--fake")
    assert result.exit_code != 0
    assert "no real/fake" in result.output or "has none" in result.output
    assert "hyplex realfake fit" in result.output
    assert not (tmp_path / "out" / "clip.labels.h5").exists()


def test_segment_fake_refuses_a_corrupt_or_mismatched_head(fitted, recording, tmp_path):
    bundle = _copy(fitted[0], tmp_path)
    tensors = bundle / read_realfake_record(bundle)["tensors_file"]
    data = bytearray(tensors.read_bytes())
    data[-2] ^= 0xFF
    tensors.write_bytes(bytes(data))
    result = _segment(bundle, recording, tmp_path / "out", "--fake")
    assert result.exit_code != 0 and "SHA-256 does not match" in result.output
    # a head recorded for 8 filters on a 9-filter bundle
    shutil.rmtree(bundle)
    bundle = _copy(fitted[0], tmp_path)
    record = json.loads((bundle / REALFAKE_JSON).read_text())
    record["n_filters"] = record["config"]["in_channels"] = 8
    (bundle / REALFAKE_JSON).write_text(json.dumps(record))
    result = _segment(bundle, recording, tmp_path / "out", "--fake")
    assert result.exit_code != 0 and "mismatched channel counts" in result.output


def test_fit_refuses_bad_options(fitted, tmp_path):
    bundle = fitted[0]
    result = runner.invoke(
        app, env=ENV, args=["realfake", "fit", "--bundle", str(bundle), "--threshold", "auc"]
    )
    assert result.exit_code != 0 and "eer, tpr95" in result.output
    result = runner.invoke(
        app, env=ENV, args=["realfake", "fit", "--bundle", str(bundle), "--output", str(bundle)]
    )
    assert result.exit_code != 0 and "exists" in result.output
    result = runner.invoke(app, env=ENV, args=["realfake", "fit", "--bundle", str(tmp_path)])
    assert result.exit_code != 0 and "--bundle" in result.output

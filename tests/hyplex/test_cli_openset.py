"""``hyplex openset fit`` and ``hyplex coverage``: heads in bundles, and every bad input."""

import json

import numpy as np
import pytest
import torch
from tiny_bundles import tiny_bundle, tiny_recording
from typer.testing import CliRunner

from hyplex.cli.app import app
from hyplex.models.bundle import load_bundle
from hyplex.models.openset.head_files import (
    OpenSetHeadError,
    has_openset_head,
    load_openset_head,
    read_head_record,
)

torch.set_num_threads(1)
runner = CliRunner()
TINY = """
[codesign]
bands = 8
wavelength_range_nm = [420.0, 700.0]
scene_size = 24
n_train_scenes = 2
n_val_scenes = 1
n_objects = 3
patch_size = 16
batch_size = 2
steps = 3
finetune_steps = 1
evaluate_initial = false
device = "cpu"
[codesign.reconstructor_config]
width = 8
n_blocks = 1
n_stages = 1
[codesign.segmenter_config]
base_channels = 4
depth = 1
"""
ENV = {"COLUMNS": "400", "HYPLEX_THREADS": "1"}


@pytest.fixture(scope="module")
def bundle_path(tmp_path_factory):
    return tiny_bundle(tmp_path_factory)


def _copy(bundle_path, tmp_path):
    import shutil

    target = tmp_path / "bundle"
    shutil.copytree(bundle_path, target)
    return target


def _fit(bundle, method, *extra):
    """Run ``hyplex openset fit`` on ``bundle`` with ``method`` and any further options."""
    args = ["openset", "fit", "--bundle", str(bundle), "--method", method, *extra]
    return runner.invoke(app, env=ENV, args=args)


def test_openset_fit_stores_a_head_that_reloads(bundle_path, tmp_path):
    bundle = _copy(bundle_path, tmp_path)
    result = _fit(bundle, "OE", "--quick", "--steps", "3")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["method"] == "OE" and 0 <= summary["auroc"] <= 1
    record = read_head_record(bundle)
    assert record["method"] == "OE" and record["threshold"] == summary["threshold"]
    loaded = load_bundle(bundle)
    detector = load_openset_head(bundle, loaded.segmenter, loaded.class_names)
    scores = detector.predict(torch.zeros(1, 9, 8, 8))
    assert scores.shape == (1, 8, 8)
    # a second fit replaces the head and leaves one tensors file
    result = _fit(bundle, "energy", "--quick")
    assert result.exit_code == 0, result.output
    assert read_head_record(bundle)["method"] == "energy"
    assert len(list(bundle.glob("openset-*.safetensors"))) == 1


def test_openset_fit_to_a_new_bundle_leaves_the_old_one(bundle_path, tmp_path):
    out = tmp_path / "with_head"
    result = _fit(bundle_path, "MSP", "--quick", "--output", str(out))
    assert result.exit_code == 0, result.output
    assert has_openset_head(out) and not has_openset_head(bundle_path)


def test_bad_inputs_are_clear_errors(bundle_path, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = _fit(bundle_path, "OE", "--target-frames", str(empty), "--quick")
    assert result.exit_code != 0 and "holds no frames" in result.output
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    np.save(wrong / "frame.npy", np.zeros((8, 8, 4), np.float32))
    result = _fit(bundle_path, "OE", "--target-frames", str(wrong), "--quick")
    assert result.exit_code != 0 and "mismatched channel counts" in result.output
    result = _fit(bundle_path, "XYZ")
    assert result.exit_code != 0 and "unknown open-set method" in result.output
    with pytest.raises(OpenSetHeadError, match="no open-set head"):
        read_head_record(bundle_path)


def test_corrupt_head_is_refused(bundle_path, tmp_path):
    bundle = _copy(bundle_path, tmp_path)
    result = _fit(bundle, "energy", "--quick")
    assert result.exit_code == 0, result.output
    tensors = next(bundle.glob("openset-*.safetensors"))
    tensors.write_bytes(tensors.read_bytes()[:-1] + b"\0")
    loaded = load_bundle(bundle)
    with pytest.raises(OpenSetHeadError, match="SHA-256"):
        load_openset_head(bundle, loaded.segmenter, loaded.class_names)


def test_coverage_prints_the_share_and_writes_maps(bundle_path, tmp_path):
    loaded = load_bundle(bundle_path)
    frames = tmp_path / "frames"
    frames.mkdir()
    inside = np.full((6, 6, 9), 0.2, np.float32)  # a grey surface: inside the mixture
    outside = np.full((6, 6, 9), 5.0, np.float32)  # five times a white reflector: outside
    np.save(frames / "inside.npy", inside)
    np.save(tmp_path / "outside.npy", outside)
    out = tmp_path / "maps"
    result = runner.invoke(
        app,
        env=ENV,
        args=[
            "coverage",
            "--bundle",
            str(bundle_path),
            str(frames),
            str(tmp_path / "outside.npy"),
            "--out",
            str(out),
            "--scenes",
            "2",
            "--training-points",
            "300",
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report[str(tmp_path / "outside.npy")]["outside_share"] == 1.0
    with np.load(out / "outside.coverage.npz") as stored:
        assert stored["outside"].shape == (1, 6, 6)
    assert loaded.responses.shape[0] == 9


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    return tiny_recording(tmp_path_factory.mktemp("rec"))


def test_segment_writes_the_unknown_map_of_the_head(bundle_path, recording, tmp_path):
    from hyplex.pipeline.outputs import read_decoded

    bundle = _copy(bundle_path, tmp_path)
    assert _fit(bundle, "Watermarking", "--quick", "--steps", "2").exit_code == 0
    out = tmp_path / "out"
    args = [
        "segment",
        str(recording),
        "--bundle",
        str(bundle),
        "--out",
        str(out),
        "--no-video",
        "--input-scale-dn",
        "4095",
        "--unknown",
    ]
    result = runner.invoke(app, env=ENV, args=args)
    assert result.exit_code == 0, result.output
    stored = read_decoded(out / "clip.labels.h5")
    assert stored["unknown"].shape == stored["labels"].shape == (3, 10, 10)
    assert ((stored["unknown"] >= 0) & (stored["unknown"] <= 1)).all()
    assert np.isfinite(stored["unknown"]).all()
    assert stored["attrs"]["unknown_method"] == "Watermarking"
    # the map is the head's reading of the frames, not a constant: other light, another map
    # (the random frames alone may saturate it, so its spread is no test)
    dark = tiny_recording(tmp_path / "dark", scale=0.05)
    args[1], args[5] = str(dark), str(tmp_path / "out_dark")
    assert runner.invoke(app, env=ENV, args=args).exit_code == 0
    other = read_decoded(tmp_path / "out_dark" / "clip.labels.h5")["unknown"]
    assert np.abs(other - stored["unknown"]).max() > 1e-3


def test_segment_asks_for_unknown_maps_of_a_bundle_without_a_head(bundle_path, recording, tmp_path):
    args = [
        "segment",
        str(recording),
        "--bundle",
        str(bundle_path),
        "--out",
        str(tmp_path),
        "--no-video",
        "--unknown",
    ]
    result = runner.invoke(app, env=ENV, args=args)
    assert result.exit_code != 0 and "needs a bundle with an open-set head" in result.output


def test_overlay_marks_unknown_pixels():
    from hyplex.pipeline.outputs import UNKNOWN_COLOUR, overlay

    labels = np.zeros((2, 2), np.uint8)
    unknown = np.array([[0.9, 0.1], [0.2, 0.6]])
    plain = overlay(np.ones((2, 2)), labels, 3)
    marked = overlay(np.ones((2, 2)), labels, 3, unknown=unknown)
    assert (marked[0, 0] != plain[0, 0]).any() and (marked[0, 1] == plain[0, 1]).all()
    assert marked[1, 1, 1] < marked[1, 1, 0]  # magenta: green channel lowest
    assert UNKNOWN_COLOUR.shape == (3,)


def test_design_openset_trains_a_head_into_the_new_bundle(tmp_path):
    from hyplex.models.codesign_library import quick_library

    library = tmp_path / "lib.h5"
    quick_library(library, count=24)
    config = tmp_path / "tiny.toml"
    config.write_text(TINY)
    out = tmp_path / "run"
    args = [
        "design",
        "--config",
        str(config),
        "--library",
        str(library),
        "--out",
        str(out),
        "--openset",
        "energy",
    ]
    result = runner.invoke(app, env=ENV, args=args)
    assert result.exit_code == 0, result.output
    assert "open-set head energy" in result.output
    assert read_head_record(out / "bundle")["method"] == "energy"
    bad = runner.invoke(app, env=ENV, args=[*args[:-1], "NOPE"])
    assert bad.exit_code != 0 and "unknown open-set method 'NOPE'" in bad.output


def test_viewer_shows_the_unknown_map_and_share():
    from types import SimpleNamespace

    from hyplex.pipeline.types import FrameResult
    from hyplex.viewer.server import VIEWS, LiveSession

    pipeline = SimpleNamespace(summary=SimpleNamespace(dropped=0, corrupt=0))
    session = LiveSession(pipeline, None, np.linspace(400, 700, 4), ["background", "a", "b"])
    assert session.status()["unknown_share"] is None
    unknown = np.zeros((4, 4), np.float32)
    unknown[:2, :2] = 0.9
    session._on_result(
        FrameResult(
            0,
            0,
            labels=np.zeros((4, 4), np.uint8),
            intensity=np.ones((4, 4), np.float32),
            unknown=unknown,
        )
    )
    assert session.status()["unknown_share"] == 0.25
    assert "unknown" in VIEWS
    image = session.image("unknown")
    assert image.shape[0] == image.shape[1] and image.max() == 229 and image.min() == 0
    assert session.image("overlay") is not None


def test_openset_fit_act_adapts_to_target_frames(bundle_path, tmp_path):
    bundle = _copy(bundle_path, tmp_path)
    frames = tmp_path / "captured"
    frames.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        np.save(frames / f"f{i}.npy", rng.uniform(0.05, 0.5, (16, 16, 9)).astype(np.float32))
    result = _fit(bundle, "ACT", "--quick", "--steps", "2", "--target-frames", str(frames))
    assert result.exit_code == 0, result.output
    record = read_head_record(bundle)
    assert record["method"] == "ACT"
    assert all(v == 2 for k, v in record["options"].items() if k.endswith("steps"))


def test_coverage_of_raw_frames_through_the_bundle_layout(bundle_path, recording, tmp_path):
    args = [
        "coverage",
        str(recording),
        "--bundle",
        str(bundle_path),
        "--out",
        str(tmp_path),
        "--scenes",
        "1",
        "--training-points",
        "200",
        "--input-scale-dn",
        "4095",
    ]
    result = runner.invoke(app, env=ENV, args=args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert 0.0 <= report[str(recording)]["outside_share"] <= 1.0
    with np.load(tmp_path / "clip.coverage.npz") as stored:
        assert stored["outside"].shape == (3, 10, 10)


def _design_args(tmp_path, method):
    config = tmp_path / "tiny.toml"
    config.write_text(TINY)
    args = ["design", "--config", str(config), "--out", str(tmp_path / "run")]
    return [*args, "--openset", method]


def test_design_openset_act_is_refused_before_any_training(tmp_path, monkeypatch):
    import time

    import hyplex.models.codesign as codesign

    def no_training(*args, **kwargs):
        raise AssertionError("design trained before refusing --openset ACT")

    monkeypatch.setattr(codesign, "train_codesign", no_training)
    began = time.perf_counter()
    result = runner.invoke(app, env=ENV, args=_design_args(tmp_path, "ACT"))
    assert time.perf_counter() - began < 10.0
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit), result.output
    assert "ACT needs captured frames" in result.output
    assert "hyplex openset fit" in result.output and "--target-frames DIR" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "run" / "bundle").exists()


def test_design_turns_a_failed_head_fit_into_a_usage_error(tmp_path, monkeypatch):
    """The co-design's bundle stands; the head's ValueError is a clear message, not a trace."""
    import hyplex.models.openset.bundle_fitting as bundle_fitting

    def failing_fit(*args, **kwargs):
        raise ValueError("mismatched channel counts: the head could not be fitted")

    monkeypatch.setattr(bundle_fitting, "fit_bundle_head", failing_fit)
    result = runner.invoke(app, env=ENV, args=_design_args(tmp_path, "energy"))
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit), result.output
    assert "the head could not be fitted" in result.output
    assert "written without an open-set head" in result.output
    assert "Traceback" not in result.output
    bundle = tmp_path / "run" / "bundle"
    assert load_bundle(bundle).class_names and not has_openset_head(bundle)


def test_openset_fit_act_without_target_frames_is_a_clear_error(bundle_path):
    result = _fit(bundle_path, "ACT", "--quick", "--steps", "2")
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit), result.output
    assert "ACT adapts the head to unlabelled captured frames" in result.output
    assert "--target-frames" in result.output and "Traceback" not in result.output
    assert not has_openset_head(bundle_path)

"""``hyplex temporal fit`` and ``hyplex segment --temporal``: a fitted module stored in the
bundle, used by segment (its output is the loaded module's, not the untrained one's), the
untrained fallback's warning, and every bad input."""

import json
import shutil

import numpy as np
import pytest
import torch
from tiny_bundles import tiny_bundle
from typer.testing import CliRunner

from hyplex.cli.app import app
from hyplex.models.temporal.module_files import (
    has_temporal_module,
    load_temporal_module,
    read_temporal_record,
)

torch.set_num_threads(1)
runner = CliRunner()
ENV = {"COLUMNS": "400", "HYPLEX_THREADS": "1"}
SCALE_DN = 200.0  # barcodes of 2-20: where the sharpened segmenter changes its mind
TINY_FIT = ["--clips", "1", "--steps", "4", "--frames", "4", "--size", "16x16"]


@pytest.fixture(scope="module")
def bundle_path(tmp_path_factory):
    """The tiny bundle with its segmenter's head scaled x30: the 3-step tiny segmenter's
    logits hardly depend on the frame, so no temporal module could change its labels."""
    from safetensors.torch import load_file, save_file

    path = tiny_bundle(tmp_path_factory)
    tensors = load_file(path / "decoders.safetensors")
    for name in ("segmenter.head.weight", "segmenter.head.bias"):
        tensors[name] = tensors[name] * 30.0
    save_file(tensors, path / "decoders.safetensors")
    return path


@pytest.fixture(scope="module")
def fitted_path(bundle_path, tmp_path_factory):
    """A copy of the bundle with a TCL module fitted by the CLI (4 steps on one 4-frame clip)."""
    target = tmp_path_factory.mktemp("fitted") / "bundle"
    args = ["temporal", "fit", "--bundle", str(bundle_path), "--output", str(target), *TINY_FIT]
    result = runner.invoke(app, env=ENV, args=args)
    assert result.exit_code == 0, result.output
    return target


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    """``clip.h5``: 4 frames of 240x240 12-bit noise whose level alternates 4000 / 400 DN, so
    the segmenter's logits change from frame to frame (what a temporal module smooths)."""
    from hyplex.devices.frame import Frame, PixelFormat
    from hyplex.devices.recorder import Recorder, StreamSpec

    path = tmp_path_factory.mktemp("rec") / "clip.h5"
    rng = np.random.default_rng(0)
    with Recorder(path, StreamSpec((240, 240), PixelFormat.MONO12)) as recorder:
        for i in range(4):
            level = 4000 if i % 2 == 0 else 400
            data = (level * rng.uniform(0.9, 1.0, (240, 240))).astype(np.uint16)
            recorder.write(Frame(data, frame_id=i, seq=i, host_timestamp_ns=i))
    return path


def _copy(path, tmp_path, name="bundle"):
    target = tmp_path / name
    shutil.copytree(path, target)
    return target


def _segment(recording, out, bundle, *extra):
    args = ["segment", str(recording), "--out", str(out), "--no-video", "--no-cube",
            "--bundle", str(bundle), "--input-scale-dn", str(SCALE_DN), *extra]  # fmt: skip
    return runner.invoke(app, env=ENV, args=args)


def _direct(bundle, recording, module):
    """Labels and confidences of the recording by a direct call: the bundle's segmenter on the
    preprocessed barcodes, then ``module`` frame by frame (no engine)."""
    from hyplex.models.bundle import load_bundle
    from hyplex.models.temporal import smooth_sequence
    from hyplex.pipeline.sources import open_source
    from hyplex.pipeline.stages import Preprocessor
    from hyplex.simulation.layout import MosaicLayout

    loaded = load_bundle(bundle)
    source = open_source(str(recording))
    try:
        frames = [item.data for item in source]
        # segment's layout without a calibration: fitted to the frame at the default pitch
        layout = MosaicLayout.fit(source.sensor_shape, pitch_px=7.287)
        preprocessor = Preprocessor(layout, source.sensor_shape)
    finally:
        source.close()
    barcodes = np.stack([preprocessor(frame) for frame in frames]) / SCALE_DN
    x = torch.from_numpy(np.nan_to_num(barcodes).astype(np.float32)).permute(0, 3, 1, 2)
    with torch.no_grad():
        logits = loaded.segmenter(x.contiguous()).float()
        probabilities = smooth_sequence(module, logits, x)[0].exp()
    confidence, labels = probabilities.max(1)
    return labels.numpy(), confidence.numpy()


def test_fit_stores_a_module_that_segment_runs(fitted_path, recording, tmp_path):
    from hyplex.pipeline.outputs import read_decoded

    assert has_temporal_module(fitted_path, "tcl")
    record = read_temporal_record(fitted_path, "tcl")
    assert record["training"]["clips"] == 1 and record["training"]["steps"] == 4
    assert set(record["metrics"]) == {"segmenter", "untrained", "fitted"}
    result = _segment(recording, tmp_path / "fitted", fitted_path, "--temporal", "tcl")
    assert result.exit_code == 0, result.output
    assert "temporal tcl: fitted module" in result.stdout and "UNTRAINED" not in result.output
    summary = json.loads((tmp_path / "fitted" / "segment_summary.json").read_text())
    assert summary[0]["temporal"]["fitted"] is True
    stored = read_decoded(tmp_path / "fitted" / "clip.labels.h5")
    module, _ = load_temporal_module(fitted_path, "tcl")
    labels, confidence = _direct(fitted_path, recording, module)
    # the file stores float16 confidences (a step of 4.9e-4 just below 1)
    np.testing.assert_allclose(stored["confidence"], confidence, atol=1e-3)
    assert np.mean(stored["labels"] == labels) > 0.99  # ties may round either way
    # the same bundle without its module: untrained, said so, and another output
    plain = _copy(fitted_path, tmp_path, "plain")
    for stale in plain.glob("temporal-*"):
        stale.unlink()
    result = _segment(recording, tmp_path / "plain_out", plain, "--temporal", "tcl")
    assert result.exit_code == 0, result.output
    assert "temporal tcl runs UNTRAINED" in result.output and "hyplex temporal fit" in result.output
    untrained = read_decoded(tmp_path / "plain_out" / "clip.labels.h5")
    gap = np.abs(untrained["confidence"].astype(np.float32) - stored["confidence"]).max()
    print(f"largest fitted - untrained confidence difference: {gap:.4f}")
    assert gap > 1e-2


def test_fit_gated_in_place_replaces_only_its_own_kind(fitted_path, tmp_path):
    bundle = _copy(fitted_path, tmp_path)
    before = read_temporal_record(bundle, "tcl")
    result = runner.invoke(app, env=ENV, args=["temporal", "fit", "--bundle", str(bundle),
                                               "--module", "gated", *TINY_FIT])  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["module"] == "gated" and summary["file"].endswith("temporal-gated.json")
    assert has_temporal_module(bundle, "gated")
    assert read_temporal_record(bundle, "tcl") == before


def test_segment_refuses_a_mismatched_or_corrupt_module(fitted_path, recording, tmp_path):
    bundle = _copy(fitted_path, tmp_path)
    path = bundle / "temporal-tcl.json"
    record = json.loads(path.read_text())
    for edit, message in (
        ({"class_names": [*record["class_names"][:-1], "unicorn"]}, "mismatched classes"),
        ({"n_filters": 16}, "mismatched channel counts"),
        ({"segmenter_sha256": "0" * 64}, "another segmenter"),
    ):
        path.write_text(json.dumps({**record, **edit}))
        result = _segment(recording, tmp_path / "out", bundle, "--temporal", "tcl")
        assert result.exit_code == 1 and message in result.output, (edit, result.output)
    path.write_text(json.dumps(record))
    tensors = bundle / record["tensors_file"]
    payload = bytearray(tensors.read_bytes())
    payload[-3] ^= 0xFF  # one flipped byte in the tensor data
    tensors.write_bytes(bytes(payload))
    result = _segment(recording, tmp_path / "out", bundle, "--temporal", "tcl")
    assert result.exit_code == 1 and "SHA-256 does not match" in result.output
    # with --temporal none the module is not read at all
    result = _segment(recording, tmp_path / "none", bundle, "--temporal", "none")
    assert result.exit_code == 0, result.output


def test_fit_errors(bundle_path, tmp_path):
    def fit(*args):
        return runner.invoke(app, env=ENV, args=["temporal", "fit", *args])

    result = fit("--bundle", str(bundle_path), "--module", "lstm")
    assert result.exit_code == 2 and "no fittable temporal module" in result.output
    result = fit("--bundle", str(bundle_path), "--size", "16by16")
    assert result.exit_code == 2 and "ROWSxCOLS" in result.output
    result = fit("--bundle", str(bundle_path), "--size", "4x4")
    assert result.exit_code == 2 and "shape must be" in result.output
    result = fit("--bundle", str(tmp_path / "nothing"))
    assert result.exit_code == 2 and "--bundle" in result.output
    result = fit("--bundle", str(bundle_path), "--output", str(tmp_path))
    assert result.exit_code == 2 and "exists" in result.output
    bundle = _copy(bundle_path, tmp_path)  # classes the twin video cannot draw
    record = json.loads((bundle / "bundle.json").read_text())
    record["class_names"][0] = "sky"
    (bundle / "bundle.json").write_text(json.dumps(record))
    result = fit("--bundle", str(bundle), *TINY_FIT)
    assert result.exit_code == 2 and "not ones the twin video draws" in result.output
    assert not list(bundle.glob("temporal-*"))  # nothing written

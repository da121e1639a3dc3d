"""Decoder refit on the twin: measured responses, degradation by fabrication, recovery."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from hyplex.hil.measured_response import check_channel_order, design_twin, measured_transmissions
from hyplex.hil.refit import RefitSettings, UncalibratedCamera, _linear_decoder, _scenes, refit
from hyplex.models.bundle import default_layout
from hyplex.models.codesign_config import CodesignConfig
from hyplex.models.encoder import FixedResponseEncoder
from hyplex.models.encoder_capture import CameraCapture, CaptureSettings
from hyplex.simulation.fabrication import FabricationError, fabricate

torch.set_num_threads(1)
CONFIG = CodesignConfig(scene_size=24, n_objects=3, bands=34, seed=3)
GRID = CONFIG.wavelengths_nm


def _bandpass_responses(width_nm=12.0):
    """Nine narrow Gaussian band-passes over 400-730 nm: a code that fabrication can break."""
    centres = np.linspace(420, 710, 9)
    return 0.9 * np.exp(-0.5 * ((GRID[None] - centres[:, None]) / width_nm) ** 2) + 0.02


def _bundle(responses):
    """An in-memory DesignBundle-like record with a linear reconstructor fitted to the design
    and a small untrained U-Net (the refit only reads these fields)."""
    from hyplex.models.segmentation import UNet

    capture = CaptureSettings()
    record = SimpleNamespace(
        path="memory",
        wavelengths_nm=GRID,
        responses=responses,
        layout=default_layout(9),
        capture=capture,
        config=CONFIG.to_dict(),
        metrics={},
    )
    train = _scenes(record, 3, seed=11)
    encoder = FixedResponseEncoder(responses, GRID, capture)
    record.reconstructor = _linear_decoder(encoder, train, 2048, 1e-5, seed=0)
    torch.manual_seed(0)
    record.segmenter = UNet(9, train.n_classes, base_channels=4, depth=2).eval()
    record.class_names = train.class_names
    return record


def test_measured_transmissions_recovers_the_fabricated_filters(tmp_path):
    """Calibrating a twin with fabricated filters measures them: same shapes to < 2 % RMS."""
    from hyplex.calibration.pipeline import PipelineSettings
    from hyplex.calibration.sim_bench_config import calibrate_simulated

    bundle = SimpleNamespace(
        wavelengths_nm=GRID,
        responses=_bandpass_responses(20.0),
        layout=default_layout(9),
        capture=CaptureSettings(),
    )
    twin, truth = design_twin(bundle, (120, 128), 5.3, 1.0, FabricationError(), seed=4)
    assert not np.allclose(truth, bundle.responses, atol=0.02)
    calibration = calibrate_simulated(
        twin, tmp_path / "cal.h5", PipelineSettings(sweep_frames=3, n_samples=0)
    )
    spectral = calibration.sections["spectral"]
    capture = CameraCapture(GRID, bundle.capture)
    measured = measured_transmissions(
        spectral["response"], spectral["wavelengths_nm"], capture, bundle.responses
    )

    def unit(rows):
        return rows / np.linalg.norm(rows, axis=1, keepdims=True)

    error = np.linalg.norm(unit(measured) - unit(truth)) / np.linalg.norm(unit(truth))
    assert error < 0.02
    # one common scale: the filters' relative throughputs (what an uncalibrated camera gets
    # wrong) survive the measurement
    ratio = measured.sum(1) / truth.sum(1)
    assert np.ptp(ratio) / ratio.mean() < 0.02
    peak_one = measured_transmissions(spectral["response"], spectral["wavelengths_nm"], capture)
    assert peak_one.max() == pytest.approx(1.0)
    unclipped = measured.max(1) < 1.0  # a filter brighter than the design may clip at 1
    np.testing.assert_allclose(unit(peak_one)[unclipped], unit(measured)[unclipped], atol=1e-9)
    design_error = np.linalg.norm(unit(bundle.responses) - unit(truth)) / 3.0
    assert design_error > 5 * error  # the measurement sees the fabrication, not the design
    # the fabricated filters still sit nearest their own designs; a renumbered mosaic does not
    assert check_channel_order(measured, bundle.responses) > 0.8
    shifted = np.roll(measured, 1, axis=0)  # the mosaic numbered from the next cell
    with pytest.raises(ValueError, match="channel 1 looks like design filter 0"):
        check_channel_order(shifted, bundle.responses)


def test_measured_transmissions_errors():
    capture = CameraCapture(GRID, CaptureSettings())
    with pytest.raises(ValueError, match="covers 450-700 nm"):
        measured_transmissions(np.ones((9, 10)), np.linspace(450, 700, 10), capture)
    with pytest.raises(ValueError, match="shape"):
        measured_transmissions(np.ones((9, 10)), GRID, capture)
    with pytest.raises(ValueError, match="NaN"):
        measured_transmissions(np.full((9, 34), np.nan), GRID, capture)


def test_refit_restores_the_psnr_lost_to_fabrication():
    design = _bandpass_responses()
    bundle = _bundle(design)
    made = fabricate(design, GRID, FabricationError(), seed=5)
    settings = RefitSettings(steps=40, n_train_scenes=3, n_val_scenes=2, linear_samples=2048)
    result = refit(bundle, made.responses, settings, progress=False)
    assert result.metrics["camera"] == "measured"
    psnr = {k: v["psnr"] for k, v in result.metrics.items() if isinstance(v, dict)}
    lost = psnr["design"] - psnr["before"]
    assert lost > 1.5  # fabrication error costs the design decoder on the uncalibrated camera
    assert psnr["flat_only"] > psnr["before"]  # the per-channel white level is half the cure
    # the closed-form Hyplex projector refitted on the measurement gets it back
    assert psnr["linear_after"] > psnr["linear_before"] + 0.8 * lost
    assert psnr["linear_after"] > psnr["design"] - 1.0
    # the fine-tuned decoders (from the design's weights) on the calibrated camera
    assert psnr["after"] > psnr["before"] + 0.6 * lost
    assert len(result.history["loss"]) == 40


def test_uncalibrated_camera_normalises_by_the_design_white_levels():
    capture = CameraCapture(GRID, CaptureSettings())
    design = _bandpass_responses()
    cube = torch.rand(1, GRID.size, 4, 4, generator=torch.Generator().manual_seed(0))
    same = UncalibratedCamera(design, design, GRID, capture)
    fixed = FixedResponseEncoder(design, GRID, capture)
    torch.testing.assert_close(same(cube, noise=False), fixed(cube, noise=False))
    scale = np.linspace(0.6, 1.0, 9)[:, None]
    dimmer = UncalibratedCamera(design * scale, design, GRID, capture)
    ratio = dimmer(cube, noise=False) / fixed(cube, noise=False)
    torch.testing.assert_close(ratio[0, :, 0, 0], torch.tensor(scale[:, 0], dtype=torch.float32))


def test_refit_trains_on_scenes_of_its_own():
    from hyplex.hil.refit import _train_seed

    seeds = {_train_seed(seed) for seed in range(5)}
    assert len(seeds) == 5 and not seeds & {CONFIG.seed, CONFIG.seed + 1}


def test_refit_bundle_writes_a_bundle_with_the_measured_layout(tmp_path):
    """``hyplex refit`` end to end on a saved (tiny) bundle and a fabricated calibration."""
    from typer.testing import CliRunner

    from hyplex.calibration.pipeline import PipelineSettings
    from hyplex.calibration.sim_bench_config import calibrate_simulated
    from hyplex.cli import app
    from hyplex.models.bundle import load_bundle, save_bundle
    from hyplex.models.codesign import CodesignModel, CodesignResult

    record = _bundle(_bandpass_responses(20.0))
    model = CodesignModel(
        FixedResponseEncoder(record.responses, GRID, record.capture),
        record.reconstructor,
        record.segmenter,
    )
    held_out = _scenes(record, 1, CONFIG.seed + 1)
    result = CodesignResult(model, CONFIG.replace(reconstructor="linear", reconstructor_config={}),
                            GRID, record.class_names, {}, {}, {"kind": "fixed",
                            "responses": record.responses}, held_out, 0.0)  # fmt: skip
    design = save_bundle(tmp_path / "design", result, report=False)
    twin, _ = design_twin(load_bundle(design), (120, 128), 5.3, 1.0, FabricationError(), 1)
    calibrate_simulated(twin, tmp_path / "cal.h5", PipelineSettings(sweep_frames=2, n_samples=0))
    out = tmp_path / "refit"
    arguments = ["refit", "--design", str(design), "--calibration", str(tmp_path / "cal.h5")]
    run = CliRunner().invoke(app, [*arguments, "--out", str(out), "--steps", "3"])
    assert run.exit_code == 0, run.output
    assert "measured camera" in run.output and "psnr_after_refit" in run.output
    refitted = load_bundle(out, wavelengths_nm=GRID)
    assert refitted.design["kind"] == "measured"
    assert refitted.layout.pitch_px == pytest.approx(5.3, abs=0.01)  # the registered layout
    assert {"refit_before", "refit_after", "refit_linear_after"} <= set(refitted.metrics)
    assert not np.allclose(refitted.responses, record.responses, atol=0.01)


def test_refit_rejects_mismatched_responses():
    bundle = SimpleNamespace(responses=np.ones((9, 34)), wavelengths_nm=GRID,
                             capture=CaptureSettings())  # fmt: skip
    with pytest.raises(ValueError, match="do not match"):
        refit(bundle, np.ones((9, 20)))


def test_cli_errors_are_clear(tmp_path):
    from typer.testing import CliRunner

    from hyplex.cli import app

    runner = CliRunner()
    result = runner.invoke(app, ["calibrate", "--fabricate", "--out", str(tmp_path / "c.h5")])
    assert result.exit_code != 0 and "--fabricate needs --design" in result.output
    missing = tmp_path / "nothing"
    result = runner.invoke(
        app, ["refit", "--design", str(missing), "--calibration", str(tmp_path / "c.h5")]
    )
    assert result.exit_code == 2
    assert "no such bundle" in result.output

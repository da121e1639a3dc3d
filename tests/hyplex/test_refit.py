"""Decoder refit on the twin: measured responses, degradation by fabrication, recovery."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from hyplex.models.bundle import default_layout
from hyplex.models.codesign_config import CodesignConfig
from hyplex.models.encoder import FixedResponseEncoder
from hyplex.models.encoder_capture import CameraCapture, CaptureSettings
from hyplex.refit import (
    RefitSettings,
    _linear_decoder,
    _scenes,
    design_twin,
    measured_transmissions,
    refit,
)
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
    from hyplex.calibration.pipeline import PipelineSettings, calibrate_simulated

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
    design_error = np.linalg.norm(unit(bundle.responses) - unit(truth)) / 3.0
    assert design_error > 5 * error  # the measurement sees the fabrication, not the design


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
    psnr = {name: figures["psnr"] for name, figures in result.metrics.items()}
    lost = psnr["design"] - psnr["before"]
    assert lost > 1.5  # fabrication error costs the design decoder on the uncalibrated camera
    assert psnr["flat_only"] > psnr["before"]  # the per-channel white level is half the cure
    # the closed-form Hyplex projector refitted on the measurement gets it back
    assert psnr["linear_after"] > psnr["linear_before"] + 0.8 * lost
    assert psnr["linear_after"] > psnr["design"] - 0.5
    # the fine-tuned decoders (from the design's weights) on the calibrated camera
    assert psnr["after"] > psnr["before"] + 0.6 * lost
    assert len(result.history["loss"]) == 40


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

"""``hyplex calibrate import`` -> ``hyplex refit --calibration``: measured samples from before
hyplex close the loop without a registered mosaic."""

from types import SimpleNamespace

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from hyplex.calibration.basis_fit import sample_spectra
from hyplex.calibration.measured_import import MeasuredSamples, write_samples_csv
from hyplex.cli.calibrate_import import register
from hyplex.simulation.grids import quadrature_weights

EXAMPLE = "tests/data/measured_samples.csv"


def _tiny_bundle_record():
    """Nine 20 nm band-passes with a linear reconstructor and an untrained small U-Net (as
    tests/hyplex/test_refit.py builds them)."""
    import torch

    from hyplex.hil.refit import _linear_decoder, _scenes
    from hyplex.models.bundle import default_layout
    from hyplex.models.codesign_config import CodesignConfig
    from hyplex.models.encoder import FixedResponseEncoder
    from hyplex.models.encoder_capture import CaptureSettings
    from hyplex.models.segmentation import UNet

    config = CodesignConfig(scene_size=24, n_objects=3, bands=34, seed=3)
    grid = config.wavelengths_nm
    centres = np.linspace(420, 710, 9)
    responses = 0.9 * np.exp(-0.5 * ((grid[None] - centres[:, None]) / 20.0) ** 2) + 0.02
    capture = CaptureSettings()
    record = SimpleNamespace(path="memory", wavelengths_nm=grid, responses=responses,
                             layout=default_layout(9), capture=capture,
                             config=config.to_dict(), metrics={})  # fmt: skip
    train = _scenes(record, 3, seed=11)
    encoder = FixedResponseEncoder(responses, grid, capture)
    record.reconstructor = _linear_decoder(encoder, train, 2048, 1e-5, seed=0)
    torch.manual_seed(0)
    record.segmenter = UNet(9, train.n_classes, base_channels=4, depth=2).eval()
    record.class_names = train.class_names
    return record, config, _scenes(record, 1, config.seed + 1)


def _app() -> typer.Typer:
    """The calibrate group with only the import subcommand (the command itself under test)."""
    group = typer.Typer()

    @group.callback()
    def calibrate() -> None:
        """calibrate"""

    register(group)
    return group


def test_import_writes_a_calibration_and_never_overwrites_on_failure(tmp_path):
    from hyplex.calibration.store import load_calibration

    runner = CliRunner()
    out = tmp_path / "cal.h5"
    report = tmp_path / "loo.json"
    run = runner.invoke(_app(), ["import", "--samples", EXAMPLE, "--out", str(out),
                                 "--n-basis", "4", "--report", str(report)])  # fmt: skip
    assert run.exit_code == 0, run.output
    assert "weakest channel" in run.output and report.exists()
    assert load_calibration(out).sections["spectral"]["response"].shape == (3, 6)
    before = out.read_bytes()
    again = runner.invoke(_app(), ["import", "--samples", EXAMPLE, "--out", str(out)])
    assert again.exit_code == 2 and "--overwrite" in again.output
    bad = tmp_path / "bad.csv"
    bad.write_text(open(EXAMPLE).read().replace("0.45", "nan", 1))
    failed = runner.invoke(
        _app(), ["import", "--samples", str(bad), "--out", str(out), "--overwrite"]
    )
    assert failed.exit_code == 2 and "is nan" in failed.output
    assert out.read_bytes() == before  # the failed run left the earlier file as it was
    objects = np.empty(1, dtype=object)
    np.save(tmp_path / "p.npy", objects, allow_pickle=True)
    pickled = runner.invoke(_app(), ["import", "--samples", str(tmp_path / "p.npy"),
                                     "--out", str(out), "--overwrite"])  # fmt: skip
    assert pickled.exit_code == 2 and "never unpickles" in pickled.output
    assert out.read_bytes() == before


@pytest.mark.slow
def test_imported_samples_refit_a_bundle(tmp_path):
    """48 samples of a fabricated twin camera -> import -> hyplex refit on a saved bundle."""
    from hyplex.cli import app
    from hyplex.hil.measured_response import unit_filter_weights
    from hyplex.models.bundle import load_bundle, save_bundle
    from hyplex.models.codesign import CodesignModel, CodesignResult
    from hyplex.models.encoder import FixedResponseEncoder
    from hyplex.models.encoder_capture import CameraCapture
    from hyplex.simulation.fabrication import FabricationError, fabricate

    record, config, held_out = _tiny_bundle_record()
    GRID = record.wavelengths_nm
    model = CodesignModel(FixedResponseEncoder(record.responses, GRID, record.capture),
                          record.reconstructor, record.segmenter)  # fmt: skip
    result = CodesignResult(model, config.replace(reconstructor="linear", reconstructor_config={}),
                            GRID, record.class_names, {}, {}, {"kind": "fixed",
                            "responses": record.responses}, held_out, 0.0)  # fmt: skip
    design = save_bundle(tmp_path / "design", result, report=False)
    fabricated = fabricate(record.responses, GRID, FabricationError(), 1).responses
    weights = unit_filter_weights(CameraCapture(GRID, record.capture))
    truth = fabricated * weights[None, :]  # readings per unit radiance per nm
    spectra = sample_spectra(GRID, 48, seed=4)
    readings = (spectra * quadrature_weights(GRID)) @ truth.T
    readings *= 1 + 0.003 * np.random.default_rng(0).standard_normal(readings.shape)
    write_samples_csv(tmp_path / "samples.csv", MeasuredSamples(GRID, spectra, readings))
    runner = CliRunner()
    calibration = tmp_path / "imported.h5"
    group = _app()
    run = runner.invoke(group, ["import", "--samples", str(tmp_path / "samples.csv"),
                                "--out", str(calibration)])  # fmt: skip
    assert run.exit_code == 0, run.output
    out = tmp_path / "refit"
    run = runner.invoke(app, ["refit", "--design", str(design), "--calibration",
                              str(calibration), "--out", str(out), "--steps", "3"])  # fmt: skip
    assert run.exit_code == 0, run.output
    refitted = load_bundle(out, wavelengths_nm=GRID)
    assert refitted.design["kind"] == "measured"
    assert refitted.layout == load_bundle(design).layout  # no registration: the design's
    correlation = [
        np.corrcoef(a, b)[0, 1] for a, b in zip(refitted.responses, fabricated, strict=True)
    ]
    assert min(correlation) > 0.9

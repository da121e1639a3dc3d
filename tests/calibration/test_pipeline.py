"""The whole pipeline on the simulated bench, and the ``hyplex calibrate`` command."""

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from hyplex.calibration.bench import true_response
from hyplex.calibration.pipeline import PipelineSettings, calibrate_simulated
from hyplex.calibration.report import plot_report
from hyplex.calibration.store import CalibrationMismatch, load_calibration
from hyplex.devices.sim_bench import SimulatedBench

from .conftest import make_twin

FAST = PipelineSettings(
    dark_frames=3,
    flat_frames=3,
    emva_exposures=10,
    emva_stack_frames=4,
    sweep_frames=2,
    n_samples=12,
)


def test_pipeline_writes_a_complete_calibration_and_report(tmp_path):
    twin = make_twin(shape=(80, 88), pitch_px=3.9, rotation_deg=0.8, grid=np.linspace(400, 720, 17))
    bench = SimulatedBench()
    steps = []
    calibration = calibrate_simulated(
        twin,
        tmp_path / "cal.h5",
        FAST,
        bench=bench,
        progress=lambda step, done, total: steps.append(step),
    )
    assert {"dark", "registration", "emva", "sweep", "basis_fit"} <= set(steps)
    loaded = load_calibration(tmp_path / "cal.h5", layout=twin.encoder.layout)
    assert loaded.status == "complete"
    response = loaded.sections["spectral"]["response"]
    truth = true_response(twin, bench)
    assert np.linalg.norm(response - truth) / np.linalg.norm(truth) <= 0.02
    emva = loaded.sections["emva"]
    assert emva["system_gain_pooled_dn_per_e"] == pytest.approx(0.388, rel=0.05)
    with pytest.raises(CalibrationMismatch):
        load_calibration(tmp_path / "cal.h5", camera_id="another camera")
    png = plot_report(calibration, tmp_path / "cal.png")
    assert png.stat().st_size > 10_000


def test_cli_registers_calibrate():
    from hyplex.cli.calibrate import register

    app = typer.Typer()
    register(app)

    @app.command()
    def other() -> None:  # a second command so typer keeps sub-command names
        pass

    result = CliRunner().invoke(app, ["calibrate", "--help"])
    assert result.exit_code == 0 and "--out" in result.output
    result = CliRunner().invoke(app, ["calibrate", "--camera", "opencv:0"])
    assert result.exit_code != 0

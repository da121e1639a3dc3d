"""The calibration runner over protocols, on the in-process simulated bench (``sim://``
drivers on a VirtualClock): accuracy, the operator's steps, resume after faults, bad input,
and the ``hyplex calibrate`` command group."""

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from hyplex.calibration.bench import true_response
from hyplex.calibration.pipeline import (
    CalibrationInterrupted,
    CalibrationSetupError,
    MosaicNotFound,
    PipelineSettings,
    ReferencePowerError,
    calibrate,
)
from hyplex.calibration.report import plot_report
from hyplex.calibration.sim_bench_config import (
    SimulatedOperator,
    calibrate_simulated,
    simulated_configuration,
)
from hyplex.calibration.store import CalibrationMismatch, load_calibration
from hyplex.devices import Monochromator, PowerMeter
from hyplex.devices.errors import SettingUnavailable
from hyplex.devices.sim_bench import SimulatedBench
from hyplex.devices.sim_camera import SimulatedFaults

from .conftest import make_twin

FAST = PipelineSettings(
    dark_frames=3,
    flat_frames=3,
    emva_exposures=10,
    emva_stack_frames=4,
    sweep_frames=2,
    n_samples=12,
)
NO_SAMPLES = PipelineSettings(
    dark_frames=2,
    flat_frames=3,
    emva_exposures=6,
    emva_stack_frames=2,
    sweep_frames=2,
    n_samples=0,
)
GRID = np.linspace(400, 720, 17)


def _twin():
    return make_twin(shape=(80, 88), pitch_px=3.9, rotation_deg=0.8, grid=GRID)


def _run(twin, out, bench=None, settings=NO_SAMPLES, resume=False, progress=None,
         operator_class=SimulatedOperator, camera_hook=None):  # fmt: skip
    """The runner on the in-process bench, with a handle on the camera for fault injection."""
    bench = bench or SimulatedBench()
    config = simulated_configuration(twin, bench, settings)
    operator = operator_class(config.camera, bench, config.operator.white)
    if camera_hook is not None:
        camera_hook(config.camera)
    with (
        config.camera,
        Monochromator(bench.urls["monochromator"], clock=bench.clock, timeout_s=0.2) as mono,
        PowerMeter(bench.urls["powermeter"], timeout_s=0.2) as meter,
    ):
        return calibrate(
            config.camera, mono, meter, layout_grid=config.layout_grid,
            wavelengths_nm=config.wavelengths_nm, operator=operator,
            settings=config.settings, out=out, resume=resume, progress=progress,
            clock=bench.clock, camera_id=config.camera_id, samples=config.samples,
        )  # fmt: skip


def test_pipeline_writes_a_complete_calibration_and_report(tmp_path):
    twin = _twin()
    bench = SimulatedBench()
    steps = []
    calibration = calibrate_simulated(
        twin,
        tmp_path / "cal.h5",
        FAST,
        bench=bench,
        progress=lambda step, done, total: steps.append(step),
    )
    assert {"dark", "flat", "registration", "emva", "sweep", "samples"} <= set(steps)
    loaded = load_calibration(tmp_path / "cal.h5", layout=twin.encoder.layout)
    assert loaded.status == "complete"
    response = loaded.sections["spectral"]["response"]
    truth = true_response(twin, bench)
    assert np.linalg.norm(response - truth) / np.linalg.norm(truth) <= 0.02
    emva = loaded.sections["emva"]
    assert emva["system_gain_pooled_dn_per_e"] == pytest.approx(0.388, rel=0.05)
    # photons per pixel from the power meter and the bench radiometry: QE of the filters
    assert np.all(np.isfinite(emva["photons_per_pixel"]))
    assert loaded.sections["basis_fit"]["readings"].shape == (12, 9)
    with pytest.raises(CalibrationMismatch):
        load_calibration(tmp_path / "cal.h5", camera_id="another camera")
    png = plot_report(calibration, tmp_path / "cal.png")
    assert png.stat().st_size > 10_000


def test_the_operator_is_asked_for_each_hands_on_step_in_order(tmp_path):
    asked = []

    class Recording(SimulatedOperator):
        def prompt(self, step, instruction, index=None):
            asked.append(step)
            assert instruction  # a person needs words
            super().prompt(step, instruction, index)

    _run(_twin(), tmp_path / "cal.h5", operator_class=Recording)
    assert asked == ["darks", "white", "monochromator"]


def test_monochromator_silent_mid_sweep_leaves_a_resumable_file(tmp_path):
    """The monochromator stops answering after 3 wavelengths: a clear error, a partial file
    with those 3, and a resumed run that measures only the rest and matches the truth."""
    twin, bench, out = _twin(), SimulatedBench(), tmp_path / "cal.h5"

    def fail(step, done, total):
        if step == "sweep" and done == 3:
            bench.monochromator.faults.silent = 10**6

    with pytest.raises(CalibrationInterrupted, match="InstrumentTimeout") as caught:
        _run(twin, out, bench, progress=fail)
    assert caught.value.resumable and "--resume" in str(caught.value)
    partial = load_calibration(out, allow_partial=True)
    assert partial.status == "partial" and len(partial.sections["sweep"]["wavelength_nm"]) == 3
    bench.monochromator.faults.silent = 0
    swept = []

    def record(step, done, total):
        swept.append(done if step == "sweep" else step)

    calibration = _run(twin, out, bench, resume=True, progress=record)
    assert "dark" not in swept and "emva" not in swept and swept[0] == 4
    truth = true_response(twin, bench)
    response = calibration.sections["spectral"]["response"]
    assert np.linalg.norm(response - truth) / np.linalg.norm(truth) <= 0.02
    assert load_calibration(out).status == "complete"


def test_a_garbled_reply_is_retried_and_persistent_garbage_is_a_clear_error(tmp_path):
    twin, bench = _twin(), SimulatedBench()
    with Monochromator(bench.urls["monochromator"], clock=bench.clock, timeout_s=0.2) as mono:
        bench.monochromator.faults.garbled = 1
        assert mono.go_to(600.0) == pytest.approx(600.0)  # one garbled echo: retried
    out = tmp_path / "cal.h5"

    def garble(step, done, total):
        if step == "sweep" and done == 2:
            bench.monochromator.faults.garbled = 10**6

    with pytest.raises(CalibrationInterrupted, match="GarbledReply") as caught:
        _run(twin, out, bench, progress=garble)
    assert "sweep" in str(caught.value) and caught.value.resumable


def test_camera_disconnect_is_a_clear_error_and_the_partial_file_resumes(tmp_path):
    twin, bench, out = _twin(), SimulatedBench(), tmp_path / "cal.h5"
    cameras = []

    def disconnect(step, done, total):
        if step == "sweep" and done == 2:
            cameras[0].faults = SimulatedFaults(disconnect_at_frame=0)

    with pytest.raises(CalibrationInterrupted, match="CameraDisconnected") as caught:
        _run(twin, out, bench, progress=disconnect, camera_hook=cameras.append)
    assert caught.value.step == "sweep" and caught.value.resumable
    partial = load_calibration(out, allow_partial=True)
    assert len(partial.sections["sweep"]["wavelength_nm"]) == 2
    calibration = _run(twin, out, bench, resume=True)
    assert calibration.status == "complete"


class _FixedExposureCamera:
    """A camera without an exposure control (a webcam in auto mode)."""

    def __init__(self, camera):
        self.camera = camera

    def capabilities(self):
        from dataclasses import replace

        caps = self.camera.capabilities()
        return replace(caps, exposure_us=None, notes=("no ExposureTime node",))

    @property
    def exposure_us(self):
        return 1000.0

    @exposure_us.setter
    def exposure_us(self, value):
        raise SettingUnavailable("exposure is not settable")

    def __getattr__(self, name):
        return getattr(self.camera, name)


def _bad_run(tmp_path, out, *, camera=None, grid=GRID, bench=None, operator_class=SimulatedOperator,
             resume=False):  # fmt: skip
    twin = _twin()
    bench = bench or SimulatedBench()
    config = simulated_configuration(twin, bench, NO_SAMPLES)
    with (
        config.camera,
        Monochromator(bench.urls["monochromator"], clock=bench.clock, timeout_s=0.2) as mono,
        PowerMeter(bench.urls["powermeter"], timeout_s=0.2) as meter,
    ):
        return calibrate(
            camera(config.camera) if camera else config.camera, mono, meter,
            layout_grid=(3, 3), wavelengths_nm=grid,
            operator=operator_class(config.camera, bench, config.operator.white),
            settings=config.settings, out=out, resume=resume, clock=bench.clock,
            camera_id=config.camera_id,
        )  # fmt: skip


def test_bad_input_is_named_and_an_existing_file_is_never_overwritten(tmp_path):
    existing = tmp_path / "partial.h5"
    existing.write_bytes(b"an earlier partial calibration")
    before = existing.read_bytes()
    with pytest.raises(CalibrationSetupError, match="exists.*resume"):
        _bad_run(tmp_path, existing)
    with pytest.raises(CalibrationSetupError, match="cannot set its exposure.*ExposureTime"):
        _bad_run(tmp_path, existing, camera=_FixedExposureCamera, resume=True)
    with pytest.raises(CalibrationSetupError, match="cannot be resumed"):
        _bad_run(tmp_path, existing, resume=True)
    assert existing.read_bytes() == before
    out = tmp_path / "new.h5"
    with pytest.raises(CalibrationSetupError, match="1150 nm is outside.*200-1100 nm"):
        _bad_run(tmp_path, out, grid=np.linspace(900, 1150, 6))
    assert not out.exists()


@pytest.mark.parametrize(("power", "message"), [(0.0, "reads no light"), (1e38, "saturated")])
def test_power_meter_reading_zero_or_saturated_is_named(tmp_path, power, message):
    bench = SimulatedBench()
    bench.power_meter.power_W = lambda: power
    # the runner's own check, or the driver's (an overrange reading raises there)
    with pytest.raises((ReferencePowerError, CalibrationInterrupted), match=message):
        _bad_run(tmp_path, tmp_path / "cal.h5", bench=bench)
    partial = load_calibration(tmp_path / "cal.h5", allow_partial=True)
    assert "emva" not in partial.sections  # the steps before are kept, resumable


def test_no_mosaic_in_the_flat_is_named(tmp_path):
    """The white reference is not lit (the operator shows nothing): no mosaic to register."""

    class Unlit(SimulatedOperator):
        def prompt(self, step, instruction, index=None):
            super().prompt(step, instruction, index)
            if step == "white":
                self.camera.source = None

    with pytest.raises(MosaicNotFound, match="no 3x3 filter mosaic found in the flat"):
        _bad_run(tmp_path, tmp_path / "cal.h5", operator_class=Unlit)


def test_cli_registers_calibrate_as_a_group():
    from hyplex.cli.calibrate import register

    app = typer.Typer()
    register(app)

    @app.command()
    def other() -> None:  # a second command so typer keeps sub-command names
        pass

    result = CliRunner().invoke(app, ["calibrate", "--help"])
    assert result.exit_code == 0 and "--out" in result.output
    from hyplex.devices.instruments import requirements_text

    shown = " ".join(result.output.split())
    for line in requirements_text().splitlines():  # what each instrument's driver needs
        assert " ".join(line.split()) in shown, line
    assert "settable exposure time" in shown
    result = CliRunner().invoke(app, ["calibrate", "--camera", "nonsense:0"])
    assert result.exit_code != 0


def test_ctrl_c_leaves_a_resumable_file_and_exit_code_130(tmp_path, monkeypatch):
    """Ctrl-C in the EMVA step (after darks and flat): the CLI says how to go on, exits 130,
    and the partial file holds the finished steps."""
    import hyplex.calibration.pipeline as pipeline
    from hyplex.cli import app

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline.emva, "photon_transfer", interrupt)
    out = tmp_path / "cal.h5"
    arguments = ["calibrate", "--rows", "96", "--cols", "104", "--samples", "0", "--out", str(out)]
    result = CliRunner().invoke(app, [*arguments, "--grid", "450:650:100"])
    assert result.exit_code == 130, result.output
    assert "--resume" in result.output
    partial = load_calibration(out, allow_partial=True)
    assert partial.status == "partial" and {"dark", "flat"} <= set(partial.sections)
    again = CliRunner().invoke(app, [*arguments, "--grid", "450:650:100"])
    assert again.exit_code == 2 and "exists" in again.output  # never overwritten


def test_the_console_operator_shows_the_instruction_and_waits_for_enter(monkeypatch, capsys):
    import io

    from hyplex.calibration.operator import INSTRUCTIONS, ScriptedOperator
    from hyplex.cli.calibrate import ConsoleOperator

    monkeypatch.setattr("sys.stdin", io.StringIO("\n"))
    ConsoleOperator().prompt("darks", INSTRUCTIONS["darks"])
    shown = capsys.readouterr().err
    assert "[darks] Cover the lens" in shown and "Press Enter" in shown
    scripted = ScriptedOperator()
    scripted.prompt("sample", "place sample 1", index=0)
    assert scripted.log == [("sample", 0)]
    with pytest.raises(ValueError, match="unknown operator step"):
        scripted.prompt("coffee", "make coffee")

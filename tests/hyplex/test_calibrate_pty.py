"""``hyplex calibrate`` end to end through the real code paths: the monochromator and the
power meter run as ``hyplex sim-device --pty`` processes (pyserial on a pseudo-terminal, the
line protocol, timeouts), the simulated camera in the calibrating process sees their light
through the bench-state folder (``hyplex.devices.bench_link``); then ``hyplex refit`` and
``hyplex segment`` use the file. Faults: the monochromator stops answering mid-sweep (the run
resumes after a restart), a garbled reply on a pty (retried, then a clear error)."""

import os
import select
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import numpy as np
import pytest
from typer.testing import CliRunner

from hyplex.calibration.store import load_calibration
from hyplex.cli import app

pytestmark = pytest.mark.timeout(300)
SIM_OPTIONS = ["--rows", "96", "--cols", "104", "--samples", "0", "--instrument-timeout-s", "0.5"]


class SimDevice:
    """One ``hyplex sim-device <kind> --pty --bench-state FOLDER`` process."""

    def __init__(self, kind: str, folder):
        command = [sys.executable, "-m", "hyplex", "sim-device", kind, "--pty"]
        self.process = subprocess.Popen(
            [*command, "--bench-state", str(folder)], stdout=subprocess.PIPE, text=True
        )
        ready, _, _ = select.select([self.process.stdout], [], [], 60.0)
        line = self.process.stdout.readline() if ready else ""
        if " on " not in line:
            self.stop()
            raise RuntimeError(f"hyplex sim-device {kind} did not start: {line!r}")
        self.port = line.split(" on ")[1].split()[0]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)  # also ends a SIGSTOPped process
            self.process.wait(timeout=10)
        self.process.stdout.close()


@pytest.fixture
def bench(tmp_path):
    folder = tmp_path / "bench"
    folder.mkdir()
    devices = SimpleNamespace(folder=folder, started=[])

    def start(kind):
        device = SimDevice(kind, folder)
        devices.started.append(device)
        return device

    devices.start = start
    yield devices
    for device in devices.started:
        device.stop()


def _calibrate(bench, mono, meter, out, *extra):
    arguments = ["calibrate", *SIM_OPTIONS, "--monochromator", mono.port]
    arguments += ["--power-meter", meter.port, "--bench-state", str(bench.folder)]
    return CliRunner().invoke(app, [*arguments, "--out", str(out), *extra])


def test_calibrate_through_sim_device_processes_on_ptys(bench, tmp_path):
    """The fast variant: a short sweep through two instrument processes."""
    mono, meter = bench.start("monochromator"), bench.start("powermeter")
    out = tmp_path / "cal.h5"
    result = _calibrate(bench, mono, meter, out, "--grid", "450:650:100")
    assert result.exit_code == 0, result.output
    calibration = load_calibration(out)
    assert calibration.status == "complete"
    assert "Cornerstone" in calibration.provenance.devices["monochromator"]
    assert float(calibration.sections["emva"]["system_gain_pooled_dn_per_e"]) == pytest.approx(
        0.388, rel=0.05
    )  # the twin's K, measured with the pty instruments' light
    response = calibration.sections["spectral"]["response"]
    assert response.shape == (9, 3) and np.all(response[:, 1] > 0)
    assert out.with_suffix(".png").stat().st_size > 10_000


def _tiny_design(folder):
    """A saved design bundle (nine band-passes, a linear reconstructor, a small U-Net)."""
    import torch

    from hyplex.hil.refit import _linear_decoder, _scenes
    from hyplex.models.bundle import default_layout, save_bundle
    from hyplex.models.codesign import CodesignModel, CodesignResult
    from hyplex.models.codesign_config import CodesignConfig
    from hyplex.models.encoder import FixedResponseEncoder
    from hyplex.models.encoder_capture import CaptureSettings
    from hyplex.models.segmentation import UNet

    torch.manual_seed(0)
    config = CodesignConfig(scene_size=24, n_objects=3, bands=34, seed=3)
    grid = config.wavelengths_nm
    centres = np.linspace(420, 710, 9)
    responses = 0.9 * np.exp(-0.5 * ((grid[None] - centres[:, None]) / 20.0) ** 2) + 0.02
    record = SimpleNamespace(
        path="memory", wavelengths_nm=grid, responses=responses, layout=default_layout(9),
        capture=CaptureSettings(), config=config.to_dict(), metrics={},
    )  # fmt: skip
    train = _scenes(record, 3, seed=11)
    encoder = FixedResponseEncoder(responses, grid, record.capture)
    reconstructor = _linear_decoder(encoder, train, 2048, 1e-5, seed=0)
    segmenter = UNet(9, train.n_classes, base_channels=4, depth=2).eval()
    model = CodesignModel(encoder, reconstructor, segmenter)
    held_out = _scenes(record, 1, config.seed + 1)
    result = CodesignResult(model, config.replace(reconstructor="linear", reconstructor_config={}),
                            grid, train.class_names, {}, {}, {"kind": "fixed",
                            "responses": responses}, held_out, 0.0)  # fmt: skip
    return save_bundle(folder / "design", result, report=False)


@pytest.mark.slow
def test_pty_calibration_resumes_after_a_silent_monochromator_then_refit_and_segment(
    bench, tmp_path, monkeypatch
):
    """The monochromator process stops answering (SIGSTOP) after three sweep wavelengths: a
    clear error and a partial file; a new process on a new pty and --resume finish it; the
    file then drives ``hyplex refit`` and ``hyplex segment``."""
    import hyplex.calibration.pipeline as pipeline

    design = _tiny_design(tmp_path)
    mono, meter = bench.start("monochromator"), bench.start("powermeter")
    save = pipeline.save_calibration
    stopped = []

    def save_then_freeze(path, calibration):
        saved = save(path, calibration)
        sweep = calibration.sections.get("sweep", {})
        if not stopped and len(sweep.get("wavelength_nm", ())) == 3:
            os.kill(mono.process.pid, signal.SIGSTOP)  # alive, silent: replies time out
            stopped.append(time.monotonic())
        return saved

    monkeypatch.setattr(pipeline, "save_calibration", save_then_freeze)
    out = tmp_path / "cal.h5"
    options = ["--grid", "400:730:30", "--design", str(design), "--fabricate"]
    result = _calibrate(bench, mono, meter, out, *options)
    assert result.exit_code == 1, result.output
    assert "InstrumentTimeout" in result.output and "--resume" in result.output
    partial = load_calibration(out, allow_partial=True)
    assert partial.status == "partial" and len(partial.sections["sweep"]["wavelength_nm"]) == 3
    mono.stop()
    restarted = bench.start("monochromator")
    assert restarted.port  # a new pty
    resumed = _calibrate(bench, restarted, meter, out, *options, "--resume")
    assert resumed.exit_code == 0, resumed.output
    calibration = load_calibration(out)
    assert calibration.status == "complete"
    assert len(calibration.sections["sweep"]["wavelength_nm"]) == 12
    # the measured file drives the refit and the segmentation
    refit = tmp_path / "refit"
    run = CliRunner().invoke(
        app, ["refit", "--design", str(design), "--calibration", str(out), "--out", str(refit),
              "--steps", "3"],
    )  # fmt: skip
    assert run.exit_code == 0, run.output
    clip = tmp_path / "clip.h5"
    run = CliRunner().invoke(
        app, ["stream", "--camera", "sim", "--sim-shape", "96x104", "--frames", "2",
              "--seconds", "60", "--record", str(clip)],
    )  # fmt: skip
    assert run.exit_code == 0, run.output
    segmented = tmp_path / "segment"
    run = CliRunner().invoke(
        app, ["segment", str(clip), "--bundle", str(refit), "--calibration", str(out),
              "--out", str(segmented), "--no-video"],
    )  # fmt: skip
    assert run.exit_code == 0, run.output
    assert (segmented / "clip.labels.h5").exists()


def test_a_garbled_reply_on_a_pty_is_retried_then_a_clear_error(tmp_path):
    """A reply garbled once is retried; garbage on every attempt stops the run with the
    driver's error, and the partial file resumes."""
    from hyplex.calibration.pipeline import CalibrationInterrupted, PipelineSettings
    from hyplex.calibration.sim_bench_config import simulated_configuration
    from hyplex.devices import Monochromator, PowerMeter, PtyBridge
    from hyplex.devices.sim_bench import SimulatedBench
    from hyplex.simulation.camera import default_camera
    from hyplex.simulation.grids import prototype_grid

    twin = default_camera(prototype_grid(), (96, 104), pitch_px=5.3, rotation_deg=1.0)
    settings = PipelineSettings(dark_frames=2, flat_frames=3, emva_exposures=6,
                                emva_stack_frames=2, sweep_frames=2, n_samples=0)  # fmt: skip
    bench = SimulatedBench()
    config = simulated_configuration(twin, bench, settings, np.linspace(450, 650, 5))
    out = tmp_path / "cal.h5"

    def run(progress=None, resume=False):
        from hyplex.calibration.pipeline import calibrate

        with (
            PtyBridge(bench.monochromator) as bridge,
            Monochromator(bridge.port, clock=bench.clock, timeout_s=0.3) as mono,
            PowerMeter(bench.urls["powermeter"]) as meter,
        ):
            return calibrate(
                config.camera, mono, meter, wavelengths_nm=config.wavelengths_nm,
                operator=config.operator, settings=config.settings, out=out, resume=resume,
                progress=progress, clock=bench.clock, camera_id=config.camera_id,
            )  # fmt: skip

    def garble(step, done, total):
        if step == "sweep" and done == 1:
            bench.monochromator.faults.garbled = 1  # retried: the sweep goes on
        if step == "sweep" and done == 3:
            bench.monochromator.faults.garbled = 10**6

    with config.camera:
        with pytest.raises(CalibrationInterrupted, match="GarbledReply") as caught:
            run(garble)
        assert "sweep (3 of 5 wavelengths)" in str(caught.value)
        bench.monochromator.faults.garbled = 0
        assert run(resume=True).status == "complete"


def test_a_real_camera_that_cannot_set_exposure_is_refused_before_anything_is_written(
    bench, tmp_path
):
    """The real-camera path: an OpenCV image sequence (no exposure control) with instruments
    on ptys (no --bench-state: they are what a lab has) is named, and no file appears."""
    import cv2

    for index in range(3):
        image = np.full((64, 72), 1000 + index, np.uint16)
        assert cv2.imwrite(str(tmp_path / f"frame_{index:04d}.png"), image)
    mono, meter = bench.start("monochromator"), bench.start("powermeter")
    out = tmp_path / "cal.h5"
    arguments = ["calibrate", "--camera", f"opencv:{tmp_path / 'frame_%04d.png'}", "--yes"]
    arguments += ["--monochromator", mono.port, "--power-meter", meter.port, "--out", str(out)]
    result = CliRunner().invoke(app, arguments)
    assert result.exit_code == 2, result.output
    assert "cannot set its exposure" in result.output and "settable exposure" in result.output
    assert not out.exists()
    # a real camera cannot see a simulated monochromator's light
    result = CliRunner().invoke(
        app, ["calibrate", "--camera", "opencv:0", "--out", str(tmp_path / "other.h5")]
    )
    assert result.exit_code == 2 and "simulated" in result.output

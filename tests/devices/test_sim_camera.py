"""SimulatedCamera: settings change the physics, the virtual clock, faults, and a calibration
run through the simulated instruments."""

import numpy as np
import pytest

from hyplex.devices.clock import VirtualClock
from hyplex.devices.errors import CameraDisconnected
from hyplex.devices.frame import ROI, FrameStatus, PixelFormat
from hyplex.devices.instruments import Monochromator, PowerMeter, SimulatedBench
from hyplex.devices.recorder import Recording, record
from hyplex.devices.sim_camera import SimulatedCamera, SimulatedFaults, expected_dn

# acquisition threads: a hang fails here, with stacks
pytestmark = pytest.mark.timeout(120)


def _signal(frame, camera):
    """Mean DN above the dark level (black + dark current)."""
    return frame.data.mean() - expected_dn(camera, 0.0)


def test_exposure_and_gain_scale_the_signal(sim_camera):
    with sim_camera as camera:
        camera.exposure_us = 500
        base = _signal(camera.snap(), camera)
        camera.exposure_us = 1000
        doubled = _signal(camera.snap(), camera)
        camera.gain_db = 6.0
        gained = _signal(camera.snap(), camera)
    assert base > 20
    assert doubled / base == pytest.approx(2.0, rel=0.03)
    assert gained / doubled == pytest.approx(10 ** (6 / 20), rel=0.03)


def test_pixel_formats_rescale_the_adc_bits(sim_camera):
    with sim_camera as camera:
        camera.seed = 5
        native = camera.snap().data.astype(np.int64)  # Mono12
        camera.pixel_format = "Mono8"
        mono8 = camera.snap()
        camera.pixel_format = PixelFormat.MONO16
        mono16 = camera.snap()
    assert mono8.data.dtype == np.uint8 and mono8.bit_depth == 8
    assert mono16.data.dtype == np.uint16 and mono16.data.max() >= 16 * 16
    assert mono8.data.mean() == pytest.approx(native.mean() / 16, rel=0.05)
    assert mono16.data.mean() == pytest.approx(native.mean() * 16, rel=0.05)
    assert np.all(mono16.data % 16 == 0)


def test_roi_crops_the_full_frame(twin, scene):
    full = SimulatedCamera(scene, twin, clock=VirtualClock(), seed=3)
    cropped = SimulatedCamera(scene, twin, clock=VirtualClock(), seed=3)
    with full, cropped:
        cropped.roi = ROI(10, 20, 40, 30)
        assert np.array_equal(cropped.snap().data, full.snap().data[20:50, 10:50])


def test_virtual_clock_gives_exact_timing_without_sleeping(sim_camera):
    with sim_camera as camera:
        camera.frame_rate_hz = 50.0
        camera.start(n=20)
        frames = list(camera.frames())
    stamps = np.array([f.device_timestamp_ns for f in frames])
    assert np.all(np.diff(stamps) == 20_000_000)
    assert camera.clock.now_ns() >= 20 * 20_000_000
    assert camera.stats.dropped == 0


def test_exposure_longer_than_the_period_lowers_the_frame_rate(sim_camera):
    with sim_camera as camera:
        camera.frame_rate_hz = 100.0
        camera.exposure_us = 20_000
        assert camera.frame_rate_hz == pytest.approx(50.0)


def test_dropped_and_incomplete_frames_are_counted(twin, scene):
    faults = SimulatedFaults(drop_frame_ids=frozenset({2, 3}), incomplete_frame_ids={5})
    with SimulatedCamera(scene, twin, clock=VirtualClock(), faults=faults) as camera:
        camera.start(n=6)
        ids = [f.frame_id for f in camera.frames()]
        stats = camera.stats
        camera.start(n=6, keep_incomplete=True)
        kept = list(camera.frames())
    assert ids == [0, 1, 4, 6, 7, 8]
    assert stats.dropped_device == 3 and stats.incomplete == 1 and stats.acquired == 9
    incomplete = [f for f in kept if f.frame_id == 5][0]
    assert incomplete.status is FrameStatus.INCOMPLETE
    assert np.all(incomplete.data[incomplete.data.shape[0] // 2 :] == 0)


def test_slow_host_on_a_real_clock_loses_frames_in_the_device(twin, scene):
    """The device keeps 2 frames: a host reading nothing for 1 s at 100 fps loses most.

    Rendering stalls the simulated device (no frame is lost to the simulation's own cost), so
    the first render's one-off work (numba compilation, seconds on a loaded machine) would eat
    the host's idle time: one snap before streaming does it, and the wait has a 10x margin
    over the 10 frames asserted."""
    with SimulatedCamera(scene, twin, frame_rate_hz=100.0, device_buffers=2) as camera:
        camera.exposure_us = 1000
        camera.snap()
        camera.start(n=None, policy="block", buffer_frames=2)
        import time

        time.sleep(1.0)
        frames = [camera.read(timeout=2.0) for _ in range(6)]
        camera.stop()
    assert camera.stats.dropped_device > 10
    ids = [f.frame_id for f in frames]
    assert ids == sorted(ids) and ids[-1] - ids[0] > 5


def test_disconnect_mid_stream_raises_after_the_committed_frames(twin, scene, tmp_path):
    faults = SimulatedFaults(disconnect_at_frame=7)
    path = tmp_path / "cut.h5"
    with SimulatedCamera(scene, twin, clock=VirtualClock(), faults=faults) as camera:
        with pytest.raises(CameraDisconnected, match="frame 7"):
            record(camera, path, n_frames=20)
        with pytest.raises(CameraDisconnected):
            camera.snap()
    with Recording(path) as recording:
        assert len(recording) == 7
        assert [int(i) for i in recording.metadata["frame_id"]] == list(range(7))
        assert recording[6].shape == (96, 128)


def test_calibration_sweep_end_to_end(twin):
    """Drive the monochromator and power meter over sim:// serial; the camera sees the line."""
    bench = SimulatedBench()
    clock = bench.clock
    camera = SimulatedCamera(bench, twin, clock=clock, exposure_us=5000)
    with (
        camera,
        Monochromator(bench.urls["monochromator"], clock=clock) as mono,
        PowerMeter(bench.urls["powermeter"]) as meter,
    ):
        dark = camera.snap().data.mean()
        mono.open_shutter()
        signals, powers = [], []
        for wavelength in (450.0, 550.0, 650.0, 700.0):  # the 34-band grid ends at 730 nm
            assert mono.go_to(wavelength) == pytest.approx(wavelength)
            meter.set_wavelength_nm(wavelength)
            frame = camera.snap()
            assert frame.extra["monochromator_wavelength_nm"] == pytest.approx(wavelength)
            signals.append(frame.data.mean() - dark)
            powers.append(meter.power_W())
        mono.close_shutter()
        closed = camera.snap().data.mean()
    assert min(signals) > 20 and all(p > 0 for p in powers)
    assert closed == pytest.approx(dark, abs=1.0)
    # the barcode changes with wavelength: different filters respond in different bands
    assert len({round(s, -1) for s in signals}) > 1


def test_video_source_changes_over_time_and_cycles(twin):
    from hyplex.simulation.video import make_video

    video = make_video(3, (48, 64), twin.wavelengths_nm, n_objects=2, speed_px=(6, 8), seed=2)
    with SimulatedCamera(video, twin, clock=VirtualClock(), cycle_frames=3) as camera:
        camera.start(n=6)
        means = [f.data.astype(float).mean() for f in camera.frames()]
    assert means[0] != means[1]
    assert means[:3] == means[3:]  # the loop of 3 rendered frames

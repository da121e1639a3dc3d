"""One conformance suite for every camera backend: the simulated camera, OpenCV on a 16-bit
PNG sequence, and GenICam on the viky GenTL simulator."""

import math

import numpy as np
import pytest

from hyplex.devices.camera import Camera, CameraCapabilities
from hyplex.devices.clock import VirtualClock
from hyplex.devices.errors import (
    CameraBusy,
    CameraError,
    CameraTimeout,
    SettingUnavailable,
    StreamEnded,
)
from hyplex.devices.frame import ROI, Frame, FrameStatus
from hyplex.devices.genicam_camera import GenICamCamera
from hyplex.devices.opencv_camera import OpenCVCamera
from hyplex.devices.ring import OverflowPolicy
from hyplex.devices.sim_camera import SimulatedCamera

# acquisition threads: a hang fails here, with stacks
pytestmark = pytest.mark.timeout(120)


@pytest.fixture(params=["sim", "opencv", "genicam"])
def camera(request, twin, scene, png_sequence):
    if request.param == "sim":
        device = SimulatedCamera(scene, twin, clock=VirtualClock())
    elif request.param == "opencv":
        device = OpenCVCamera(png_sequence, loop=True)
    else:
        device = GenICamCamera(request.getfixturevalue("viky"))
    with device:
        if request.param == "genicam":
            device.roi = ROI(0, 0, 160, 120)
            device.frame_rate_hz = 200.0
        yield device


class TestCameraConformance:
    def test_is_a_camera_with_capabilities(self, camera):
        assert isinstance(camera, Camera)
        caps = camera.capabilities()
        assert isinstance(caps, CameraCapabilities)
        assert caps.backend == camera.backend
        assert camera.pixel_format in caps.pixel_formats
        assert camera.bit_depth == camera.pixel_format.bits
        rows, cols = caps.sensor_shape
        assert camera.roi.height <= rows and camera.roi.width <= cols

    def test_settings_read_back_or_say_unavailable(self, camera):
        caps = camera.capabilities()
        for name, bounds in (("exposure_us", caps.exposure_us), ("gain_db", caps.gain_db)):
            if bounds is None:
                with pytest.raises(SettingUnavailable):
                    setattr(camera, name, 1.0)
                continue
            target = bounds[0] + 0.25 * (bounds[1] - bounds[0])
            setattr(camera, name, target)
            assert getattr(camera, name) == pytest.approx(target, rel=1e-2, abs=1.0)
            with pytest.raises(ValueError, match=name):
                setattr(camera, name, bounds[1] * 10 + 10)

    def test_snap_returns_a_frame_matching_the_settings(self, camera):
        frame = camera.snap(timeout=5.0)
        assert isinstance(frame, Frame)
        assert frame.data.shape == camera.roi.shape
        assert frame.data.dtype == camera.pixel_format.dtype
        assert frame.pixel_format is camera.pixel_format
        assert frame.status is FrameStatus.COMPLETE
        assert frame.host_timestamp_ns > 0 or isinstance(camera.clock, VirtualClock)
        if camera.capabilities().exposure_us is not None:
            assert frame.exposure_us == pytest.approx(camera.exposure_us)
        else:
            assert math.isnan(frame.exposure_us)

    def test_stream_of_n_frames_in_order_then_ends(self, camera):
        camera.start(n=6, policy="block", buffer_frames=3)
        frames = list(camera.frames(timeout=5.0))
        assert [f.seq for f in frames] == list(range(6))
        ids = [f.frame_id for f in frames]
        assert ids == sorted(ids) and len(set(ids)) == 6
        assert all(f.data.shape == camera.roi.shape for f in frames)
        stamps = [f.host_timestamp_ns for f in frames]
        assert stamps == sorted(stamps)
        with pytest.raises(StreamEnded):
            camera.read(timeout=1.0)
        stats = camera.stats
        # BLOCK never overwrites on the host. A free-running device (GenICam viky) may still
        # skip frame ids when the host is starved of CPU; those gaps must be counted.
        assert stats.delivered == 6 and stats.dropped_host == 0 and stats.acquired >= 6
        assert stats.dropped_device >= (ids[-1] - ids[0] + 1) - 6
        camera.stop()
        assert not camera.is_streaming

    def test_zero_copy_read_holds_the_slot_until_released(self, camera):
        camera.start(n=3, buffer_frames=2)
        frame = camera.read(timeout=5.0, copy=False)
        kept = frame.data.copy()
        second = camera.read(timeout=5.0, copy=False)
        assert np.array_equal(frame.data, kept)  # not reused while held
        frame.release()
        second.release()
        camera.stop()

    def test_roi_and_format_cannot_change_while_streaming(self, camera):
        camera.start(policy=OverflowPolicy.NEWEST_ONLY, buffer_frames=3)
        try:
            with pytest.raises(CameraBusy):
                camera.roi = ROI(0, 0, 16, 16)
            with pytest.raises(CameraBusy):
                camera.pixel_format = camera.pixel_format
            with pytest.raises(CameraBusy):
                camera.snap()
            camera.read(timeout=5.0)
        finally:
            camera.stop()

    def test_roi_changes_the_frame_shape(self, camera):
        caps = camera.capabilities()
        if not caps.roi:
            pytest.skip(f"{camera.backend} has no ROI")
        rows, cols = caps.sensor_shape
        roi = ROI(0, 0, cols - 8, rows - 16)
        camera.roi = roi
        assert camera.roi == roi
        assert camera.snap().data.shape == (rows - 16, cols - 8)
        with pytest.raises(ValueError):
            camera.roi = ROI(0, 0, 100_000, 32)

    def test_drop_oldest_accounts_for_overwritten_frames(self, camera):
        camera.start(n=12, policy="drop_oldest", buffer_frames=2)
        camera._thread.join(timeout=10)  # let the device fill the ring with nobody reading
        delivered = list(camera.frames(timeout=5.0))
        stats = camera.stats
        assert stats.delivered == len(delivered) < 12
        assert stats.dropped_host == 12 - len(delivered)
        seqs = [f.seq for f in delivered]
        assert seqs == sorted(seqs) and seqs[-1] == 11

    def test_read_without_stream_and_restart(self, camera):
        with pytest.raises(CameraError, match="start"):
            camera.read(timeout=0.01)
        for _ in range(2):
            camera.start(n=2)
            assert len(list(camera.frames(timeout=5.0))) == 2
            camera.stop()

    def test_closed_camera_refuses_to_snap(self, camera):
        camera.close()
        with pytest.raises(CameraError):
            camera.snap()


def test_read_timeout_is_a_camera_timeout(twin, scene):
    """Real-time clock, 2 Hz: nothing arrives within 50 ms."""
    with SimulatedCamera(scene, twin, frame_rate_hz=2.0) as camera:
        camera.start()
        try:
            with pytest.raises(CameraTimeout):
                camera.read(timeout=0.05)
        finally:
            camera.stop()


def test_genicam_reports_what_the_producer_lacks(viky):
    from hyplex.devices.genicam_camera import find_producers

    assert viky in find_producers()
    with GenICamCamera(viky) as camera:
        caps = camera.capabilities()
        assert caps.exposure_us is None and caps.gain_db is None
        assert any("ExposureTime" in note for note in caps.notes)
        assert math.isnan(camera.exposure_us)
        assert caps.pixel_formats and all(f.value.startswith("Mono") for f in caps.pixel_formats)
        with pytest.raises(SettingUnavailable, match="OffsetX"):
            camera.roi = ROI(8, 8, 200, 200)

"""``SimulatedCamera``: the camera digital twin behind the :class:`Camera` protocol.

    source (Scene | Video | radiance cube | SimulatedBench | None)
        --CameraTwin.expected_electrons (per us, cached)--> electrons x exposure_us
        --EMVA 1288 sensor kernel (gain scales K)--> raw (adc_bits) --format, ROI--> slot

Settings change the physics: ``exposure_us`` scales the signal and the dark current,
``gain_db`` scales the system gain K by 10^(gain/20), ``pixel_format`` rescales the ADC's
``adc_bits`` to the format's bits, the ROI crops the sensor. With a
:class:`~hyplex.devices.sim_bench.SimulatedBench` as source, every frame sees the current
state of the simulated instruments (monochromator wavelength and slit, shutter, filter),
recorded in ``frame.extra``.

Timing runs on the camera's clock: frame k is exposed during [t0 + k T, t0 + (k + 1) T),
T = 1 / frame rate (at most one exposure long), and is ready at its end. A
:class:`~hyplex.devices.clock.VirtualClock` makes a stream instant and exact in tests. The
simulated device holds ``device_buffers`` finished frames: a host that falls further behind
loses the oldest (a frame-id gap, as on a real camera).

Rendering cost: a noisy 4000 x 3000 frame takes seconds on two cores, far from 30 fps. With
``cycle_frames=K`` the camera renders K noisy frames once per state (source, exposure, gain)
and plays them in a loop (a video source: its first K frames); only the copy into the ring
remains per frame. ``cycle_frames=0`` renders every frame (exact noise; small sensors). Time
spent rendering is taken out of the device clock (the simulated device pauses): a slow
render lowers the frame rate, it does not make the device lose frames.

Faults (:class:`SimulatedFaults`): frame ids that never arrive (gaps), incomplete buffers
(bottom half zero, status INCOMPLETE), and a disconnect at a frame id.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from hyplex.devices.camera import CameraCapabilities
from hyplex.devices.clock import Clock
from hyplex.devices.errors import CameraDisconnected, CameraTimeout
from hyplex.devices.frame import ROI, FrameStatus, PixelFormat
from hyplex.devices.streaming import Grab, StreamingCamera, check_range

EXPOSURE_RANGE_US = (10.0, 1_000_000.0)
GAIN_RANGE_DB = (0.0, 24.0)
FRAME_RATE_RANGE_HZ = (0.1, 1000.0)


@dataclass(frozen=True)
class SimulatedFaults:
    """Faults of the simulated device, by frame id (frame ids restart at 0 on ``start``).

    Attributes
    ----------
    drop_frame_ids : frozenset of int
        Frames the device loses (the host sees a frame-id gap).
    incomplete_frame_ids : frozenset of int
        Frames delivered incomplete (status INCOMPLETE; dropped unless kept).
    disconnect_at_frame : int or None
        The device disconnects instead of delivering this frame id (and later ones).
    """

    drop_frame_ids: frozenset = frozenset()
    incomplete_frame_ids: frozenset = frozenset()
    disconnect_at_frame: int | None = None


class SimulatedCamera(StreamingCamera):
    """The camera twin as a :class:`~hyplex.devices.camera.Camera` (see the module doc).

    Parameters
    ----------
    source : Scene, Video, numpy.ndarray (Hs, Ws, L), SimulatedBench or None
        What the camera looks at; a cube is radiance in W m^-2 sr^-1 nm^-1 on the twin's
        grid; None gives dark frames.
    twin : CameraTwin, optional
        Default: ``default_camera`` on the source's grid (or the 34-band prototype grid) with
        a sensor of ``sensor_shape``.
    sensor_shape : (int, int)
        Sensor (rows, cols) when ``twin`` is not given.
    exposure_us, gain_db, frame_rate_hz : float
        Initial settings.
    clock : Clock, optional
        Device time and host timestamps (default: monotonic).
    faults : SimulatedFaults, optional
    cycle_frames : int
        K > 0: render K frames per state and loop them; 0: render every frame.
    device_buffers : int
        Finished frames the device keeps for a late host (>= 1).
    seed : int
        Temporal noise.
    """

    backend = "sim"

    def __init__(
        self,
        source=None,
        twin=None,
        sensor_shape=(3000, 4000),
        exposure_us: float = 1000.0,
        gain_db: float = 0.0,
        frame_rate_hz: float = 30.0,
        clock: Clock | None = None,
        faults: SimulatedFaults | None = None,
        cycle_frames: int = 0,
        device_buffers: int = 4,
        seed: int = 0,
        poll_s: float = 0.1,
    ):
        super().__init__(clock, poll_s)
        if int(cycle_frames) != cycle_frames or cycle_frames < 0:
            raise ValueError(f"cycle_frames must be an integer >= 0, got {cycle_frames!r}")
        if int(device_buffers) != device_buffers or device_buffers < 1:
            raise ValueError(f"device_buffers must be an integer >= 1, got {device_buffers!r}")
        self.source = source
        self.twin = twin if twin is not None else _default_twin(source, sensor_shape)
        self.faults = faults or SimulatedFaults()
        self.cycle_frames, self.device_buffers, self.seed = int(cycle_frames), device_buffers, seed
        sensor = self.twin.sensor
        self._exposure_us = check_range("exposure_us", exposure_us, EXPOSURE_RANGE_US, " us")
        self._gain_db = check_range("gain_db", gain_db, GAIN_RANGE_DB, " dB")
        self._frame_rate_hz = check_range("frame_rate_hz", frame_rate_hz, FRAME_RATE_RANGE_HZ)
        self._pixel_format = PixelFormat.for_bits(max(sensor.adc_bits, 8))
        self._roi = ROI.full(sensor.shape)
        self._per_us_cache: dict = {}
        self._cycle_key, self._cycle = None, []
        self._gained = None
        self._stall_ns = 0
        self._disconnected = False
        self._t0_ns, self._next_id, self._rendered = 0, 0, 0

    # settings -----------------------------------------------------------------------------

    def capabilities(self) -> CameraCapabilities:
        formats = tuple(f for f in PixelFormat if f.bits <= 16)
        return CameraCapabilities(
            backend="sim",
            model=f"hyplex CameraTwin ({self.twin.encoder.name})",
            sensor_shape=self.twin.sensor.shape,
            pixel_formats=formats,
            exposure_us=EXPOSURE_RANGE_US,
            gain_db=GAIN_RANGE_DB,
            frame_rate_hz=FRAME_RATE_RANGE_HZ,
            roi=True,
            device_timestamps=True,
        )

    @property
    def exposure_us(self) -> float:
        """Exposure, us (1 us steps)."""
        return self._exposure_us

    @exposure_us.setter
    def exposure_us(self, value: float) -> None:
        value = check_range("exposure_us", value, EXPOSURE_RANGE_US, " us")
        with self._device_lock:
            self._exposure_us = float(round(value))

    @property
    def gain_db(self) -> float:
        """Analog gain, dB (0.1 dB steps): K is multiplied by 10^(gain_db / 20)."""
        return self._gain_db

    @gain_db.setter
    def gain_db(self, value: float) -> None:
        value = check_range("gain_db", value, GAIN_RANGE_DB, " dB")
        with self._device_lock:
            self._gain_db = round(value, 1)

    @property
    def frame_rate_hz(self) -> float:
        """Frame rate, Hz: the set rate, lowered to 1 / exposure when that is longer."""
        return min(self._frame_rate_hz, 1e6 / self._exposure_us)

    @frame_rate_hz.setter
    def frame_rate_hz(self, value: float) -> None:
        value = check_range("frame_rate_hz", value, FRAME_RATE_RANGE_HZ, " Hz")
        with self._device_lock:
            self._frame_rate_hz = value

    @property
    def pixel_format(self) -> PixelFormat:
        return self._pixel_format

    @pixel_format.setter
    def pixel_format(self, value: PixelFormat | str) -> None:
        self._require_stopped("the pixel format")
        self._pixel_format = PixelFormat.parse(value)

    @property
    def roi(self) -> ROI:
        return self._roi

    @roi.setter
    def roi(self, value: ROI | None) -> None:
        self._require_stopped("the ROI")
        shape = self.twin.sensor.shape
        self._roi = ROI.full(shape) if value is None else value.check_within(shape)

    # device hooks -------------------------------------------------------------------------

    def _open_device(self) -> None:
        self._disconnected = False

    def _close_device(self) -> None:
        self._cycle_key, self._cycle = None, []

    def _start_device(self) -> None:
        self._t0_ns, self._next_id, self._stall_ns = self.clock.now_ns(), 0, 0

    def _grab_into(self, out: np.ndarray, timeout_s: float) -> Grab:
        if self._disconnected:
            raise CameraDisconnected("the simulated camera is disconnected: reopen it")
        period_ns = round(1e9 / self.frame_rate_hz)
        while True:
            frame_id = self._next_id
            due_ns = self._t0_ns + (frame_id + 1) * period_ns
            now = self.clock.now_ns()
            if due_ns > now:
                wait_s = (due_ns - now) * 1e-9
                if wait_s > timeout_s:
                    self.clock.sleep(timeout_s)
                    raise CameraTimeout(f"no frame within {timeout_s} s")
                self.clock.sleep(wait_s)
                now = max(self.clock.now_ns(), due_ns)
            newest = (now - self._t0_ns) // period_ns - 1
            frame_id = max(frame_id, newest - self.device_buffers + 1)  # device overflow
            self._next_id = frame_id + 1
            if frame_id not in self.faults.drop_frame_ids:
                break
        faults = self.faults
        if faults.disconnect_at_frame is not None and frame_id >= faults.disconnect_at_frame:
            self._disconnected = True
            raise CameraDisconnected(f"simulated disconnect at frame {frame_id}")
        self._render_into(out, frame_id)
        self._t0_ns += self._stall_ns  # the device waited for the simulation: no frame lost
        self._stall_ns = 0
        status = FrameStatus.COMPLETE
        if frame_id in faults.incomplete_frame_ids:
            out[out.shape[0] // 2 :] = 0
            status = FrameStatus.INCOMPLETE
        extra = self.source.state() if hasattr(self.source, "state") else {}
        return Grab(
            frame_id=frame_id,
            device_timestamp_ns=self._t0_ns + frame_id * period_ns,
            status=status,
            exposure_us=self._exposure_us,
            gain_db=self._gain_db,
            extra=extra,
        )

    # rendering ----------------------------------------------------------------------------

    def render_raw(self, frame_index: int) -> np.ndarray:
        """Full-sensor raw frame (uint16, ``adc_bits``) at the current settings."""
        if self.cycle_frames:
            key = (self._state_key(0), self._exposure_us, self._gain_db)
            if key != self._cycle_key:
                self._cycle = [self._render_exact(i) for i in range(self.cycle_frames)]
                self._cycle_key = key
            return self._cycle[frame_index % self.cycle_frames]
        return self._render_exact(frame_index)

    def _render_exact(self, frame_index: int) -> np.ndarray:
        start = self.clock.now_ns()
        raw = self._render_noisy(frame_index)
        self._stall_ns += self.clock.now_ns() - start
        return raw

    def _render_noisy(self, frame_index: int) -> np.ndarray:
        electrons = self._electrons_per_us(frame_index) * np.float32(self._exposure_us)
        raw = self._twin_at_gain().capture(
            electrons, self._exposure_us, seed=self.seed, frame_index=self._rendered
        )
        self._rendered += 1
        return raw

    def _twin_at_gain(self):
        """The twin with K scaled by the analog gain (a copy: its mosaic maps and fixed pattern,
        the same as the original's, are computed once per gain value)."""
        if self._gain_db == 0:
            return self.twin
        if self._gained is None or self._gained[0] != self._gain_db:
            sensor = self.twin.sensor
            gain = 10.0 ** (self._gain_db / 20.0)
            scaled = replace(sensor, system_gain_dn_per_e=sensor.system_gain_dn_per_e * gain)
            twin = replace(self.twin, sensor=scaled)
            self._gained = (self._gain_db, twin)
        return self._gained[1]

    def _render_into(self, out: np.ndarray, frame_id: int) -> None:
        raw = self.render_raw(frame_id)[self._roi.slices]
        shift = self._pixel_format.bits - self.twin.sensor.adc_bits
        if shift >= 0:
            np.left_shift(raw, shift, out=out, casting="unsafe")
        else:
            np.right_shift(raw, -shift, out=out, casting="unsafe")

    def _state_key(self, frame_index: int):
        source = self.source
        if source is None:
            return ("dark",)
        if hasattr(source, "state_key"):
            return ("bench", source.state_key())
        if hasattr(source, "n_frames"):
            return ("video", frame_index % source.n_frames)
        return ("static",)

    def _electrons_per_us(self, frame_index: int) -> np.ndarray:
        key = self._state_key(frame_index)
        cached = self._per_us_cache.get(key)
        if cached is None:
            if len(self._per_us_cache) >= 8:
                self._per_us_cache.clear()
            cached = self._compute_per_us(frame_index)
            self._per_us_cache[key] = cached
        return cached

    def _compute_per_us(self, frame_index: int) -> np.ndarray:
        twin, source = self.twin, self.source
        grid = twin.wavelengths_nm
        if source is None:
            return np.zeros(twin.sensor.shape, np.float32)
        if hasattr(source, "spectral_radiance"):
            radiance = np.asarray(source.spectral_radiance(grid), np.float32)[None, None, :]
        elif hasattr(source, "n_frames"):
            radiance = source.frame(frame_index % source.n_frames).radiance
        elif hasattr(source, "radiance"):
            radiance = source.radiance
        else:
            radiance = np.asarray(source, np.float32)
        return twin.expected_electrons(radiance, grid, 1.0)


def _default_twin(source, sensor_shape):
    from hyplex.simulation.camera import default_camera
    from hyplex.simulation.grids import prototype_grid

    grid = getattr(source, "wavelengths_nm", None)
    grid = prototype_grid() if grid is None else grid
    pitch = 7.287 if min(sensor_shape) >= 1000 else max(3.0, min(sensor_shape) / 20)
    return default_camera(grid, tuple(sensor_shape), pitch_px=pitch)


def expected_dn(camera: SimulatedCamera, electrons: float) -> float:
    """Mean raw value (DN of ``adc_bits``) for ``electrons`` at the camera's exposure and
    gain: EMVA 1288 eq. 9 with K scaled by the gain, clipped at the ADC's maximum."""
    sensor = camera.twin.sensor
    gain = 10.0 ** (camera.gain_db / 20.0)
    dark = sensor.dark_current_e_per_s * camera.exposure_us * 1e-6
    mean = sensor.black_level_dn + sensor.system_gain_dn_per_e * gain * (electrons + dark)
    return min(mean, float(sensor.max_dn))

"""Spectral response by monochromator sweep, with bandpass deconvolution and bootstrap errors.

For each wavelength lambda_j the sweep, through the instrument drivers (real or ``sim://``)::

    monochromator.go_to(lambda_j); clock.sleep(settle_s)        grating moved and settled
    power_meter: correction wavelength, P_j (shutter open), P_dark (shutter closed)   W
    auto-exposure: snap, lower 4x while saturated, scale towards 60-75 % of full scale
    N bright frames, shutter closed, N dark frames (same exposure), shutter open
    m_{f,j} = (mu_f,bright - mu_f,dark) / (t_j (P_j - P_dark))         DN s^-1 W^-1

mu_f is the mean over the pixels of filter channel f (the registered layout's channel map).
The monochromator passes a triangle of FWHM w (the slit function) times the lamp, so

    m_{f,j} = sum_i B_ji r_{f,i},   B_ji = l_i tri(lambda_i - lambda_j; w) q_i / sum_i (...)

with q_i the bin widths of the grid and l the lamp shape, estimated by the reference powers
themselves (P_j ~ lamp(lambda_j) w). The response r (C, L) on the swept grid is the ridge
(Tikhonov) solution with a second-difference penalty (A. N. Tikhonov, V. Y. Arsenin,
"Solutions of ill-posed problems", 1977; P. C. Hansen, "Rank-deficient and discrete ill-posed
problems", SIAM 1998, ch. 5)::

    r = argmin ||B r - m||^2 + alpha ||D2 r||^2 = (B^T B + alpha D2^T D2)^-1 B^T m

alpha is ``ridge`` x trace(B^T B) / L. The uncertainty is the standard deviation over
bootstrap resamples of the N bright and N dark frames of every wavelength.

A sweep that fails mid-way (an instrument timeout) raises :class:`SweepInterrupted`, carrying
the completed points; ``checkpoint`` has been called after every point, so a partial file
exists, and ``run_sweep(..., resume=record)`` continues where it stopped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from hyplex.devices.errors import InstrumentError
from hyplex.simulation.grids import bin_edges, quadrature_weights, resample

POWER_METER_RANGE_NM = (400.0, 1100.0)
SATURATION_FILL = 0.95


@dataclass(frozen=True)
class SweepSettings:
    """How to sweep.

    Attributes
    ----------
    wavelengths_nm : (L,) increasing wavelengths to visit, nm
    n_frames : bright and dark frames per wavelength
    settle_s : wait after each move, s (on the bench's clock)
    target_fill : (low, high) accepted brightest-channel level, fraction of full scale
    initial_exposure_us : first exposure tried, us
    max_exposure_iterations : auto-exposure attempts per wavelength
    meter_average : power meter samples per reading
    bandwidth_nm : monochromator FWHM (triangle), nm
    """

    wavelengths_nm: tuple[float, ...]
    n_frames: int = 4
    settle_s: float = 0.2
    target_fill: tuple[float, float] = (0.6, 0.75)
    initial_exposure_us: float = 1000.0
    max_exposure_iterations: int = 10
    meter_average: int = 10
    bandwidth_nm: float = 3.3

    def __post_init__(self):
        grid = np.asarray(self.wavelengths_nm, dtype=np.float64)
        if grid.ndim != 1 or grid.size < 3 or np.any(np.diff(grid) <= 0):
            raise ValueError("wavelengths_nm must hold >= 3 strictly increasing values (nm)")
        object.__setattr__(self, "wavelengths_nm", tuple(float(v) for v in grid))
        if int(self.n_frames) != self.n_frames or self.n_frames < 2:
            raise ValueError(f"n_frames must be an integer >= 2, got {self.n_frames}")
        low, high = self.target_fill
        if not 0 < low < high < 1:
            raise ValueError(f"target_fill must satisfy 0 < low < high < 1, got {self.target_fill}")
        if not self.bandwidth_nm > 0:
            raise ValueError(f"bandwidth_nm must be > 0, got {self.bandwidth_nm}")


@dataclass
class SweepPoint:
    """Raw measurements at one wavelength.

    Attributes
    ----------
    wavelength_nm, exposure_us : float
    reference_power_W, reference_dark_W : float
        Power meter with the shutter open and closed, W.
    bright_means_dn, dark_means_dn : numpy.ndarray (N, C)
        Channel means of every bright and dark frame, DN.
    saturated_attempts : int
        Auto-exposure attempts rejected as saturated.
    """

    wavelength_nm: float
    exposure_us: float
    reference_power_W: float
    reference_dark_W: float
    bright_means_dn: np.ndarray
    dark_means_dn: np.ndarray
    saturated_attempts: int = 0

    def response(self, bright=None, dark=None) -> np.ndarray:
        """m = (mu_bright - mu_dark) / (t P), DN s^-1 W^-1, (C,) (optionally resampled rows)."""
        bright = self.bright_means_dn if bright is None else bright
        dark = self.dark_means_dn if dark is None else dark
        power = self.reference_power_W - self.reference_dark_W
        signal = bright.mean(0) - dark.mean(0)
        return signal / (self.exposure_us * 1e-6 * power)


@dataclass
class SweepRecord:
    """Every point of a sweep so far, and its settings."""

    settings: SweepSettings
    points: list[SweepPoint] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return len(self.points) == len(self.settings.wavelengths_nm)

    def measured(self) -> tuple[np.ndarray, np.ndarray]:
        """(wavelengths (J,), m (C, J)) of the completed points."""
        wavelengths = np.array([p.wavelength_nm for p in self.points])
        return wavelengths, np.array([p.response() for p in self.points]).T

    def to_dict(self) -> dict:
        """Arrays and scalars for ``store`` (the inverse of :meth:`from_dict`)."""
        s = self.settings
        return {
            "settings_wavelengths_nm": np.array(s.wavelengths_nm),
            "settings_n_frames": s.n_frames,
            "settings_settle_s": s.settle_s,
            "settings_target_fill": np.array(s.target_fill),
            "settings_initial_exposure_us": s.initial_exposure_us,
            "settings_max_exposure_iterations": s.max_exposure_iterations,
            "settings_meter_average": s.meter_average,
            "settings_bandwidth_nm": s.bandwidth_nm,
            "wavelength_nm": np.array([p.wavelength_nm for p in self.points]),
            "exposure_us": np.array([p.exposure_us for p in self.points]),
            "reference_power_W": np.array([p.reference_power_W for p in self.points]),
            "reference_dark_W": np.array([p.reference_dark_W for p in self.points]),
            "bright_means_dn": np.array([p.bright_means_dn for p in self.points]),
            "dark_means_dn": np.array([p.dark_means_dn for p in self.points]),
            "saturated_attempts": np.array([p.saturated_attempts for p in self.points]),
        }

    @classmethod
    def from_dict(cls, data: dict) -> SweepRecord:
        settings = SweepSettings(
            wavelengths_nm=tuple(np.asarray(data["settings_wavelengths_nm"])),
            n_frames=int(data["settings_n_frames"]),
            settle_s=float(data["settings_settle_s"]),
            target_fill=tuple(float(v) for v in data["settings_target_fill"]),
            initial_exposure_us=float(data["settings_initial_exposure_us"]),
            max_exposure_iterations=int(data["settings_max_exposure_iterations"]),
            meter_average=int(data["settings_meter_average"]),
            bandwidth_nm=float(data["settings_bandwidth_nm"]),
        )
        points = [
            SweepPoint(float(w), float(t), float(p), float(d), np.asarray(b), np.asarray(k), int(s))
            for w, t, p, d, b, k, s in zip(
                np.atleast_1d(data["wavelength_nm"]),
                np.atleast_1d(data["exposure_us"]),
                np.atleast_1d(data["reference_power_W"]),
                np.atleast_1d(data["reference_dark_W"]),
                data["bright_means_dn"],
                data["dark_means_dn"],
                np.atleast_1d(data["saturated_attempts"]),
                strict=True,
            )
        ]
        return cls(settings, points)


class SweepInterrupted(RuntimeError):
    """An instrument failed mid-sweep; ``record`` holds the completed points (resumable)."""

    def __init__(self, message: str, record: SweepRecord):
        super().__init__(message)
        self.record = record


def channel_means(frame, channels, n_channels: int) -> np.ndarray:
    """Mean DN of each channel (C,) of one frame; ``channels`` -1 leaves a pixel out."""
    data = np.asarray(getattr(frame, "data", frame), dtype=np.float64)
    valid = channels >= 0
    index = channels[valid]
    count = np.bincount(index, minlength=n_channels)
    return np.bincount(index, data[valid], n_channels) / np.maximum(count, 1)


def auto_expose(camera, channels, settings: SweepSettings, dark_level_dn: float, exposure_us):
    """Exposure putting the brightest channel's 99.5th percentile in ``target_fill``.

    Saturation (more than 0.01 % of the channel pixels at full scale, or the percentile above
    ``SATURATION_FILL`` of it: the full well may clip just below the ADC's maximum) divides the
    exposure by 4; otherwise it is scaled towards the middle of the target. Returns (exposure_us,
    saturated_attempts); the last exposure tried if the camera's range is exhausted.
    """
    full_scale = 2**camera.bit_depth - 1
    low_limit, high_limit = camera.capabilities().exposure_us or (1.0, 1e7)
    low, high = settings.target_fill
    target = (low + high) / 2.0
    saturated = 0
    valid = channels >= 0
    for _ in range(settings.max_exposure_iterations):
        camera.exposure_us = float(np.clip(exposure_us, low_limit, high_limit))
        exposure_us = camera.exposure_us
        values = np.asarray(camera.snap().data)[valid]
        top = np.percentile(values, 99.5)
        # clipped at the ADC's maximum, or at the full well just below it
        if np.mean(values >= full_scale) > 1e-4 or top >= SATURATION_FILL * full_scale:
            saturated += 1
            exposure_us = exposure_us / 4.0
            continue
        level = (top - dark_level_dn) / (full_scale - dark_level_dn)
        if low <= level <= high:
            break
        exposure_us = exposure_us * target / max(level, 1e-3)
        if exposure_us > high_limit and camera.exposure_us >= high_limit:
            break
    return camera.exposure_us, saturated


def run_sweep(
    camera,
    monochromator,
    power_meter,
    channels,
    settings: SweepSettings,
    clock,
    resume: SweepRecord | None = None,
    checkpoint: Callable[[SweepRecord], None] | None = None,
    progress: Callable[[SweepPoint], None] | None = None,
) -> SweepRecord:
    """Run (or resume) a monochromator sweep (see the module doc).

    Parameters
    ----------
    camera : Camera
        Open; looks at the bench's output port.
    monochromator, power_meter : drivers (``hyplex.devices.Monochromator``, ``PowerMeter``)
    channels : numpy.ndarray of int (H, W)
        Channel per pixel (``emva.channel_map`` of the registered slot map).
    settings : SweepSettings
    clock : Clock
        The bench's clock (settling waits).
    resume : SweepRecord, optional
        A partial record of the same settings; its wavelengths are not measured again.
    checkpoint : callable(record), optional
        Called after every point (write a partial calibration file there).
    progress : callable(point), optional

    Raises
    ------
    SweepInterrupted
        An instrument failed; ``error.record`` holds the completed points.
    """
    channels = np.asarray(channels)
    n_channels = int(channels.max()) + 1
    record = resume if resume is not None else SweepRecord(settings)
    if record.settings != settings:
        raise ValueError("cannot resume a sweep recorded with other settings")
    done = {round(p.wavelength_nm, 6) for p in record.points}
    power_meter.set_average_count(settings.meter_average)
    exposure = record.points[-1].exposure_us if record.points else settings.initial_exposure_us
    try:
        monochromator.close_shutter()
        camera.exposure_us = exposure
        dark_level = float(np.median(np.asarray(camera.snap().data)[channels >= 0]))
        monochromator.open_shutter()
        for wavelength in settings.wavelengths_nm:
            if round(wavelength, 6) in done:
                continue
            monochromator.go_to(wavelength)
            clock.sleep(settings.settle_s)
            power_meter.set_wavelength_nm(float(np.clip(wavelength, *POWER_METER_RANGE_NM)))
            exposure, saturated = auto_expose(camera, channels, settings, dark_level, exposure)
            power = np.mean([power_meter.power_W() for _ in range(2)])
            bright = [
                channel_means(camera.snap(), channels, n_channels) for _ in range(settings.n_frames)
            ]
            monochromator.close_shutter()
            meter_dark = power_meter.power_W()
            dark = [
                channel_means(camera.snap(), channels, n_channels) for _ in range(settings.n_frames)
            ]
            monochromator.open_shutter()
            point = SweepPoint(
                wavelength,
                exposure,
                float(power),
                float(meter_dark),
                np.array(bright),
                np.array(dark),
                saturated,
            )
            record.points.append(point)
            if checkpoint is not None:
                checkpoint(record)
            if progress is not None:
                progress(point)
    except InstrumentError as error:
        raise SweepInterrupted(
            f"sweep interrupted after {len(record.points)} of {len(settings.wavelengths_nm)} "
            f"wavelengths: {error}",
            record,
        ) from error
    return record


def bandpass_matrix(wavelengths_nm, bandwidth_nm: float, lamp=None) -> np.ndarray:
    """B (J, J): row j = share of the line centred on point j falling in the bin of point i
    (triangle of FWHM ``bandwidth_nm`` integrated over each bin, times ``lamp`` (J,) at the bin
    centre), rows normalised to 1."""
    grid = np.asarray(wavelengths_nm, dtype=np.float64)
    lamp = np.ones_like(grid) if lamp is None else np.asarray(lamp, dtype=np.float64)
    edges = bin_edges(grid)
    weights = np.empty((grid.size, grid.size))
    for j, centre in enumerate(grid):
        knots = np.linspace(centre - bandwidth_nm, centre + bandwidth_nm, 3)
        fine = np.union1d(np.linspace(edges[0], edges[-1], 8 * grid.size + 1), knots)
        fine = fine[(fine >= edges[0]) & (fine <= edges[-1])]
        triangle = np.clip(1.0 - np.abs(fine - centre) / bandwidth_nm, 0.0, None)
        weights[j] = resample(fine, triangle, grid, extrapolation="zero") * quadrature_weights(grid)
    # the meter sees the whole line (integral FWHM x lamp), the camera only the grid's bins
    return weights * lamp[None, :] / (bandwidth_nm * lamp[:, None])


def ridge_operator(bandpass: np.ndarray, ridge: float = 1e-4) -> np.ndarray:
    """G (J, J) with r = G m: (B^T B + alpha D2^T D2)^-1 B^T, alpha = ridge tr(B^T B) / J."""
    size = bandpass.shape[0]
    second = np.diff(np.eye(size), 2, axis=0)
    normal = bandpass.T @ bandpass
    alpha = ridge * np.trace(normal) / size
    return np.linalg.solve(normal + alpha * second.T @ second, bandpass.T)


@dataclass(frozen=True)
class SpectralResponse:
    """Measured response of every channel.

    Attributes
    ----------
    wavelengths_nm : (J,)
    response : (C, J) deconvolved response, DN s^-1 per W of reference power
    uncertainty : (C, J) bootstrap standard deviation, same units
    measured : (C, J) before deconvolution
    """

    wavelengths_nm: np.ndarray
    response: np.ndarray
    uncertainty: np.ndarray
    measured: np.ndarray


def spectral_response(
    record: SweepRecord, ridge: float = 1e-4, n_bootstrap: int = 200, seed: int = 0
) -> SpectralResponse:
    """Deconvolved responses and bootstrap uncertainties of a complete sweep."""
    if not record.complete:
        raise ValueError(
            f"the sweep is partial ({len(record.points)} of "
            f"{len(record.settings.wavelengths_nm)} wavelengths): resume it first"
        )
    wavelengths, measured = record.measured()
    powers = np.array([p.reference_power_W - p.reference_dark_W for p in record.points])
    operator = ridge_operator(
        bandpass_matrix(wavelengths, record.settings.bandwidth_nm, powers), ridge
    )
    rng = np.random.default_rng(seed)
    samples = np.empty((n_bootstrap, *measured.shape))
    for b in range(n_bootstrap):
        columns = []
        for point in record.points:
            n_bright, n_dark = len(point.bright_means_dn), len(point.dark_means_dn)
            bright = point.bright_means_dn[rng.integers(0, n_bright, n_bright)]
            dark = point.dark_means_dn[rng.integers(0, n_dark, n_dark)]
            columns.append(point.response(bright, dark))
        samples[b] = np.array(columns).T @ operator.T
    return SpectralResponse(
        wavelengths_nm=wavelengths,
        response=measured @ operator.T,
        uncertainty=samples.std(0, ddof=1),
        measured=measured,
    )

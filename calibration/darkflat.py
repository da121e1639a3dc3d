"""Dark and flat-field calibration: master darks, dark current, defect pixels, flat fields.

::

    dark frames (exposure t, gain g) --mean--> master dark D_{t,g}(y, x)           DN
    master darks over t (one gain)   --least squares--> D(t) = D_0 + I t          DN, DN/s
    long dark + flat                 --robust outliers--> hot / dead pixel maps
    flat frames - D                  --normalise within each filter channel--> gain G(y, x)
    raw                              --(raw - D) / G, defects masked--> corrected frame

A broadband flat mixes the transmission of each sub-filter with the photo-response
non-uniformity (PRNU) of the pixels: a pixel behind a dense filter reads less because of the
filter, not because it is a weak pixel. The flat field is therefore normalised *within* each
filter channel (the layout's filter map: codes 0..n_filters-1, and n_filters for the
unpatterned substrate of gaps and margins), so G keeps the pixel-to-pixel (and slow
illumination) variation and leaves the filter transmission to the spectral calibration.

Hot pixels are found in a long-exposure master dark (EMVA 1288 Release 4.0, sec. 8.5 on defect
pixels, uses the histogram of the dark image for the same purpose): values more than
``hot_sigma`` robust standard deviations (1.4826 x median absolute deviation) above the
median. Dead pixels respond to less than ``dead_fraction`` of their channel's median in the
flat field.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

MAD_TO_SIGMA = 1.4826  # sigma of a normal law per median absolute deviation


def _stack(frames, name: str = "frames") -> np.ndarray:
    """Frames as a float64 (N, H, W) stack; ValueError unless N >= 1 equal-shaped 2-D frames."""
    arrays = [np.asarray(getattr(f, "data", f)) for f in frames]
    if not arrays:
        raise ValueError(f"{name} must hold at least one frame")
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1 or arrays[0].ndim != 2:
        raise ValueError(f"{name} must be 2-D frames of one shape, got shapes {sorted(shapes)}")
    return np.stack(arrays).astype(np.float64)


@dataclass(frozen=True)
class MasterDark:
    """Average of N dark frames at one (exposure, gain).

    Attributes
    ----------
    exposure_us : float
        Exposure time, us.
    gain_db : float
        Analog gain, dB.
    mean_dn : numpy.ndarray, float32 (H, W)
        Per-pixel mean dark value, DN.
    temporal_variance_dn2 : float
        Mean over pixels of the per-pixel temporal variance, DN^2 (NaN for one frame).
    n_frames : int
    """

    exposure_us: float
    gain_db: float
    mean_dn: np.ndarray
    temporal_variance_dn2: float
    n_frames: int

    @property
    def key(self) -> tuple[float, float]:
        """(exposure_us, gain_db), the look-up key of :class:`DarkLibrary`."""
        return (float(self.exposure_us), float(self.gain_db))


def master_dark(frames: Iterable, exposure_us: float, gain_db: float = 0.0) -> MasterDark:
    """Average dark frames (arrays (H, W) or ``Frame`` objects) taken at one setting."""
    stack = _stack(frames, "dark frames")
    if not (np.isfinite(exposure_us) and exposure_us >= 0):
        raise ValueError(f"exposure_us must be finite and >= 0, got {exposure_us}")
    variance = float(stack.var(axis=0, ddof=1).mean()) if len(stack) > 1 else float("nan")
    return MasterDark(
        float(exposure_us), float(gain_db), stack.mean(0).astype(np.float32), variance, len(stack)
    )


@dataclass(frozen=True)
class DarkCurrent:
    """Linear dark model D(t) = offset + slope t at one gain (EMVA 1288 R4.0 sec. 3: the dark
    signal grows linearly with exposure time, mu_y.dark = mu_y.dark(0) + K mu_I t).

    Attributes
    ----------
    gain_db : float
    offset_dn : numpy.ndarray, float32 (H, W)
        Dark value extrapolated to zero exposure, DN.
    slope_dn_per_s : numpy.ndarray, float32 (H, W)
        Per-pixel dark-current slope, DN/s.
    mean_slope_dn_per_s : float
        Slope of the mean dark value, DN/s (divide by K for electrons/s).
    """

    gain_db: float
    offset_dn: np.ndarray
    slope_dn_per_s: np.ndarray
    mean_slope_dn_per_s: float

    def dark_dn(self, exposure_us: float) -> np.ndarray:
        """Predicted master dark at ``exposure_us``, DN (H, W)."""
        return self.offset_dn + self.slope_dn_per_s * np.float32(exposure_us * 1e-6)


def fit_dark_current(masters: Sequence[MasterDark]) -> DarkCurrent:
    """Least-squares line through master darks of one gain at >= 2 distinct exposures."""
    masters = list(masters)
    gains = {m.gain_db for m in masters}
    if len(gains) != 1:
        raise ValueError(f"master darks must share one gain, got gains {sorted(gains)} dB")
    times = np.array([m.exposure_us * 1e-6 for m in masters])
    if np.unique(times).size < 2:
        raise ValueError("need master darks at >= 2 distinct exposures to fit a dark current")
    stack = np.stack([m.mean_dn for m in masters]).astype(np.float64)
    design = np.column_stack([np.ones_like(times), times])
    coefficients, *_ = np.linalg.lstsq(design, stack.reshape(len(times), -1), rcond=None)
    offset, slope = (c.reshape(stack.shape[1:]).astype(np.float32) for c in coefficients)
    return DarkCurrent(gains.pop(), offset, slope, float(slope.mean()))


class DarkLibrary:
    """Master darks by (exposure_us, gain_db), with a dark-current model to fill the gaps.

    ``dark_for(t, g)`` returns the master at exactly that setting (to ``tolerance_us``), else
    the dark-current line fitted to that gain's masters, else raises ``KeyError``.
    """

    def __init__(self, masters: Iterable[MasterDark] = (), tolerance_us: float = 0.5):
        self.masters: dict[tuple[float, float], MasterDark] = {}
        self.tolerance_us = float(tolerance_us)
        self._models: dict[float, DarkCurrent] = {}
        for master in masters:
            self.add(master)

    def add(self, master: MasterDark) -> None:
        self.masters[master.key] = master
        self._models.pop(master.gain_db, None)

    def dark_current(self, gain_db: float) -> DarkCurrent:
        """The dark-current line of one gain (fitted once, refitted after ``add``)."""
        gain_db = float(gain_db)
        if gain_db not in self._models:
            same_gain = [m for m in self.masters.values() if m.gain_db == gain_db]
            self._models[gain_db] = fit_dark_current(same_gain)
        return self._models[gain_db]

    def dark_for(self, exposure_us: float, gain_db: float = 0.0) -> np.ndarray:
        """Dark frame, DN (H, W) float32, for a setting (see the class doc)."""
        for (exposure, gain), master in self.masters.items():
            if gain == float(gain_db) and abs(exposure - exposure_us) <= self.tolerance_us:
                return master.mean_dn
        try:
            return self.dark_current(gain_db).dark_dn(exposure_us)
        except ValueError as error:
            raise KeyError(
                f"no master dark for exposure {exposure_us} us, gain {gain_db} dB, and no "
                f"dark-current model ({error})"
            ) from None


@dataclass(frozen=True)
class FlatField:
    """Per-pixel gain normalised within each filter channel.

    Attributes
    ----------
    gain : numpy.ndarray, float32 (H, W)
        Relative response of each pixel within its channel (median 1 per channel).
    channel_level_dn : numpy.ndarray, float64 (n_filters + 1,)
        Median dark-subtracted flat signal of each channel (last: unpatterned), DN.
    """

    gain: np.ndarray
    channel_level_dn: np.ndarray


def flat_field(flat_frames: Iterable, dark_dn, codes, n_filters: int) -> FlatField:
    """Flat field from frames of a uniform broadband source, normalised per filter channel.

    Parameters
    ----------
    flat_frames : iterable of (H, W) arrays or Frames
        Same exposure and gain as ``dark_dn``.
    dark_dn : array_like (H, W)
        Master dark of that setting, DN.
    codes : array_like, int (H, W)
        Filter code of each pixel (``MosaicLayout.filter_maps(...)[0]``; ``n_filters`` for
        the unpatterned substrate).
    n_filters : int
    """
    signal = _stack(flat_frames, "flat frames").mean(0) - np.asarray(dark_dn, np.float64)
    codes = np.asarray(codes)
    if codes.shape != signal.shape:
        raise ValueError(f"codes {codes.shape} must match the flat frames {signal.shape}")
    gain = np.ones(signal.shape, np.float64)
    levels = np.full(n_filters + 1, np.nan)
    for code in range(n_filters + 1):
        mask = codes == code
        if not mask.any():
            continue
        level = float(np.median(signal[mask]))
        if not level > 0:
            raise ValueError(
                f"filter channel {code} has no signal in the flat (median {level:.3g} DN): "
                "is the light on, or the exposure long enough?"
            )
        levels[code] = level
        gain[mask] = signal[mask] / level
    return FlatField(gain.astype(np.float32), levels)


@dataclass(frozen=True)
class DefectMaps:
    """Boolean (H, W) maps of defect pixels.

    Attributes
    ----------
    hot : numpy.ndarray of bool
        Dark value far above the rest (high dark current or stuck high).
    dead : numpy.ndarray of bool
        Little or no response to light.
    """

    hot: np.ndarray
    dead: np.ndarray

    @property
    def any(self) -> np.ndarray:
        return self.hot | self.dead


def defect_pixels(
    long_dark_dn,
    flat: FlatField | None = None,
    hot_sigma: float = 6.0,
    min_excess_dn: float = 2.0,
    dead_fraction: float = 0.5,
) -> DefectMaps:
    """Hot pixels from a long-exposure master dark, dead pixels from the flat field.

    A pixel is hot when it exceeds the dark's median by more than ``hot_sigma`` robust sigmas
    (1.4826 x MAD) and by at least ``min_excess_dn``; dead when its flat gain is below
    ``dead_fraction``.
    """
    dark = np.asarray(long_dark_dn, np.float64)
    median = np.median(dark)
    sigma = MAD_TO_SIGMA * np.median(np.abs(dark - median))
    hot = dark - median > max(hot_sigma * sigma, min_excess_dn)
    dead = np.zeros_like(hot) if flat is None else flat.gain < dead_fraction
    return DefectMaps(hot, dead)


def correct_frame(
    raw, dark_dn, flat: FlatField | None = None, defects: DefectMaps | None = None, fill=np.nan
) -> np.ndarray:
    """Dark-subtracted, flat-fielded frame, float32 (H, W): (raw - D) / G; defect pixels are
    set to ``fill`` (NaN by default: leave them out of barcodes, see
    ``registration.barcode_extractor``)."""
    frame = np.asarray(getattr(raw, "data", raw), np.float32) - np.asarray(dark_dn, np.float32)
    if flat is not None:
        if flat.gain.shape != frame.shape:
            raise ValueError(f"flat field {flat.gain.shape} does not match frame {frame.shape}")
        frame = frame / np.where(flat.gain > 0, flat.gain, np.float32(1.0))
    if defects is not None:
        frame[defects.any] = fill
    return frame

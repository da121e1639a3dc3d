"""EMVA 1288 (Release 4.0, Linear) photon transfer and spatial non-uniformity, per channel.

The linear camera model (EMVA 1288 R4.0, sec. 2; ``hyplex.simulation.sensor``)::

    mu_y - mu_y.dark = K eta mu_p                                           eq. 9
    sigma_y^2 - sigma_y.dark^2 = K (mu_y - mu_y.dark)                        eq. 12 (temporal)

Photon transfer method (R4.0, "sensitivity, linearity and noise"): for every exposure of a
series, two bright frames A, B and two dark frames give, over the N pixels of a channel,

    mu_y      = (mean(A) + mean(B)) / 2
    sigma_y^2 = sum_pixels ((A - mean A) - (B - mean B))^2 / (2 N)      (fixed pattern cancels)

and the same for the dark pair. K is the slope of sigma_y^2 - sigma_y.dark^2 against
mu_y - mu_y.dark over 0-70 % of the saturation signal (least squares through the origin); the
responsivity R = eta K is the slope of mu_y - mu_y.dark against the photons per pixel mu_p,
so eta = R / K. Saturation mu_y.sat is the mean at the maximum of the temporal variance. The
temporal dark noise is sigma_d = sqrt(sigma_y.dark^2 - 1/12) / K electrons (1/12 DN^2 is the
quantisation noise). The absolute sensitivity threshold is the signal with SNR = 1,
mu_e.min = 1/2 + sqrt(1/4 + sigma_y.dark^2 / K^2) (from mu_e = sqrt(sigma_y.dark^2/K^2 + mu_e));
dynamic range DR = mu_e.sat / mu_e.min; SNR = (mu_y - mu_y.dark) / sigma_y. The linearity error
is half the spread of the relative deviations from a straight-line fit of mu_y - mu_y.dark
against exposure between 5 % and 95 % of saturation, in %.

Spatial non-uniformity (R4.0, "spatial non-uniformity"): from stacks of L frames, the spatial
variance of the averaged image minus the temporal part, s^2 = s^2_stack - sigma^2 / L, split
into row, column and pixel components by solving

    s^2_row.means = s^2_row + (s^2_col + s^2_pix) / M      (means of rows of M pixels)
    s^2_col.means = s^2_col + (s^2_row + s^2_pix) / N      (means of columns of N pixels)
    s^2_total     = s^2_row + s^2_col + s^2_pix

DSNU = s_y.dark / K (electrons); PRNU = s_y / (mu_y - mu_y.dark) of the dark-subtracted bright
stack (%). For a multispectral sensor every figure is given per filter channel, as R4.0 allows
(each channel measured like a monochrome sensor behind its filter: eta includes the filter's
transmission); the row/column/pixel split pools the channels after normalising each by its
mean.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

QUANTISATION_VARIANCE_DN2 = 1.0 / 12.0
FIT_RANGE = (0.0, 0.7)  # of the saturation signal, for K and eta
LINEARITY_RANGE = (0.05, 0.95)


def _data(frame) -> np.ndarray:
    return np.asarray(getattr(frame, "data", frame), dtype=np.float64)


def _check_channels(channels, shape) -> tuple[np.ndarray, int]:
    channels = np.asarray(channels)
    if channels.shape != tuple(shape):
        raise ValueError(f"channels map {channels.shape} must match the frames {tuple(shape)}")
    if not np.issubdtype(channels.dtype, np.integer):
        raise ValueError("channels must be integers (channel index, -1 to leave a pixel out)")
    n_channels = int(channels.max()) + 1
    if n_channels < 1:
        raise ValueError("the channels map selects no pixel (all -1)")
    return channels, n_channels


def pair_statistics(frame_a, frame_b, channels) -> tuple[np.ndarray, np.ndarray]:
    """Mean (DN) and temporal variance (DN^2) per channel from two frames of one setting.

    Parameters
    ----------
    frame_a, frame_b : array_like (H, W) or Frame
    channels : array_like of int (H, W)
        Channel of each pixel, 0..C-1; -1 leaves a pixel out.

    Returns
    -------
    mean_dn, variance_dn2 : numpy.ndarray (C,)
    """
    a, b = _data(frame_a), _data(frame_b)
    if a.shape != b.shape:
        raise ValueError(f"frames of a pair must have one shape, got {a.shape} and {b.shape}")
    channels, n_channels = _check_channels(channels, a.shape)
    valid = channels >= 0
    index, a, b = channels[valid], a[valid], b[valid]
    count = np.bincount(index, minlength=n_channels).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_a = np.bincount(index, a, n_channels) / count
        mean_b = np.bincount(index, b, n_channels) / count
        difference = (a - mean_a[index]) - (b - mean_b[index])
        variance = np.bincount(index, difference**2, n_channels) / (2.0 * count)
    return (mean_a + mean_b) / 2.0, variance


def _slope_through_origin(x, y) -> float:
    if x.size == 0:
        return float("nan")
    return float(np.dot(x, y) / np.dot(x, x))


@dataclass(frozen=True)
class PhotonTransfer:
    """EMVA 1288 photon-transfer results, per channel (C,) unless stated.

    Attributes
    ----------
    exposures_us : (n,) exposure series, us
    photons_per_pixel : (n,) incident photons per pixel (NaN where unknown)
    mean_dn, variance_dn2 : (n, C) bright mean and temporal variance
    dark_mean_dn, dark_variance_dn2 : (n, C) the same for the dark pairs
    system_gain_dn_per_e : (C,) K, DN per electron
    system_gain_pooled_dn_per_e : float, K from every channel's points together
    quantum_efficiency : (C,) eta (filter transmission included); NaN without photons
    temporal_dark_noise_e : (C,) sigma_d at the shortest exposure, electrons
    saturation_dn : (C,) mu_y.sat, DN
    saturation_e : (C,) saturation capacity, electrons
    sensitivity_threshold_e : (C,) mu_e.min, electrons
    dynamic_range_db : (C,) 20 log10(mu_e.sat / mu_e.min)
    snr_max_db : (C,) 20 log10 of the largest measured SNR
    linearity_error_percent : (C,)
    snr : (n, C) SNR of every point
    """

    exposures_us: np.ndarray
    photons_per_pixel: np.ndarray
    mean_dn: np.ndarray
    variance_dn2: np.ndarray
    dark_mean_dn: np.ndarray
    dark_variance_dn2: np.ndarray
    system_gain_dn_per_e: np.ndarray
    system_gain_pooled_dn_per_e: float
    quantum_efficiency: np.ndarray
    temporal_dark_noise_e: np.ndarray
    saturation_dn: np.ndarray
    saturation_e: np.ndarray
    sensitivity_threshold_e: np.ndarray
    dynamic_range_db: np.ndarray
    snr_max_db: np.ndarray
    linearity_error_percent: np.ndarray
    snr: np.ndarray


def photon_transfer(
    bright_pairs: Sequence,
    dark_pairs: Sequence,
    exposures_us,
    channels,
    photons_per_pixel=None,
) -> PhotonTransfer:
    """EMVA 1288 photon transfer over an exposure series (see the module doc).

    Parameters
    ----------
    bright_pairs, dark_pairs : sequence of (frame, frame)
        Two bright and two dark frames per exposure (same gain throughout).
    exposures_us : array_like (n,)
        Increasing exposures, us; the series should run past saturation for ``saturation_*``.
    channels : array_like of int (H, W)
        Channel index per pixel (e.g. filter code; -1 = left out).
    photons_per_pixel : array_like (n,), optional
        Mean photons incident on a pixel at each exposure (before the filter); gives eta.
    """
    exposures = np.asarray(exposures_us, dtype=np.float64)
    n = exposures.size
    if n < 3 or len(bright_pairs) != n or len(dark_pairs) != n:
        raise ValueError(
            f"need >= 3 exposures with one bright and one dark pair each, got {n} exposures, "
            f"{len(bright_pairs)} bright and {len(dark_pairs)} dark pairs"
        )
    if np.any(np.diff(exposures) <= 0):
        raise ValueError("exposures_us must be strictly increasing")
    photons = np.full(n, np.nan) if photons_per_pixel is None else np.asarray(photons_per_pixel)
    if photons.shape != (n,):
        raise ValueError(f"photons_per_pixel must have shape ({n},), got {photons.shape}")
    bright = [pair_statistics(a, b, channels) for a, b in bright_pairs]
    dark = [pair_statistics(a, b, channels) for a, b in dark_pairs]
    mean, variance = (np.array([s[i] for s in bright]) for i in (0, 1))
    dark_mean, dark_variance = (np.array([s[i] for s in dark]) for i in (0, 1))
    signal, noise2 = mean - dark_mean, variance - dark_variance

    n_channels = mean.shape[1]
    saturation_index = np.nanargmax(variance, axis=0)
    saturation_signal = signal[saturation_index, np.arange(n_channels)]
    gain, eta, linearity = (np.full(n_channels, np.nan) for _ in range(3))
    pooled_x, pooled_y = [], []
    for c in range(n_channels):
        low, high = (f * saturation_signal[c] for f in FIT_RANGE)
        fit = (signal[:, c] > low) & (signal[:, c] <= high)
        fit[saturation_index[c] :] = False  # only the rising branch of the transfer curve
        gain[c] = _slope_through_origin(signal[fit, c], noise2[fit, c])
        pooled_x.append(signal[fit, c])
        pooled_y.append(noise2[fit, c])
        if np.all(np.isfinite(photons[fit])) and fit.any():
            eta[c] = _slope_through_origin(photons[fit], signal[fit, c]) / gain[c]
        linearity[c] = _linearity_error(exposures, signal[:, c], saturation_signal[c])
    pooled = _slope_through_origin(np.concatenate(pooled_x), np.concatenate(pooled_y))

    # a channel whose variance still rises at the last exposure never saturated in the series
    unsaturated = saturation_index == n - 1
    saturation_e = np.where(unsaturated, np.nan, saturation_signal / gain)
    dark_noise_e = np.sqrt(np.clip(dark_variance[0] - QUANTISATION_VARIANCE_DN2, 0, None)) / gain
    threshold_e = 0.5 + np.sqrt(0.25 + dark_variance[0] / gain**2)
    with np.errstate(invalid="ignore", divide="ignore"):
        snr = signal / np.sqrt(variance)
    return PhotonTransfer(
        exposures_us=exposures,
        photons_per_pixel=photons.astype(np.float64),
        mean_dn=mean,
        variance_dn2=variance,
        dark_mean_dn=dark_mean,
        dark_variance_dn2=dark_variance,
        system_gain_dn_per_e=gain,
        system_gain_pooled_dn_per_e=pooled,
        quantum_efficiency=eta,
        temporal_dark_noise_e=dark_noise_e,
        saturation_dn=np.where(unsaturated, np.nan, mean[saturation_index, np.arange(n_channels)]),
        saturation_e=saturation_e,
        sensitivity_threshold_e=threshold_e,
        dynamic_range_db=20.0 * np.log10(saturation_e / threshold_e),
        snr_max_db=20.0 * np.log10(np.nanmax(np.where(snr > 0, snr, np.nan), axis=0)),
        linearity_error_percent=linearity,
        snr=snr,
    )


def _linearity_error(exposures, signal, saturation_signal) -> float:
    """Half the spread of relative deviations (%) from a line fitted over 5-95 % of
    saturation (signal against exposure)."""
    low, high = (f * saturation_signal for f in LINEARITY_RANGE)
    use = (signal >= low) & (signal <= high)
    if use.sum() < 3:
        return float("nan")
    slope, intercept = np.polyfit(exposures[use], signal[use], 1)
    fitted = slope * exposures[use] + intercept
    deviation = 100.0 * (signal[use] - fitted) / fitted
    return float((deviation.max() - deviation.min()) / 2.0)


@dataclass(frozen=True)
class NonUniformity:
    """DSNU and PRNU per channel (C,), and their row / column / pixel split (pooled).

    Attributes
    ----------
    dsnu_e : (C,) electrons rms
    prnu_percent : (C,) % rms
    dsnu_row_e, dsnu_column_e, dsnu_pixel_e : float
    prnu_row_percent, prnu_column_percent, prnu_pixel_percent : float
    """

    dsnu_e: np.ndarray
    prnu_percent: np.ndarray
    dsnu_row_e: float
    dsnu_column_e: float
    dsnu_pixel_e: float
    prnu_row_percent: float
    prnu_column_percent: float
    prnu_pixel_percent: float


def _stack_mean_and_temporal(frames) -> tuple[np.ndarray, np.ndarray]:
    stack = np.stack([_data(f) for f in frames])
    if stack.shape[0] < 2:
        raise ValueError("need a stack of >= 2 frames to separate temporal from spatial noise")
    return stack.mean(0), stack.var(0, ddof=1) / stack.shape[0]


def spatial_components(image, valid, temporal_variance=None) -> tuple[float, float, float]:
    """(row, column, pixel) spatial variances of ``image`` over the ``valid`` pixels (see the
    module doc); ``temporal_variance`` (H, W), the variance of the mean image from temporal
    noise, is subtracted first. Negative estimates are clipped to 0."""
    z = np.where(valid, image, np.nan)
    z = z - np.nanmean(z)
    temporal = 0.0 if temporal_variance is None else float(np.mean(temporal_variance[valid]))
    total = float(np.nanvar(z)) - temporal
    rows_ok, cols_ok = valid.any(1), valid.any(0)
    per_row, per_col = valid.sum(1)[rows_ok].mean(), valid.sum(0)[cols_ok].mean()
    row_means = np.nanmean(z[rows_ok], axis=1)
    col_means = np.nanmean(z[:, cols_ok], axis=0)
    # the temporal part also enters the means of rows and columns, divided by the count
    row_var = float(np.var(row_means)) - temporal / per_row
    col_var = float(np.var(col_means)) - temporal / per_col
    system = np.array(
        [[1.0, 1.0 / per_row, 1.0 / per_row], [1.0 / per_col, 1.0, 1.0 / per_col], [1, 1, 1]]
    )
    row, col, pixel = np.linalg.solve(system, [row_var, col_var, total])
    return tuple(float(max(v, 0.0)) for v in (row, col, pixel))


def spatial_nonuniformity(
    dark_frames, bright_frames, channels, system_gain_dn_per_e
) -> NonUniformity:
    """DSNU and PRNU from a dark stack and a bright stack (~50 % of saturation) of one setting.

    Parameters
    ----------
    dark_frames, bright_frames : sequence of (H, W) frames, >= 2 each
    channels : array_like of int (H, W)
        Channel per pixel (-1 = left out).
    system_gain_dn_per_e : float or array_like (C,)
        K, from :func:`photon_transfer`.
    """
    dark, dark_temporal = _stack_mean_and_temporal(dark_frames)
    bright, bright_temporal = _stack_mean_and_temporal(bright_frames)
    channels, n_channels = _check_channels(channels, dark.shape)
    gain = np.broadcast_to(np.asarray(system_gain_dn_per_e, np.float64), (n_channels,))
    signal = bright - dark
    signal_temporal = bright_temporal + dark_temporal
    dsnu, prnu = np.full(n_channels, np.nan), np.full(n_channels, np.nan)
    normalised = np.full(signal.shape, np.nan)
    normalised_temporal = np.zeros(signal.shape)
    for c in range(n_channels):
        mask = channels == c
        if not mask.any():
            continue
        dark_var = np.var(dark[mask]) - dark_temporal[mask].mean()
        dsnu[c] = np.sqrt(max(dark_var, 0.0)) / gain[c]
        level = signal[mask].mean()
        prnu_var = np.var(signal[mask]) - signal_temporal[mask].mean()
        prnu[c] = 100.0 * np.sqrt(max(prnu_var, 0.0)) / level
        normalised[mask] = signal[mask] / level
        normalised_temporal[mask] = signal_temporal[mask] / level**2
    valid = channels >= 0
    dark_split = spatial_components(dark, valid, dark_temporal)
    prnu_split = spatial_components(normalised, valid, normalised_temporal)
    mean_gain = float(np.nanmean(gain))
    return NonUniformity(
        dsnu_e=dsnu,
        prnu_percent=prnu,
        dsnu_row_e=np.sqrt(dark_split[0]) / mean_gain,
        dsnu_column_e=np.sqrt(dark_split[1]) / mean_gain,
        dsnu_pixel_e=np.sqrt(dark_split[2]) / mean_gain,
        prnu_row_percent=100.0 * np.sqrt(prnu_split[0]),
        prnu_column_percent=100.0 * np.sqrt(prnu_split[1]),
        prnu_pixel_percent=100.0 * np.sqrt(prnu_split[2]),
    )


def channel_map(slots, n_filters: int) -> np.ndarray:
    """Channel (filter index) of each pixel from a ``MosaicLayout.slot_map``: slot % n_filters,
    -1 where the slot is -1 (gaps, margins, outside the mosaic)."""
    slots = np.asarray(slots)
    return np.where(slots >= 0, slots % n_filters, -1).astype(np.int32)

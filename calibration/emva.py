"""EMVA 1288 (Release 4.0, Linear) photon transfer, dark current and spatial non-uniformity,
per channel.

Reference: EMVA Standard 1288, "Standard for Characterization of Image Sensors and Cameras",
Release 4.0 Linear (European Machine Vision Association, 2021; the direct successor of
Release 3.1 for cameras with a linear characteristic). Section numbers below follow the
section structure R4.0 Linear keeps from R3.1 (2 sensitivity/linearity/noise, 3 dark
current, 4 spatial nonuniformity and defect pixels, 6-8 the corresponding methods, 10
publishing the results); we could check them only against secondary sources (the EMVA
reference implementation ``emva1288`` and published walk-throughs of R4.0), not the PDF.
Known difference left open: a secondary source reports that R4.0 fixes the saturation point
by the fraction of saturated pixels (~0.2 %) rather than by the maximum of the variance used
here.

The linear camera model (sec. 2.1-2.2; ``hyplex.simulation.sensor``)::

    mu_p = A E t_exp / (h nu) = A E t_exp lambda / (h c)    sec. 2.1   photons per pixel
    mu_y - mu_y.dark = K eta mu_p = R mu_p                  sec. 2.1   R: responsivity
    sigma_y^2 - sigma_y.dark^2 = K (mu_y - mu_y.dark)       sec. 2.2   (temporal)

:func:`photons_per_pixel` evaluates the first line (A pixel area, E irradiance, t exposure).

Photon transfer method (sec. 6.6, "Evaluation of the measurements according to the photon
transfer method"): for every point of a series, two bright frames A, B and two dark frames
give, over the N pixels of a channel,

    mu_y      = (mean(A) + mean(B)) / 2
    sigma_y^2 = sum_pixels ((A - mean A) - (B - mean B))^2 / (2 N)      (fixed pattern cancels)

and the same for the dark pair. K is the slope of sigma_y^2 - sigma_y.dark^2 against
mu_y - mu_y.dark over 0-70 % of the saturation signal (least squares through the origin); the
responsivity R = eta K is the slope of mu_y - mu_y.dark against mu_p over the same range, so
eta = R / K. Both series types of sec. 6.3 ("Variation of irradiation") are accepted: an
exposure-time series at constant irradiance (``series="exposure"``) and a series at constant
exposure with varying irradiance (``series="irradiance"``, mu_p required). Saturation
mu_y.sat is the mean at the maximum of the temporal variance (sec. 2.4 and 6.6).

Figures (sec. 2.3-2.4, "Signal-to-noise ratio" and "Signal saturation and absolute
sensitivity threshold"):

- temporal dark noise sigma_d = sqrt(sigma_y.dark^2 - 1/12) / K electrons (1/12 DN^2: the
  quantisation noise);
- the absolute sensitivity threshold, the signal with SNR = 1,
  mu_e.min = 1/2 + sqrt(1/4 + sigma_y.dark^2 / K^2) electrons, mu_p.min = mu_e.min / eta
  photons (and mu_p.min.area = mu_p.min / A in photons per um^2);
- saturation capacity mu_e.sat = (mu_y.sat - mu_y.dark) / K, mu_p.sat = mu_e.sat / eta;
- SNR = (mu_y - mu_y.dark) / sigma_y at every point; the maximum SNR is defined from the
  saturation capacity, SNR_max = sqrt(mu_e.sat) (sec. 2.3), in dB (20 log10) and in bits
  (log2). It is *not* the largest measured SNR: past saturation the variance collapses and
  the measured ratio grows without bound (a series run to 1.5x saturation gave ~75 dB for a
  10.5 ke- well whose SNR_max is 40.2 dB); that figure is kept as ``snr_max_measured_db``;
- dynamic range DR = mu_p.sat / mu_p.min = mu_e.sat / mu_e.min, in dB and bits;
- linearity error LE: half the spread of the relative deviations (%) from a straight line
  fitted to mu_y - mu_y.dark against mu_p (against t_exp where mu_p is unknown) between 5 %
  and 95 % of saturation (sec. 6.7, "Evaluation of linearity").

Dark current (sec. 3.1 and 7.1, "Evaluation of dark current at one temperature"), from the
dark pairs of an exposure series (>= 3 distinct exposures)::

    mu_y.dark = mu_y.dark,0 + K mu_I t_exp                  mean method:     mu_I = slope / K
    sigma_y.dark^2 = K^2 (sigma_d0^2 + mu_I t_exp) + 1/12   variance method: mu_I = slope / K^2

Spatial non-uniformity (sec. 4 and 8, "Spatial nonuniformity and defect pixels"): from stacks
of L frames, the spatial variance of the averaged image minus the temporal part,
s^2 = s^2_stack - sigma^2 / L, split into row, column and pixel components by solving

    s^2_row.means = s^2_row + (s^2_col + s^2_pix) / M      (means of rows of M pixels)
    s^2_col.means = s^2_col + (s^2_row + s^2_pix) / N      (means of columns of N pixels)
    s^2_total     = s^2_row + s^2_col + s^2_pix

DSNU = s_y.dark (DN) and s_y.dark / K (electrons); PRNU = s_y / (mu_y - mu_y.dark) of the
dark-subtracted bright stack (%). The horizontal and vertical spectrograms of DSNU and PRNU
and the logarithmic and accumulated defect-pixel histograms are in
:mod:`hyplex.calibration.emva_spatial`; the standard's descriptor files in
:mod:`~hyplex.calibration.emva_descriptor`, its summary data sheet in
:mod:`~hyplex.calibration.emva_datasheet`.

For a multispectral sensor every figure is given per filter channel, as R4.0 allows for
multimodal sensors (each channel measured like a monochrome sensor behind its filter: eta
includes the filter's transmission); the row/column/pixel split and the spectrograms pool the
channels after normalising each by its mean.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

QUANTISATION_VARIANCE_DN2 = 1.0 / 12.0
FIT_RANGE = (0.0, 0.7)  # of the saturation signal, for K and eta
LINEARITY_RANGE = (0.05, 0.95)
SERIES = ("exposure", "irradiance")
PLANCK_J_S = 6.62607015e-34
LIGHT_SPEED_M_S = 299_792_458.0


def photons_per_pixel(irradiance_W_m2, pixel_area_um2, exposure_us, wavelength_nm):
    """Mean photons reaching one pixel, mu_p = A E t_exp lambda / (h c) (EMVA 1288 R4.0
    Linear, sec. 2.1).

    Parameters
    ----------
    irradiance_W_m2 : float or array_like
        Irradiance E on the sensor plane, W m^-2 (>= 0).
    pixel_area_um2 : float or array_like
        Light-sensitive area A of one pixel, um^2 (> 0; the pitch squared with microlenses).
    exposure_us : float or array_like
        Exposure time t_exp, us (>= 0).
    wavelength_nm : float or array_like
        Wavelength of the (monochromatic) light, nm (> 0).

    Returns
    -------
    float or numpy.ndarray
        Photons per pixel, broadcast over the inputs.
    """
    values = {
        "irradiance_W_m2": irradiance_W_m2,
        "pixel_area_um2": pixel_area_um2,
        "exposure_us": exposure_us,
        "wavelength_nm": wavelength_nm,
    }
    arrays = {}
    for name, value in values.items():
        array = np.asarray(value, dtype=np.float64)
        strict = name in ("pixel_area_um2", "wavelength_nm")
        if not np.all(np.isfinite(array)) or np.any(array < 0) or (strict and np.any(array == 0)):
            raise ValueError(
                f"{name} must be finite and {'> 0' if strict else '>= 0'}, got {value}"
            )
        arrays[name] = array
    energy = (
        arrays["irradiance_W_m2"] * arrays["pixel_area_um2"] * 1e-12 * arrays["exposure_us"] * 1e-6
    )
    photon_energy = PLANCK_J_S * LIGHT_SPEED_M_S / (arrays["wavelength_nm"] * 1e-9)
    result = energy / photon_energy
    return float(result) if result.ndim == 0 else result


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
    exposures_us : (n,) exposure of every point, us
    photons_per_pixel : (n,) incident photons per pixel mu_p (NaN where unknown)
    mean_dn, variance_dn2 : (n, C) bright mean and temporal variance
    dark_mean_dn, dark_variance_dn2 : (n, C) the same for the dark pairs
    system_gain_dn_per_e : (C,) K, DN per electron
    system_gain_pooled_dn_per_e : float, K from every channel's points together
    quantum_efficiency : (C,) eta (filter transmission included); NaN without photons
    temporal_dark_noise_e : (C,) sigma_d at the shortest exposure, electrons
    saturation_dn : (C,) mu_y.sat, DN
    saturation_e : (C,) saturation capacity mu_e.sat, electrons
    sensitivity_threshold_e : (C,) mu_e.min, electrons
    dynamic_range_db : (C,) 20 log10(mu_e.sat / mu_e.min)
    snr_max_db : (C,) SNR_max = sqrt(mu_e.sat) in dB (20 log10); NaN where unsaturated
    linearity_error_percent : (C,)
    snr : (n, C) SNR of every point
    series : "exposure" or "irradiance" (which quantity the series varied)
    responsivity_dn_per_photon : (C,) R = eta K, DN per photon
    saturation_photons : (C,) mu_p.sat, photons per pixel
    sensitivity_threshold_photons : (C,) mu_p.min, photons per pixel
    saturation_photons_per_um2, sensitivity_threshold_photons_per_um2 : (C,)
        The same per um^2 of pixel area (NaN without ``pixel_area_um2``).
    saturation_e_per_um2, sensitivity_threshold_e_per_um2 : (C,) electrons per um^2
    snr_max : (C,) sqrt(mu_e.sat), unitless
    snr_max_bits : (C,) log2(SNR_max)
    snr_max_measured_db : (C,) 20 log10 of the largest SNR measured in the series (not an
        EMVA figure: past saturation it grows without bound; kept for comparison)
    dynamic_range_bits : (C,) log2(DR)
    dark_current_mean_e_per_s, dark_current_variance_e_per_s : (C,)
        Dark current mu_I by the mean and the variance methods, e-/s (NaN for fewer than 3
        distinct exposures)
    dark_offset_dn : (C,) mu_y.dark extrapolated to zero exposure, DN
    pixel_area_um2 : float (NaN if not given)
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
    series: str = "exposure"
    responsivity_dn_per_photon: np.ndarray | None = None
    saturation_photons: np.ndarray | None = None
    sensitivity_threshold_photons: np.ndarray | None = None
    saturation_photons_per_um2: np.ndarray | None = None
    sensitivity_threshold_photons_per_um2: np.ndarray | None = None
    saturation_e_per_um2: np.ndarray | None = None
    sensitivity_threshold_e_per_um2: np.ndarray | None = None
    snr_max: np.ndarray | None = None
    snr_max_bits: np.ndarray | None = None
    snr_max_measured_db: np.ndarray | None = None
    dynamic_range_bits: np.ndarray | None = None
    dark_current_mean_e_per_s: np.ndarray | None = None
    dark_current_variance_e_per_s: np.ndarray | None = None
    dark_offset_dn: np.ndarray | None = None
    pixel_area_um2: float = float("nan")


def _check_series(exposures_us, photons_per_pixel, n_bright: int, n_dark: int, series: str):
    if series not in SERIES:
        raise ValueError(f"series must be one of {SERIES}, got {series!r}")
    exposures = np.asarray(exposures_us, dtype=np.float64)
    if series == "irradiance" and exposures.ndim == 0:
        exposures = np.full(n_bright, float(exposures))
    n = exposures.size
    if exposures.ndim != 1 or n < 3 or n_bright != n:
        raise ValueError(
            f"need >= 3 points with one bright pair each, got {exposures.size} exposures and "
            f"{n_bright} bright pairs"
        )
    if n_dark != n and not (series == "irradiance" and n_dark == 1):
        raise ValueError(
            f"need one dark pair per point ({n}) (an irradiance series may share one), got "
            f"{n_dark} dark pairs"
        )
    if not np.all(np.isfinite(exposures)) or np.any(exposures <= 0):
        raise ValueError("exposures_us must be finite and > 0 (us)")
    photons = np.full(n, np.nan) if photons_per_pixel is None else np.asarray(photons_per_pixel)
    photons = np.asarray(photons, dtype=np.float64)
    if photons.shape != (n,):
        raise ValueError(f"photons_per_pixel must have shape ({n},), got {photons.shape}")
    if series == "exposure":
        if np.any(np.diff(exposures) <= 0):
            raise ValueError("exposures_us must be strictly increasing")
    else:
        if not np.all(np.isfinite(photons)):
            raise ValueError(
                "an irradiance series needs photons_per_pixel (mu_p of every point; "
                "see photons_per_pixel())"
            )
        if np.any(np.diff(photons) <= 0):
            raise ValueError(
                "photons_per_pixel of an irradiance series must be strictly increasing"
            )
        if np.ptp(exposures) > 1e-9 * exposures.max():
            raise ValueError(
                "an irradiance series keeps one exposure time; got exposures from "
                f"{exposures.min():g} to {exposures.max():g} us (use series='exposure')"
            )
    return exposures, photons


def photon_transfer(
    bright_pairs: Sequence,
    dark_pairs: Sequence,
    exposures_us,
    channels,
    photons_per_pixel=None,
    *,
    series: str = "exposure",
    pixel_area_um2: float | None = None,
) -> PhotonTransfer:
    """EMVA 1288 photon transfer over an exposure or irradiance series (see the module doc).

    Parameters
    ----------
    bright_pairs, dark_pairs : sequence of (frame, frame)
        Two bright and two dark frames per point (same gain throughout). An irradiance
        series may give one dark pair for all points.
    exposures_us : array_like (n,) or float
        Exposure of every point, us: strictly increasing for ``series="exposure"``, one
        value for ``series="irradiance"``. The series should run past saturation for the
        ``saturation_*`` and ``snr_max*`` figures.
    channels : array_like of int (H, W)
        Channel index per pixel (e.g. filter code; -1 = left out).
    photons_per_pixel : array_like (n,), optional
        Mean photons incident on a pixel at each point (before the filter; see
        :func:`photons_per_pixel`): gives eta and the photon-domain figures. Required and
        strictly increasing for an irradiance series.
    series : "exposure" or "irradiance"
    pixel_area_um2 : float, optional
        Pixel area, um^2, for the per-area figures.

    Raises
    ------
    ValueError
        Fewer than 3 points, pairs missing, a non-monotonic series, photons missing for an
        irradiance series, or a channels map of another shape.
    """
    exposures, photons = _check_series(
        exposures_us, photons_per_pixel, len(bright_pairs), len(dark_pairs), series
    )
    n = exposures.size
    area = float("nan") if pixel_area_um2 is None else float(pixel_area_um2)
    if pixel_area_um2 is not None and not (np.isfinite(area) and area > 0):
        raise ValueError(f"pixel_area_um2 must be finite and > 0 (um^2), got {pixel_area_um2}")
    bright = [pair_statistics(a, b, channels) for a, b in bright_pairs]
    dark = [pair_statistics(a, b, channels) for a, b in dark_pairs]
    mean, variance = (np.array([s[i] for s in bright]) for i in (0, 1))
    dark_mean, dark_variance = (np.array([s[i] for s in dark]) for i in (0, 1))
    if dark_mean.shape[0] == 1 and n > 1:  # one dark pair for a whole irradiance series
        dark_mean, dark_variance = (np.repeat(v, n, axis=0) for v in (dark_mean, dark_variance))
    signal, noise2 = mean - dark_mean, variance - dark_variance

    n_channels = mean.shape[1]
    channel_index = np.arange(n_channels)
    saturation_index = np.nanargmax(variance, axis=0)
    saturation_signal = signal[saturation_index, channel_index]
    gain, responsivity, linearity = (np.full(n_channels, np.nan) for _ in range(3))
    abscissa = photons if np.all(np.isfinite(photons)) else exposures
    pooled_x, pooled_y = [], []
    for c in range(n_channels):
        low, high = (f * saturation_signal[c] for f in FIT_RANGE)
        fit = (signal[:, c] > low) & (signal[:, c] <= high)
        fit[saturation_index[c] :] = False  # only the rising branch of the transfer curve
        gain[c] = _slope_through_origin(signal[fit, c], noise2[fit, c])
        pooled_x.append(signal[fit, c])
        pooled_y.append(noise2[fit, c])
        if np.all(np.isfinite(photons[fit])) and fit.any():
            responsivity[c] = _slope_through_origin(photons[fit], signal[fit, c])
        linearity[c] = _linearity_error(abscissa, signal[:, c], saturation_signal[c])
    pooled = _slope_through_origin(np.concatenate(pooled_x), np.concatenate(pooled_y))
    eta = responsivity / gain

    unsaturated = ~_saturated(abscissa, signal, variance, saturation_index)
    saturation_e = np.where(unsaturated, np.nan, saturation_signal / gain)
    dark_noise_e = np.sqrt(np.clip(dark_variance[0] - QUANTISATION_VARIANCE_DN2, 0, None)) / gain
    threshold_e = 0.5 + np.sqrt(0.25 + dark_variance[0] / gain**2)
    with np.errstate(invalid="ignore", divide="ignore"):
        snr = signal / np.sqrt(variance)
        measured_max = np.nanmax(np.where(snr > 0, snr, np.nan), axis=0)
        snr_max = np.sqrt(saturation_e)
        dynamic_range = saturation_e / threshold_e
    current_mean, current_variance, offset = _dark_current(
        exposures, dark_mean, dark_variance, gain, series
    )
    return PhotonTransfer(
        exposures_us=exposures,
        photons_per_pixel=photons,
        mean_dn=mean,
        variance_dn2=variance,
        dark_mean_dn=dark_mean,
        dark_variance_dn2=dark_variance,
        system_gain_dn_per_e=gain,
        system_gain_pooled_dn_per_e=pooled,
        quantum_efficiency=eta,
        temporal_dark_noise_e=dark_noise_e,
        saturation_dn=np.where(unsaturated, np.nan, mean[saturation_index, channel_index]),
        saturation_e=saturation_e,
        sensitivity_threshold_e=threshold_e,
        dynamic_range_db=20.0 * np.log10(dynamic_range),
        snr_max_db=20.0 * np.log10(snr_max),
        linearity_error_percent=linearity,
        snr=snr,
        series=series,
        responsivity_dn_per_photon=responsivity,
        saturation_photons=saturation_e / eta,
        sensitivity_threshold_photons=threshold_e / eta,
        saturation_photons_per_um2=saturation_e / eta / area,
        sensitivity_threshold_photons_per_um2=threshold_e / eta / area,
        saturation_e_per_um2=saturation_e / area,
        sensitivity_threshold_e_per_um2=threshold_e / area,
        snr_max=snr_max,
        snr_max_bits=np.log2(snr_max),
        snr_max_measured_db=20.0 * np.log10(measured_max),
        dynamic_range_bits=np.log2(dynamic_range),
        dark_current_mean_e_per_s=current_mean,
        dark_current_variance_e_per_s=current_variance,
        dark_offset_dn=offset,
        pixel_area_um2=area,
    )


def _saturated(abscissa, signal, variance, saturation_index) -> np.ndarray:
    """(C,) bool: did the series pass each channel's saturation? The maximum of the temporal
    variance marks saturation only if the curve really turns there: a later point's variance
    collapses below half the maximum (the full well clips the shot noise), or the signal
    stops rising (a later point gains less than half of what the linear response through
    the origin and the maximum predicts). A dim channel whose variance merely fluctuates over
    its last points has not saturated: its saturation figures are NaN, not the largest
    signal seen."""
    n, n_channels = signal.shape
    saturated = np.zeros(n_channels, bool)
    for c in range(n_channels):
        top = int(saturation_index[c])
        if top >= n - 1 or abscissa[top] <= 0:
            continue
        collapsed = np.any(variance[top + 1 :, c] < 0.5 * variance[top, c])
        slope = signal[top, c] / abscissa[top]
        expected = slope * (abscissa[top + 1 :] - abscissa[top])
        flat = np.any(signal[top + 1 :, c] - signal[top, c] < 0.5 * expected)
        saturated[c] = bool(collapsed or flat)
    return saturated


def _dark_current(exposures_us, dark_mean, dark_variance, gain, series):
    """(mu_I by the mean method, by the variance method (e-/s), mu_y.dark at t = 0 (DN)), per
    channel, from straight-line fits against the exposure time (module doc)."""
    n_channels = dark_mean.shape[1]
    nan = np.full(n_channels, np.nan)
    seconds = exposures_us * 1e-6
    if series != "exposure" or np.unique(exposures_us).size < 3:
        return nan, nan.copy(), dark_mean[0].copy()
    design = np.column_stack([seconds, np.ones_like(seconds)])
    mean_fit = np.linalg.lstsq(design, dark_mean, rcond=None)[0]  # (2, C)
    variance_fit = np.linalg.lstsq(design, dark_variance, rcond=None)[0]
    return mean_fit[0] / gain, variance_fit[0] / gain**2, mean_fit[1]


def dark_current(dark_pairs: Sequence, exposures_us, channels, system_gain_dn_per_e):
    """Dark current by the mean and the variance methods (EMVA 1288 R4.0 Linear, sec. 3.1 and
    7.1; see the module doc).

    Parameters
    ----------
    dark_pairs : sequence of (frame, frame)
        Two dark frames per exposure.
    exposures_us : array_like (n,)
        >= 3 distinct exposures, us.
    channels : array_like of int (H, W)
    system_gain_dn_per_e : float or array_like (C,)
        K (from :func:`photon_transfer` of a bright series).

    Returns
    -------
    mean_method_e_per_s, variance_method_e_per_s, offset_dn : numpy.ndarray (C,)
        mu_I from the slope of the dark mean and of the dark variance against t_exp, and the
        dark mean extrapolated to t_exp = 0.
    """
    exposures = np.asarray(exposures_us, dtype=np.float64)
    if exposures.ndim != 1 or exposures.size != len(dark_pairs):
        raise ValueError(f"one dark pair per exposure: {exposures.size} exposures, "
                         f"{len(dark_pairs)} pairs")  # fmt: skip
    if np.unique(exposures).size < 3 or not np.all(np.isfinite(exposures)):
        raise ValueError("the dark current needs >= 3 distinct finite exposures (us)")
    statistics = [pair_statistics(a, b, channels) for a, b in dark_pairs]
    mean, variance = (np.array([s[i] for s in statistics]) for i in (0, 1))
    gain = np.broadcast_to(np.asarray(system_gain_dn_per_e, np.float64), (mean.shape[1],))
    return _dark_current(exposures, mean, variance, gain, "exposure")


def _linearity_error(abscissa, signal, saturation_signal) -> float:
    """Half the spread of relative deviations (%) from a line fitted over 5-95 % of
    saturation (signal against mu_p, or against exposure where mu_p is unknown)."""
    low, high = (f * saturation_signal for f in LINEARITY_RANGE)
    use = (signal >= low) & (signal <= high)
    if use.sum() < 3:
        return float("nan")
    slope, intercept = np.polyfit(abscissa[use], signal[use], 1)
    fitted = slope * abscissa[use] + intercept
    deviation = 100.0 * (signal[use] - fitted) / fitted
    return float((deviation.max() - deviation.min()) / 2.0)


@dataclass(frozen=True)
class NonUniformity:
    """DSNU and PRNU per channel (C,), their row / column / pixel split (pooled), and the
    spectrograms and defect-pixel histograms of :mod:`hyplex.calibration.emva_spatial`.

    Attributes
    ----------
    dsnu_e : (C,) electrons rms
    prnu_percent : (C,) % rms
    dsnu_row_e, dsnu_column_e, dsnu_pixel_e : float
    prnu_row_percent, prnu_column_percent, prnu_pixel_percent : float
    dsnu_dn : (C,) DN rms
    spectrogram_horizontal_frequency, spectrogram_vertical_frequency : (Nh,), (Nv,)
        Spatial frequency, cycles per pixel (0 ... 0.5).
    dsnu_spectrogram_horizontal_e, dsnu_spectrogram_vertical_e : (Nh,), (Nv,) e- rms
    prnu_spectrogram_horizontal_percent, prnu_spectrogram_vertical_percent : % rms
    dsnu_histogram_bins_dn, dsnu_histogram_counts : (Q+1,), (Q,) logarithmic histogram
    dsnu_accumulated_dn, dsnu_accumulated_percent : (Q,) accumulated histogram
    prnu_histogram_bins_percent, prnu_histogram_counts, prnu_accumulated_percent_deviation,
    prnu_accumulated_percent : the same for the high-pass-filtered PRNU image
    """

    dsnu_e: np.ndarray
    prnu_percent: np.ndarray
    dsnu_row_e: float
    dsnu_column_e: float
    dsnu_pixel_e: float
    prnu_row_percent: float
    prnu_column_percent: float
    prnu_pixel_percent: float
    dsnu_dn: np.ndarray | None = None
    spectrogram_horizontal_frequency: np.ndarray | None = None
    spectrogram_vertical_frequency: np.ndarray | None = None
    dsnu_spectrogram_horizontal_e: np.ndarray | None = None
    dsnu_spectrogram_vertical_e: np.ndarray | None = None
    prnu_spectrogram_horizontal_percent: np.ndarray | None = None
    prnu_spectrogram_vertical_percent: np.ndarray | None = None
    dsnu_histogram_bins_dn: np.ndarray | None = None
    dsnu_histogram_counts: np.ndarray | None = None
    dsnu_accumulated_dn: np.ndarray | None = None
    dsnu_accumulated_percent: np.ndarray | None = None
    prnu_histogram_bins_percent: np.ndarray | None = None
    prnu_histogram_counts: np.ndarray | None = None
    prnu_accumulated_percent_deviation: np.ndarray | None = None
    prnu_accumulated_percent: np.ndarray | None = None


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
    """DSNU and PRNU from a dark stack and a bright stack (~50 % of saturation) of one setting,
    with their spectrograms and defect-pixel histograms (EMVA 1288 R4.0 Linear, sec. 4, 8).

    Parameters
    ----------
    dark_frames, bright_frames : sequence of (H, W) frames, >= 2 each
    channels : array_like of int (H, W)
        Channel per pixel (-1 = left out).
    system_gain_dn_per_e : float or array_like (C,)
        K, from :func:`photon_transfer`.
    """
    from hyplex.calibration.emva_spatial import defect_histograms, spectrograms

    dark, dark_temporal = _stack_mean_and_temporal(dark_frames)
    bright, bright_temporal = _stack_mean_and_temporal(bright_frames)
    channels, n_channels = _check_channels(channels, dark.shape)
    if bright.shape != dark.shape:
        raise ValueError(f"dark {dark.shape} and bright {bright.shape} stacks differ in shape")
    gain = np.broadcast_to(np.asarray(system_gain_dn_per_e, np.float64), (n_channels,))
    signal = bright - dark
    signal_temporal = bright_temporal + dark_temporal
    dsnu_dn, prnu = np.full(n_channels, np.nan), np.full(n_channels, np.nan)
    normalised = np.full(signal.shape, np.nan)
    normalised_temporal = np.zeros(signal.shape)
    for c in range(n_channels):
        mask = channels == c
        if not mask.any():
            continue
        dark_var = np.var(dark[mask]) - dark_temporal[mask].mean()
        dsnu_dn[c] = np.sqrt(max(dark_var, 0.0))
        level = signal[mask].mean()
        prnu_var = np.var(signal[mask]) - signal_temporal[mask].mean()
        prnu[c] = 100.0 * np.sqrt(max(prnu_var, 0.0)) / level
        normalised[mask] = signal[mask] / level
        normalised_temporal[mask] = signal_temporal[mask] / level**2
    valid = channels >= 0
    dark_split = spatial_components(dark, valid, dark_temporal)
    prnu_split = spatial_components(normalised, valid, normalised_temporal)
    mean_gain = float(np.nanmean(gain))
    dark_spectra = spectrograms(dark, valid, dark_temporal)
    prnu_spectra = spectrograms(normalised, valid, normalised_temporal)
    dark_histogram = defect_histograms(dark, valid, high_pass=False)
    prnu_histogram = defect_histograms(100.0 * normalised, valid, high_pass=True)
    return NonUniformity(
        dsnu_e=dsnu_dn / gain,
        prnu_percent=prnu,
        dsnu_row_e=np.sqrt(dark_split[0]) / mean_gain,
        dsnu_column_e=np.sqrt(dark_split[1]) / mean_gain,
        dsnu_pixel_e=np.sqrt(dark_split[2]) / mean_gain,
        prnu_row_percent=100.0 * np.sqrt(prnu_split[0]),
        prnu_column_percent=100.0 * np.sqrt(prnu_split[1]),
        prnu_pixel_percent=100.0 * np.sqrt(prnu_split[2]),
        dsnu_dn=dsnu_dn,
        spectrogram_horizontal_frequency=dark_spectra.horizontal_frequency,
        spectrogram_vertical_frequency=dark_spectra.vertical_frequency,
        dsnu_spectrogram_horizontal_e=dark_spectra.horizontal / mean_gain,
        dsnu_spectrogram_vertical_e=dark_spectra.vertical / mean_gain,
        prnu_spectrogram_horizontal_percent=100.0 * prnu_spectra.horizontal,
        prnu_spectrogram_vertical_percent=100.0 * prnu_spectra.vertical,
        dsnu_histogram_bins_dn=dark_histogram.bin_edges,
        dsnu_histogram_counts=dark_histogram.counts,
        dsnu_accumulated_dn=dark_histogram.accumulated_deviation,
        dsnu_accumulated_percent=dark_histogram.accumulated_percent,
        prnu_histogram_bins_percent=prnu_histogram.bin_edges,
        prnu_histogram_counts=prnu_histogram.counts,
        prnu_accumulated_percent_deviation=prnu_histogram.accumulated_deviation,
        prnu_accumulated_percent=prnu_histogram.accumulated_percent,
    )


def channel_map(slots, n_filters: int) -> np.ndarray:
    """Channel (filter index) of each pixel from a ``MosaicLayout.slot_map``: slot % n_filters,
    -1 where the slot is -1 (gaps, margins, outside the mosaic)."""
    slots = np.asarray(slots)
    return np.where(slots >= 0, slots % n_filters, -1).astype(np.int32)

"""EMVA 1288 (Release 4.0, Linear) spectrograms of the spatial non-uniformity and the
defect-pixel histograms.

Reference: EMVA Standard 1288 Release 4.0 Linear, sec. 4 ("Spatial nonuniformity and defect
pixels": 4.3 the types of nonuniformity seen in spectrograms, 4.4 defect pixels with the
logarithmic and the accumulated histograms) and sec. 8 (the methods: horizontal and vertical
spectrograms, defect-pixel characterisation with high-pass filtering).

Horizontal spectrogram (periodic patterns along a row: column noise). For the M rows of N
pixels of an image y (the dark average for DSNU, the dark-subtracted and normalised bright
average for PRNU), with the mean removed::

    Y_m(k) = 1 / sqrt(N) sum_n (y_mn - mu) exp(-2 pi i n k / N)     (DFT of row m)
    p(k)   = 1 / M sum_m |Y_m(k)|^2 - sigma^2_stack / L              (mean power, temporal
                                                                      part of the L-frame
                                                                      average removed)
    spectrogram(k) = sqrt(p(k)),   k / N cycles per pixel, 0 ... 1/2

By Parseval the mean of p over all k is the spatial variance s^2, so white (pixel) noise is a
flat line at s and a row or column pattern is a peak. The vertical spectrogram is the same
over columns. Pixels left out of the channels map count as zero deviation; the power is
divided by the fraction of valid pixels so the flat level stays s.

Defect-pixel histograms: deviations of every valid pixel from the mean, for DSNU of the dark
average (DN), for PRNU of the normalised bright average (%) after high-pass filtering (the
image minus its 5x5 box mean, so that the slow illumination shading does not count as
defects). The *logarithmic* histogram counts the pixels in Q <= 256 bins (plotted on a log
axis, where the normal distribution of the same standard deviation is a parabola and the
outliers stand apart); the *accumulated* histogram gives, for every absolute deviation x, the
percentage of pixels deviating by at least x.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

HIGH_PASS_BOX = 5
HISTOGRAM_BINS = 256


@dataclass(frozen=True)
class Spectrograms:
    """Horizontal and vertical spectrograms of one image (standard-deviation spectra).

    Attributes
    ----------
    horizontal_frequency : (N // 2 + 1,) cycles per pixel along a row
    horizontal : (N // 2 + 1,) rms deviation per frequency, image units
    vertical_frequency : (M // 2 + 1,) cycles per pixel along a column
    vertical : (M // 2 + 1,) image units
    """

    horizontal_frequency: np.ndarray
    horizontal: np.ndarray
    vertical_frequency: np.ndarray
    vertical: np.ndarray


def _deviation_image(image, valid) -> tuple[np.ndarray, np.ndarray]:
    image = np.asarray(image, dtype=np.float64)
    valid = np.ones(image.shape, bool) if valid is None else np.asarray(valid, bool)
    if image.ndim != 2 or valid.shape != image.shape:
        raise ValueError(f"image must be 2-D (H, W) with a valid mask of its shape, got "
                         f"{image.shape} and {valid.shape}")  # fmt: skip
    if not valid.any():
        raise ValueError("the valid mask selects no pixel")
    mean = float(np.mean(image[valid]))
    return np.where(valid, image - mean, 0.0), valid


def spectrograms(image, valid=None, temporal_variance=None) -> Spectrograms:
    """Horizontal and vertical spectrograms (see the module doc).

    Parameters
    ----------
    image : array_like (H, W)
        Average image, DN (or normalised units).
    valid : array_like of bool (H, W), optional
        Pixels to use (default all).
    temporal_variance : array_like (H, W), optional
        Variance of ``image`` from temporal noise (sigma^2 / L per pixel); its mean over the
        valid pixels is removed from the power.
    """
    z, valid = _deviation_image(image, valid)
    fraction = float(valid.mean())
    temporal = 0.0
    if temporal_variance is not None:
        temporal = float(np.mean(np.asarray(temporal_variance)[valid]))

    def along(axis: int) -> tuple[np.ndarray, np.ndarray]:
        length = z.shape[axis]
        power = np.abs(np.fft.rfft(z, axis=axis)) ** 2 / length
        power = power.mean(axis=1 - axis) / fraction - temporal
        return np.fft.rfftfreq(length), np.sqrt(np.clip(power, 0.0, None))

    horizontal_frequency, horizontal = along(1)
    vertical_frequency, vertical = along(0)
    return Spectrograms(horizontal_frequency, horizontal, vertical_frequency, vertical)


@dataclass(frozen=True)
class DefectHistogram:
    """Logarithmic and accumulated histograms of pixel deviations.

    Attributes
    ----------
    bin_edges : (Q + 1,) deviation from the mean, image units
    counts : (Q,) pixels per bin
    model_counts : (Q,) pixels per bin of a normal distribution of the same standard deviation
    accumulated_deviation : (Q,) absolute deviation x, image units (0 ... max)
    accumulated_percent : (Q,) % of the pixels deviating by >= x
    std : float, standard deviation of the deviations
    """

    bin_edges: np.ndarray
    counts: np.ndarray
    model_counts: np.ndarray
    accumulated_deviation: np.ndarray
    accumulated_percent: np.ndarray
    std: float


def high_pass_filtered(image, valid=None, box: int = HIGH_PASS_BOX) -> np.ndarray:
    """``image`` minus its ``box`` x ``box`` mean over the valid pixels (normalised
    convolution), (H, W); 0 outside ``valid``."""
    from scipy.ndimage import uniform_filter

    z, valid = _deviation_image(image, valid)
    weight = uniform_filter(valid.astype(np.float64), box, mode="nearest")
    local = uniform_filter(z, box, mode="nearest")
    with np.errstate(invalid="ignore", divide="ignore"):
        smooth = np.where(weight > 0, local / weight, 0.0)
    return np.where(valid, z - smooth, 0.0)


def defect_histograms(image, valid=None, high_pass: bool = False,
                      n_bins: int = HISTOGRAM_BINS) -> DefectHistogram:  # fmt: skip
    """Logarithmic and accumulated defect-pixel histograms of ``image`` (see the module doc).

    Parameters
    ----------
    image : array_like (H, W)
        Average image (DN for DSNU; % of the mean for PRNU).
    valid : array_like of bool (H, W), optional
    high_pass : bool
        Subtract the 5x5 box mean first (the PRNU histograms).
    n_bins : int
        Q, the number of bins (>= 2).
    """
    from scipy.special import ndtr

    if int(n_bins) != n_bins or n_bins < 2:
        raise ValueError(f"n_bins must be an integer >= 2, got {n_bins!r}")
    z, valid = _deviation_image(image, valid)
    if high_pass:
        z = high_pass_filtered(z, valid)
    deviation = z[valid] - z[valid].mean()
    std = float(deviation.std())
    low, high = float(deviation.min()), float(deviation.max())
    if high <= low:
        low, high = low - 0.5, high + 0.5
    edges = np.linspace(low, high, int(n_bins) + 1)
    counts = np.histogram(deviation, edges)[0]
    if std > 0:
        model = deviation.size * np.diff(ndtr(edges / std))
    else:
        model = np.zeros(int(n_bins))
    magnitude = np.abs(deviation)
    thresholds = np.linspace(0.0, float(magnitude.max()), int(n_bins))
    ordered = np.sort(magnitude)
    at_least = ordered.size - np.searchsorted(ordered, thresholds, side="left")
    return DefectHistogram(
        bin_edges=edges,
        counts=counts.astype(np.int64),
        model_counts=model,
        accumulated_deviation=thresholds,
        accumulated_percent=100.0 * at_least / ordered.size,
        std=std,
    )

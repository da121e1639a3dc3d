"""Quality metrics of spectral reconstruction, differentiable losses, and (re-exported from
:mod:`hyplex.models.label_metrics`) the segmentation metrics.

Array conventions
-----------------
The cube metrics (:func:`psnr`, :func:`ssim`, :func:`sam`, :func:`mrae`) accept numpy arrays or
torch tensors and return python floats.  The spectral (channel) axis follows the project
layouts (docs/architecture.md):

* numpy: channel-last, ``(..., H, W, L)`` — a cube ``(H, W, L)`` or a batch ``(N, H, W, L)``;
* torch: channel-first, ``(B, L, H, W)`` or ``(L, H, W)``.  Tensors are detached and moved to
  the CPU.  Tensors of fewer than 3 dimensions (e.g. spectra ``(N, L)``) are channel-last.

A keyword ``channel_axis`` overrides the convention.  The two axes before the channel axis (in
channel-last order) are the spatial axes ``(H, W)``; ``crop_border = b`` removes ``b`` pixels
from each side of both spatial axes before the metric is computed, as the NTIRE spectral
reconstruction challenges crop the image border.  Metrics are computed over the whole batch.

References
----------
[SSIM]  Z. Wang, A. C. Bovik, H. R. Sheikh, E. P. Simoncelli, "Image quality assessment: from
        error visibility to structural similarity", IEEE TIP 13(4), 2004, eq. (13) and
        section III-C (11x11 circular-symmetric Gaussian window, sigma = 1.5 px).
[SAM]   F. A. Kruse et al., "The spectral image processing system (SIPS)", Remote Sens.
        Environ. 44, 1993 (spectral angle mapper).
[NTIRE] B. Arad et al., "NTIRE 2022 Spectral Recovery Challenge and Data Set", CVPRW 2022
        (MRAE and RMSE/PSNR on border-cropped cubes).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.ndimage import gaussian_filter

from hyplex.models.label_metrics import (
    confusion_matrix,
    iou_per_class,
    mean_iou,
    real_fake_accuracy,
)

__all__ = [
    "confusion_matrix",
    "iou_per_class",
    "mean_iou",
    "mrae",
    "mrae_loss",
    "psnr",
    "real_fake_accuracy",
    "sam",
    "sam_loss",
    "ssim",
]

SSIM_SIGMA_PX = 1.5  # [SSIM] section III-C
SSIM_RADIUS_PX = 5  # 11 x 11 window; scipy's gaussian_filter radius int(3.5 * 1.5 + 0.5) = 5
SSIM_K1, SSIM_K2 = 0.01, 0.03  # [SSIM] eq. (6)-(9) constants


def _channel_last(x, name: str, channel_axis: int | None) -> np.ndarray:
    """Convert numpy/torch ``x`` to a float64 numpy array with the spectral axis last."""
    if isinstance(x, torch.Tensor):
        if channel_axis is None:
            channel_axis = {4: 1, 3: 0}.get(x.ndim, -1)
        x = x.detach().cpu().to(torch.float64).numpy()
    elif isinstance(x, np.ndarray):
        if channel_axis is None:
            channel_axis = -1
        x = x.astype(np.float64, copy=False)
    else:
        raise ValueError(f"{name} must be a numpy array or a torch tensor; got {type(x).__name__}")
    if x.ndim == 0:
        raise ValueError(f"{name} must have at least one (spectral) axis; got a scalar")
    return np.moveaxis(x, channel_axis, -1)


def _prepare_pair(pred, target, crop_border: int, channel_axis, min_ndim: int = 1):
    """Both inputs channel-last, equal shapes, border-cropped; returns (pred, target)."""
    p = _channel_last(pred, "pred", channel_axis)
    t = _channel_last(target, "target", channel_axis)
    if p.shape != t.shape:
        raise ValueError(
            f"pred and target must have the same shape; got {p.shape} and {t.shape} "
            "(channel-last view)"
        )
    if p.ndim < min_ndim:
        raise ValueError(
            f"expected at least {min_ndim} axes (..., H, W, L); got shape {p.shape} (channel-last)"
        )
    return _crop(p, crop_border), _crop(t, crop_border)


def _crop(x: np.ndarray, crop_border: int) -> np.ndarray:
    if not isinstance(crop_border, (int, np.integer)) or crop_border < 0:
        raise ValueError(f"crop_border must be a non-negative int; got {crop_border!r}")
    if crop_border == 0:
        return x
    if x.ndim < 3:
        raise ValueError(
            f"crop_border needs spatial axes (..., H, W, L); got shape {x.shape} (channel-last)"
        )
    height, width = x.shape[-3], x.shape[-2]
    if 2 * crop_border >= min(height, width):
        raise ValueError(
            f"crop_border={crop_border} removes the whole {height} x {width} image; "
            f"expected 2 * crop_border < min(H, W)"
        )
    b = crop_border
    return x[..., b : height - b, b : width - b, :]


def psnr(pred, target, data_range: float = 1.0, crop_border: int = 0, *, channel_axis=None):
    """Peak signal-to-noise ratio over a whole cube or batch, in dB.

    ``PSNR = 10 log10(data_range**2 / MSE)`` with one MSE over every element (all pixels, bands
    and batch items).

    Parameters
    ----------
    pred, target : numpy.ndarray (..., H, W, L) or torch.Tensor (B, L, H, W) / (L, H, W)
        Reconstructed and true cubes, same shape (see module docstring for layouts).
    data_range : float
        Peak value of the signal (1.0 for reflectance in [0, 1]).
    crop_border : int
        Pixels removed from each side of the spatial axes first.
    channel_axis : int, optional
        Spectral axis, overriding the layout convention.

    Returns
    -------
    float
        PSNR in dB; ``inf`` for a perfect prediction.
    """
    if not data_range > 0:
        raise ValueError(f"data_range must be > 0; got {data_range}")
    p, t = _prepare_pair(pred, target, crop_border, channel_axis)
    mse = float(np.mean((p - t) ** 2))
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(data_range**2 / mse)


def ssim(pred, target, data_range: float = 1.0, crop_border: int = 0, *, channel_axis=None):
    """Structural similarity [SSIM] with an 11x11 Gaussian window (sigma 1.5 px), per band.

    For each image and band, local means, variances and the covariance are Gaussian-weighted
    averages (population statistics, as in [SSIM]); the SSIM map is eq. (13),
    ``((2 mu_x mu_y + C1)(2 s_xy + C2)) / ((mu_x^2 + mu_y^2 + C1)(s_x^2 + s_y^2 + C2))`` with
    ``C1 = (0.01 data_range)^2``, ``C2 = (0.03 data_range)^2``.  Only pixels whose full window
    lies inside the image are averaged (a "valid" window, 5 px from each edge).  The result is
    the mean over those pixels, then over bands and batch items.

    Parameters
    ----------
    pred, target : numpy.ndarray (..., H, W, L) or torch.Tensor (B, L, H, W) / (L, H, W)
        Cubes of the same shape, ``H, W >= 11`` after ``crop_border``.
    data_range : float
        Peak value of the signal.
    crop_border : int
        Pixels removed from each side of the spatial axes first.
    channel_axis : int, optional
        Spectral axis, overriding the layout convention.

    Returns
    -------
    float
        Mean SSIM in [-1, 1]; 1 for a perfect prediction.
    """
    if not data_range > 0:
        raise ValueError(f"data_range must be > 0; got {data_range}")
    p, t = _prepare_pair(pred, target, crop_border, channel_axis, min_ndim=3)
    window = 2 * SSIM_RADIUS_PX + 1
    if min(p.shape[-3], p.shape[-2]) < window:
        raise ValueError(
            f"ssim needs H, W >= {window} (the Gaussian window of [SSIM]); got spatial size "
            f"{p.shape[-3]} x {p.shape[-2]}"
        )
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    # Filter only over the two spatial axes (sigma 0 elsewhere), radius 5 => 11 x 11 window.
    sigma = [0.0] * p.ndim
    sigma[-3] = sigma[-2] = SSIM_SIGMA_PX
    truncate = SSIM_RADIUS_PX / SSIM_SIGMA_PX

    def local_mean(a: np.ndarray) -> np.ndarray:
        return gaussian_filter(a, sigma, mode="reflect", truncate=truncate)

    mu_p, mu_t = local_mean(p), local_mean(t)
    var_p = local_mean(p * p) - mu_p**2
    var_t = local_mean(t * t) - mu_t**2
    cov = local_mean(p * t) - mu_p * mu_t
    ssim_map = ((2 * mu_p * mu_t + c1) * (2 * cov + c2)) / (
        (mu_p**2 + mu_t**2 + c1) * (var_p + var_t + c2)
    )
    r = SSIM_RADIUS_PX
    return float(np.mean(ssim_map[..., r:-r, r:-r, :]))


def sam(pred, target, eps: float = 1e-8, crop_border: int = 0, *, channel_axis=None):
    """Spectral angle mapper [SAM]: mean angle between predicted and true spectra, in degrees.

    Per pixel, ``angle = arccos(<p, t> / (|p| |t|))`` (evaluated in Kahan's stable form).
    Zero-spectrum guard: a pixel where both spectra have norm below ``eps`` scores 0 deg (both
    are black: they agree); a pixel where only one does scores 90 deg (no direction to agree).

    Parameters
    ----------
    pred, target : numpy.ndarray (..., L) or torch.Tensor (B, L, H, W) / (L, H, W) / (N, L)
        Spectra or cubes of the same shape.
    eps : float
        Norm below which a spectrum counts as zero.
    crop_border : int
        Pixels removed from each side of the spatial axes first.
    channel_axis : int, optional
        Spectral axis, overriding the layout convention.

    Returns
    -------
    float
        Mean spectral angle in degrees, in [0, 180].
    """
    p, t = _prepare_pair(pred, target, crop_border, channel_axis)
    norm_p, norm_t = np.linalg.norm(p, axis=-1), np.linalg.norm(t, axis=-1)
    zero_p, zero_t = norm_p < eps, norm_t < eps
    # arccos(cosine) loses ~1e-8 rad near 0 deg; Kahan's form 2 atan2(|u - v|, |u + v|) of the
    # unit vectors u, v is the same angle and accurate everywhere.
    u = p / np.maximum(norm_p, eps)[..., None]
    v = t / np.maximum(norm_t, eps)[..., None]
    angle = np.degrees(
        2.0 * np.arctan2(np.linalg.norm(u - v, axis=-1), np.linalg.norm(u + v, axis=-1))
    )
    angle = np.where(zero_p & zero_t, 0.0, np.where(zero_p | zero_t, 90.0, angle))
    return float(np.mean(angle))


def mrae(pred, target, eps: float = 1e-3, crop_border: int = 0, *, channel_axis=None):
    """Mean relative absolute error of [NTIRE]: ``mean(|pred - target| / |target|)``.

    Near-zero guard: the denominator is ``max(|target|, eps)``, so elements with
    ``|target| >= eps`` get the exact NTIRE value and darker ones are scored as absolute error
    divided by ``eps`` (no division by zero, no infinite error for black pixels).

    Parameters
    ----------
    pred, target : numpy.ndarray or torch.Tensor, same shape
        Cubes (see module docstring for layouts).
    eps : float
        Smallest denominator, in the units of ``target``.
    crop_border : int
        Pixels removed from each side of the spatial axes first.
    channel_axis : int, optional
        Spectral axis, overriding the layout convention.

    Returns
    -------
    float
        MRAE (dimensionless; 0 for a perfect prediction).
    """
    if not eps > 0:
        raise ValueError(f"eps must be > 0; got {eps}")
    p, t = _prepare_pair(pred, target, crop_border, channel_axis)
    return float(np.mean(np.abs(p - t) / np.maximum(np.abs(t), eps)))


def mrae_loss(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """Differentiable MRAE for training: ``mean(|pred - target| / max(|target|, eps))``.

    Parameters
    ----------
    pred, target : torch.Tensor, same shape (any layout)
        Prediction (carries gradients) and ground truth.
    eps : float
        Smallest denominator (same guard as :func:`mrae`).

    Returns
    -------
    torch.Tensor, scalar
    """
    _check_loss_inputs(pred, target)
    return ((pred - target).abs() / target.abs().clamp_min(eps)).mean()


def sam_loss(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Differentiable spectral angle for training, mean over pixels, in RADIANS.

    Parameters
    ----------
    pred, target : torch.Tensor, (B, L, H, W) or (N, L)
        The spectral axis is 1 (channel-first cubes, or rows of spectra).
    eps : float
        Floor of ``|p| |t|``; the cosine is clamped to ``[-1 + 1e-7, 1 - 1e-7]`` so the gradient
        of ``arccos`` stays finite at a perfect match.

    Returns
    -------
    torch.Tensor, scalar
    """
    _check_loss_inputs(pred, target)
    if pred.ndim not in (2, 4):
        raise ValueError(f"sam_loss expects (B, L, H, W) or (N, L); got shape {tuple(pred.shape)}")
    dot = (pred * target).sum(dim=1)
    norms = pred.norm(dim=1) * target.norm(dim=1)
    cosine = dot / norms.clamp_min(eps)
    return torch.acos(cosine.clamp(-1.0 + 1e-7, 1.0 - 1e-7)).mean()


def _check_loss_inputs(pred, target) -> None:
    if not isinstance(pred, torch.Tensor) or not isinstance(target, torch.Tensor):
        raise ValueError("losses take torch tensors; use the metric functions for numpy arrays")
    if pred.shape != target.shape:
        raise ValueError(
            f"pred and target must have the same shape; got {tuple(pred.shape)} and "
            f"{tuple(target.shape)}"
        )

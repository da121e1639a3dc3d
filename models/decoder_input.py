"""What a decoder accepts: barcode maps ``(B, C, h, w)`` or point barcodes ``(N, C)``.

A camera gives barcode *maps*; a spectrometer measuring the same filters (a calibration pair,
a point probe) gives barcode *vectors*. Every decoder of :mod:`hyplex.models.reconstruction`
and :mod:`hyplex.models.segmentation` takes both: ``(N, C)`` is decoded as ``N`` one-pixel
maps ``(N, C, 1, 1)`` and the answer comes back as ``(N, L)`` (or ``(N, n_classes)``), the
rank of the input. For a convolutional decoder a one-pixel map is a uniform patch of that
barcode (its padding replicates the edge), which is what a spectrometer's spot measures.

The input may be a torch tensor or a numpy array of any real dtype (float64 from a
spectrometer's software, float32 from the camera); it is cast at the boundary to the dtype
and device of the module's parameters, so a float32 decoder returns float32 for a float64
input.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

__all__ = ["as_barcode_maps", "restore_points"]


def _module_tensor(module: nn.Module) -> torch.Tensor | None:
    for tensor in module.parameters():
        return tensor
    for tensor in module.buffers():
        if tensor.is_floating_point():
            return tensor
    return None


def as_barcode_maps(x, in_channels: int, module: nn.Module, what: str = "barcodes"):
    """``x`` as a ``(B, in_channels, h, w)`` tensor in ``module``'s dtype and device.

    Parameters
    ----------
    x : torch.Tensor or numpy.ndarray, ``(B, C, h, w)`` or ``(N, C)``, real dtype.
    in_channels : the ``C`` the module reads.
    module : the decoder (its first parameter sets the dtype and device).
    what : the input's name in error messages.

    Returns
    -------
    maps : torch.Tensor, ``(B, C, h, w)`` (``(N, C, 1, 1)`` for point input).
    points : bool, True when ``x`` was ``(N, C)`` (pass to :func:`restore_points`).

    Raises
    ------
    ValueError
        Another rank, another ``C``, or a dtype that is not a real number (bool, complex).
    """
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(x))
    shapes = f"(B, {in_channels}, h, w) or points (N, {in_channels})"
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"expected {what} of shape {shapes}; got {type(x).__name__}")
    if x.ndim not in (2, 4) or x.shape[1] != in_channels:
        raise ValueError(f"expected {what} of shape {shapes}; got {tuple(x.shape)}")
    if x.dtype == torch.bool or x.is_complex():
        raise ValueError(f"{what} must be real numbers (float32 or float64); got {x.dtype}")
    reference = _module_tensor(module)
    if reference is not None and (x.dtype != reference.dtype or x.device != reference.device):
        x = x.to(device=reference.device, dtype=reference.dtype)
    elif not x.is_floating_point():
        x = x.to(torch.get_default_dtype())
    points = x.ndim == 2
    return (x[:, :, None, None] if points else x), points


def restore_points(out: torch.Tensor, points: bool) -> torch.Tensor:
    """The decoder's ``(N, K, 1, 1)`` output as ``(N, K)`` when the input was points."""
    return out[:, :, 0, 0] if points else out

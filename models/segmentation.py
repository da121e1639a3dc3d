"""Semantic segmentation decoders: barcodes / RGB / cubes ``(B, C, h, w)`` -> logits.

The nets are hyperspectral-native: they read the metasurface barcodes (``C = 9`` for Hyplex)
directly, not a reconstructed cube, as in Makarenko et al. (CVPR 2022) and the
1.2 Tb/s platform (Nat. Commun. 2024).  Only ``in_channels`` changes for RGB (3) or full-cube
(``L``, e.g. 34 or 204) baselines.

* :class:`UNet` — U-Net of [U-Net] (3x3 conv pairs, 2x2 max-pooling, transposed-conv upsampling
  with skip concatenation), with BatchNorm and "same" padding.
* :class:`SpectralAttentionSegNet` — a lightweight encoder-decoder of depthwise-separable
  convolutions [MobileNet] with squeeze-and-excitation channel attention [SE] on the input
  bands and in every stage, and a spectral-wise self-attention block [MST++] at the bottleneck.

Both accept any ``h, w`` (inputs are edge-padded to a multiple of ``2**depth`` and logits are
cropped back) and store their constructor kwargs in ``.config`` for :func:`build_segmenter`.
Point barcodes ``(N, C)`` give logits ``(N, n_classes)`` (each a uniform one-pixel map), and
any real dtype is cast to the model's (:mod:`hyplex.models.decoder_input`). ``whiten=True``
decorrelates the input channels first (:mod:`hyplex.models.whitening`).

References
----------
[U-Net] O. Ronneberger, P. Fischer, T. Brox, "U-Net: Convolutional Networks for Biomedical
        Image Segmentation", MICCAI 2015, Fig. 1.
[SE]    J. Hu, L. Shen, G. Sun, "Squeeze-and-Excitation Networks", CVPR 2018.
[MobileNet] A. G. Howard et al., "MobileNets", arXiv:1704.04861 (2017).
[MST++] Y. Cai et al., CVPR Workshops 2022, section 3.2.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hyplex.models.decoder_input import as_barcode_maps, restore_points
from hyplex.models.layers import (
    DepthwiseSeparableConv,
    SpectralAttentionBlock,
    SqueezeExcitation,
    crop_to,
    pad_to_multiple,
)
from hyplex.models.realtime import SeparableSegNet
from hyplex.models.whitening import BarcodeWhitening

__all__ = [
    "SEGMENTERS",
    "FAKE_PREFIX",
    "SpectralAttentionSegNet",
    "UNet",
    "build_segmenter",
    "fake_class_ids",
    "predict_labels",
]

# hyplex.simulation.scenes.class_names_for names fakes "fake_<class>":
# ["background", *classes, *("fake_" + c for c in fake_classes)].
FAKE_PREFIX = "fake_"


def _check_config(in_channels, n_classes, **positive) -> None:
    for name, value in {"in_channels": in_channels, "n_classes": n_classes, **positive}.items():
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive int; got {value!r}")
    if n_classes < 2:
        raise ValueError(f"n_classes must be >= 2; got {n_classes}")


def _double_conv(in_channels: int, out_channels: int) -> nn.Sequential:
    """Two 3x3 conv -> BatchNorm -> ReLU layers ([U-Net] Fig. 1, blue arrows)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
        nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class UNet(nn.Module):
    """U-Net [U-Net] on barcodes (or RGB / cube) channels.

    Encoder: ``depth`` times (double 3x3 conv, 2x2 max-pool), channels ``base * 2**level``;
    bottleneck double conv at ``base * 2**depth``; decoder: 2x2 transposed conv halving the
    channels, concatenation with the skip, double conv; 1x1 conv to class logits.

    Parameters
    ----------
    in_channels : int
        Input channels (9 barcodes, 3 RGB, or ``L`` bands).
    n_classes : int
        Number of classes (including background 0), >= 2.
    base_channels : int
        Channels of the first level.
    depth : int
        Number of 2x downsamplings.
    whiten : bool
        ZCA-whiten the input channels first (:class:`~hyplex.models.whitening.
        BarcodeWhitening`): collinear barcodes of broad metasurface filters train slowly.

    Notes
    -----
    BatchNorm in training mode needs more than one value per channel: a batch of 1 at an input
    smaller than ``2**depth`` pixels cannot be trained (inference is fine).
    """

    def __init__(
        self,
        in_channels: int,
        n_classes: int,
        base_channels: int = 16,
        depth: int = 3,
        whiten: bool = False,
    ):
        super().__init__()
        _check_config(in_channels, n_classes, base_channels=base_channels, depth=depth)
        self.config = {
            "in_channels": int(in_channels),
            "n_classes": int(n_classes),
            "base_channels": int(base_channels),
            "depth": int(depth),
            "whiten": bool(whiten),
        }
        self.whitening = BarcodeWhitening(in_channels) if whiten else None
        self.in_channels, self.n_classes, self.multiple = int(in_channels), int(n_classes), 2**depth
        widths = [base_channels * 2**level for level in range(depth + 1)]
        self.encoder = nn.ModuleList()
        channels = in_channels
        for width in widths[:-1]:
            self.encoder.append(_double_conv(channels, width))
            channels = width
        self.bottleneck = _double_conv(widths[-2], widths[-1])
        self.upsample, self.decoder = nn.ModuleList(), nn.ModuleList()
        for level in reversed(range(depth)):
            self.upsample.append(nn.ConvTranspose2d(widths[level + 1], widths[level], 2, 2))
            self.decoder.append(_double_conv(2 * widths[level], widths[level]))
        self.head = nn.Conv2d(widths[0], n_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_channels, h, w) -> logits (B, n_classes, h, w)`` for any ``h, w``; points
        ``(N, in_channels) -> (N, n_classes)``; any real dtype, cast to the module's."""
        x, points = as_barcode_maps(x, self.in_channels, self, "input")
        if self.whitening is not None:
            x = self.whitening(x)
        x, size = pad_to_multiple(x, self.multiple)
        skips = []
        for block in self.encoder:
            x = block(x)
            skips.append(x)
            x = F.max_pool2d(x, 2)
        x = self.bottleneck(x)
        for up, block in zip(self.upsample, self.decoder, strict=True):
            x = block(torch.cat([up(x), skips.pop()], dim=1))
        return restore_points(crop_to(self.head(x), size), points)


class SpectralAttentionSegNet(nn.Module):
    """Lightweight encoder-decoder with spectral (channel) attention.

    ::

        input --SE over bands--> spectral embedding (1x1 conv, 1x1 conv: per-pixel MLP) = e
          e -> [DWSep conv + SE -> skip; stride-2 DWSep (channels double)] x depth
            -> bottleneck: spectral attention block (S-MSA, [MST++] eq. (1)-(4))
            -> [bilinear x2 -> concat skip -> DWSep conv + SE] x depth = d
        concat(d, e) -> 1x1 conv -> logits

    The band-level SE [SE] learns a per-image weighting of the input bands (for barcodes: of the
    9 metasurface filters), the stage SEs re-weight feature channels, and the bottleneck
    S-MSA mixes channels with a content-dependent ``(C x C)`` map.  The per-pixel spectral
    embedding ``e`` also feeds the head directly: a class that is defined by its spectrum (a
    material, a painted metamer) is then decided from the pixel's own barcode, with the
    depthwise-separable U adding spatial context.  (On a toy two-material set the shortcut let
    the net learn the spectral rule in far fewer steps than the plain U.)  After a short
    training, or when the encoder feeding it changes, refresh the BatchNorm statistics with
    :func:`hyplex.models.layers.recalibrate_batchnorm`.

    Parameters
    ----------
    in_channels : int
        Input channels (9 barcodes, 3 RGB, or ``L`` bands).
    n_classes : int
        Number of classes (including background 0), >= 2.
    width : int
        Channels of the spectral embedding and first stage (doubles per downsampling).
    depth : int
        Number of 2x downsamplings.
    reduction : int
        Squeeze-and-excitation bottleneck ratio.
    n_heads : int
        Heads of the bottleneck S-MSA (must divide ``width * 2**depth``).
    whiten : bool
        ZCA-whiten the input channels first (:class:`~hyplex.models.whitening.
        BarcodeWhitening`).
    """

    def __init__(
        self,
        in_channels: int,
        n_classes: int,
        width: int = 24,
        depth: int = 2,
        reduction: int = 4,
        n_heads: int = 1,
        whiten: bool = False,
    ):
        super().__init__()
        _check_config(
            in_channels, n_classes, width=width, depth=depth, reduction=reduction, n_heads=n_heads
        )
        if (width * 2**depth) % n_heads:
            raise ValueError(
                f"n_heads must divide the bottleneck width {width * 2**depth}; got {n_heads}"
            )
        self.config = {
            "in_channels": int(in_channels),
            "n_classes": int(n_classes),
            "width": int(width),
            "depth": int(depth),
            "reduction": int(reduction),
            "n_heads": int(n_heads),
            "whiten": bool(whiten),
        }
        self.in_channels, self.n_classes, self.multiple = int(in_channels), int(n_classes), 2**depth
        self.whitening = BarcodeWhitening(in_channels) if whiten else None
        self.band_attention = SqueezeExcitation(in_channels, reduction)
        # Per-pixel spectral embedding: two 1x1 convolutions, i.e. an MLP on each barcode.
        self.spectral_embedding = nn.Sequential(
            nn.Conv2d(in_channels, width, 1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
        )
        widths = [width * 2**level for level in range(depth + 1)]
        self.encoder, self.downsample = nn.ModuleList(), nn.ModuleList()
        for level in range(depth):
            self.encoder.append(self._stage(widths[level], widths[level], reduction))
            self.downsample.append(DepthwiseSeparableConv(widths[level], widths[level + 1], 2))
        self.bottleneck = SpectralAttentionBlock(widths[-1], n_heads, expansion=2)
        self.decoder = nn.ModuleList(
            self._stage(widths[level + 1] + widths[level], widths[level], reduction)
            for level in reversed(range(depth))
        )
        # The head sees the spatial decoder output and the per-pixel spectral embedding.
        self.head = nn.Conv2d(2 * widths[0], n_classes, 1)

    @staticmethod
    def _stage(in_channels: int, out_channels: int, reduction: int) -> nn.Sequential:
        return nn.Sequential(
            DepthwiseSeparableConv(in_channels, out_channels),
            SqueezeExcitation(out_channels, reduction),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_channels, h, w) -> logits (B, n_classes, h, w)`` for any ``h, w``; points
        ``(N, in_channels) -> (N, n_classes)``; any real dtype, cast to the module's."""
        x, points = as_barcode_maps(x, self.in_channels, self, "input")
        if self.whitening is not None:
            x = self.whitening(x)
        x, size = pad_to_multiple(x, self.multiple)
        spectral = self.spectral_embedding(self.band_attention(x))
        x, skips = spectral, []
        for stage, down in zip(self.encoder, self.downsample, strict=True):
            x = stage(x)
            skips.append(x)
            x = down(x)
        x = self.bottleneck(x)
        for stage in self.decoder:
            skip = skips.pop()
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = stage(torch.cat([x, skip], dim=1))
        logits = crop_to(self.head(torch.cat([x, spectral], dim=1)), size)
        return restore_points(logits, points)


SEGMENTERS: dict[str, type[nn.Module]] = {
    "unet": UNet,
    "attention": SpectralAttentionSegNet,
    "separable": SeparableSegNet,  # the real-time profile (hyplex.models.realtime)
}


def build_segmenter(name: str, **config) -> nn.Module:
    """Build a segmentation model by registry name.

    Parameters
    ----------
    name : str
        A key of :data:`SEGMENTERS` (``"unet"`` or ``"attention"``).
    **config
        Constructor keyword arguments (e.g. a model's ``.config``).

    Returns
    -------
    torch.nn.Module
    """
    if name not in SEGMENTERS:
        raise ValueError(f"unknown segmenter {name!r}; expected one of {sorted(SEGMENTERS)}")
    return SEGMENTERS[name](**config)


def fake_class_ids(class_names: Sequence[str]) -> list[int]:
    """Class ids that denote fakes (painted metamers) in a scene's ``class_names``.

    Parameters
    ----------
    class_names : sequence of str
        Class names indexed by label id, as produced by
        ``hyplex.simulation.scenes.class_names_for(classes, fake_classes)``:
        ``["background", *classes, *("fake_" + c for c in fake_classes)]``.

    Returns
    -------
    list of int
        Ascending ids whose name starts with ``"fake_"`` (empty when the scene has no fakes).
    """
    if isinstance(class_names, str) or not all(isinstance(n, str) for n in class_names):
        raise ValueError(f"class_names must be a sequence of str; got {class_names!r}")
    return [i for i, name in enumerate(class_names) if name.startswith(FAKE_PREFIX)]


def predict_labels(logits: torch.Tensor) -> torch.Tensor:
    """Per-pixel class labels from logits.

    Parameters
    ----------
    logits : torch.Tensor, (B, n_classes, h, w), or (N, n_classes) for point barcodes
        Segmentation scores.

    Returns
    -------
    torch.Tensor, (B, h, w) or (N,), int64
        ``argmax`` over the class axis, on the logits' device.
    """
    if not isinstance(logits, torch.Tensor) or logits.ndim not in (2, 4):
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ValueError(
            f"expected logits of shape (B, n_classes, h, w) or (N, n_classes); got {shape}"
        )
    return logits.argmax(dim=1)

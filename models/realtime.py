"""The real-time decoder profile: decoders sized for 30 fps full frames on 2 CPU cores.

A 4000 x 3000 frame of the prototype (3 x 3 sub-filters of 7.287 px) holds 137 x 183
metapixels of 9 barcode values; a 1 px sub-filter pitch would give 1000 x 1333. At 30 fps a
2-core CPU has 33 ms per frame for every stage, and the barcode extraction from the 12 Mpx
raw frame takes its share first, so the decoders of the real-time profile spend their work
where it pays:

::

    barcodes (B, 9, h, w)
      reconstruction: SeparableReconstructor
        s = W b + c (1x1 conv, 9 -> L, the Hyplex linear projector)  [Hyplex, CVPR 2022]
          + 1x1 9 -> C -> depthwise 3x3 (residual) -> 1x1 C -> C -> 1x1 C -> L
      segmentation:   SeparableSegNet
        whiten (ZCA, folded into the 1x1 convs at inference)
        pixel branch (full resolution):   1x1 conv 9 -> K                  -> logits_pixel
        context branch (1/f resolution): avg-pool f x f -> 1x1 conv 9 -> C, BN, ReLU
            -> [depthwise 3x3 + BN + ReLU -> pointwise 1x1 + BN + ReLU] x n_blocks
            -> 1x1 conv C -> K -> nearest x f                           -> logits_context
        logits = logits_pixel + logits_context

* The depthwise-separable blocks factor a 3x3 convolution into a depthwise 3x3 and a
  pointwise 1x1 (Howard et al., "MobileNets: Efficient Convolutional Neural Networks for
  Mobile Vision Applications", arXiv:1704.04861, sec. 3.1, eq. 1-4: the cost ratio to a full
  3x3 is ``1/N + 1/9``). The spatial context is computed at ``1/f`` of the resolution
  (f = 4 by default: 1/16 of the pixels), while the per-pixel branch keeps the spectral
  decision at full resolution (a material is decided by its own barcode).
* Inference folds BatchNorm into the preceding convolution (:func:`fuse_conv_bn`, the
  standard fold ``w' = w gamma / sqrt(var + eps)``, ``b' = beta + (b - mean) gamma /
  sqrt(var + eps)``; Jacob et al., "Quantization and Training with Integer-Arithmetic-Only
  Inference", CVPR 2018, sec. 3.2) and the ZCA whitening (an affine map ``W (x - mu)``) into
  the first 1x1 convolutions: :meth:`SeparableSegNet.fused` returns a module with no
  normalisation layer left, computing the same function (tested).
* The reconstruction is the Hyplex linear projector (9 -> L per pixel) plus a small
  depthwise-separable correction (zero at the start of training), trained jointly with the
  encoder as the full profile trains its MST++ (Cai et al., "MST++: Multi-stage
  Spectral-wise Transformer for Efficient Spectral Reconstruction", CVPRW 2022), at about
  1/20 of its multiply-adds.

:func:`realtime_codesign_settings` turns a full-profile
:class:`~hyplex.models.codesign_config.CodesignConfig` into the real-time one (same scenes,
encoder, steps, step sizes and seeds; other decoders), so the accuracy cost of the profile is
measured against the full profile on the same held-out scenes
(``benchmarks/video.py --profile realtime``).

Weight averaging
----------------
The real-time reconstructor decodes with an exponential moving average of its weights and
BatchNorm statistics over the training steps (``average_decay`` 0.99: about the last 100
steps): Polyak-Ruppert averaging (Polyak & Juditsky, "Acceleration of Stochastic Approximation
by Averaging", SIAM J. Control Optim. 30(4), 1992) in the exponential form of Kingma & Ba,
"Adam: A Method for Stochastic Optimization", ICLR 2015, sec. 7.2 ("temporal averaging":
``theta_bar_t = beta theta_bar_(t-1) + (1 - beta) theta_t``; here the first step copies
instead of the bias correction). Why: the real-time decoding is noise-limited (a per-pixel map
from noisy, nearly collinear barcodes), and the small reconstructor trained at the co-design's
constant step size ends on the noise floor of its stochastic gradients; averaging the iterates
lowers that floor (tested on a fixed-seed noisy regression in
``tests/models/test_realtime.py``). The average is a passive copy: it draws no random numbers
and gets no gradient, so the run (encoder, segmenter, the trained weights) is the same as
without it, and the engine's fused copy is the average's, at no inference cost. Capacity was
not the limit: on seed 1 of the quick co-design, at a constant step size without averaging,
widths 32 / 48 / 64 gave 37.84 / 37.39 / 37.83 dB (the full profile: 38.42); the README row
"real-time profile, full frame" has the figures of every seed and their command.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hyplex.models.decoder_input import as_barcode_maps, restore_points
from hyplex.models.whitening import BarcodeWhitening

__all__ = [
    "PROFILES",
    "REALTIME_RECONSTRUCTOR",
    "REALTIME_SEGMENTER",
    "SeparableReconstructor",
    "SeparableSegNet",
    "fuse_conv_bn",
    "profile_of",
    "realtime_codesign_settings",
]

PROFILES = ("full", "realtime")
REALTIME_RECONSTRUCTOR = ("separable_projector", {"width": 32, "average_decay": 0.99})
REALTIME_SEGMENTER = ("separable", {"width": 24, "n_blocks": 2, "factor": 2, "whiten": True})


def _positive(**values) -> None:
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
            raise ValueError(f"{name} must be a positive int; got {value!r}")


@torch.no_grad()
def fuse_conv_bn(conv: nn.Conv2d, norm: nn.BatchNorm2d) -> nn.Conv2d:
    """A convolution computing ``norm(conv(x))`` of a BatchNorm in eval mode.

    Parameters
    ----------
    conv : torch.nn.Conv2d
        Weight ``(C_out, C_in / groups, k, k)``, bias optional.
    norm : torch.nn.BatchNorm2d
        ``C_out`` channels with running statistics.

    Returns
    -------
    torch.nn.Conv2d
        A new convolution with a bias: ``w' = w g``, ``b' = beta + (b - mean) g`` with
        ``g = gamma / sqrt(var + eps)`` per output channel.
    """
    if conv.out_channels != norm.num_features:
        raise ValueError(
            f"conv has {conv.out_channels} output channels, the BatchNorm "
            f"{norm.num_features}; expected them equal"
        )
    scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
    fused = nn.Conv2d(
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size,
        conv.stride,
        conv.padding,
        conv.dilation,
        conv.groups,
        bias=True,
    ).to(conv.weight)
    fused.weight.copy_(conv.weight * scale[:, None, None, None])
    bias = conv.bias if conv.bias is not None else torch.zeros_like(norm.running_mean)
    fused.bias.copy_(norm.bias + (bias - norm.running_mean) * scale)
    return fused


@torch.no_grad()
def _fold_affine_input(conv: nn.Conv2d, matrix: torch.Tensor, shift: torch.Tensor) -> nn.Conv2d:
    """A 1x1 convolution computing ``conv(matrix @ (x - shift))`` (whitening folded in)."""
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, 1, bias=True).to(conv.weight)
    weight = conv.weight[:, :, 0, 0] @ matrix.to(conv.weight)  # (out, in)
    bias = conv.bias if conv.bias is not None else torch.zeros(conv.out_channels).to(weight)
    fused.weight.copy_(weight[:, :, None, None])
    fused.bias.copy_(bias - weight @ shift.to(weight))
    return fused


class SeparableSegNet(nn.Module):
    """The real-time segmenter (see the module doc): a full-resolution per-pixel classifier
    plus depthwise-separable context at ``1 / factor`` of the resolution.

    Parameters
    ----------
    in_channels : int
        Input channels (9 barcodes).
    n_classes : int
        Classes including background 0, >= 2.
    width : int
        Channels ``C`` of the context branch.
    n_blocks : int
        Depthwise-separable blocks of the context branch.
    factor : int
        Downsampling of the context branch (average pooling, ``factor`` x ``factor``).
    whiten : bool
        ZCA-whiten the input channels (:class:`~hyplex.models.whitening.BarcodeWhitening`).

    Notes
    -----
    Forward: ``(B, in_channels, h, w) -> logits (B, n_classes, h, w)`` for any ``h, w``
    (the context is edge-padded to a multiple of ``factor`` and cropped back); points
    ``(N, in_channels) -> (N, n_classes)``. Multiply-adds per metapixel: ``9 K + (9 C +
    n (9 C + C^2) + C K) / f^2``; 540 at the profile's width 24, 2 blocks, f = 2 and K = 6,
    against 6968 for the full profile's U-Net (base 8, depth 2), counted from the layers in
    ``tests/models/test_realtime.py``.
    """

    def __init__(
        self,
        in_channels: int,
        n_classes: int,
        width: int = 16,
        n_blocks: int = 2,
        factor: int = 4,
        whiten: bool = False,
    ):
        super().__init__()
        _positive(
            in_channels=in_channels, n_classes=n_classes, width=width, n_blocks=n_blocks,
            factor=factor,
        )  # fmt: skip
        if n_classes < 2:
            raise ValueError(f"n_classes must be >= 2; got {n_classes}")
        self.config = {
            "in_channels": int(in_channels),
            "n_classes": int(n_classes),
            "width": int(width),
            "n_blocks": int(n_blocks),
            "factor": int(factor),
            "whiten": bool(whiten),
        }
        self.in_channels, self.n_classes, self.factor = int(in_channels), int(n_classes), factor
        self.whitening = BarcodeWhitening(in_channels) if whiten else None
        self.pixel_head = nn.Conv2d(in_channels, n_classes, 1)
        self.context_in = nn.Conv2d(in_channels, width, 1, bias=False)
        self.context_norm = nn.BatchNorm2d(width)
        self.blocks = nn.ModuleList()
        for _ in range(n_blocks):
            self.blocks.append(
                nn.ModuleDict(
                    {
                        "depthwise": nn.Conv2d(width, width, 3, 1, 1, groups=width, bias=False),
                        "depthwise_norm": nn.BatchNorm2d(width),
                        "pointwise": nn.Conv2d(width, width, 1, bias=False),
                        "pointwise_norm": nn.BatchNorm2d(width),
                    }
                )
            )
        self.context_head = nn.Conv2d(width, n_classes, 1)
        self.is_fused = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (see the class doc)."""
        x, points = as_barcode_maps(x, self.in_channels, self, "input")
        if self.whitening is not None:
            x = self.whitening(x)
        height, width = x.shape[-2:]
        logits = self.pixel_head(x)
        if points:
            context = x  # one pixel: its own context
        else:
            pad_h, pad_w = (-height) % self.factor, (-width) % self.factor
            padded = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate") if pad_h or pad_w else x
            context = F.avg_pool2d(padded, self.factor) if self.factor > 1 else padded
        c = self.context_in(context)
        c = F.relu(c if self.context_norm is None else self.context_norm(c))
        for block in self.blocks:
            c = block["depthwise"](c)
            c = F.relu(c if "depthwise_norm" not in block else block["depthwise_norm"](c))
            c = block["pointwise"](c)
            c = F.relu(c if "pointwise_norm" not in block else block["pointwise_norm"](c))
        c = self.context_head(c)
        if not points and self.factor > 1:
            # nearest: the pixel branch carries the edges at full resolution, and nearest
            # upsampling costs a third of bilinear on the CPU at 1333 x 1000
            c = F.interpolate(c, scale_factor=self.factor, mode="nearest")
            c = c[..., :height, :width]
        return restore_points(logits + c, points)

    @torch.no_grad()
    def fused(self) -> SeparableSegNet:
        """An inference copy (eval mode) with every BatchNorm folded into its convolution and
        the whitening folded into the first 1x1 convolutions: the same function with fewer
        passes over memory. The copy cannot be trained further (``is_fused``)."""
        source = copy.deepcopy(self).eval()
        if source.is_fused:
            return source
        if source.whitening is not None:
            matrix = source.whitening.matrix(source.whitening.running_cov)
            shift = source.whitening.running_mean
            source.pixel_head = _fold_affine_input(source.pixel_head, matrix, shift)
            source.context_in = _fold_affine_input(source.context_in, matrix, shift)
            # avg-pooling is linear and commutes with the per-pixel affine whitening
            source.whitening = None
        source.context_in = fuse_conv_bn(source.context_in, source.context_norm)
        source.context_norm = None
        for block in source.blocks:
            block["depthwise"] = fuse_conv_bn(block["depthwise"], block["depthwise_norm"])
            block["pointwise"] = fuse_conv_bn(block["pointwise"], block["pointwise_norm"])
            del block["depthwise_norm"], block["pointwise_norm"]
        source.is_fused = True
        return source


def profile_of(reconstructor: str, segmenter: str) -> str:
    """``"realtime"`` when both decoder names are those of the real-time profile, else
    ``"full"`` (the profile a bundle records, ``hyplex.models.bundle``)."""
    realtime = reconstructor == REALTIME_RECONSTRUCTOR[0] and segmenter == REALTIME_SEGMENTER[0]
    return "realtime" if realtime else "full"


def realtime_codesign_settings(config):
    """The real-time profile of a co-design configuration: the same scenes, encoder, steps and
    seeds, with the decoders of :data:`REALTIME_RECONSTRUCTOR` and :data:`REALTIME_SEGMENTER`.

    Parameters
    ----------
    config : hyplex.models.codesign_config.CodesignConfig

    Returns
    -------
    CodesignConfig
    """
    return config.replace(
        reconstructor=REALTIME_RECONSTRUCTOR[0],
        reconstructor_config=dict(REALTIME_RECONSTRUCTOR[1]),
        segmenter=REALTIME_SEGMENTER[0],
        segmenter_config=dict(REALTIME_SEGMENTER[1]),
    )


class SeparableReconstructor(nn.Module):
    """The real-time reconstruction: the Hyplex linear projector plus a small
    depthwise-separable correction, at full resolution.

    ::

        b (B, F, h, w) -> linear 1x1 F -> L                                   = s_linear
        b -> 1x1 F -> C, BN, ReLU = e -> e + ReLU(BN(depthwise 3x3 (e)))
          -> 1x1 C -> C, BN, ReLU -> 1x1 C -> L                              = s_correction
        s = s_linear + s_correction

    The linear term is the Hyplex projector (its closed form, ``LinearDecoder.fit``, is
    where it starts being useful); the correction adds what a per-pixel affine map cannot:
    the nonlinearity of the spectra's prior and a 3 x 3 neighbourhood (a depthwise
    convolution, [MobileNet] sec. 3.1). About ``F L + F C + 9 C + C^2 + C L`` multiply-adds
    per metapixel (2.7 k at F = 9, L = 34, C = 32; the full profile's MST++ at width 16:
    about 60 k).

    Parameters
    ----------
    in_channels : int
        Barcode channels ``F`` (9).
    n_bands : int
        Output bands ``L``.
    width : int
        Channels ``C`` of the correction.
    average_decay : float
        In [0, 1): decode in evaluation mode (and fuse) with the exponential moving average
        of the weights and BatchNorm statistics, ``a <- decay a + (1 - decay) w`` at every
        training-mode call (module doc, "Weight averaging"; the profile uses 0.99); 0: no
        average (the trained weights decode).
    """

    def __init__(self, in_channels: int, n_bands: int, width: int = 32, average_decay: float = 0.0):
        super().__init__()
        _positive(in_channels=in_channels, n_bands=n_bands, width=width)
        if isinstance(average_decay, bool) or not 0.0 <= float(average_decay) < 1.0:
            raise ValueError(f"average_decay must be in [0, 1); got {average_decay!r}")
        self.config = {
            "in_channels": int(in_channels),
            "n_bands": int(n_bands),
            "width": int(width),
        }
        if average_decay:  # only when set, so configs written before the option stay equal
            self.config["average_decay"] = float(average_decay)
        n_filters = self.n_filters = int(in_channels)
        self.linear = nn.Conv2d(n_filters, n_bands, 1)
        self.embed = nn.Conv2d(n_filters, width, 1, bias=False)
        self.embed_norm = nn.BatchNorm2d(width)
        self.depthwise = nn.Conv2d(width, width, 3, 1, 1, groups=width, bias=False)
        self.depthwise_norm = nn.BatchNorm2d(width)
        self.mix = nn.Conv2d(width, width, 1, bias=False)
        self.mix_norm = nn.BatchNorm2d(width)
        self.out = nn.Conv2d(width, n_bands, 1)
        with torch.no_grad():  # the correction starts at zero: training starts linear
            self.out.weight.zero_()
            self.out.bias.zero_()
        self.is_fused = False
        self.average_decay = 0.0
        self.average = None
        if average_decay:
            # the Polyak average of the weights and BatchNorm statistics (see the class doc):
            # a copy of the network, never trained itself, updated by every training forward;
            # a copy, not a new network, so that it draws nothing from the random generator
            # (the run trains exactly as without the average)
            average = copy.deepcopy(self)
            average.config.pop("average_decay")
            self.average = average.requires_grad_(False)
            self.average_decay = float(average_decay)
            self.register_buffer("average_updates", torch.zeros((), dtype=torch.long))

    def _own_state(self):
        """``(name, tensor)`` of the trained weights and BatchNorm statistics (the average's
        own excluded), in the average's order."""
        own = [(n, t) for n, t in self.named_parameters() if not n.startswith("average.")]
        own += [
            (n, t)
            for n, t in self.named_buffers()
            if not n.startswith("average.") and n != "average_updates" and t.is_floating_point()
        ]
        return own

    @torch.no_grad()
    def _update_average(self) -> None:
        """``a <- a + (1 - decay) (w - a)`` for every weight and BatchNorm statistic; the
        first update copies."""
        target = dict(self.average.named_parameters()) | dict(self.average.named_buffers())
        weight = 1.0 if int(self.average_updates) == 0 else 1.0 - self.average_decay
        for name, tensor in self._own_state():
            target[name].lerp_(tensor.detach(), weight)
        self.average_updates += 1

    @staticmethod
    def _normed(conv, norm, x):
        return F.relu(conv(x) if norm is None else norm(conv(x)))

    def forward(self, barcodes: torch.Tensor) -> torch.Tensor:
        """``(B, in_channels, h, w) -> (B, n_bands, h, w)``; points ``(N, in_channels) ->
        (N, n_bands)`` (a one-pixel map: the 3 x 3 neighbourhood is the pixel's own,
        zero-padded). With ``average_decay``, a training-mode call first folds the current
        weights into the average, and an evaluation-mode call decodes with the average."""
        if self.average is not None:
            if not self.training:
                return self.average(barcodes)
            self._update_average()
        x, points = as_barcode_maps(barcodes, self.n_filters, self)
        e = self._normed(self.embed, self.embed_norm, x)
        e = e + self._normed(self.depthwise, self.depthwise_norm, e)
        e = self._normed(self.mix, self.mix_norm, e)
        return restore_points(self.linear(x) + self.out(e), points)

    @torch.no_grad()
    def fused(self) -> SeparableReconstructor:
        """An inference copy with each BatchNorm folded into its convolution (same function;
        see :meth:`SeparableSegNet.fused`)."""
        if self.average is not None:  # inference decodes with the average
            return self.average.fused()
        source = copy.deepcopy(self).eval()
        if source.is_fused:
            return source
        for name in ("embed", "depthwise", "mix"):
            norm = getattr(source, f"{name}_norm")
            setattr(source, name, fuse_conv_bn(getattr(source, name), norm))
            setattr(source, f"{name}_norm", None)
        source.is_fused = True
        return source

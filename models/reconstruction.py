"""Spectral reconstruction decoders: metapixel barcodes ``(B, C, h, w)`` -> cubes ``(B, L, h, w)``.

Point barcodes ``(N, C)`` (a spectrometer's measured vectors) give spectra ``(N, L)``, and any
real dtype is cast to the model's (:mod:`hyplex.models.decoder_input`).

* :class:`LinearDecoder` — the Hyplex reference projector: an affine map per pixel, fitted in
  closed form by ridge regression (Makarenko et al., CVPR 2022: the 9 filter
  responses are projected back onto the spectrum; the baseline uses the first 9 principal
  components of the training spectra, see :func:`pca_basis`).
* :class:`SpectralTransformer` — an MST++-class network [MST++] written from the paper:
  U-shaped single-stage spectral transformers (MST) of spectral-wise attention blocks
  (``hyplex.models.layers.SpectralAttentionBlock``), cascaded ``n_stages`` times with residuals.

Every model stores its constructor keyword arguments in ``.config``, so
``build_reconstructor(name, **model.config)`` rebuilds the architecture for ``load_state_dict``.

References
----------
[MST++] Y. Cai et al., "MST++: Multi-stage Spectral-wise Transformer for Efficient Spectral
        Reconstruction", CVPR Workshops 2022.  Fig. 2 (architecture), section 3.2 (S-MSA).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hyplex.models.decoder_input import as_barcode_maps, restore_points
from hyplex.models.layers import SpectralAttentionBlock, crop_to, pad_to_multiple
from hyplex.models.realtime import SeparableReconstructor
from hyplex.models.restoration.conditional_flow import ConditionalFlowDecoder
from hyplex.models.restoration.spectral_attention import FrequencyAttention

__all__ = [
    "RECONSTRUCTORS",
    "LinearDecoder",
    "SpectralTransformer",
    "build_reconstructor",
    "count_parameters",
    "pca_basis",
]


def _check_positive_ints(**values) -> None:
    for name, value in values.items():
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive int; got {value!r}")


def _as_float64_matrix(x, name: str, n_columns: int) -> torch.Tensor:
    x = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    if x.ndim != 2 or x.shape[1] != n_columns:
        raise ValueError(f"{name} must have shape (N, {n_columns}); got {tuple(x.shape)}")
    return x.detach().to("cpu", torch.float64)


def pca_basis(spectra, n_components: int):
    """Principal components of training spectra (PCA by SVD of the centred data).

    Parameters
    ----------
    spectra : numpy.ndarray or torch.Tensor, (N, L)
        Training spectra (e.g. reflectance) on a common wavelength grid.
    n_components : int
        Number of components kept, ``<= min(N, L)`` (9 for the Hyplex baseline filters).

    Returns
    -------
    components : (n_components, L)
        Orthonormal principal directions, by decreasing explained variance.  The sign of each
        is fixed so that its largest-magnitude entry is positive (deterministic output).
    mean : (L,)
        Mean spectrum that was subtracted.

    Both are numpy float64 for numpy input, or torch tensors of the input's dtype and device.
    """
    is_torch = isinstance(spectra, torch.Tensor)
    data = torch.as_tensor(spectra) if is_torch else torch.as_tensor(np.asarray(spectra))
    if data.ndim != 2:
        raise ValueError(f"spectra must have shape (N, L); got {tuple(data.shape)}")
    _check_positive_ints(n_components=n_components)
    if n_components > min(data.shape):
        raise ValueError(
            f"n_components must be <= min(N, L) = {min(data.shape)}; got {n_components}"
        )
    x = data.detach().to("cpu", torch.float64)
    mean = x.mean(dim=0)
    _, _, vh = torch.linalg.svd(x - mean, full_matrices=False)
    components = vh[:n_components]
    signs = torch.sign(components.gather(1, components.abs().argmax(dim=1, keepdim=True)))
    components = components * signs
    if is_torch:
        return components.to(spectra.device, spectra.dtype), mean.to(spectra.device, spectra.dtype)
    return components.numpy(), mean.numpy()


class LinearDecoder(nn.Module):
    """Affine per-pixel decoder ``s = W b + c`` (the Hyplex reference linear projector).

    Parameters
    ----------
    n_filters : int
        Barcode length ``C`` (9 for Hyplex).
    n_bands : int
        Output bands ``L``.

    Notes
    -----
    Implemented as a 1x1 convolution, so it runs on whole barcode maps ``(B, C, h, w)``;
    ``weight`` is ``(L, C)`` and ``bias`` is ``(L,)`` in :meth:`fit`'s notation.
    """

    def __init__(self, n_filters: int, n_bands: int):
        super().__init__()
        _check_positive_ints(n_filters=n_filters, n_bands=n_bands)
        self.config = {"n_filters": int(n_filters), "n_bands": int(n_bands)}
        self.n_filters, self.n_bands = int(n_filters), int(n_bands)
        self.projection = nn.Conv2d(n_filters, n_bands, kernel_size=1)

    def forward(self, barcodes: torch.Tensor) -> torch.Tensor:
        """``(B, n_filters, h, w) -> (B, n_bands, h, w)``; points ``(N, n_filters) -> (N,
        n_bands)``; any real dtype, cast to the module's."""
        maps, points = as_barcode_maps(barcodes, self.n_filters, self)
        return restore_points(self.projection(maps), points)

    @torch.no_grad()
    def fit(self, barcodes, spectra, ridge: float = 1e-6) -> LinearDecoder:
        """Closed-form ridge regression of spectra on barcodes; returns ``self``.

        Minimises ``(1/N) sum_n |s_n - W b_n - c|^2 + ridge |W|_F^2`` (the bias ``c`` is not
        penalised).  With centred data ``B0 = B - mean(B)``, ``S0 = S - mean(S)``::

            W^T = (B0^T B0 / N + ridge I)^{-1} (B0^T S0 / N),   c = mean(S) - W mean(B)

        ``ridge = 0`` gives ordinary least squares (solved by ``lstsq``, so a rank-deficient
        barcode set still yields the minimum-norm solution).

        Parameters
        ----------
        barcodes : numpy.ndarray or torch.Tensor, (N, n_filters)
            Training barcodes (sensor signal per filter, any consistent unit).
        spectra : numpy.ndarray or torch.Tensor, (N, n_bands)
            Matching spectra.
        ridge : float
            Ridge penalty, in (barcode unit)^2 per sample; >= 0.

        Returns
        -------
        LinearDecoder
            ``self``, with the fitted weights (on the module's device and dtype).
        """
        b = _as_float64_matrix(barcodes, "barcodes", self.n_filters)
        s = _as_float64_matrix(spectra, "spectra", self.n_bands)
        if b.shape[0] != s.shape[0]:
            raise ValueError(
                f"barcodes and spectra need the same number of samples N; got {b.shape[0]} "
                f"and {s.shape[0]}"
            )
        if not ridge >= 0:
            raise ValueError(f"ridge must be >= 0; got {ridge}")
        b_mean, s_mean = b.mean(dim=0), s.mean(dim=0)
        b0, s0 = b - b_mean, s - s_mean
        n = b.shape[0]
        if ridge == 0:
            weight_t = torch.linalg.lstsq(b0, s0, driver="gelsd").solution
        else:
            gram = b0.T @ b0 / n + ridge * torch.eye(self.n_filters, dtype=torch.float64)
            weight_t = torch.linalg.solve(gram, b0.T @ s0 / n)
        bias = s_mean - b_mean @ weight_t
        conv = self.projection
        conv.weight.copy_(weight_t.T.reshape(conv.weight.shape).to(conv.weight))
        conv.bias.copy_(bias.to(conv.bias))
        return self


class _SingleStageTransformer(nn.Module):
    """One U-shaped spectral transformer (MST) of [MST++] Fig. 2(b).

    embedding 3x3 -> [SAB x n_blocks -> 4x4/2 conv (C -> 2C)] x levels -> SAB x n_blocks
    -> [2x2/2 transposed conv (2C -> C) -> concat skip -> 1x1 fusion -> SAB x n_blocks] x levels
    -> mapping 3x3, plus a residual from the input.  Heads double with the channels, keeping the
    head dimension of the top level (as [MST++] keeps ``dim_head`` fixed).
    """

    def __init__(self, width: int, n_blocks: int, n_heads: int, levels: int):
        super().__init__()
        self.embedding = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.encoder, self.downsample = nn.ModuleList(), nn.ModuleList()
        channels = width
        for level in range(levels):
            heads = n_heads * 2**level
            self.encoder.append(_blocks(channels, heads, n_blocks))
            self.downsample.append(nn.Conv2d(channels, 2 * channels, 4, 2, 1, bias=False))
            channels *= 2
        self.bottleneck = _blocks(channels, n_heads * 2**levels, n_blocks)
        self.upsample, self.fusion, self.decoder = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        for level in reversed(range(levels)):
            self.upsample.append(nn.ConvTranspose2d(channels, channels // 2, 2, 2))
            self.fusion.append(nn.Conv2d(channels, channels // 2, 1, bias=False))
            channels //= 2
            self.decoder.append(_blocks(channels, n_heads * 2**level, n_blocks))
        self.mapping = nn.Conv2d(width, width, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.embedding(x)
        skips = []
        for blocks, down in zip(self.encoder, self.downsample, strict=True):
            features = blocks(features)
            skips.append(features)
            features = down(features)
        features = self.bottleneck(features)
        for up, fuse, blocks in zip(self.upsample, self.fusion, self.decoder, strict=True):
            features = fuse(torch.cat([up(features), skips.pop()], dim=1))
            features = blocks(features)
        return self.mapping(features) + x


def _blocks(channels: int, n_heads: int, n_blocks: int) -> nn.Sequential:
    return nn.Sequential(*(SpectralAttentionBlock(channels, n_heads) for _ in range(n_blocks)))


class SpectralTransformer(nn.Module):
    """MST++-class spectral reconstruction network [MST++], sized for real-time decoding.

    ``barcodes -> 3x3 conv (in_channels -> width) -> n_stages x MST (residual) -> + skip ->
    3x3 conv (width -> n_bands)``, as [MST++] Fig. 2(a) with the RGB input replaced by the
    metasurface barcodes.  Attention is spectral-wise (tokens are channels, section 3.2), so the
    cost is linear in the number of pixels and any ``h, w`` is accepted: the input is padded
    (edge-replicated) to a multiple of ``2**levels`` and the output cropped back.

    Parameters
    ----------
    in_channels : int
        Barcode length ``C`` (9 for Hyplex; 3 for RGB).
    n_bands : int
        Output bands ``L``.
    width : int
        Feature channels of the top level (doubles per level); divisible by ``n_heads``.
    n_blocks : int
        Spectral attention blocks at each level of each U (encoder, bottleneck and decoder).
    n_heads : int
        S-MSA heads at the top level (doubles per level).
    levels : int
        Down/upsampling steps of each U ([MST++] uses 2).
    n_stages : int
        Cascaded single-stage transformers ([MST++] uses 3).
    nonnegative : bool
        Pass the output through a softplus so spectra are > 0 (for radiance/reflectance).
    fft_attention : bool
        Add SDA-GAN's FFT-domain attention block after the input embedding
        (:class:`hyplex.models.restoration.spectral_attention.FrequencyAttention`).

    Notes
    -----
    Defaults have 0.46 M parameters (``count_parameters``) for 9 -> 34 bands and 0.51 M for
    9 -> 204 bands; [MST++]'s NTIRE model (3 stages, 2 levels) has 1.6 M.
    """

    def __init__(
        self,
        in_channels: int,
        n_bands: int,
        width: int = 32,
        n_blocks: int = 2,
        n_heads: int = 1,
        levels: int = 1,
        n_stages: int = 2,
        nonnegative: bool = False,
        fft_attention: bool = False,
    ):
        super().__init__()
        _check_positive_ints(
            in_channels=in_channels, n_bands=n_bands, width=width, n_blocks=n_blocks,
            n_heads=n_heads, n_stages=n_stages,
        )  # fmt: skip
        if not isinstance(levels, (int, np.integer)) or levels < 0:
            raise ValueError(f"levels must be a non-negative int; got {levels!r}")
        if width % n_heads:
            raise ValueError(f"width must be divisible by n_heads; got {width} and {n_heads}")
        self.config = {
            "in_channels": int(in_channels),
            "n_bands": int(n_bands),
            "width": int(width),
            "n_blocks": int(n_blocks),
            "n_heads": int(n_heads),
            "levels": int(levels),
            "n_stages": int(n_stages),
            "nonnegative": bool(nonnegative),
        }
        if fft_attention:  # only when set, so configs written before the option stay equal
            self.config["fft_attention"] = True
        self.in_channels, self.n_bands = int(in_channels), int(n_bands)
        self.multiple = 2**levels
        self.nonnegative = bool(nonnegative)
        self.conv_in = nn.Conv2d(in_channels, width, 3, padding=1, bias=False)
        self.frequency_attention = FrequencyAttention(width) if fft_attention else nn.Identity()
        self.stages = nn.Sequential(
            *(_SingleStageTransformer(width, n_blocks, n_heads, levels) for _ in range(n_stages))
        )
        self.conv_out = nn.Conv2d(width, n_bands, 3, padding=1, bias=False)

    def forward(self, barcodes: torch.Tensor) -> torch.Tensor:
        """``(B, in_channels, h, w) -> (B, n_bands, h, w)`` for any ``h, w >= 1``; points
        ``(N, in_channels) -> (N, n_bands)``, each decoded as a uniform one-pixel map; any real
        dtype, cast to the module's."""
        maps, points = as_barcode_maps(barcodes, self.in_channels, self)
        # NHWC throughout (the same function): oneDNN's depthwise convolutions are several
        # times faster in channels_last, and the attention blocks then need no transposed copies
        nhwc = maps.contiguous(memory_format=torch.channels_last)
        x, size = pad_to_multiple(nhwc, self.multiple)
        features = self.frequency_attention(self.conv_in(x))
        out = self.conv_out(self.stages(features) + features)  # [MST++] Fig. 2(a) long skip
        if self.nonnegative:
            out = F.softplus(out)
        return restore_points(crop_to(out, size), points)


RECONSTRUCTORS: dict[str, type[nn.Module]] = {
    "linear": LinearDecoder,
    "mst": SpectralTransformer,
    "separable_projector": SeparableReconstructor,  # the real-time profile (hyplex.models.realtime)
    "flow": ConditionalFlowDecoder,  # p(cube | barcodes), HIDFlowNet (models.restoration)
}


def build_reconstructor(name: str, **config) -> nn.Module:
    """Build a reconstruction model by registry name.

    Parameters
    ----------
    name : str
        A key of :data:`RECONSTRUCTORS` (``"linear"``, ``"mst"``, ``"separable_projector"`` or
        ``"flow"``, the conditional flow with posterior std,
        :class:`hyplex.models.restoration.conditional_flow.ConditionalFlowDecoder`).
    **config
        Constructor keyword arguments (e.g. a model's ``.config``).

    Returns
    -------
    torch.nn.Module
    """
    if name not in RECONSTRUCTORS:
        raise ValueError(
            f"unknown reconstructor {name!r}; expected one of {sorted(RECONSTRUCTORS)}"
        )
    return RECONSTRUCTORS[name](**config)


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of scalar parameters of ``model`` (only those with ``requires_grad`` by default)."""
    return int(sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only))

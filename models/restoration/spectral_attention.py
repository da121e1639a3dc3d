"""FFT-domain ("spectral domain") attention block of SDA-GAN.

SDA-GAN [SDA-GAN] adds to the generator, beside the usual spatial attention on image content,
an attention computed and applied in the *Fourier* domain of the feature maps (section 3 of the
paper: the features are Fourier transformed, an attention map is predicted from the spectrum,
the spectrum is re-weighted by it and transformed back).  Re-weighting frequencies lets a
translator change global statistics (illumination, texture scale, a filter's gain pattern)
that a few 3x3 convolutions cannot reach.  Written out for a feature map ``x (B, C, H, W)``::

    X      = rFFT2(x)                                   (orthonormal, (B, C, H, W//2+1) complex)
    M      = sigmoid( W_2 GELU( W_1 [log(1 + |X|), p] ) )    attention per channel and frequency
    x_att  = irFFT2( M * X )                            (the same frequencies, re-weighted)
    y      = x + gamma * W_o x_att                      (residual, gamma starts at 0)

``W_1, W_2, W_o`` are 1x1 convolutions over channels (``W_1, W_2`` act on the amplitude
spectrum, so the attention of a frequency bin depends on what every channel holds there), ``p``
are two fixed channels with the normalised frequency coordinates ``(k_y, k_x)`` (so the block
can learn a low-/high-pass shape), and ``gamma`` a learned scalar.  ``M`` multiplies each
frequency bin by a real gain in (0, 1), so the block never creates a frequency its input does
not hold (tested on a pure cosine).

Where this block is used: an option of the MST++-class reconstructor
(``SpectralTransformer(..., fft_attention=True)``) and the generator of the unpaired
twin-to-captured translator (:mod:`hyplex.models.adaptation.spectral_translation`).

What is not reproduced: SDA-GAN's face-style networks (ResNet generator at 256 x 256) and its
spatial attention branch; here the block is a drop-in residual layer.

References
----------
[SDA-GAN] Q. Wang, M. Makarenko, "SDA-GAN: Unsupervised Image Translation Using Spectral Domain
    Attention-Guided Generative Adversarial Network", arXiv:2110.02873 (2021), section 3
    (spectral attention on the FFT of the features), with CycleGAN's losses.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["FrequencyAttention", "frequency_coordinates"]


def frequency_coordinates(height: int, width: int, device=None, dtype=torch.float32):
    """Normalised frequencies of an ``rfft2`` grid: ``(2, height, width // 2 + 1)`` holding
    ``k_y`` in [-0.5, 0.5) and ``k_x`` in [0, 0.5] (cycles per pixel)."""
    ky = torch.fft.fftfreq(height, device=device, dtype=dtype)
    kx = torch.fft.rfftfreq(width, device=device, dtype=dtype)
    return torch.stack(torch.meshgrid(ky, kx, indexing="ij"))


class FrequencyAttention(nn.Module):
    """SDA-GAN spectral-domain attention (see the module docstring for the equations).

    Parameters
    ----------
    channels : int
        Feature channels ``C``.
    hidden : int, optional
        Hidden channels of the attention net (default ``max(8, channels)``).

    Notes
    -----
    ``forward(x)``: ``(B, C, H, W) -> (B, C, H, W)`` for any ``H, W >= 1``; :meth:`attention`
    gives the map ``M (B, C, H, W//2+1)`` for inspection.
    """

    def __init__(self, channels: int, hidden: int | None = None):
        super().__init__()
        if not isinstance(channels, int) or channels < 1:
            raise ValueError(f"channels must be a positive int; got {channels!r}")
        hidden = max(8, channels) if hidden is None else int(hidden)
        if hidden < 1:
            raise ValueError(f"hidden must be a positive int; got {hidden!r}")
        self.channels = channels
        self.attention_in = nn.Conv2d(channels + 2, hidden, 1)
        self.attention_out = nn.Conv2d(hidden, channels, 1)
        self.output = nn.Conv2d(channels, channels, 1)
        self.gamma = nn.Parameter(torch.zeros(()))

    def attention(self, spectrum: torch.Tensor, width: int) -> torch.Tensor:
        """Attention ``M`` in (0, 1) of an ``rfft2`` spectrum ``(B, C, H, W//2+1)`` (complex)
        of a map ``width`` = W pixels wide."""
        height, half = spectrum.shape[-2:]
        amplitude = torch.log1p(spectrum.abs())
        coords = frequency_coordinates(height, width, amplitude.device, amplitude.dtype)
        coords = coords[..., :half].expand(amplitude.shape[0], -1, -1, -1)
        hidden = F.gelu(self.attention_in(torch.cat([amplitude, coords], dim=1)))
        return torch.sigmoid(self.attention_out(hidden))

    def filtered(self, x: torch.Tensor) -> torch.Tensor:
        """``irFFT2(M * rFFT2(x))``: the re-weighted map before the output projection."""
        if x.ndim != 4 or x.shape[1] != self.channels:
            raise ValueError(f"x must have shape (B, {self.channels}, H, W); got {tuple(x.shape)}")
        work = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
        spectrum = torch.fft.rfft2(work, norm="ortho")
        gated = spectrum * self.attention(spectrum, x.shape[-1])
        return torch.fft.irfft2(gated, s=x.shape[-2:], norm="ortho").to(x.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.gamma * self.output(self.filtered(x))

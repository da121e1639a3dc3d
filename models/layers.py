"""Building blocks shared by the reconstruction and segmentation decoders.

All blocks take and return channel-first feature maps ``(B, C, H, W)`` and follow the device of
their input (nothing here names a device).

References
----------
[MST++]  Y. Cai, J. Lin, Z. Lin, H. Wang, Y. Zhang, H. Pfister, R. Timofte, L. Van Gool,
         "MST++: Multi-stage Spectral-wise Transformer for Efficient Spectral Reconstruction",
         CVPR Workshops (NTIRE) 2022.  Section 3.2 defines the spectral-wise multi-head
         self-attention (S-MSA), equations (1)-(4).
[SE]     J. Hu, L. Shen, G. Sun, "Squeeze-and-Excitation Networks", CVPR 2018, eq. (2)-(4).
[MobileNet] A. G. Howard et al., "MobileNets", arXiv:1704.04861 (2017), section 3.1
         (depthwise-separable convolution).
[PreciseBN] Y. Wu, J. Johnson, "Rethinking 'Batch' in BatchNorm", arXiv:2105.07576 (2021),
         section 3 (population statistics recomputed after training).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "ChannelLayerNorm",
    "DepthwiseSeparableConv",
    "FeedForward",
    "SpectralAttentionBlock",
    "SpectralMSA",
    "SqueezeExcitation",
    "crop_to",
    "pad_to_multiple",
    "recalibrate_batchnorm",
]


def pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Pad the two spatial axes of ``x`` at the bottom/right up to a multiple of ``multiple``.

    Parameters
    ----------
    x : torch.Tensor, (B, C, H, W)
        Feature map.
    multiple : int
        Required divisor of the padded height and width (``2**levels`` for a U-shaped net).

    Returns
    -------
    padded : torch.Tensor, (B, C, H', W')
        ``x`` with edge-replicated rows/columns appended (replicate padding works for any size,
        unlike reflect padding, which needs ``pad < size``).
    size : tuple of int
        The original ``(H, W)``, for :func:`crop_to`.
    """
    height, width = x.shape[-2:]
    pad_h, pad_w = (-height) % multiple, (-width) % multiple
    if pad_h or pad_w:
        x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
    return x, (height, width)


def crop_to(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Crop ``x`` (B, C, H', W') back to the top-left ``size = (H, W)`` (inverse of padding)."""
    return x[..., : size[0], : size[1]]


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, batches) -> nn.Module:
    """Recompute the running statistics of every BatchNorm layer of ``model`` ("precise BN").

    The exponential moving averages of BatchNorm lag behind fast-changing weights (short
    trainings) and go stale when the input statistics change (a new or re-measured encoder
    feeding the decoder).  This resets them and replaces them by the exact average over
    ``batches`` [PreciseBN].  No weight changes; the training flag is restored.

    Parameters
    ----------
    model : torch.nn.Module
        Model containing ``nn.BatchNorm*`` layers.
    batches : torch.Tensor or iterable of torch.Tensor
        Model inputs, e.g. training barcodes ``(B, C, h, w)``; a single tensor is one batch.

    Returns
    -------
    torch.nn.Module
        ``model``.
    """
    if isinstance(batches, torch.Tensor):
        batches = [batches]
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    was_training = model.training
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average over the batches seen
    model.train()
    seen = 0
    for batch in batches:
        model(batch)
        seen += 1
    for norm, momentum in zip(norms, momenta, strict=True):
        norm.momentum = momentum
    model.train(was_training)
    if not seen:
        raise ValueError("batches must hold at least one input tensor")
    return model


class ChannelLayerNorm(nn.Module):
    """Layer normalization over the channel axis of a ``(B, C, H, W)`` map, per pixel.

    Equivalent to ``nn.LayerNorm(C)`` applied to the channel-last view, as the transformer
    blocks of [MST++] do on their token matrices.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.norm = nn.LayerNorm(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # the output is channels_last (NHWC) whatever the input; NHWC input is never copied
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class SpectralMSA(nn.Module):
    """Spectral-wise multi-head self-attention (S-MSA), [MST++] section 3.2.

    Tokens are the *channels*: the attention map of each head is ``(d x d)`` with
    ``d = channels / n_heads``, so the cost is linear in the number of pixels ``H*W``.

    With ``X`` the ``(HW, C)`` token matrix of one image::

        Q = X W_Q,  K = X W_K,  V = X W_V                                    [MST++ eq. (1)]
        Q, K, V split into n_heads groups of d channels                      [MST++ eq. (2)]
        A_j = softmax(sigma_j K_j^T Q_j)   (d x d),  head_j = V_j A_j         [MST++ eq. (3)]
        S-MSA(X) = concat_j(head_j) W + f_p(V)                               [MST++ eq. (4)]

    ``sigma_j`` is a learnable rescale per head; ``K_j`` and ``Q_j`` are L2-normalized over
    the ``HW`` axis first, so ``K_j^T Q_j`` is a matrix of cosines. ``f_p`` is the position
    embedding: two depthwise 3x3 convolutions with a GELU between, applied to ``V`` as an image.

    Parameters
    ----------
    channels : int
        Feature channels ``C``.
    n_heads : int
        Number of heads; must divide ``channels``.
    """

    def __init__(self, channels: int, n_heads: int = 1):
        super().__init__()
        if channels < 1 or n_heads < 1 or channels % n_heads:
            raise ValueError(
                f"channels must be a positive multiple of n_heads; got channels={channels}, "
                f"n_heads={n_heads}"
            )
        self.n_heads = n_heads
        self.to_qkv = nn.Linear(channels, 3 * channels, bias=False)  # W_Q, W_K, W_V, eq. (1)
        self.rescale = nn.Parameter(torch.ones(n_heads, 1, 1))  # sigma_j, eq. (3)
        self.project = nn.Linear(channels, channels)  # W, eq. (4)
        self.position = nn.Sequential(  # f_p, eq. (4)
            nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False),
            nn.GELU(),
            nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W) -> (B, C, H, W)``, in the memory format of ``x``.

        Textbook form, eq. (1)-(4) (the same function, up to float rounding)::

            q, k, v = heads(X W_qkv^T)                       # (B, n, d, HW) each
            A = softmax(sigma * normalize(k) @ normalize(q)^T)
            out = concat(A @ v) W^T + b + f_p(v)

        Here the d x d attention of every head is folded into the output projection,
        ``P = W blockdiag(A_j)`` (C x C), so the HW-sized work is two matrix products
        (``X W_qkv^T`` and ``V P^T``) and the L2 normalisation divides the d x d Gram matrix
        ``K^T Q`` by the column norms instead of normalising the HW-long rows. Channels-last
        input is computed as tokens ``(B, HW, C)``, NCHW input as ``(B, C, HW)``: no
        transposed copies either way.
        """
        batch, channels, height, width = x.shape
        n, d = self.n_heads, channels // self.n_heads
        weight = self.to_qkv.weight  # (3C, C): rows W_Q, W_K, W_V
        if x.is_contiguous(memory_format=torch.channels_last):
            tokens = x.permute(0, 2, 3, 1).reshape(batch, -1, channels)  # X: (B, HW, C)
            qk = F.linear(tokens, weight[: 2 * channels])  # [Q K]: (B, HW, 2C)
            v = F.linear(tokens, weight[2 * channels :])  # (B, HW, C), contiguous
            gram = qk.transpose(1, 2) @ qk  # [Q K]^T [Q K]: (B, 2C, 2C)
        else:
            features = x.reshape(batch, channels, -1)  # X^T: (B, C, HW)
            qk = weight[: 2 * channels] @ features  # (B, 2C, HW)
            v = weight[2 * channels :] @ features  # (B, C, HW)
            gram = qk @ qk.transpose(1, 2)
        # K^T Q and the squared column norms |q_j|^2, |k_i|^2 (the diagonal) in one product
        squared = torch.diagonal(gram, dim1=1, dim2=2)
        eps = 1e-12  # F.normalize's: x / max(|x|, eps)
        q_norm, k_norm = (t.sqrt().clamp_min(eps).view(-1, n, d) for t in squared.chunk(2, 1))
        cross = gram[:, channels:, :channels].reshape(-1, n, d, n, d)  # K^T Q
        blocks = torch.diagonal(cross, dim1=1, dim2=3).permute(0, 3, 1, 2)  # (B, n, d, d)
        attention = blocks / (k_norm[..., :, None] * q_norm[..., None, :]) * self.rescale
        attention = attention.softmax(dim=-1)  # (B, n, d, d), eq. (3)
        # head_j = V_j A_j, eq. (3). As in the reference code, A_j is softmaxed along its rows
        # and applied on the left in the (d, HW) layout: every output channel is a convex
        # combination of the d value channels. P = W blockdiag(A_j), eq. (4).
        project = self.project.weight.view(channels, n, d)
        folded = torch.einsum("oni,bnij->bonj", project, attention).reshape(-1, channels, channels)
        bias = self.project.bias
        if x.is_contiguous(memory_format=torch.channels_last):
            out = torch.baddbmm(bias, v, folded.transpose(1, 2))  # (B, HW, C)
            out = out.view(batch, height, width, channels).permute(0, 3, 1, 2)
            v_image = v.view(batch, height, width, channels).permute(0, 3, 1, 2)
        else:
            out = torch.baddbmm(bias[:, None], folded, v).view(batch, channels, height, width)
            v_image = v.view(batch, channels, height, width)
        return out + self.position(v_image)  # eq. (4)


class FeedForward(nn.Module):
    """Convolutional feed-forward of [MST++] Fig. 2: 1x1 -> GELU -> depthwise 3x3 -> GELU -> 1x1.

    Parameters
    ----------
    channels : int
        Input and output channels ``C``.
    expansion : int
        Hidden width is ``expansion * C`` (4 in [MST++]).
    """

    def __init__(self, channels: int, expansion: int = 4):
        super().__init__()
        hidden = channels * expansion
        self.net = nn.Sequential(
            nn.Conv2d(channels, hidden, 1, bias=False),
            nn.GELU(),
            nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden, bias=False),
            nn.GELU(),
            nn.Conv2d(hidden, channels, 1, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not x.is_contiguous(memory_format=torch.channels_last):
            return self.net(x)
        # NHWC: the 1x1 convolutions are matrix products over the channel axis (the same sums;
        # torch would route a single-threaded 1x1 convolution to its slow im2col path).
        expand, gelu, depthwise, _, reduce = self.net
        hidden = F.linear(x.permute(0, 2, 3, 1), expand.weight.flatten(1)).permute(0, 3, 1, 2)
        hidden = gelu(depthwise(gelu(hidden)))
        return F.linear(hidden.permute(0, 2, 3, 1), reduce.weight.flatten(1)).permute(0, 3, 1, 2)


class SpectralAttentionBlock(nn.Module):
    """Spectral-wise attention block (SAB of [MST++] Fig. 2): two pre-norm residual branches.

    ``x <- x + S-MSA(LN(x));  x <- x + FFN(LN(x))``.  (The reference code omits the norm before
    S-MSA; keeping it makes both branches start from unit-scale tokens.)

    Parameters
    ----------
    channels : int
        Feature channels ``C``.
    n_heads : int
        S-MSA heads (must divide ``channels``).
    expansion : int
        Feed-forward expansion.
    """

    def __init__(self, channels: int, n_heads: int = 1, expansion: int = 4):
        super().__init__()
        self.norm_attention = ChannelLayerNorm(channels)
        self.attention = SpectralMSA(channels, n_heads)
        self.norm_feedforward = ChannelLayerNorm(channels)
        self.feedforward = FeedForward(channels, expansion)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.norm_attention(x))
        return x + self.feedforward(self.norm_feedforward(x))


class SqueezeExcitation(nn.Module):
    """Channel (spectral) attention by squeeze-and-excitation, [SE] eq. (2)-(4).

    ``z = mean_{H,W}(x)`` (squeeze, eq. 2); ``s = sigmoid(W2 relu(W1 z))`` (excitation, eq. 3);
    ``y = s * x`` channel-wise (scale, eq. 4).

    Parameters
    ----------
    channels : int
        Channels ``C`` of the input.
    reduction : int
        Bottleneck ratio ``r``; the hidden width is ``max(C // r, 4)``.
    """

    def __init__(self, channels: int, reduction: int = 4):
        super().__init__()
        hidden = max(channels // reduction, 4)
        self.squeeze_excite = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(channels, hidden, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, 1),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.squeeze_excite(x)


class DepthwiseSeparableConv(nn.Module):
    """Depthwise 3x3 then pointwise 1x1 convolution, each with BatchNorm and ReLU [MobileNet].

    Parameters
    ----------
    in_channels, out_channels : int
        Channels in and out.
    stride : int
        Stride of the depthwise convolution (2 halves the spatial size).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, in_channels, 3, stride, 1, groups=in_channels, bias=False),
            nn.BatchNorm2d(in_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(in_channels, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

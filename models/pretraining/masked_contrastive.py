"""Structured-masking contrastive pretraining of the segmenter's encoder on unlabelled frames.

Method: "AudioMosaic: Contrastive Masked Audio Representation Learning" (ICML 2026,
arXiv:2605.14231). AudioMosaic forms a positive pair from two *structured* masks of the same
spectrogram: whole time spans and whole frequency bands of its patch grid are hidden, and the
two masked views are pulled together with a contrastive (NT-Xent / InfoNCE) loss against the
other clips of the batch. On Hyplex barcodes the two axes become space and filters::

    spectrogram (F, T) patches        ->   barcode map (C = 9 filters, h, w)
    time mask: spans of patch columns ->   space mask: whole rows and columns of the
                                           p x p patch grid of the barcode map
    frequency mask: bands of rows     ->   band (filter) mask: a random subset of the
                                           C filters, hidden everywhere in the view

A masked value is set to the view's mean barcode (the encoder sees "no information", not a
dark pixel). The encoder is the segmenter's (the U-Net's contracting path and bottleneck,
:class:`hyplex.models.segmentation.UNet`), followed by global average pooling and a two-layer
projection head ``g``; the loss is NT-Xent (T. Chen et al., "A Simple Framework for
Contrastive Learning of Visual Representations", ICML 2020, Eq. 1)::

    l(i, j) = -log  exp(sim(z_i, z_j) / tau) / sum_{k != i} exp(sim(z_i, z_k) / tau)
    L = 1/(2N) sum_{n} [ l(2n-1, 2n) + l(2n, 2n-1) ]        sim = cosine similarity

over the ``2N`` views of ``N`` crops. After pretraining, :func:`encoder_state` keeps the
encoder's weights (the projection head is dropped, as in SimCLR and AudioMosaic), written as
safetensors + JSON by :func:`save_encoder` and loaded into a fresh segmenter by
:func:`load_encoder` (``hyplex design --init-encoder``).

What is not reproduced: AudioMosaic's ViT encoder drops the masked patches (its memory
saving); a convolutional encoder cannot, so masked values are filled instead.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

__all__ = [
    "MaskingConfig",
    "apply_mask",
    "PretrainConfig",
    "ContrastiveEncoder",
    "encoder_state",
    "load_encoder",
    "nt_xent",
    "pretrain_encoder",
    "random_crops",
    "save_encoder",
    "structured_mask",
]

#: UNet parameter prefixes that make up its encoder.
ENCODER_PREFIXES = ("whitening.", "encoder.", "bottleneck.")


@dataclass
class MaskingConfig:
    """Structured masks of a barcode crop.

    Attributes
    ----------
    patch_px : int
        Side of the square patches of the space mask, metapixels.
    space_fraction : float
        Fraction of patch rows and (separately) of patch columns hidden, in [0, 1).
    band_fraction : float
        Fraction of the C filters hidden, in [0, 1) (0.1: one of 9). Hiding more makes the
        views agree only on what every filter subset shows, which throws away spectral
        detail: on ``benchmarks/learning_temporal_pretraining.py --quick --only pretraining``
        (3 seeds, the same seeds the default was chosen on) the gain at 10 % labels was
        +4.2 / +5.9 / +4.8 mIoU points for 0, 1 and 3 hidden filters, and at 25 % labels
        -2.3 / -2.7 / -6.8.
    """

    patch_px: int = 4
    space_fraction: float = 0.25
    band_fraction: float = 0.1

    def __post_init__(self):
        if int(self.patch_px) < 1:
            raise ValueError(f"patch_px must be >= 1, got {self.patch_px}")
        for name in ("space_fraction", "band_fraction"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"{name} must lie in [0, 1), got {value}")


def structured_mask(
    shape, config: MaskingConfig, generator: torch.Generator | None = None
) -> torch.Tensor:
    """A boolean keep-mask of structured space and band masking (True = visible).

    Parameters
    ----------
    shape : tuple (B, C, h, w)
        Shape of the barcode batch.
    config : MaskingConfig
    generator : torch.Generator, optional

    Returns
    -------
    torch.Tensor, bool (B, C, h, w)
        Per sample: ``round(space_fraction * rows)`` whole patch rows, as many patch columns
        (by fraction) and ``round(band_fraction * C)`` whole filters are False.
    """
    if len(shape) != 4:
        raise ValueError(f"shape must be (B, C, h, w), got {tuple(shape)}")
    batch, channels, height, width = (int(v) for v in shape)
    patch = int(config.patch_px)
    rows, cols = -(-height // patch), -(-width // patch)
    keep = torch.ones(batch, channels, height, width, dtype=torch.bool)
    n_rows = int(round(config.space_fraction * rows))
    n_cols = int(round(config.space_fraction * cols))
    n_bands = min(int(round(config.band_fraction * channels)), channels - 1)
    for b in range(batch):
        for index in torch.randperm(rows, generator=generator)[:n_rows].tolist():
            keep[b, :, index * patch : (index + 1) * patch, :] = False
        for index in torch.randperm(cols, generator=generator)[:n_cols].tolist():
            keep[b, :, :, index * patch : (index + 1) * patch] = False
        keep[b, torch.randperm(channels, generator=generator)[:n_bands]] = False
    return keep


def apply_mask(x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Masked view: hidden values replaced by each sample's mean barcode value."""
    fill = x.mean(dim=(1, 2, 3), keepdim=True)
    return torch.where(keep.to(x.device), x, fill)


def nt_xent(first: torch.Tensor, second: torch.Tensor, temperature: float = 0.2) -> torch.Tensor:
    """NT-Xent loss of SimCLR (Eq. 1) for ``N`` positive pairs.

    Parameters
    ----------
    first, second : torch.Tensor, (N, D)
        Projections of the two views; row ``n`` of both is one positive pair, N >= 2.
    temperature : float
        ``tau`` > 0.

    Returns
    -------
    torch.Tensor, scalar
        Mean over the ``2N`` anchors.
    """
    if first.shape != second.shape or first.ndim != 2 or first.shape[0] < 2:
        raise ValueError(
            f"first and second must both be (N >= 2, D), got {tuple(first.shape)} and "
            f"{tuple(second.shape)}"
        )
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    n = first.shape[0]
    z = F.normalize(torch.cat([first, second], 0), dim=1)
    similarity = z @ z.T / temperature
    self_pairs = torch.eye(2 * n, dtype=torch.bool, device=similarity.device)
    similarity = similarity.masked_fill(self_pairs, float("-inf"))
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(similarity.device)
    return F.cross_entropy(similarity, targets)


class ContrastiveEncoder(nn.Module):
    """A U-Net's encoder (shared modules, not copies) + pooling + projection head.

    Parameters
    ----------
    unet : hyplex.models.segmentation.UNet
    projection_dim : int
        Width of the projection head's output.
    """

    def __init__(self, unet: nn.Module, projection_dim: int = 32):
        super().__init__()
        for name in ("encoder", "bottleneck"):
            if not hasattr(unet, name):
                raise ValueError(f"the segmenter has no {name!r}: a UNet is needed")
        self.unet = unet
        width = unet.bottleneck[4].num_features
        self.projection = nn.Sequential(
            nn.Linear(width, width), nn.ReLU(), nn.Linear(width, projection_dim)
        )

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, h, w)`` -> pooled bottleneck features ``(B, width)``."""
        from hyplex.models.layers import pad_to_multiple

        if self.unet.whitening is not None:
            x = self.unet.whitening(x)
        x, _ = pad_to_multiple(x, self.unet.multiple)
        for block in self.unet.encoder:
            x = F.max_pool2d(block(x), 2)
        return self.unet.bottleneck(x).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projection(self.features(x))


@dataclass
class PretrainConfig:
    """Settings of :func:`pretrain_encoder` (steps, crops per batch, crop side in
    metapixels, Adam learning rate, NT-Xent temperature, seed)."""

    steps: int = 200
    batch: int = 16
    crop_px: int = 16
    lr: float = 3e-3
    temperature: float = 0.2
    seed: int = 0
    masking: MaskingConfig | None = None


def random_crops(frames: torch.Tensor, count: int, size: int, generator) -> torch.Tensor:
    """``count`` random ``size x size`` crops of barcode maps ``frames (N, C, h, w)``."""
    n, _, height, width = frames.shape
    if height < size or width < size:
        raise ValueError(f"frames of {height} x {width} metapixels are smaller than crop {size}")
    picks = torch.randint(0, n, (count,), generator=generator).tolist()
    tops = torch.randint(0, height - size + 1, (count,), generator=generator).tolist()
    lefts = torch.randint(0, width - size + 1, (count,), generator=generator).tolist()
    return torch.stack(
        [
            frames[i, :, t : t + size, s : s + size]
            for i, t, s in zip(picks, tops, lefts, strict=True)
        ]
    )


def pretrain_encoder(unet: nn.Module, frames, config: PretrainConfig | None = None,
                     progress=None) -> list[float]:  # fmt: skip
    """Pretrain ``unet``'s encoder in place on unlabelled barcode maps (see the module doc).

    Parameters
    ----------
    unet : hyplex.models.segmentation.UNet
        Its ``in_channels`` must equal the frames' C.
    frames : torch.Tensor or numpy.ndarray, (N, C, h, w)
        Unlabelled barcode maps (any positive unit; scaled by their median inside).
    config : PretrainConfig
    progress : callable, optional
        Called with ``(step, loss)`` after every step (e.g. a tqdm update).

    Returns
    -------
    list of float
        NT-Xent loss per step.
    """
    config = config or PretrainConfig()
    masking = config.masking or MaskingConfig()
    frames = torch.as_tensor(np.asarray(frames, dtype=np.float32))
    if frames.ndim != 4 or frames.shape[0] < 1:
        raise ValueError(f"frames must be (N >= 1, C, h, w), got {tuple(frames.shape)}")
    if frames.shape[1] != unet.in_channels:
        raise ValueError(
            f"frames have {frames.shape[1]} channels, the segmenter expects {unet.in_channels}"
        )
    frames = torch.nan_to_num(frames / frames.nanmedian().clamp_min(1e-12))
    generator = torch.Generator().manual_seed(int(config.seed))
    torch.manual_seed(int(config.seed))
    model = ContrastiveEncoder(unet)
    device = next(unet.parameters()).device
    model.to(device).train()
    optimiser = torch.optim.Adam(model.parameters(), lr=config.lr)
    history = []
    for step in range(int(config.steps)):
        crops = random_crops(frames, int(config.batch), int(config.crop_px), generator)
        first = apply_mask(crops, structured_mask(crops.shape, masking, generator))
        second = apply_mask(crops, structured_mask(crops.shape, masking, generator))
        loss = nt_xent(model(first.to(device)), model(second.to(device)), config.temperature)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        history.append(float(loss.detach()))
        if progress is not None:
            progress(step, history[-1])
    return history


def encoder_state(unet: nn.Module) -> dict:
    """The encoder's tensors of a U-Net (``whitening.*``, ``encoder.*``, ``bottleneck.*``)."""
    return {
        key: value.detach().cpu().contiguous()
        for key, value in unet.state_dict().items()
        if key.startswith(ENCODER_PREFIXES)
    }


def save_encoder(unet: nn.Module, path, extra: dict | None = None) -> Path:
    """Write the encoder as safetensors with the U-Net's config in the header metadata."""
    from safetensors.torch import save_file

    from hyplex.optics.atomic_io import atomic_path

    path = Path(path)
    metadata = {"segmenter": "unet", "config": json.dumps(unet.config)}
    if extra:
        metadata["pretraining"] = json.dumps(extra)
    with atomic_path(path) as partial:
        save_file(encoder_state(unet), str(partial), metadata=metadata)
    return path


def load_encoder(unet: nn.Module, path) -> dict:
    """Load a pretrained encoder file into ``unet`` (decoder and head keep their weights).

    Raises
    ------
    ValueError
        When the file is not an encoder file or its shapes do not fit ``unet`` (e.g. another
        channel count), naming the mismatch.

    Returns
    -------
    dict
        The file's U-Net config.
    """
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"encoder file {path} does not exist")
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    if metadata.get("segmenter") != "unet" or "config" not in metadata:
        raise ValueError(f"{path} is not a hyplex pretrained encoder (no unet config)")
    config = json.loads(metadata["config"])
    own = unet.state_dict()
    for key, value in tensors.items():
        if key not in own or own[key].shape != value.shape:
            raise ValueError(
                f"encoder {path} (in_channels {config.get('in_channels')}, base "
                f"{config.get('base_channels')}, depth {config.get('depth')}) does not fit the "
                f"segmenter (in_channels {unet.config['in_channels']}, base "
                f"{unet.config['base_channels']}, depth {unet.config['depth']}): {key}"
            )
    unet.load_state_dict(tensors, strict=False)
    return config

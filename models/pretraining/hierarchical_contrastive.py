"""Hierarchical contrastive attention real-vs-fake (metamer) head.

Method: Z. N. Liang, S. C. Han, Q. Wang, C. Leckie, "HierCon: Hierarchical Contrastive
Attention for Audio Deepfake Detection" (WWW 2026, arXiv:2602.01032). HierCon reads the hidden
states of every layer of a self-supervised backbone and pools them in three attention stages
(over time frames within a layer, over neighbouring layers within a layer group, and over the
groups), then classifies; a margin-based contrastive term shapes the pooled embedding so that
bona fide samples gather and fakes stay away. Here, per pixel of a barcode map:

* tokens: the C filters are split into ``G`` contiguous band groups (HierCon's time frames);
  each group is embedded and passed through ``L`` residual token-mixing layers (the
  backbone), giving hidden states ``H`` of shape ``(L, G, D)``;
* stage 1, within a layer: attention pooling over the band groups,
  ``h_l = sum_g softmax_g(v1 . tanh(W1 H_lg)) H_lg``;
* stage 2, within a layer group: layers in consecutive groups of ``layers_per_group``,
  ``q_m = sum_{l in m} softmax_l(v2 . tanh(W2 h_l)) h_l``;
* stage 3, across groups: ``e = sum_m softmax_m(v3 . tanh(W3 q_m)) q_m``; logit ``= w . e``.

Margin contrastive loss on the normalised embeddings ``u = e / |e|`` of a batch (our reading of
HierCon's margin-based contrastive regulariser; ``y = 1`` fake)::

    L_con = mean_{i<j, y_i = y_j} (1 - cos(u_i, u_j))
          + mean_{i<j, y_i != y_j} max(0, cos(u_i, u_j) - m)

and the training loss is ``BCE(logit, y) + lambda L_con`` (:func:`train_hiercon`).

The head it is compared with is hyplex's current one: the segmenter's ``fake_*`` classes
(:func:`hyplex.models.segmentation.fake_class_ids`), whose summed probability is the fake score.
What is not reproduced: the speech backbone (XLS-R) and its time axis; the layers here are a
small network trained with the head.

In the product: ``hyplex realfake fit --bundle B`` trains it on twin pixels through a bundle's
encoder (:mod:`~hyplex.models.pretraining.realfake_fitting`) and stores it in the bundle
(:mod:`~hyplex.models.pretraining.realfake_files`); ``hyplex segment --fake`` writes its map.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["HierConConfig", "HierConHead", "margin_contrastive_loss", "train_hiercon"]


def margin_contrastive_loss(embeddings: torch.Tensor, labels: torch.Tensor, margin: float = 0.2):
    """Margin contrastive loss of a batch (see the module doc).

    Parameters
    ----------
    embeddings : torch.Tensor, (N, D)
        Any scale (normalised inside).
    labels : torch.Tensor, int or bool (N,)
        1 / True for fake, 0 for real.
    margin : float
        ``m``, the largest cosine similarity allowed between a real and a fake, in [-1, 1].

    Returns
    -------
    torch.Tensor, scalar
        Mean over same-label pairs of ``1 - cos`` plus mean over cross pairs of the hinge;
        a term without pairs counts 0.
    """
    if embeddings.ndim != 2 or labels.shape != embeddings.shape[:1]:
        raise ValueError(
            f"embeddings must be (N, D) and labels (N,), got {tuple(embeddings.shape)} and "
            f"{tuple(labels.shape)}"
        )
    if not -1.0 <= margin <= 1.0:
        raise ValueError(f"margin must lie in [-1, 1] (a cosine), got {margin}")
    u = F.normalize(embeddings, dim=1)
    cosine = u @ u.T
    labels = labels.long()
    upper = torch.triu(torch.ones_like(cosine, dtype=torch.bool), diagonal=1)
    same = (labels[:, None] == labels[None, :]) & upper
    cross = (labels[:, None] != labels[None, :]) & upper
    zero = cosine.new_zeros(())
    pull = (1.0 - cosine[same]).mean() if bool(same.any()) else zero
    push = F.relu(cosine[cross] - margin).mean() if bool(cross.any()) else zero
    return pull + push


class _AttentionPool(nn.Module):
    """``sum_i softmax_i(v . tanh(W x_i)) x_i`` over dim -2 of ``(..., n, D)``."""

    def __init__(self, width: int):
        super().__init__()
        self.score = nn.Sequential(nn.Linear(width, width), nn.Tanh(), nn.Linear(width, 1))

    def forward(self, x: torch.Tensor):
        weights = torch.softmax(self.score(x), dim=-2)
        return (weights * x).sum(-2), weights.squeeze(-1)


class HierConHead(nn.Module):
    """Real-vs-fake head on barcodes ``(N, C)`` -> fake logits ``(N,)`` (see the module doc).

    Parameters
    ----------
    in_channels : int
        C, filters per barcode.
    band_groups : int
        G, contiguous groups of filters (tokens), 1 <= G <= C.
    layers : int
        L, token-mixing layers whose outputs are attended.
    layers_per_group : int
        Neighbouring layers pooled together in stage 2.
    width : int
        D, token width.
    """

    def __init__(self, in_channels: int = 9, band_groups: int = 3, layers: int = 4,
                 layers_per_group: int = 2, width: int = 32):  # fmt: skip
        super().__init__()
        if not 1 <= int(band_groups) <= int(in_channels):
            raise ValueError(f"band_groups must lie in 1..{in_channels}, got {band_groups}")
        if int(layers) < 1 or int(layers_per_group) < 1:
            raise ValueError(f"layers and layers_per_group must be >= 1, got {layers}, "
                             f"{layers_per_group}")  # fmt: skip
        self.in_channels, self.band_groups = int(in_channels), int(band_groups)
        self.layers_per_group = int(layers_per_group)
        # the constructor's arguments, stored with the weights (realfake_files)
        self.config = {
            "in_channels": self.in_channels,
            "band_groups": self.band_groups,
            "layers": int(layers),
            "layers_per_group": self.layers_per_group,
            "width": int(width),
        }
        bounds = torch.linspace(0, in_channels, band_groups + 1).round().long().tolist()
        self.groups = [(bounds[g], bounds[g + 1]) for g in range(band_groups)]
        self.embed = nn.ModuleList(nn.Linear(b - a + 1, width) for a, b in self.groups)
        self.position = nn.Parameter(torch.zeros(band_groups, width))
        self.mixing = nn.ModuleList(
            nn.Sequential(
                nn.LayerNorm(width),
                nn.Linear(width, 2 * width),
                nn.GELU(),
                nn.Linear(2 * width, width),
            )  # fmt: skip
            for _ in range(int(layers))
        )
        self.token_mix = nn.ModuleList(nn.Linear(band_groups, band_groups) for _ in range(layers))
        self.pool_tokens = _AttentionPool(width)
        self.pool_layers = _AttentionPool(width)
        self.pool_groups = _AttentionPool(width)
        self.classifier = nn.Linear(width, 1)

    def embedding(self, barcodes: torch.Tensor) -> torch.Tensor:
        """``(N, C)`` barcodes (scaled to ~1) -> pooled embedding ``e`` ``(N, D)``."""
        if barcodes.ndim != 2 or barcodes.shape[1] != self.in_channels:
            raise ValueError(
                f"barcodes must be (N, {self.in_channels}), got {tuple(barcodes.shape)}"
            )
        x = barcodes.float()
        level = x.mean(1, keepdim=True)
        shape = x / (level.abs() + 1e-6)  # spectral shape, level-free
        tokens = torch.stack(
            [embed(torch.cat([shape[:, a:b], level.log1p()], 1))
             for embed, (a, b) in zip(self.embed, self.groups, strict=True)], 1
        ) + self.position  # (N, G, D)  # fmt: skip
        hidden = []
        for mix, token_mix in zip(self.mixing, self.token_mix, strict=True):
            tokens = tokens + token_mix(tokens.transpose(1, 2)).transpose(1, 2)
            tokens = tokens + mix(tokens)
            hidden.append(tokens)
        states = torch.stack(hidden, 1)  # (N, L, G, D)
        per_layer, _ = self.pool_tokens(states)  # stage 1: (N, L, D)
        n, n_layers, width = per_layer.shape
        pad = (-n_layers) % self.layers_per_group
        if pad:  # the last group holds fewer layers: repeat its last one
            per_layer = torch.cat([per_layer, per_layer[:, -1:].expand(n, pad, width)], 1)
        grouped = per_layer.reshape(n, -1, self.layers_per_group, width)
        per_group, _ = self.pool_layers(grouped)  # stage 2: (N, M, D)
        embedding, _ = self.pool_groups(per_group)  # stage 3: (N, D)
        return embedding

    def forward(self, barcodes: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embedding(barcodes)).squeeze(-1)


@dataclass
class HierConConfig:
    """Training of :func:`train_hiercon`: steps, batch (pixels), Adam lr, margin ``m``,
    weight ``lambda`` of the contrastive term (0: plain BCE), seed."""

    steps: int = 600
    batch: int = 256
    lr: float = 3e-3
    margin: float = 0.2
    contrastive_weight: float = 0.5
    seed: int = 0


def train_hiercon(
    head: HierConHead, barcodes, is_fake, config: HierConConfig | None = None, progress=None
):
    """Train ``head`` on pixel barcodes ``(N, C)`` with labels ``is_fake (N,)`` (bool).

    Batches are balanced (half real, half fake). Returns the loss per step. ``progress``,
    optional, is called with ``(step, loss)`` after every step (e.g. a tqdm update). The
    batches are drawn on the CPU; ``head`` and ``barcodes`` may sit on CUDA together.
    """
    config = config or HierConConfig()
    barcodes = torch.as_tensor(barcodes, dtype=torch.float32)
    is_fake = torch.as_tensor(is_fake).bool()
    if barcodes.ndim != 2 or is_fake.shape != barcodes.shape[:1]:
        raise ValueError(f"barcodes must be (N, C) and is_fake (N,), got "
                         f"{tuple(barcodes.shape)} and {tuple(is_fake.shape)}")  # fmt: skip
    fakes, reals = torch.nonzero(is_fake).flatten(), torch.nonzero(~is_fake).flatten()
    if len(fakes) == 0 or len(reals) == 0:
        raise ValueError("train_hiercon needs both real and fake pixels")
    generator = torch.Generator().manual_seed(int(config.seed))
    optimiser = torch.optim.Adam(head.parameters(), lr=config.lr)
    half = max(1, int(config.batch) // 2)
    history = []
    for _ in range(int(config.steps)):
        pick = torch.cat([
            fakes[torch.randint(0, len(fakes), (half,), generator=generator)],
            reals[torch.randint(0, len(reals), (half,), generator=generator)],
        ])  # fmt: skip
        x, y = barcodes[pick], is_fake[pick].float()
        embedding = head.embedding(x)
        loss = F.binary_cross_entropy_with_logits(head.classifier(embedding).squeeze(-1), y)
        if config.contrastive_weight:
            loss = loss + config.contrastive_weight * margin_contrastive_loss(
                embedding, y.long(), config.margin
            )
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        history.append(float(loss.detach()))
        if progress is not None:
            progress(len(history), history[-1])
    return history

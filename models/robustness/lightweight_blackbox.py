"""ETF: a lightweight black-box attack from the shallow layers of a few-sample surrogate.

Method: C. Sun, Y. Zhang, W. Chaoqun, Q. Wang, Y. Li, T. Liu, B. Han, X. Tian, "Towards
Lightweight Black-Box Attacks against Deep Neural Networks", NeurIPS 2022 (arXiv:2209.14826).
(Its full text could not be read through the search tool here: the min-max below is our
reading of the method as its abstract states it, and no equation numbers are cited.)
Its two observations and its method (Error TransFormer, ETF):

1. adversarial examples made on the *shallow* layers of a surrogate transfer to the target,
   even when the surrogate was trained on very few samples (feature-level attack: push the
   shallow features of ``x + delta`` away from those of ``x``);
2. the surrogate's shallow layers differ from the target's (the approximation error). ETF
   turns that error in the parameter space into a perturbation of the features: a layer
   ``W + dW`` gives ``(W + dW) h = W h + dW h``, a feature perturbation bounded by
   ``||dW|| ||h||``. The attack is then made robust to it, a min-max::

       max_{|delta| <= budget}  min_{||Delta|| <= xi ||h_1(x)||}
           || h_2(h_1(x + delta) + Delta) - h_2(h_1(x)) ||^2

   with ``h_1``, ``h_2`` the surrogate's first and second shallow blocks and ``Delta`` the
   transformed error (per pixel, L2 relative to the clean feature's norm). The inner
   minimisation is a few projected gradient steps on ``Delta``, the outer one signed steps on
   ``delta`` projected into the physical budget of
   :func:`hyplex.models.robustness.probabilistic_margin.shot_noise_budget`.

The surrogate here is a per-pixel network (1x1 convolutions, so any frame size) trained on
``samples_per_class`` labelled barcode pixels per class: what an attacker who can label a
handful of spots of the scene has. The target is never queried for gradients; it is only
evaluated (success rate, mIoU/PSNR under attack).

Setting ``xi = 0`` gives the plain shallow-feature attack (observation 1 alone).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "ETFConfig",
    "ShallowSurrogate",
    "attack_success_rate",
    "etf_attack",
    "few_sample_pixels",
    "train_surrogate",
]


class ShallowSurrogate(nn.Module):
    """Per-pixel surrogate: two shallow blocks ``h_1``, ``h_2`` (1x1 conv + ReLU) and a head.

    Parameters
    ----------
    in_channels : int
        Barcode channels ``F``.
    n_classes : int
        Classes ``K`` (>= 2).
    width : int
        Channels of the shallow blocks.
    """

    def __init__(self, in_channels: int, n_classes: int, width: int = 32):
        super().__init__()
        if in_channels < 1 or n_classes < 2 or width < 1:
            raise ValueError(
                f"need in_channels >= 1, n_classes >= 2, width >= 1; got {in_channels}, "
                f"{n_classes}, {width}"
            )
        self.in_channels = int(in_channels)
        self.block1 = nn.Sequential(nn.Conv2d(in_channels, width, 1), nn.ReLU())
        self.block2 = nn.Sequential(nn.Conv2d(width, width, 1), nn.ReLU())
        self.head = nn.Conv2d(width, n_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, F, H, W) -> logits (B, K, H, W)``."""
        return self.head(self.block2(self.block1(x)))


def few_sample_pixels(labels: torch.Tensor, samples_per_class: int, seed: int = 0) -> torch.Tensor:
    """Flat indices of ``samples_per_class`` random pixels of each class present.

    Parameters
    ----------
    labels : torch.Tensor, (S, H, W), int64
    samples_per_class : int
        Pixels drawn per class (fewer if a class has fewer).
    seed : int

    Returns
    -------
    torch.Tensor, (M,), int64 indices into ``labels.reshape(-1)``.
    """
    if int(samples_per_class) < 1:
        raise ValueError(f"samples_per_class must be >= 1; got {samples_per_class}")
    flat = labels.reshape(-1).cpu().numpy()
    rng = np.random.default_rng(seed)
    chosen = []
    for value in np.unique(flat[flat >= 0]):
        where = np.flatnonzero(flat == value)
        chosen.append(rng.choice(where, min(int(samples_per_class), where.size), replace=False))
    return torch.as_tensor(np.concatenate(chosen), dtype=torch.long)


def train_surrogate(
    barcodes: torch.Tensor,
    labels: torch.Tensor,
    n_classes: int,
    samples_per_class: int,
    steps: int = 300,
    lr: float = 1e-2,
    width: int = 32,
    seed: int = 0,
) -> ShallowSurrogate:
    """A :class:`ShallowSurrogate` trained on a few labelled pixels per class.

    Parameters
    ----------
    barcodes : torch.Tensor, (S, F, H, W)
    labels : torch.Tensor, (S, H, W), int64 (negative = unlabelled)
    n_classes : int
    samples_per_class : int
        The attacker's labelled pixels per class (1 and 10 in the benchmark).
    steps, lr, width, seed : Adam steps, learning rate, width, initialisation and draw.

    Returns
    -------
    ShallowSurrogate (eval mode).
    """
    if barcodes.ndim != 4 or labels.shape != (barcodes.shape[0], *barcodes.shape[2:]):
        raise ValueError(
            f"barcodes (S, F, H, W) and labels (S, H, W) must agree; got "
            f"{tuple(barcodes.shape)} and {tuple(labels.shape)}"
        )
    generator = torch.Generator().manual_seed(int(seed))
    model = ShallowSurrogate(barcodes.shape[1], n_classes, width)
    for module in (model.block1[0], model.block2[0], model.head):
        nn.init.normal_(module.weight, std=(2.0 / module.weight.shape[1]) ** 0.5,
                        generator=generator)  # fmt: skip
        nn.init.zeros_(module.bias)
    index = few_sample_pixels(labels, samples_per_class, seed)
    points = barcodes.permute(0, 2, 3, 1).reshape(-1, barcodes.shape[1])[index]
    targets = labels.reshape(-1)[index]
    x = points[:, :, None, None].float()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(int(steps)):
        loss = F.cross_entropy(model(x)[:, :, 0, 0], targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return model.eval()


@dataclass(frozen=True)
class ETFConfig:
    """ETF attack settings.

    Attributes
    ----------
    steps : outer (input) steps, each ``step_fraction * budget``.
    inner_steps : projected gradient steps on the feature perturbation ``Delta``.
    xi : radius of ``Delta`` relative to the clean feature norm per pixel (0: plain
        shallow-feature attack).
    inner_lr : step of the inner minimisation, relative to the radius.
    """

    steps: int = 10
    step_fraction: float = 0.25
    inner_steps: int = 3
    xi: float = 0.1
    inner_lr: float = 0.5


def _project(delta: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
    norm = delta.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return delta * torch.clamp(radius / norm, max=1.0)


def etf_attack(
    surrogate: ShallowSurrogate,
    barcodes: torch.Tensor,
    budget: torch.Tensor,
    config: ETFConfig = ETFConfig(),
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Adversarial barcodes from the surrogate's shallow features (the min-max above).

    Parameters
    ----------
    surrogate : ShallowSurrogate
    barcodes : torch.Tensor, (B, F, H, W)
    budget : torch.Tensor, (B, F, H, W)
        Per-value radius (>= 0) of the input perturbation.
    config : ETFConfig
    generator : torch.Generator, optional
        The random start.

    Returns
    -------
    torch.Tensor, (B, F, H, W), within ``budget`` of ``barcodes`` (detached).
    """
    if budget.shape != barcodes.shape:
        raise ValueError(
            f"budget {tuple(budget.shape)} must match barcodes {tuple(barcodes.shape)}"
        )
    if barcodes.shape[1] != surrogate.in_channels:
        raise ValueError(
            f"the surrogate reads {surrogate.in_channels} channels; got {barcodes.shape[1]}"
        )
    for parameter in surrogate.parameters():
        parameter.requires_grad_(False)
    clean = barcodes.detach()
    with torch.no_grad():
        h1_clean = surrogate.block1(clean)
        h2_clean = surrogate.block2(h1_clean)
        radius = config.xi * h1_clean.norm(dim=1, keepdim=True)
    start = torch.rand(clean.shape, generator=generator, device=clean.device, dtype=clean.dtype)
    delta = (2 * start - 1) * budget
    for _ in range(int(config.steps)):
        with torch.no_grad():
            h1 = surrogate.block1(clean + delta)
        error = torch.zeros_like(h1)
        if config.xi > 0:  # inner min over the transformed approximation error
            for _ in range(int(config.inner_steps)):
                error.requires_grad_(True)
                distance = (surrogate.block2(h1 + error) - h2_clean).pow(2).sum()
                (grad,) = torch.autograd.grad(distance, error)
                with torch.no_grad():
                    unit = grad / grad.norm(dim=1, keepdim=True).clamp_min(1e-12)
                    error = _project(error - config.inner_lr * radius * unit, radius)
        delta.requires_grad_(True)
        distance = surrogate.block2(surrogate.block1(clean + delta) + error) - h2_clean
        (grad,) = torch.autograd.grad(distance.pow(2).sum(), delta)
        with torch.no_grad():
            delta = delta + config.step_fraction * budget * grad.sign()
            delta = torch.maximum(torch.minimum(delta, budget), -budget)
    for parameter in surrogate.parameters():
        parameter.requires_grad_(True)
    return (clean + delta).detach()


def attack_success_rate(
    clean_prediction: torch.Tensor, attacked_prediction: torch.Tensor, labels: torch.Tensor
) -> float:
    """Share of the pixels the target got right that the attack makes it get wrong.

    Parameters
    ----------
    clean_prediction, attacked_prediction, labels : torch.Tensor, same shape, int64
        Predicted class ids without and with the attack, and the true ones (negative =
        unlabelled, left out).

    Returns
    -------
    float in [0, 1] (nan if the target got no pixel right).
    """
    if not clean_prediction.shape == attacked_prediction.shape == labels.shape:
        raise ValueError("predictions and labels must have the same shape")
    right = (clean_prediction == labels) & (labels >= 0)
    if not bool(right.any()):
        return float("nan")
    return float((attacked_prediction[right] != labels[right]).float().mean())

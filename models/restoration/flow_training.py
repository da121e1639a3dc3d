"""Training the conditional flow decoder on random patches (eq. 3 of
:mod:`hyplex.models.restoration.conditional_flow`).

The estimator ``mu`` of the flow gets exactly the steps a plain L1-trained decoder gets (Adam,
no gradient clipping, patches drawn from one seed as index, top, left), so a flow and an
MST-class decoder trained with the same settings and seed end with the same ``mu``
(``benchmarks/learning_flow_translation.py`` checks it); only the flow's own parameters
(``model.flow_parameters()``) have their gradient norm clipped.

References
----------
[HIDFlowNet] Q. Wang, L. Pang, X. Cao, Z. Tian, D. Meng, "HIDFlowNet: A Flow-Based Deep
    Network for Hyperspectral Image Denoising", arXiv:2306.17797, section 3 (NLL +
    reconstruction loss).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from hyplex.models.data import random_crops

if TYPE_CHECKING:
    from hyplex.models.restoration.conditional_flow import ConditionalFlowDecoder

__all__ = ["FlowTraining", "train_flow"]


@dataclass(frozen=True)
class FlowTraining:
    """Settings of :func:`train_flow`.

    Attributes
    ----------
    steps : Adam steps.
    batch_size : patches per step.
    patch_size : patch side, pixels (``<=`` the maps' side).
    learning_rate : Adam step size.
    seed : draws the patches.
    """

    steps: int = 300
    batch_size: int = 8
    patch_size: int = 16
    learning_rate: float = 2e-3
    seed: int = 0


def train_flow(model: ConditionalFlowDecoder, conditions, cubes, settings=FlowTraining(),
               progress: bool = False) -> list[dict]:  # fmt: skip
    """Fit ``model`` by eq. (3) on random patches; returns the per-step loss parts.

    The estimator ``mu`` gets exactly the steps a plain L1-trained decoder would (Adam, no
    gradient clipping; the patches are drawn from ``settings.seed`` as index, top, left); the
    flow's gradient norm is clipped at 5.

    Parameters
    ----------
    model : ConditionalFlowDecoder
    conditions : torch.Tensor, (N, C_in, H, W)
        Barcode maps (or noisy cubes, for denoising).
    cubes : torch.Tensor, (N, L, H, W)
        Matching clean cubes.
    settings : FlowTraining
    progress : bool
        Show a tqdm bar.
    """
    if conditions.ndim != 4 or cubes.ndim != 4 or conditions.shape[0] != cubes.shape[0]:
        raise ValueError(
            "conditions (N, C, H, W) and cubes (N, L, H, W) must be 4-D with the same N; got "
            f"{tuple(conditions.shape)} and {tuple(cubes.shape)}"
        )
    if conditions.shape[-2:] != cubes.shape[-2:]:
        raise ValueError(
            f"conditions and cubes need the same H, W; got {tuple(conditions.shape[-2:])} and "
            f"{tuple(cubes.shape[-2:])}"
        )
    size = min(settings.patch_size, *cubes.shape[-2:])
    device = next(model.parameters()).device
    rng = np.random.default_rng(settings.seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.learning_rate)
    flow_parameters = model.flow_parameters()
    history = []
    steps = range(settings.steps)
    if progress:
        from tqdm.auto import tqdm

        steps = tqdm(steps, desc="flow", unit="step")
    model.train()
    for _ in steps:
        batch_y, batch_x = random_crops(rng, (conditions, cubes), settings.batch_size, size)
        batch_y, batch_x = batch_y.to(device), batch_x.to(device)
        total, parts = model.loss(batch_y, batch_x)
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        torch.nn.utils.clip_grad_norm_(flow_parameters, 5.0)
        optimizer.step()
        history.append(parts)
    model.eval()
    return history

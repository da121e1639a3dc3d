"""Federated decoder training across simulated labs, and removing one lab's contribution.

R. Ma, W. Yu, Q. Wang, J. Yang, C. Gong, "Graph Federated Unlearning for Privacy
Preservation", arXiv:2605.02297 (2026), FedGCV.

Training (:func:`federated_train`) is FedAvg (H. B. McMahan et al., "Communication-Efficient
Learning of Deep Networks from Decentralized Data", AISTATS 2017, Algorithm 1): each round,
every client (a lab with its own scenes) runs ``local_steps`` Adam steps from the global
weights on its own batches; the server averages the weights, weighted by the clients'
element counts. No client's data leaves it.

Removal of client ``u`` (:func:`remove_client`), the paper's two adjustments, transferred
from graphs to a segmenter:

1. **Gradient correction** (orthogonal projection): the withdrawing client ascends its own
   cross-entropy (unlearning), but every update is projected onto the orthogonal complement
   of the span of the *remaining* clients' gradients at the current weights (each remaining
   client sends one gradient of its local loss per step; the server orthonormalises them with
   a QR decomposition)::

       g <- g_u - Q (Q^T g_u),     Q = orth[g_1, ..., g_{u-1}, g_{u+1}, ..., g_K]

   so, to first order, no remaining client's loss changes. (Our choice, not the paper's: the
   ascent counts only the elements the model still recalls, argmax = label, and skips a
   batch with none; unbounded ascent past forgetting wrecked the other labs in the test.)
2. **Server-side recovery**: after the projected ascent, the server runs
   ``recovery_rounds`` FedAvg rounds among the remaining clients only, which restores the
   utility the ascent cost without any data of the removed lab.

Not reproduced, plainly: the paper's *virtual clients* (kept by the server to preserve the
graph topology and global node embeddings that the withdrawn client's nodes took part in).
A segmenter's clients share no graph and pass no messages, so there is nothing for them to
hold here; recovery is the plain FedAvg rounds above.

:func:`federated_retrain` is the gold standard: FedAvg from scratch without client ``u``.
"""

from __future__ import annotations

import copy
import time

import numpy as np
import torch
from torch import nn

from hyplex.models.unlearning.toolkit import (
    IGNORE_INDEX,
    Adam,
    as_batch,
    flat_gradient,
    trainable_parameters,
)

__all__ = [
    "federated_train",
    "federated_retrain",
    "remove_client",
    "project_out",
]


def _loss(model: nn.Module, batch) -> torch.Tensor:
    batch = as_batch(batch).to(next(model.parameters()).device)
    logits = model(batch.inputs)
    return nn.functional.cross_entropy(logits, batch.targets, ignore_index=IGNORE_INDEX)


def _count(batches) -> int:
    return int(sum(int((as_batch(b).targets != IGNORE_INDEX).sum()) for b in batches))


def _check_clients(clients) -> None:
    if len(clients) < 2 or any(len(c) == 0 for c in clients):
        raise ValueError(
            f"federated training needs >= 2 clients, each with >= 1 batch; got "
            f"{[len(c) for c in clients]}"
        )


def _local_update(model, batches, steps, lr, rng) -> dict:
    local = copy.deepcopy(model).train()
    optimizer = Adam(trainable_parameters(local), lr)
    for _ in range(steps):
        optimizer.step(_loss(local, batches[int(rng.integers(len(batches)))]))
    return local.state_dict()


def _average(states: list[dict], weights: list[float]) -> dict:
    total = float(sum(weights))
    out = {}
    for name, value in states[0].items():
        if value.is_floating_point():
            out[name] = sum(s[name] * (w / total) for s, w in zip(states, weights, strict=True))
        else:
            out[name] = value.clone()
    return out


def federated_train(build, clients, rounds: int, local_steps: int, lr: float = 3e-3,
                    seed: int = 0, model: nn.Module | None = None):  # fmt: skip
    """FedAvg of ``build()`` (or continued from ``model``) over ``clients``.

    Parameters
    ----------
    build : () -> nn.Module, a fresh segmenter (initialised under ``seed``).
    clients : list of K lists of batches (each client's own data).
    rounds, local_steps : communication rounds, Adam steps per client per round.

    Returns
    -------
    (global model in eval mode, seconds)
    """
    _check_clients(clients)
    start = time.perf_counter()
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(int(seed))
        model = build() if model is None else copy.deepcopy(model)
        rng = np.random.default_rng(seed)
        weights = [_count(c) for c in clients]
        for _ in range(int(rounds)):
            states = [_local_update(model, c, local_steps, lr, rng) for c in clients]
            model.load_state_dict(_average(states, weights))
    finally:
        torch.random.set_rng_state(state)
    return model.eval(), time.perf_counter() - start


def federated_retrain(build, clients, removed: int, rounds, local_steps, lr=3e-3, seed=0):
    """The gold standard: FedAvg from scratch on every client but ``removed``."""
    remaining = [c for i, c in enumerate(clients) if i != removed]
    return federated_train(build, remaining, rounds, local_steps, lr, seed)


def project_out(gradient: torch.Tensor, others: list[torch.Tensor]) -> torch.Tensor:
    """``gradient`` less its component in the span of ``others`` (each ``(P,)``)."""
    if not others:
        return gradient
    basis, _ = torch.linalg.qr(torch.stack(others, dim=1))  # (P, K) orthonormal columns
    return gradient - basis @ (basis.T @ gradient)


def remove_client(model: nn.Module, clients, removed: int, steps: int = 20, lr: float = 1e-3,
                  recovery_rounds: int = 1, local_steps: int = 5, seed: int = 0):  # fmt: skip
    """Remove client ``removed``'s contribution from the global ``model`` (see the module
    docstring): ``steps`` projected gradient-ascent steps of that client, then
    ``recovery_rounds`` FedAvg rounds among the others. Returns ``(model, seconds)``."""
    _check_clients(clients)
    if not 0 <= removed < len(clients):
        raise ValueError(f"removed must index one of the {len(clients)} clients; got {removed}")
    start = time.perf_counter()
    unlearned = copy.deepcopy(model).eval()
    parameters = trainable_parameters(unlearned)
    optimizer = Adam(parameters, lr)
    rng = np.random.default_rng(seed)
    remaining = [c for i, c in enumerate(clients) if i != removed]
    own = clients[removed]
    for _ in range(int(steps)):
        batch = as_batch(own[int(rng.integers(len(own)))]).to(parameters[0].device)
        logits = unlearned(batch.inputs)
        # ascend only on the elements still recalled (argmax = label); plain ascent is
        # unbounded and, past the point of forgetting, pushes the others' classes around
        recalled = (logits.argmax(1) == batch.targets) & (batch.targets != IGNORE_INDEX)
        if not bool(recalled.any()):
            continue
        per_element = nn.functional.cross_entropy(
            logits, batch.targets.clamp_min(0), reduction="none"
        )
        ascent = -(per_element * recalled).sum() / recalled.sum()
        g_u = flat_gradient(ascent, parameters)
        others = [
            flat_gradient(_loss(unlearned, c[int(rng.integers(len(c)))]), parameters)
            for c in remaining
        ]
        optimizer.step_flat(project_out(g_u, others))
    if recovery_rounds > 0:
        unlearned, _ = federated_train(None, remaining, recovery_rounds, local_steps, lr=lr,
                                       seed=seed, model=unlearned)  # fmt: skip
    return unlearned.eval(), time.perf_counter() - start

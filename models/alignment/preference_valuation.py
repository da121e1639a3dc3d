"""Which preference pairs are worth training on: truncated influence and its cheap proxies.

Paper: Z. Zhang, Q. Wang, S. Ye, J. Zhu, J. Yao, B. Han, M. Sugiyama, "Towards Understanding
Valuable Preference Data for Large Language Model Alignment" (ICLR 2026, arXiv 2510.13212).

The paper values a preference pair ``z = (x, y+, y-)`` by its influence on validation pairs
under the model being aligned (so value is a property of the model, not of the data alone),
truncates that influence so that a few validation pairs with large gradients cannot
over-score a training pair, and approximates the truncated influence (TIF) with two cheap,
model-dependent scoring functions whose errors differ, combined into one selector
(LossDiff-IRM). Implemented here, for DPO (Rafailov et al. 2023, eq. 7) on the tiny GPT:

* ``influence``: first-order influence of a step on ``z`` on the validation DPO loss,
  ``IF(z) = mean_v g_v . g_z`` with ``g = grad loss_dpo`` at the current model (identity
  Hessian, as gradient-tracing estimators do);
* ``truncated_influence`` (TIF): the same with every validation term clipped to
  ``[-tau, tau]``, ``tau`` a quantile of ``|g_v . g_z|`` over all terms;
* ``loss_difference`` (LossDiff): ``log pi_probe(y+) - log pi_probe(y-)``, how a probe policy
  (the model after a few DPO steps on the validation pairs) ranks the pair;
* ``implicit_reward_margin`` (IRM): the probe's DPO implicit reward margin
  ``beta [(log pi_probe - log pi_ref)(y+) - (log pi_probe - log pi_ref)(y-)]``;
* ``lossdiff_irm``: the mean of the two proxies' ranks (the combination that offsets their
  different error sources).

Not reproduced: the paper's exact truncation rule and proxy formulas (only its abstract and
summaries could be read here; the forms above follow their description), its LLM families
and benchmarks. The demonstration is the data-valuation effect itself: with label noise in
the pool, selecting by TIF or the proxies keeps the pairs that agree with the validation
preference and beats a random subset of the same size (:func:`selection_experiment`).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch

from hyplex.models.alignment.preference_dynamics import ParityPreference
from hyplex.models.alignment.preference_objectives import dpo_loss, sequence_log_probs
from hyplex.models.alignment.tiny_gpt import TinyGPT, resolve_device
from hyplex.models.unlearning.toolkit import Adam, flat_gradient

__all__ = [
    "PreferencePairs",
    "pair_gradients",
    "influence",
    "truncated_influence",
    "probe_policy",
    "loss_difference",
    "implicit_reward_margin",
    "lossdiff_irm",
    "select_top",
    "train_dpo",
    "selection_experiment",
]


@dataclass(frozen=True)
class PreferencePairs:
    """``prompts (N, P)``, ``chosen (N, R)``, ``rejected (N, R)`` int64 token tensors."""

    prompts: torch.Tensor
    chosen: torch.Tensor
    rejected: torch.Tensor

    def __post_init__(self):
        n = {self.prompts.shape[0], self.chosen.shape[0], self.rejected.shape[0]}
        if len(n) != 1 or self.chosen.shape != self.rejected.shape:
            raise ValueError(
                "prompts, chosen and rejected must have N rows; chosen/rejected one shape"
            )

    def __len__(self) -> int:
        return self.prompts.shape[0]

    def subset(self, idx) -> PreferencePairs:
        idx = torch.as_tensor(idx, device=self.prompts.device)
        return PreferencePairs(self.prompts[idx], self.chosen[idx], self.rejected[idx])


def _dpo(policy, reference, pairs: PreferencePairs, beta: float):
    pc = sequence_log_probs(policy, pairs.prompts, pairs.chosen)
    pr = sequence_log_probs(policy, pairs.prompts, pairs.rejected)
    with torch.no_grad():
        rc = sequence_log_probs(reference, pairs.prompts, pairs.chosen)
        rr = sequence_log_probs(reference, pairs.prompts, pairs.rejected)
    return dpo_loss(pc, pr, rc, rr, beta)


def pair_gradients(policy, reference, pairs: PreferencePairs, beta: float = 0.5) -> torch.Tensor:
    """Per-pair DPO gradients ``(N, n_parameters)`` at ``policy`` (float32)."""
    params = [p for p in policy.parameters() if p.requires_grad]
    return torch.stack(
        [
            flat_gradient(_dpo(policy, reference, pairs.subset([i]), beta), params)
            for i in range(len(pairs))
        ]
    )


def influence(train_gradients: torch.Tensor, validation_gradients: torch.Tensor) -> np.ndarray:
    """First-order influence ``IF(z) = mean_v g_v . g_z``: (N, P), (M, P) -> (N,). Positive:
    a descent step on ``z`` lowers the validation DPO loss."""
    return (train_gradients @ validation_gradients.T).mean(1).cpu().numpy()


def truncated_influence(
    train_gradients: torch.Tensor, validation_gradients: torch.Tensor, quantile: float = 0.8
) -> np.ndarray:
    """TIF: each validation term ``g_v . g_z`` clipped to ``[-tau, tau]`` before the mean,
    ``tau`` = the ``quantile`` of all ``|g_v . g_z|`` (0 < quantile <= 1; 1 = plain IF)."""
    if not 0 < quantile <= 1:
        raise ValueError(f"quantile must lie in (0, 1]; got {quantile}")
    terms = train_gradients @ validation_gradients.T
    tau = torch.quantile(terms.abs().flatten().float(), quantile)
    return terms.clamp(-tau, tau).mean(1).cpu().numpy()


def train_dpo(
    base, pairs: PreferencePairs, steps: int, beta: float = 0.5, lr: float = 1e-3, device=None
):
    """A copy of ``base`` after ``steps`` full-batch DPO steps on ``pairs`` (reference: base)."""
    device = resolve_device(device)
    policy = copy.deepcopy(base).to(device).train()
    reference = copy.deepcopy(base).to(device).eval()
    optimizer = Adam(policy.parameters(), lr)
    for _ in range(steps):
        optimizer.step(_dpo(policy, reference, pairs, beta))
    return policy.eval()


def probe_policy(
    base,
    validation: PreferencePairs,
    steps: int = 10,
    beta: float = 0.5,
    lr: float = 3e-3,
    device=None,
):
    """The proxies' probe: ``base`` after a few DPO steps on the validation pairs."""
    return train_dpo(base, validation, steps, beta, lr, device)


@torch.no_grad()
def loss_difference(probe, pairs: PreferencePairs) -> np.ndarray:
    """LossDiff: ``NLL_probe(y-) - NLL_probe(y+)`` per pair (nats), (N,)."""
    pc = sequence_log_probs(probe, pairs.prompts, pairs.chosen)
    pr = sequence_log_probs(probe, pairs.prompts, pairs.rejected)
    return (pc - pr).cpu().numpy()


@torch.no_grad()
def implicit_reward_margin(probe, reference, pairs: PreferencePairs, beta: float = 0.5):
    """IRM: the probe's implicit reward margin (Rafailov et al. 2023, eq. 5), (N,)."""
    margin = (
        sequence_log_probs(probe, pairs.prompts, pairs.chosen)
        - sequence_log_probs(reference, pairs.prompts, pairs.chosen)
        - sequence_log_probs(probe, pairs.prompts, pairs.rejected)
        + sequence_log_probs(reference, pairs.prompts, pairs.rejected)
    )
    return (beta * margin).cpu().numpy()


def _ranks(x: np.ndarray) -> np.ndarray:
    return np.argsort(np.argsort(x, kind="stable"), kind="stable") / max(len(x) - 1, 1)


def lossdiff_irm(loss_diff: np.ndarray, irm: np.ndarray) -> np.ndarray:
    """The combined selector's score: mean of the two proxies' ranks (0..1), (N,)."""
    if loss_diff.shape != irm.shape:
        raise ValueError(f"scores must share a shape; got {loss_diff.shape} and {irm.shape}")
    return 0.5 * (_ranks(loss_diff) + _ranks(irm))


def select_top(scores: np.ndarray, fraction: float) -> np.ndarray:
    """Indices of the ``fraction`` (0..1] highest scores (ties by index)."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must lie in (0, 1]; got {fraction}")
    k = max(1, int(round(fraction * len(scores))))
    return np.sort(np.argsort(-np.asarray(scores), kind="stable")[:k])


def selection_experiment(
    base: TinyGPT,
    pool: ParityPreference,
    validation: ParityPreference,
    test: ParityPreference,
    fraction: float = 0.5,
    flip_fraction: float = 0.35,
    steps: int = 15,
    beta: float = 0.5,
    seed: int = 0,
    device=None,
) -> dict:
    """Select ``fraction`` of a noisy pool by each score, align ``base`` with DPO on the
    selection, and measure the policy's mass on preferred answers over held-out prompts.

    Parameters
    ----------
    base : the policy to align (and the DPO reference).
    pool : prompts of the candidate pairs; ``flip_fraction`` of its pairs are swapped.
    validation : clean pairs the influence is measured on (and the proxies' probe trains on).
    test : held-out prompts for the evaluation.
    steps : DPO steps on each selection. seed : pairs, flips and the random subset.

    Returns
    -------
    dict: selector -> {"preferred_mass", "flipped_share"} for ``random``, ``IF``, ``TIF``,
    ``LossDiff``, ``IRM``, ``LossDiff-IRM``, ``all`` (the whole pool), plus ``spearman``
    (each proxy against TIF) and ``base`` (preferred mass before alignment).
    """
    device = resolve_device(device)
    base = base.to(device).eval()
    chosen, rejected, flipped = pool.pairs(seed, flip_fraction, device)
    pairs = PreferencePairs(pool.prompts(device), chosen, rejected)
    v_chosen, v_rejected, _ = validation.pairs(seed + 1, 0.0, device)
    val_pairs = PreferencePairs(validation.prompts(device), v_chosen, v_rejected)
    reference = copy.deepcopy(base).eval()

    g_train = pair_gradients(base, reference, pairs, beta)
    g_val = pair_gradients(base, reference, val_pairs, beta)
    probe = probe_policy(base, val_pairs, beta=beta, device=device)
    ld = loss_difference(probe, pairs)
    irm = implicit_reward_margin(probe, reference, pairs, beta)
    tif = truncated_influence(g_train, g_val)
    scores = {
        "IF": influence(g_train, g_val),
        "TIF": tif,
        "LossDiff": ld,
        "IRM": irm,
        "LossDiff-IRM": lossdiff_irm(ld, irm),
    }
    rng = np.random.default_rng(seed)
    k = max(1, int(round(fraction * len(pairs))))
    selections = {"random": np.sort(rng.choice(len(pairs), k, replace=False))}
    selections.update({name: select_top(s, fraction) for name, s in scores.items()})
    selections["all"] = np.arange(len(pairs))
    flipped_np = flipped.cpu().numpy()
    out: dict = {"base": test.preferred_mass(base, device)}
    for name, idx in selections.items():
        policy = train_dpo(base, pairs.subset(idx), steps, beta, device=device)
        out[name] = {
            "preferred_mass": test.preferred_mass(policy, device),
            "flipped_share": float(flipped_np[idx].mean()),
        }
    out["spearman"] = {
        name: float(np.corrcoef(_ranks(scores[name]), _ranks(tif))[0, 1])
        for name in ("IF", "LossDiff", "IRM", "LossDiff-IRM")
    }
    return out

"""What DPO and PPO do to a policy: the gradient-alignment diagnostic, on the tiny GPT.

Paper: Y. Wang, Q. Wang, Z. Zhang, A. Li, G. Niu, B. Han, M. Sugiyama, "What Is Preference
Optimization Doing, How and Why?" (arXiv 2512.00778, 2025).

The paper monitors, along training, the alignment between the update direction of a learning
objective ``L`` and the direction that raises the likelihood of the *final* responses ``D'``
(those the trained policy ends up giving)::

    G(L; theta_t) = E_{(x', y') in D'}[ -grad log pi(y' | x'; theta_t) ]^T  grad L(D; theta_t)

A ``G`` that stays positive means the objective pulls steadily towards where training ends:
supervised learning with a stable target (the paper finds this for DPO). ``G`` near zero,
negative or fluctuating means the target moves while the policy explores (PPO). The paper
splits both objectives into three components and tracks each one's ``G``:

* DPO (Rafailov et al. 2023, eq. 7), ``L = -log sigma(beta [(log pi(y+) - log pi_ref(y+)) -
  (log pi(y-) - log pi_ref(y-))])``, has the gradient-equivalent form
  ``-w (grad log pi(y+) - grad log pi(y-))`` with ``w = beta sigma(-beta margin)``:
  positive learning ``-w log pi(y+)``, negative learning ``+w log pi(y-)``, and the loss
  reweighting ``w`` (here compared with ``w = beta/2`` held constant).
* PPO's clipped surrogate (Schulman et al. 2017, eq. 7), ``-min(rho A, clip(rho, 1 +- eps)
  A)`` per token: positive learning on tokens with advantage ``A > 0``, negative learning on
  ``A < 0``, and the reweighting by ``|A|``.

What is reproduced here: ``G`` and its per-component versions for both methods on one
policy (:class:`TinyGPT`, a preference "answers of the right parity" over synthetic facts);
the paper's LLM scale, its reward model and critic (the PPO here uses a verifiable reward
and a group-mean baseline, as GRPO does) are not. Equation numbers are those of the DPO and
PPO papers; the paper's own numbering was not available to check.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from hyplex.models.alignment.preference_objectives import (
    dpo_components,
    dpo_loss,
    ppo_components,
    ppo_loss,
    sequence_log_probs,
)
from hyplex.models.alignment.tiny_gpt import SyntheticFacts, TinyGPT, resolve_device
from hyplex.models.unlearning.toolkit import Adam, flat_gradient

__all__ = [
    "gradient_alignment",
    "ParityPreference",
    "DynamicsTrace",
    "track_dpo",
    "track_ppo",
    "compare_dpo_ppo",
]


def gradient_alignment(loss: torch.Tensor, final_nll: torch.Tensor, parameters) -> tuple:
    """The paper's ``G``: ``grad final_nll . grad loss`` and its cosine.

    Parameters
    ----------
    loss : scalar objective ``L(D; theta)``.
    final_nll : scalar ``E_{D'}[-log pi(y' | x'; theta)]`` over the final responses.
    parameters : the parameters ``theta`` both depend on.

    Returns
    -------
    (G, cosine) as floats. Positive: ``L``'s descent also raises the final responses'
    likelihood.
    """
    parameters = list(parameters)
    g_final = flat_gradient(final_nll, parameters, retain_graph=True)
    return _alignment_with(g_final, loss, parameters)


def _alignment_with(g_final: torch.Tensor, loss: torch.Tensor, parameters: list) -> tuple:
    """:func:`gradient_alignment` with the final responses' flat gradient already taken."""
    g_loss = flat_gradient(loss, parameters, retain_graph=True)
    inner = float(g_final @ g_loss)
    norm = float(g_final.norm() * g_loss.norm())
    return inner, (inner / norm if norm > 0 else 0.0)


# --------------------------------------------------------------------------------------
# the experiment on the tiny GPT
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ParityPreference:
    """A verifiable preference over the facts' value tokens: an even value ``v`` is preferred
    (with ``relation_dependent``: ``v + r`` even for relation ``r``). Prompts are
    ``BOS entity relation`` (B, 3); a response is one value token."""

    facts: SyntheticFacts
    relation_dependent: bool = False

    def _parity(self, relations):
        return relations % 2 if self.relation_dependent else relations * 0

    def prompts(self, device=None) -> torch.Tensor:
        return torch.as_tensor(self.facts.tokens[:, :3], device=device)

    def reward(self, response_tokens: torch.Tensor, rows=None) -> torch.Tensor:
        """1.0 for a preferred (right-parity) value token, else 0.0: (B, 1) -> (B,)."""
        vocabulary = self.facts.vocabulary
        relations = torch.as_tensor(self.facts.relations, device=response_tokens.device)
        if rows is not None:
            relations = relations[rows]
        value = response_tokens[:, 0] - vocabulary.value_offset
        valid = (value >= 0) & (value < vocabulary.n_values)
        return (valid & ((value + self._parity(relations)) % 2 == 0)).float()

    def pairs(self, seed: int, flip_fraction: float = 0.0, device=None):
        """One ``(chosen, rejected)`` pair of value tokens per prompt: (N, 1) each, a random
        preferred and a random dispreferred value; ``flip_fraction`` of the pairs swapped
        (label noise). Returns ``(chosen, rejected, flipped (N,) bool)``."""
        rng = np.random.default_rng(seed)
        vocabulary = self.facts.vocabulary
        n = len(self.facts)
        half = vocabulary.n_values // 2
        parity = self._parity(self.facts.relations)  # good values have this parity
        good = 2 * rng.integers(0, half, n) + parity
        bad = 2 * rng.integers(0, half, n) + (1 - parity)
        flipped = rng.random(n) < flip_fraction
        chosen = np.where(flipped, bad, good)
        rejected = np.where(flipped, good, bad)
        as_tokens = lambda v: torch.as_tensor(vocabulary.value(v)[:, None], device=device)  # noqa: E731
        return as_tokens(chosen), as_tokens(rejected), torch.as_tensor(flipped, device=device)

    def preferred_mass(self, model: nn.Module, device=None) -> float:
        """Mean probability the policy puts on preferred values (0..1)."""
        vocabulary = self.facts.vocabulary
        with torch.no_grad():
            logits = model(self.prompts(device))[:, -1]
            probs = torch.softmax(logits.float(), -1)
            values = torch.arange(vocabulary.n_values, device=probs.device)
            rel = torch.as_tensor(self.facts.relations, device=probs.device)
            good = ((values[None] + self._parity(rel)[:, None]) % 2 == 0).float()
            return float(
                (probs[:, vocabulary.value_offset :][:, : vocabulary.n_values] * good).sum(1).mean()
            )


@dataclass
class DynamicsTrace:
    """``G`` along one training run.

    Attributes
    ----------
    method : "DPO" or "PPO".
    alignment, cosine : (steps,) ``G`` and its cosine for the whole objective.
    components : name -> (steps,) cosine of each component's gradient with the final
        responses' direction (``positive``, ``negative``, ``unweighted``).
    preferred_mass : (steps + 1,) policy mass on preferred answers before each step and at
        the end.
    entropy : (steps + 1,) mean entropy (nats) of the policy's answer distribution.
    """

    method: str
    alignment: np.ndarray
    cosine: np.ndarray
    components: dict[str, np.ndarray] = field(default_factory=dict)
    preferred_mass: np.ndarray | None = None
    entropy: np.ndarray | None = None

    def summary(self) -> dict:
        """JSON-ready figures: mean G cosine, share of steps with G > 0, its sign flips, the
        per-component mean cosines and the final preferred mass."""
        signs = np.sign(self.cosine)
        return {
            "mean_cosine": float(np.mean(self.cosine)),
            "positive_share": float(np.mean(self.cosine > 0)),
            "sign_changes": int(np.sum(signs[1:] != signs[:-1])),
            "cosine_std": float(np.std(self.cosine)),
            "components_mean_cosine": {k: float(np.mean(v)) for k, v in self.components.items()},
            "final_preferred_mass": float(self.preferred_mass[-1]),
            "final_entropy": float(self.entropy[-1]),
        }


def _answer_entropy(model, prompts) -> float:
    with torch.no_grad():
        logp = torch.log_softmax(model(prompts)[:, -1].float(), -1)
        return float(-(logp.exp() * logp).sum(-1).mean())


def _final_nll(model, prompts, final_responses):
    return -sequence_log_probs(model, prompts, final_responses).mean()


def _replay(snapshots, records, prompts, final_responses, objective):
    """Recompute G (and components) at every stored snapshot against D'."""
    steps = len(records)
    alignment, cosine = np.zeros(steps), np.zeros(steps)
    components: dict[str, list] = {}
    for t, (state, record) in enumerate(zip(snapshots, records, strict=True)):
        model = state
        params = [p for p in model.parameters() if p.requires_grad]
        # the final responses' gradient once per snapshot, shared by the loss and its parts
        g_final = flat_gradient(_final_nll(model, prompts, final_responses), params)
        loss, parts = objective(model, record)
        alignment[t], cosine[t] = _alignment_with(g_final, loss, params)
        for name, value in parts.items():
            components.setdefault(name, []).append(_alignment_with(g_final, value, params)[1])
    return alignment, cosine, {k: np.asarray(v) for k, v in components.items()}


def _greedy_final_responses(model, prompts):
    with torch.no_grad():
        return model(prompts)[:, -1].argmax(-1, keepdim=True)


def track_dpo(
    base: TinyGPT,
    preference: ParityPreference,
    steps: int = 30,
    beta: float = 0.5,
    lr: float = 3e-3,
    seed: int = 0,
    device=None,
) -> DynamicsTrace:
    """Train a copy of ``base`` with DPO on one fixed preference pair per prompt and record
    ``G`` at every step against the final model's greedy answers (``D'``)."""
    device = resolve_device(device)
    policy = copy.deepcopy(base).to(device).train()
    reference = copy.deepcopy(base).to(device).eval()
    prompts = preference.prompts(device)
    chosen, rejected, _ = preference.pairs(seed, 0.0, device)
    with torch.no_grad():
        ref_c = sequence_log_probs(reference, prompts, chosen)
        ref_r = sequence_log_probs(reference, prompts, rejected)
    optimizer = Adam(policy.parameters(), lr)
    snapshots, masses, entropies = [], [], []
    for _ in range(steps):
        snapshots.append(copy.deepcopy(policy))
        masses.append(preference.preferred_mass(policy, device))
        entropies.append(_answer_entropy(policy, prompts))
        pc, pr = (sequence_log_probs(policy, prompts, y) for y in (chosen, rejected))
        optimizer.step(dpo_loss(pc, pr, ref_c, ref_r, beta))
    masses.append(preference.preferred_mass(policy, device))
    entropies.append(_answer_entropy(policy, prompts))
    final = _greedy_final_responses(policy, prompts)

    def objective(model, _record):
        pc, pr = (sequence_log_probs(model, prompts, y) for y in (chosen, rejected))
        parts = dpo_components(pc, pr, ref_c, ref_r, beta)
        parts.pop("weights")
        return dpo_loss(pc, pr, ref_c, ref_r, beta), parts

    a, c, comps = _replay(snapshots, [None] * steps, prompts, final, objective)
    return DynamicsTrace("DPO", a, c, comps, np.asarray(masses), np.asarray(entropies))


def track_ppo(
    base: TinyGPT,
    preference: ParityPreference,
    steps: int = 30,
    group: int = 4,
    clip: float = 0.2,
    epochs: int = 2,
    lr: float = 3e-3,
    seed: int = 0,
    device=None,
) -> DynamicsTrace:
    """Train a copy of ``base`` with PPO's clipped surrogate on its own samples (``group``
    per prompt, verifiable reward, group-mean baseline) and record ``G`` at every step
    against the final model's greedy answers. Each step samples once and takes ``epochs``
    surrogate steps (the ratio moves off 1 from the second)."""
    device = resolve_device(device)
    policy = copy.deepcopy(base).to(device).train()
    prompts = preference.prompts(device)
    n = prompts.shape[0]
    generator = torch.Generator(device=device).manual_seed(seed)
    optimizer = Adam(policy.parameters(), lr)
    snapshots, records, masses, entropies = [], [], [], []
    rows = torch.arange(n, device=device).repeat_interleave(group)
    for _ in range(steps):
        masses.append(preference.preferred_mass(policy, device))
        entropies.append(_answer_entropy(policy, prompts))
        with torch.no_grad():
            probs = torch.softmax(policy(prompts)[:, -1].float(), -1)
            responses = torch.multinomial(probs[rows], 1, generator=generator)
            old = sequence_log_probs(policy, prompts[rows], responses, per_token=True)
        reward = preference.reward(responses, rows).view(n, group)
        advantage = (reward - reward.mean(1, keepdim=True)).view(-1)
        record = (responses, old, advantage)
        snapshots.append(copy.deepcopy(policy))
        records.append(record)
        for _ in range(epochs):
            new = sequence_log_probs(policy, prompts[rows], responses, per_token=True)
            optimizer.step(ppo_loss(new, old, advantage, clip))
    masses.append(preference.preferred_mass(policy, device))
    entropies.append(_answer_entropy(policy, prompts))
    final = _greedy_final_responses(policy, prompts)

    def objective(model, record):
        responses, old, advantage = record
        new = sequence_log_probs(model, prompts[rows], responses, per_token=True)
        return ppo_loss(new, old, advantage, clip), ppo_components(new, old, advantage, clip)

    a, c, comps = _replay(snapshots, records, prompts, final, objective)
    return DynamicsTrace("PPO", a, c, comps, np.asarray(masses), np.asarray(entropies))


def compare_dpo_ppo(
    base: TinyGPT, preference: ParityPreference, steps: int = 30, seed: int = 0, device=None
) -> dict:
    """Both traces' :meth:`DynamicsTrace.summary` (JSON-ready): ``{"DPO": ..., "PPO": ...}``."""
    if steps < 2:
        raise ValueError(f"steps must be >= 2; got {steps}")
    out = {}
    for name, run in (("DPO", track_dpo), ("PPO", track_ppo)):
        trace = run(base, preference, steps=steps, seed=seed, device=device)
        out[name] = trace.summary()
    if any(math.isnan(v["mean_cosine"]) for v in out.values()):
        raise RuntimeError("the gradient alignment is NaN: a gradient vanished entirely")
    return out

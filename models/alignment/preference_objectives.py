"""The two preference-optimisation objectives and their parts: DPO and PPO's clipped surrogate.

* DPO (R. Rafailov et al., "Direct Preference Optimization: Your Language Model is Secretly a
  Reward Model", NeurIPS 2023, eq. 7) and its gradient-equivalent split into positive
  learning, negative learning and the loss reweighting ``w = beta sigma(-beta margin)``;
* PPO (J. Schulman et al., "Proximal Policy Optimization Algorithms", 2017, eq. 7) per token,
  split into tokens of positive and negative advantage and the reweighting by ``|A|``.

The split is the one of "What Is Preference Optimization Doing, How and Why?" (arXiv
2512.00778), whose diagnostic lives in :mod:`.preference_dynamics`. Log-probabilities come
from :func:`sequence_log_probs` over any ``tokens (B, T) -> logits (B, T, V)`` model.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["sequence_log_probs", "dpo_loss", "dpo_components", "ppo_loss", "ppo_components"]


def sequence_log_probs(
    model: nn.Module, prompts: torch.Tensor, responses: torch.Tensor, per_token: bool = False
) -> torch.Tensor:
    """``log pi(response | prompt)``.

    Parameters
    ----------
    model : tokens (B, T) -> logits (B, T, V).
    prompts : (B, P) int64. responses : (B, R) int64.
    per_token : return (B, R) token log-probabilities instead of their sum (B,).
    """
    if prompts.ndim != 2 or responses.ndim != 2 or prompts.shape[0] != responses.shape[0]:
        raise ValueError(
            f"prompts (B, P) and responses (B, R) must share B; got {tuple(prompts.shape)} and "
            f"{tuple(responses.shape)}"
        )
    tokens = torch.cat([prompts, responses], dim=1)
    p = prompts.shape[1]
    logits = model(tokens[:, :-1])[:, p - 1 :]
    token_logp = torch.log_softmax(logits.float(), -1).gather(2, responses[..., None])[..., 0]
    return token_logp if per_token else token_logp.sum(1)


def _check_same_shape(*tensors):
    shapes = {tuple(t.shape) for t in tensors}
    if len(shapes) != 1:
        raise ValueError(f"log-probability tensors must share one shape; got {sorted(shapes)}")


def dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    reference_chosen: torch.Tensor,
    reference_rejected: torch.Tensor,
    beta: float = 0.1,
) -> torch.Tensor:
    """DPO loss (Rafailov et al. 2023, eq. 7), mean over pairs.

    All inputs are (B,) sequence log-probabilities in nats; ``beta`` > 0 is the KL strength.
    """
    _check_same_shape(policy_chosen, policy_rejected, reference_chosen, reference_rejected)
    if not beta > 0:
        raise ValueError(f"beta must be > 0; got {beta}")
    margin = (policy_chosen - reference_chosen) - (policy_rejected - reference_rejected)
    return -nn.functional.logsigmoid(beta * margin).mean()


def dpo_components(
    policy_chosen, policy_rejected, reference_chosen, reference_rejected, beta: float = 0.1
) -> dict[str, torch.Tensor]:
    """DPO's gradient-equivalent parts: ``positive`` = ``-mean(w log pi(y+))``,
    ``negative`` = ``+mean(w log pi(y-))`` with the weights ``w = beta sigma(-beta margin)``
    held fixed (detached), ``unweighted`` = the same with ``w = beta / 2`` (no reweighting).
    ``positive + negative`` has the gradient of :func:`dpo_loss`."""
    _check_same_shape(policy_chosen, policy_rejected, reference_chosen, reference_rejected)
    margin = (policy_chosen - reference_chosen) - (policy_rejected - reference_rejected)
    weight = (beta * torch.sigmoid(-beta * margin)).detach()
    return {
        "positive": -(weight * policy_chosen).mean(),
        "negative": (weight * policy_rejected).mean(),
        "unweighted": -(beta / 2) * (policy_chosen - policy_rejected).mean(),
        "weights": weight,
    }


def ppo_loss(
    token_log_probs: torch.Tensor,
    old_token_log_probs: torch.Tensor,
    advantages: torch.Tensor,
    clip: float = 0.2,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """PPO clipped surrogate (Schulman et al. 2017, eq. 7) to minimise, per token.

    Parameters
    ----------
    token_log_probs, old_token_log_probs : (B, R) log pi(y_t | ...) under the current and the
        sampling policy (nats).
    advantages : (B,) per-sequence or (B, R) per-token advantages.
    clip : epsilon of the ratio clip (> 0).
    mask : (B, R) bool/float, tokens that count (default all).
    """
    _check_same_shape(token_log_probs, old_token_log_probs)
    if not clip > 0:
        raise ValueError(f"clip must be > 0; got {clip}")
    if advantages.ndim == 1:
        advantages = advantages[:, None].expand_as(token_log_probs)
    _check_same_shape(token_log_probs, advantages)
    ratio = torch.exp(token_log_probs - old_token_log_probs.detach())
    surrogate = torch.minimum(ratio * advantages, ratio.clamp(1 - clip, 1 + clip) * advantages)
    weights = torch.ones_like(surrogate) if mask is None else mask.to(surrogate.dtype)
    return -(surrogate * weights).sum() / weights.sum().clamp_min(1e-12)


def ppo_components(
    token_log_probs, old_token_log_probs, advantages, clip: float = 0.2
) -> dict[str, torch.Tensor]:
    """PPO's parts: ``positive`` (tokens with A > 0), ``negative`` (A < 0), both normalised
    by the full token count so that they sum to :func:`ppo_loss`; ``unweighted`` replaces
    ``A`` by ``sign(A)`` (no loss reweighting)."""
    if advantages.ndim == 1:
        advantages = advantages[:, None].expand_as(token_log_probs)
    count = float(token_log_probs.numel())

    def part(select):
        mask = select.to(token_log_probs.dtype)
        return ppo_loss(token_log_probs, old_token_log_probs, advantages, clip, mask) * (
            mask.sum() / count
        )

    return {
        "positive": part(advantages > 0),
        "negative": part(advantages < 0),
        "unweighted": ppo_loss(token_log_probs, old_token_log_probs, torch.sign(advantages), clip),
    }

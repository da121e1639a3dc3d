"""EEPO: GRPO whose rollouts are split in two halves with a forget step between them.

Paper: L. Chen, X. Han, Q. Wang, B. Han, J. Bai, H. Schuetze, K.-F. Wong, "EEPO:
Exploration-Enhanced Policy Optimization via Sample-Then-Forget" (ICLR 2026, arXiv
2510.05837).

GRPO (Shao et al. 2024, DeepSeekMath, eq. 3 without the KL term) samples ``G`` responses per
prompt, scores them with a verifiable reward and raises the log-likelihood of each in
proportion to its group-normalised advantage ``A = (r - mean(r)) / (std(r) + eps)``. When
the policy has a dominant mode, all ``G`` samples come from it, every advantage is zero and
nothing is learned: the self-reinforcing loop the paper breaks. EEPO's rollout::

    stage 1: sample G/2 responses from pi_theta
    forget : if the policy's entropy is below a gate, take ONE unlearning step on a copy,
             theta' = theta - eta grad L_forget(stage-1 responses), with the complementary
             loss L_forget = -log(1 - pi(y)) (largest for the high-probability responses)
    stage 2: sample G/2 responses from pi_theta'  (forced into other regions)
    update : discard theta'; the GRPO update of theta on all G responses

The paper's three design points are kept: the unlearning is triggerable (entropy gate),
targeted (the complementary loss concentrates on high-probability responses) and cheap (one
step, on a copy that is then thrown away). Not reproduced: LLM-scale math reasoning; the
task here is modular addition answered in one token by :class:`TinyGPT`, started from a
policy that confidently gives a wrong answer (a dominant mode).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from hyplex.models.alignment.tiny_gpt import TinyGPT, TinyGPTConfig, resolve_device
from hyplex.models.unlearning.toolkit import Adam

__all__ = [
    "ModularAdditionTask",
    "dominant_mode_policy",
    "group_advantages",
    "complementary_forget_loss",
    "RolloutConfig",
    "policy_optimization",
    "compare_eepo_grpo",
]


@dataclass(frozen=True)
class ModularAdditionTask:
    """Prompts ``BOS a b =`` for all ``a, b < modulus``; the verifiable answer is
    ``(a + b) mod modulus``, one token. Tokens: 0 BOS, 1 '=', 2.. the digits."""

    modulus: int = 7

    BOS = 0
    EQUALS = 1
    DIGIT_OFFSET = 2

    def __post_init__(self):
        if self.modulus < 2:
            raise ValueError(f"modulus must be >= 2; got {self.modulus}")

    @property
    def vocab_size(self) -> int:
        return self.DIGIT_OFFSET + self.modulus

    def prompts(self, device=None) -> torch.Tensor:
        """(modulus**2, 4) int64."""
        a, b = np.divmod(np.arange(self.modulus**2), self.modulus)
        rows = np.stack(
            [
                np.full_like(a, self.BOS),
                a + self.DIGIT_OFFSET,
                b + self.DIGIT_OFFSET,
                np.full_like(a, self.EQUALS),
            ],
            axis=1,
        )
        return torch.as_tensor(rows, dtype=torch.int64, device=device)

    def answers(self, device=None) -> torch.Tensor:
        """(modulus**2,) correct answer tokens."""
        a, b = np.divmod(np.arange(self.modulus**2), self.modulus)
        return torch.as_tensor((a + b) % self.modulus + self.DIGIT_OFFSET, device=device)

    def reward(self, responses: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """The checker: 1.0 where ``responses (K,)`` equal the answer of prompt ``rows (K,)``."""
        return (responses == self.answers(responses.device)[rows]).float()

    def pass_rate(self, model: nn.Module) -> float:
        """Greedy accuracy over all prompts (0..1)."""
        device = next(model.parameters()).device
        with torch.no_grad():
            predicted = model(self.prompts(device))[:, -1].argmax(-1)
        return float((predicted == self.answers(device)).float().mean())


def dominant_mode_policy(
    task: ModularAdditionTask,
    confidence: float = 0.9,
    shift: int = 1,
    steps: int = 200,
    seed: int = 0,
    device=None,
) -> TinyGPT:
    """A :class:`TinyGPT` fine-tuned to answer ``(a + b + shift) mod m`` with probability
    ``confidence`` (the rest spread evenly): a policy with a wrong dominant mode."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1); got {confidence}")
    device = resolve_device(device)
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        model = TinyGPT(TinyGPTConfig(task.vocab_size, context=5, d_model=32)).to(device)
    finally:
        torch.random.set_rng_state(state)
    prompts = task.prompts(device)
    wrong = (task.answers(device) - task.DIGIT_OFFSET + shift) % task.modulus
    target = torch.full(
        (len(prompts), task.modulus), (1 - confidence) / (task.modulus - 1), device=device
    )
    target[torch.arange(len(prompts)), wrong] = confidence
    optimizer = Adam(model.parameters(), 3e-3)
    for _ in range(steps):
        logits = model(prompts)[:, -1, task.DIGIT_OFFSET :]
        optimizer.step(-(target * torch.log_softmax(logits, -1)).sum(-1).mean())
    return model.eval()


def group_advantages(rewards: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """GRPO's group-normalised advantages: ``(P, G) -> (P, G)``, ``(r - mean) / (std + eps)``
    per prompt (population std; 0 for a group whose rewards are all equal)."""
    if rewards.ndim != 2:
        raise ValueError(f"rewards must be (prompts, group); got {tuple(rewards.shape)}")
    centred = rewards - rewards.mean(1, keepdim=True)
    return centred / (rewards.std(1, unbiased=False, keepdim=True) + eps)


def complementary_forget_loss(log_probs: torch.Tensor) -> torch.Tensor:
    """EEPO's unlearning loss ``mean(-log(1 - pi(y)))`` from ``log pi(y)`` (K,): it grows
    without bound as ``pi(y) -> 1``, so the step falls hardest on dominant responses (plain
    gradient ascent, ``mean(log pi(y))``, would weigh every response alike)."""
    return -torch.log1p(-log_probs.exp().clamp(max=1 - 1e-6)).mean()


@dataclass(frozen=True)
class RolloutConfig:
    """``group`` rollouts per prompt (even), ``steps`` policy updates on ``prompts_per_step``
    prompts, learning rate ``lr``; EEPO's forget step: ``forget_lr`` (plain gradient step
    size) and ``entropy_gate`` (nats; forget only when the stage-1 prompts' mean entropy is
    below it)."""

    group: int = 8
    steps: int = 40
    prompts_per_step: int = 16
    lr: float = 3e-3
    forget_lr: float = 1.0
    entropy_gate: float = 1.0

    def __post_init__(self):
        if self.group < 2 or self.group % 2:
            raise ValueError(f"group must be an even number >= 2; got {self.group}")


def _answer_logits(model, prompts, task):
    return model(prompts)[:, -1, task.DIGIT_OFFSET :]


def _sample(model, prompts, task, count, generator):
    with torch.no_grad():
        probs = torch.softmax(_answer_logits(model, prompts, task).float(), -1)
    return torch.multinomial(probs, count, replacement=True, generator=generator)


def policy_optimization(
    policy: TinyGPT,
    task: ModularAdditionTask,
    config: RolloutConfig = RolloutConfig(),
    sample_then_forget: bool = True,
    seed: int = 0,
    device=None,
) -> dict:
    """Run GRPO (``sample_then_forget=False``) or EEPO on a copy of ``policy``.

    Returns
    -------
    dict with ``pass_rate`` (greedy, after training), ``rollout_pass_rate`` (share of correct
    rollouts over training), ``distinct_answers`` (mean distinct answers per group),
    ``entropy`` (final mean answer entropy, nats), ``forget_steps`` (EEPO steps that passed
    the gate) and ``model``.
    """
    device = resolve_device(device)
    model = copy.deepcopy(policy).to(device).train()
    optimizer = Adam(model.parameters(), config.lr)
    prompts_all = task.prompts(device)
    generator = torch.Generator(device=device).manual_seed(seed)
    rng = np.random.default_rng(seed)
    half = config.group // 2
    correct, distinct, forget_steps = [], [], 0
    for _ in range(config.steps):
        rows = torch.as_tensor(
            rng.choice(len(prompts_all), config.prompts_per_step, replace=False), device=device
        )
        prompts = prompts_all[rows]
        if sample_then_forget:
            first = _sample(model, prompts, task, half, generator)
            with torch.no_grad():
                logp = torch.log_softmax(_answer_logits(model, prompts, task).float(), -1)
            entropy = float(-(logp.exp() * logp).sum(-1).mean())
            explorer = model
            if entropy < config.entropy_gate:
                forget_steps += 1
                explorer = copy.deepcopy(model)
                params = [p for p in explorer.parameters() if p.requires_grad]
                sampled = torch.log_softmax(_answer_logits(explorer, prompts, task).float(), -1)
                loss = complementary_forget_loss(sampled.gather(1, first))
                grads = torch.autograd.grad(loss, params)
                with torch.no_grad():
                    for p, g in zip(params, grads, strict=True):
                        p.sub_(config.forget_lr * g)
            second = _sample(explorer, prompts, task, half, generator)
            responses = torch.cat([first, second], 1)
        else:
            responses = _sample(model, prompts, task, config.group, generator)
        flat_rows = rows[:, None].expand_as(responses)
        rewards = task.reward(responses + task.DIGIT_OFFSET, flat_rows)
        advantages = group_advantages(rewards)
        correct.append(float(rewards.mean()))
        distinct.append(float(np.mean([len(set(r.tolist())) for r in responses])))
        logp = torch.log_softmax(_answer_logits(model, prompts, task).float(), -1)
        optimizer.step(-(advantages * logp.gather(1, responses)).mean())
    model.eval()
    with torch.no_grad():
        logp = torch.log_softmax(_answer_logits(model, prompts_all, task).float(), -1)
        entropy = float(-(logp.exp() * logp).sum(-1).mean())
    return {
        "pass_rate": task.pass_rate(model),
        "rollout_pass_rate": float(np.mean(correct)),
        "distinct_answers": float(np.mean(distinct)),
        "entropy": entropy,
        "forget_steps": forget_steps,
        "model": model,
    }


def compare_eepo_grpo(
    task: ModularAdditionTask = ModularAdditionTask(),
    config: RolloutConfig = RolloutConfig(),
    confidence: float = 0.97,
    seed: int = 0,
    device=None,
) -> dict:
    """EEPO and GRPO from the same dominant-mode policy (``confidence`` on a wrong answer),
    JSON-ready figures."""
    base = dominant_mode_policy(task, confidence=confidence, seed=seed, device=device)
    out = {"base_pass_rate": task.pass_rate(base)}
    for name, forget in (("GRPO", False), ("EEPO", True)):
        result = policy_optimization(base, task, config, forget, seed, device)
        result.pop("model")
        out[name] = result
    return out

"""EEPO: the forget step's loss and GRPO's advantages by hand, and EEPO against GRPO from a
policy with a wrong dominant mode (fixed seed)."""

import math

import pytest
import torch

from hyplex.models.alignment.exploration_unlearning import (
    ModularAdditionTask,
    RolloutConfig,
    compare_eepo_grpo,
    complementary_forget_loss,
    group_advantages,
)


def test_group_advantages_by_hand():
    a = group_advantages(torch.tensor([[1.0, 0.0, 0.0, 1.0], [0.0, 0.0, 0.0, 0.0]]))
    assert torch.allclose(a[0], torch.tensor([1.0, -1.0, -1.0, 1.0]), atol=1e-5)
    assert torch.count_nonzero(a[1]) == 0  # no signal in an all-wrong group


def test_complementary_loss_weighs_dominant_responses():
    logp = torch.log(torch.tensor([0.9, 0.1])).requires_grad_(True)
    loss = complementary_forget_loss(logp)
    assert math.isclose(float(loss.detach()), -(math.log(0.1) + math.log(0.9)) / 2, rel_tol=1e-6)
    (grad,) = torch.autograd.grad(loss, logp)
    # d/dlogp -log(1 - p) / 2 = p / (1 - p) / 2
    assert torch.allclose(grad, torch.tensor([4.5, 0.1 / 0.9 / 2]), rtol=1e-5)


def test_eepo_explores_and_passes_more_than_grpo():
    result = compare_eepo_grpo(ModularAdditionTask(7), RolloutConfig(), seed=0, device="cpu")
    assert result["base_pass_rate"] == 0.0
    eepo, grpo = result["EEPO"], result["GRPO"]
    assert eepo["forget_steps"] > 0
    assert eepo["distinct_answers"] > grpo["distinct_answers"] + 0.5
    assert eepo["pass_rate"] > grpo["pass_rate"]


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="even"):
        RolloutConfig(group=3)
    with pytest.raises(ValueError, match="modulus"):
        ModularAdditionTask(1)


def test_the_entropy_gate_holds_the_forget_step_back():
    from hyplex.models.alignment.exploration_unlearning import (
        dominant_mode_policy,
        policy_optimization,
    )

    task = ModularAdditionTask(5)
    policy = dominant_mode_policy(task, steps=50, device="cpu")
    closed = RolloutConfig(steps=3, prompts_per_step=4, entropy_gate=0.0)
    assert policy_optimization(policy, task, closed, True, device="cpu")["forget_steps"] == 0
    opened = RolloutConfig(steps=3, prompts_per_step=4, entropy_gate=10.0)
    assert policy_optimization(policy, task, opened, True, device="cpu")["forget_steps"] == 3

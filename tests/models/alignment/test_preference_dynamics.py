"""DPO and PPO objectives and the gradient-alignment diagnostic against hand computations on
a softmax bandit (pi = softmax(theta), three answers, no prompt)."""

import math

import pytest
import torch

from hyplex.models.alignment.preference_dynamics import (
    ParityPreference,
    gradient_alignment,
    track_dpo,
    track_ppo,
)
from hyplex.models.alignment.preference_objectives import (
    dpo_components,
    dpo_loss,
    ppo_components,
    ppo_loss,
)
from hyplex.models.alignment.tiny_gpt import TinyGPTConfig, make_facts, train_tiny_gpt

BETA = 0.5


def _bandit(values=(0.3, -0.2, 0.1)):
    theta = torch.tensor(values, dtype=torch.float64, requires_grad=True)
    return theta, torch.log_softmax(theta, 0)


def test_dpo_gradient_and_alignment_by_hand():
    theta, logp = _bandit()
    ref = logp.detach()
    loss = dpo_loss(logp[:1], logp[1:2], ref[:1], ref[1:2], BETA)
    assert math.isclose(float(loss.detach()), math.log(2))  # margin 0 at the reference
    (grad,) = torch.autograd.grad(loss, theta, retain_graph=True)
    # dL/dtheta = -beta sigma(0) (e0 - e1): the softmax normaliser cancels
    assert torch.allclose(grad, torch.tensor([-BETA / 2, BETA / 2, 0.0], dtype=torch.float64))
    # G against D' = {answer 0}: (pi - e0) . grad = beta/2 (1 - pi0 + pi1)
    pi = logp.detach().exp()
    g, cosine = gradient_alignment(loss, -logp[0], [theta])
    assert math.isclose(g, BETA / 2 * (1 - pi[0] + pi[1]), rel_tol=1e-9)
    assert 0 < cosine <= 1
    # the components' gradients sum to DPO's
    parts = dpo_components(logp[:1], logp[1:2], ref[:1], ref[1:2], BETA)
    (g_pos,) = torch.autograd.grad(parts["positive"], theta, retain_graph=True)
    (g_neg,) = torch.autograd.grad(parts["negative"], theta, retain_graph=True)
    assert torch.allclose(g_pos + g_neg, grad)
    assert torch.allclose(g_pos, -BETA / 2 * (torch.eye(3, dtype=torch.float64)[0] - pi))


def test_ppo_gradient_and_clip_by_hand():
    theta, logp = _bandit()
    old = logp.detach()
    # ratio 1: gradient -A (e_a - pi) / count, for tokens a = 0 (A = +1) and 2 (A = -0.5)
    tok = torch.stack([logp[0], logp[2]])[:, None]
    adv = torch.tensor([1.0, -0.5], dtype=torch.float64)
    loss = ppo_loss(tok, torch.stack([old[0], old[2]])[:, None], adv)
    (grad,) = torch.autograd.grad(loss, theta)
    pi, eye = old.exp(), torch.eye(3, dtype=torch.float64)
    expected = -(1.0 * (eye[0] - pi) - 0.5 * (eye[2] - pi)) / 2
    assert torch.allclose(grad, expected)
    # a ratio above 1 + eps with A > 0 is clipped: no gradient
    theta, logp = _bandit()
    clipped = ppo_loss(logp[:1, None], logp[:1, None].detach() - 0.5, torch.tensor([1.0]))
    (grad,) = torch.autograd.grad(clipped, theta)
    assert torch.count_nonzero(grad) == 0
    # components split the loss
    theta, logp = _bandit()
    tok = logp[:2, None]
    parts = ppo_components(tok, tok.detach(), torch.tensor([1.0, -1.0], dtype=torch.float64))
    total = ppo_loss(tok, tok.detach(), torch.tensor([1.0, -1.0], dtype=torch.float64))
    assert torch.isclose(parts["positive"] + parts["negative"], total)


def test_dpo_follows_a_stable_target_on_the_tiny_gpt():
    facts = make_facts(12, 2, 8, seed=0)
    base = train_tiny_gpt(
        facts, TinyGPTConfig(facts.vocabulary.size, d_model=32), steps=150, device="cpu"
    )
    preference = ParityPreference(facts)
    dpo = track_dpo(base, preference, steps=8, device="cpu").summary()
    ppo = track_ppo(base, preference, steps=8, device="cpu").summary()
    assert dpo["positive_share"] >= 0.75  # the paper: G(DPO) stays positive
    assert dpo["final_preferred_mass"] > 0.5 and ppo["final_preferred_mass"] > 0.5
    assert set(dpo["components_mean_cosine"]) == {"positive", "negative", "unweighted"}


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="share one shape"):
        dpo_loss(torch.zeros(2), torch.zeros(3), torch.zeros(2), torch.zeros(2))
    with pytest.raises(ValueError, match="beta"):
        dpo_loss(*[torch.zeros(2)] * 4, beta=0)

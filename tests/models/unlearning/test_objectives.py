"""Each objective's gradient against a hand computation on a 2-parameter model."""

import math

import pytest
import torch

from hyplex.models.unlearning import build_method
from hyplex.models.unlearning.toolkit import Batch, flat_logits


class TwoParameter(torch.nn.Module):
    """``logits (N, 2) = x * (a, b)``: with ``x = 1`` the logits are the parameters."""

    def __init__(self, a, b):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor([a, b], dtype=torch.float64))

    def forward(self, x):
        return x * self.w


A, B = 0.3, -0.4
BATCH = Batch(torch.ones(1, 1, dtype=torch.float64), torch.tensor([0]))


def _p0(a=A, b=B):
    return math.exp(a) / (math.exp(a) + math.exp(b))


def _grad(method, reference=None):
    model = TwoParameter(A, B)
    reference = model if reference is None else reference
    loss = method.objective(model, reference, BATCH, None).forget
    (g,) = torch.autograd.grad(loss, [model.w])
    return g.tolist()


def _dlogp0():  # d log p0 / d(a, b)
    p0 = _p0()
    return [1 - p0, -(1 - p0)]


def _close(got, expected):
    assert got == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_ga_is_the_log_likelihood_gradient():
    _close(_grad(build_method("GA")), _dlogp0())


@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.0])
def test_wga_scales_by_p_to_the_alpha(alpha):
    factor = _p0() ** alpha
    got = _grad(build_method("WGA", alpha=alpha, retain_weight=0.0))
    _close(got, [factor * v for v in _dlogp0()])
    assert got != pytest.approx(_dlogp0())  # not GA


def test_tnpo_and_wtnpo_against_hand_derivative():
    beta, alpha = 0.5, 1.0
    reference = TwoParameter(1.0, -1.0)
    ratio = math.log(_p0()) - math.log(_p0(1.0, -1.0))
    sigma = 1.0 / (1.0 + math.exp(-beta * ratio))
    # d/dtheta (2/beta) softplus(beta r) = 2 sigmoid(beta r) d log p0
    expected = [2 * sigma * v for v in _dlogp0()]
    _close(_grad(build_method("TNPO", beta=beta, retain_weight=0.0), reference), expected)
    weighted = _grad(build_method("WTNPO", beta=beta, alpha=alpha, retain_weight=0.0), reference)
    _close(weighted, [_p0() ** alpha * v for v in expected])
    _close(_grad(build_method("NPO", beta=beta, retain_weight=0.0), reference), expected)


def test_satimp_weight_is_saturation_times_importance():
    b1, b2 = 1.0, 2.0
    w = _p0() ** b1 * (1 - _p0()) ** b2
    got = _grad(build_method("SatImp", beta1=b1, beta2=b2, retain_weight=0.0))
    _close(got, [w * v for v in _dlogp0()])


def test_bs_ascends_the_soft_belief_target():
    lam = 0.4
    p0 = _p0()
    # two classes, k = 1: the belief is the argmax class (0 here, a > b): q = (1, 0)
    _close(_grad(build_method("BS", k=1, lam=lam, retain_weight=0.0)), _dlogp0())
    # k = 2: belief = p itself, q = (1 - lam + lam p0, lam p1)
    q0, q1 = 1 - lam + lam * p0, lam * (1 - p0)
    dlogp1 = [-p0, p0]
    expected = [q0 * a + q1 * b for a, b in zip(_dlogp0(), dlogp1, strict=True)]
    _close(_grad(build_method("BS", k=2, lam=lam, retain_weight=0.0)), expected)


def test_eua_energy_hinge_gradient():
    method = build_method("EUA", retain_weight=0.0)
    energy = -math.log(math.exp(A) + math.exp(B))
    method.retain_margin, method.forget_margin = energy - 1.0, energy + 0.5
    p0 = _p0()
    # d/dtheta relu(m - E)^2 = 2 (m - E) (-dE), dE/d(a, b) = -(p0, p1)
    _close(_grad(method), [2 * 0.5 * p0, 2 * 0.5 * (1 - p0)])


def test_mox_memorises_by_descent_then_extrapolates():
    from hyplex.models.unlearning.memorize_to_forget import extrapolate

    got = _grad(build_method("MOX", retain_weight=0.0))
    _close(got, [-v for v in _dlogp0()])  # descent of the forget cross-entropy
    ref, mem = {"w": torch.tensor([1.0, 2.0])}, {"w": torch.tensor([1.5, 1.0])}
    assert extrapolate(ref, mem, 2.0)["w"].tolist() == [0.0, 4.0]


def test_flat_logits_layouts_and_mask():
    pixels = torch.randn(2, 3, 4, 5)
    targets = torch.randint(0, 3, (2, 4, 5))
    targets[0, 0, 0] = -100
    logits, flat, weights = flat_logits(pixels, targets, targets == 1)
    assert logits.shape == (40, 3) and float(weights.sum()) == float((targets == 1).sum())
    assert torch.equal(logits[1], pixels[0, :, 0, 1])
    tokens = torch.randn(2, 7, 11)
    logits, _, weights = flat_logits(tokens, torch.zeros(2, 7, dtype=torch.long))
    assert logits.shape == (14, 11) and float(weights.sum()) == 14
    with pytest.raises(ValueError, match="targets must be integers of shape"):
        flat_logits(tokens, torch.zeros(2, 6, dtype=torch.long))
    with pytest.raises(ValueError, match="unknown unlearning method"):
        build_method("retrain-please")

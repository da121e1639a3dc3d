"""GRU's projection removes exactly the conflicting component; the G-effect's signs."""

import torch

from hyplex.models.unlearning.gradient_effect import g_effect
from hyplex.models.unlearning.gradient_rectification import rectify
from hyplex.models.unlearning.toolkit import Batch


def test_rectify_removes_exactly_the_conflicting_component():
    generator = torch.Generator().manual_seed(0)
    g_r = torch.randn(50, generator=generator, dtype=torch.float64)
    free = torch.randn(50, generator=generator, dtype=torch.float64)
    free -= (free @ g_r) / (g_r @ g_r) * g_r  # orthogonal to g_r
    g_u = free - 0.7 * g_r  # conflicting: <g_u, g_r> < 0
    out = rectify(g_u, g_r)
    assert abs(float(out @ g_r)) < 1e-10
    assert torch.allclose(out, free, atol=1e-12)  # only the g_r component went
    agreeing = free + 0.7 * g_r
    assert torch.equal(rectify(agreeing, g_r), agreeing)  # no conflict: unchanged


def test_g_effect_of_ga_unlearns_the_forget_data():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2).double()
    x = torch.randn(8, 3, dtype=torch.float64)
    forget = Batch(x, torch.zeros(8, dtype=torch.long))
    retain = Batch(-x, torch.ones(8, dtype=torch.long))
    effect = g_effect(model, "GA", forget, retain)
    assert effect["forget"] < 0  # the step raises the forget risk
    # for GA, L = -R_u: the forget G-effect is -||grad R_u||^2
    params = list(model.parameters())
    logits = model(x)
    risk = torch.nn.functional.cross_entropy(logits, forget.targets)
    norm2 = sum(float((g * g).sum()) for g in torch.autograd.grad(risk, params))
    assert abs(effect["forget"] + norm2) < 1e-10
    assert set(effect["forget_layers"]) == {"weight", "bias"}
    assert abs(sum(effect["forget_layers"].values()) - effect["forget"]) < 1e-10


def test_gru_method_counts_conflicts_and_keeps_retain(adam):
    from hyplex.models.unlearning import unlearn

    torch.manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))
    x = torch.randn(120, 4)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()
    optimizer = adam(model.parameters(), 0.05)
    for _ in range(150):
        optimizer.step(torch.nn.functional.cross_entropy(model(x), y))
    f = y == 2
    out = unlearn(model, [(x[f], y[f])], [(x[~f], y[~f])], "GRU", steps=40, lr=0.01)
    accuracy = lambda m, s: float((m(x[s]).argmax(1) == y[s]).float().mean())  # noqa: E731
    assert accuracy(out, f) < 0.2 and accuracy(out, ~f) > accuracy(model, ~f) - 0.1

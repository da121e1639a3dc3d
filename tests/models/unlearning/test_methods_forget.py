"""Every registered method reduces the forget metric on a small fixed-seed case."""

import pytest
import torch

from hyplex.models.unlearning import METHODS, unlearn
from hyplex.models.unlearning.evaluation import element_accuracy


class TinySegmenter(torch.nn.Module):
    """Per-pixel MLP as 1x1 convolutions: ``(B, 4, H, W) -> (B, 3, H, W)``."""

    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Conv2d(4, 16, 1), torch.nn.Tanh(), torch.nn.Conv2d(16, 3, 1)
        )

    def forward(self, x):
        return self.net(x)


@pytest.fixture(scope="module")
def case():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(6, 4, 8, 8, generator=generator)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0.7).long()  # classes 0, 1, 2 by pixel rule
    torch.manual_seed(0)
    model = TinySegmenter()
    from hyplex.models.unlearning.toolkit import Adam

    optimizer = Adam(list(model.parameters()), 0.03)
    for _ in range(150):
        optimizer.step(torch.nn.functional.cross_entropy(model(x), y))
    forget = [(x, y, y == 2)]  # forget class 2
    retain = [(x, y, y != 2)]
    return model.eval(), forget, retain


@pytest.mark.parametrize("name", sorted(METHODS))
def test_method_reduces_forget_accuracy(case, name):
    model, forget, retain = case
    before = element_accuracy(model, forget)
    retained = element_accuracy(model, retain)
    assert before > 0.7
    state = {k: v.clone() for k, v in model.state_dict().items()}
    steps, lr = (60, 0.02)
    out = unlearn(model, forget, retain, name, steps=steps, lr=lr, seed=0)
    after = element_accuracy(out, forget)
    assert after < before - 0.3, (name, before, after)
    assert element_accuracy(out, retain) > retained - 0.35
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())  # untouched

"""Shared test helpers for the learning core."""

import pytest
import torch


class Adam:
    """Minimal Adam (Kingma & Ba 2015, Algorithm 1). ``torch.optim`` imports ``torch._dynamo``
    on first use, which costs 5-10 s on the loaded test machine; this keeps the tests fast."""

    def __init__(self, parameters, lr, betas=(0.9, 0.999), eps=1e-8):
        self.parameters = [p for p in parameters if p.requires_grad]
        self.lr, self.betas, self.eps, self.step_count = lr, betas, eps, 0
        self.moments = [(torch.zeros_like(p), torch.zeros_like(p)) for p in self.parameters]

    def step(self, loss):
        """Back-propagate ``loss`` from zeroed gradients and take one Adam step."""
        for p in self.parameters:
            p.grad = None
        loss.backward()
        self.step_count += 1
        beta1, beta2 = self.betas
        with torch.no_grad():
            for p, (m, v) in zip(self.parameters, self.moments, strict=True):
                if p.grad is None:
                    continue
                m.mul_(beta1).add_(p.grad, alpha=1 - beta1)
                v.mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
                m_hat = m / (1 - beta1**self.step_count)
                v_hat = v / (1 - beta2**self.step_count)
                p.sub_(self.lr * m_hat / (v_hat.sqrt() + self.eps))


@pytest.fixture
def adam():
    """The minimal Adam class (construct with ``adam(parameters, lr)``)."""
    return Adam

"""Federated training, and removing one lab by projected ascent plus recovery."""

import torch

from hyplex.models.unlearning.evaluation import element_accuracy
from hyplex.models.unlearning.federated import (
    federated_retrain,
    federated_train,
    project_out,
    remove_client,
)


def test_project_out_leaves_no_component_along_the_others():
    g = torch.Generator().manual_seed(0)
    others = [torch.randn(30, generator=g, dtype=torch.float64) for _ in range(3)]
    gradient = torch.randn(30, generator=g, dtype=torch.float64)
    out = project_out(gradient, others)
    for other in others:
        assert abs(float(out @ other)) < 1e-10
    assert torch.allclose(project_out(out, others), out)  # idempotent


def _clients():
    g = torch.Generator().manual_seed(1)
    clients = []
    for k in range(3):  # lab k sees mostly class k: the removed lab owns class 2
        x = torch.randn(90, 5, generator=g) + 4.0 * torch.eye(5)[k]
        y = torch.full((90,), k)
        clients.append([(x[i : i + 30], y[i : i + 30]) for i in range(0, 90, 30)])
    return clients


def _build():
    return torch.nn.Sequential(torch.nn.Linear(5, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))


def test_removing_a_lab_forgets_it_and_keeps_the_others():
    clients = _clients()
    model, _ = federated_train(_build, clients, rounds=6, local_steps=5, lr=0.02, seed=0)
    assert element_accuracy(model, clients[2]) > 0.9
    removed, seconds = remove_client(model, clients, 2, steps=25, lr=0.02, recovery_rounds=1,
                                     local_steps=3, seed=0)  # fmt: skip
    retrained, retrain_seconds = federated_retrain(_build, clients, 2, 6, 5, 0.02, seed=0)
    assert element_accuracy(retrained, clients[2]) < 0.1  # the gold standard never saw it
    assert element_accuracy(removed, clients[2]) < 0.3
    for k in (0, 1):
        assert element_accuracy(removed, clients[k]) > 0.85
    assert seconds > 0 and retrain_seconds > 0

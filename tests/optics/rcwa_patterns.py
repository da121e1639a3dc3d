"""Unit-cell patterns and the finite-difference gradient check shared by the RCWA tests
(test_rcwa.py, test_rcwa_vector.py)."""

import torch

F64 = torch.float64


def disk(n: int = 32, radius_fraction: float = 0.3) -> torch.Tensor:
    """Fill fraction of a centred disk on an (n, n) grid (radius as a fraction of the period)."""
    x = (torch.arange(n, dtype=F64) + 0.5) / n - 0.5
    X, Y = torch.meshgrid(x, x, indexing="ij")  # noqa: N806
    return ((X**2 + Y**2) <= radius_fraction**2).to(F64)


def l_shape(n: int = 24) -> torch.Tensor:
    """An L-shaped, mirror-asymmetric island."""
    p = torch.zeros(n, n, dtype=F64)
    p[4:20, 4:9] = 1
    p[4:9, 4:16] = 1
    return p


def fd_check(f, x: torch.Tensor, direction: torch.Tensor, h: float, rtol: float = 1e-4):
    """The directional derivative of scalar ``f`` at ``x`` along ``direction`` by autograd
    equals the central difference with step ``h`` to ``rtol`` (plus 1e-10 absolute)."""
    x = x.detach().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(f(x), x)
    assert torch.isfinite(grad).all()
    analytic = (grad * direction).sum()
    with torch.no_grad():
        numeric = (f(x + h * direction) - f(x - h * direction)) / (2 * h)
    assert abs(analytic - numeric) <= rtol * abs(numeric) + 1e-10, (analytic, numeric)

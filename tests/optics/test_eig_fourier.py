"""The broadened eigen-decomposition and the exact pixel Fourier coefficients."""

import torch

from hyplex.optics.eig import eig
from hyplex.optics.fourier import (
    Harmonics,
    inverse_rule_matrices,
    laurent_matrix,
    pixel_fourier_coefficients_2d,
)


def test_eig_backward_matches_torch_for_distinct_eigenvalues():
    gen = torch.Generator().manual_seed(1)
    a = torch.randn(3, 6, 6, dtype=torch.complex128, generator=gen)
    w = torch.randn(3, 6, 6, dtype=torch.complex128, generator=gen)

    def loss(fn, x):
        vals, vecs = fn(x)
        # invariant to the phase of each eigenvector, as every physical use is
        return (vals.abs() ** 2).sum() + ((vecs.abs() ** 2) * w.real).sum()

    x1 = a.clone().requires_grad_(True)
    x2 = a.clone().requires_grad_(True)
    loss(eig, x1).backward()
    loss(torch.linalg.eig, x2).backward()
    assert torch.allclose(x1.grad, x2.grad, atol=1e-9)


def test_eig_backward_is_finite_at_an_exact_degeneracy():
    a = torch.diag(torch.tensor([1.0, 1.0, 2.0, 3.0], dtype=torch.complex128))
    a = a.clone().requires_grad_(True)
    vals, vecs = eig(a)
    # a basis-independent function of a degenerate eigenspace: its projector's trace weight
    proj = vecs[:, :2] @ torch.linalg.pinv(vecs[:, :2])
    (proj.real.sum() + vals.real.sum()).backward()
    assert torch.isfinite(a.grad).all()
    plain = a.detach().clone().requires_grad_(True)
    v2, w2 = torch.linalg.eig(plain)
    (w2[:, :2] @ torch.linalg.pinv(w2[:, :2])).real.sum().backward()
    assert not torch.isfinite(plain.grad).all()  # what the broadening protects against


def test_pixel_coefficients_of_a_rectangle_are_exact():
    nx, ny, wx, wy = 40, 25, 12, 5
    grid = torch.zeros(nx, ny, dtype=torch.complex128)
    grid[:wx, :wy] = 1.0
    c = pixel_fourier_coefficients_2d(grid, 3, 2)
    p = torch.arange(-6, 7, dtype=torch.float64)[:, None]
    q = torch.arange(-4, 5, dtype=torch.float64)[None, :]
    fx, fy = wx / nx, wy / ny
    # transform of a box [0, f) of unit period: f exp(-i pi p f) sinc(p f)
    exact = (fx * torch.exp(-1j * torch.pi * p * fx) * torch.sinc(p * fx)) * (
        fy * torch.exp(-1j * torch.pi * q * fy) * torch.sinc(q * fy)
    )
    assert torch.allclose(c, exact, atol=1e-14)


def test_inverse_rule_reduces_to_li_1996_for_a_lamellar_grating():
    """Stripes along y: eps_xx must be [[1/eps]]^-1 and eps_yy Laurent's [[eps]] (Li 1996)."""
    h = Harmonics(3, 0)
    eps = torch.ones(30, 1, dtype=torch.complex128)
    eps[:11] = 12.0
    xx, yy = inverse_rule_matrices(1 / eps, h)
    laurent = laurent_matrix(pixel_fourier_coefficients_2d(eps, 3, 0), h)
    inverse = torch.linalg.inv(laurent_matrix(pixel_fourier_coefficients_2d(1 / eps, 3, 0), h))
    assert torch.allclose(yy, laurent, atol=1e-12)
    assert torch.allclose(xx, inverse, atol=1e-12)
    assert not torch.allclose(xx, laurent, atol=1e-3)

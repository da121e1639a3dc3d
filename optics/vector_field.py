"""Normal-vector fields of a unit cell, for the vector Fourier factorisation of the RCWA.

The vector formulations of the Fourier modal method (Schuster, Ruoff, Kerwien, Rafler & Osten,
JOSA A 24, 2880 (2007); Liu & Fan, S4, CPC 183, 2233 (2012), eqs. 46-51) need, at every point
of the cell, the direction normal to the material interfaces: the normal component of ``E`` is
factorised with the inverse rule, the tangential one with Laurent's rule. The field must be
defined everywhere (also far from any edge) and should be smooth, because its Fourier series
enters the permittivity operator. Götz, Schuster et al., Opt. Express 16, 17295 (2008), build
it by interpolating the edge normals; fmmax (``vector.py``) minimises a quadratic
alignment-plus-smoothness functional over the Fourier coefficients of a tangent field. Both
smooth a *vector*, whose sign flips between the two edges of a stripe, so the smoothed field
passes through zero between them and a 1-D grating needs a special case.

Here the orientation is carried by the doubled-angle ("nematic") field

    z(x, y) = |z| exp(2 i theta),      theta = angle of the normal,

which does not change when the normal changes sign, so opposite edges reinforce instead of
cancel. Its target is the gradient ``g = grad rho`` of the pattern, read through the structure
tensor ``S = g g^T`` (Kass & Witkin, CVGIP 37, 362 (1987)):

    target weight   w = |g|^2 = S_xx + S_yy,
    weighted target w exp(2 i theta_g) = (g_x + i g_y)^2 = S_xx - S_yy + 2 i S_xy,

both polynomials in ``g``, so the construction is smooth (differentiable) everywhere, also
where ``g = 0``. ``z`` minimises, over Fourier series with the solver's harmonics,

    L(z) = < w |z - exp(2 i theta_g)|^2 > + ell^2 < |grad z|^2 >,        < > = cell average,

the alignment-plus-smoothness functional of fmmax's ``_field_loss`` written for ``z``. Its
normal equations in Fourier space (a Galerkin system) are

    ([[w]] + ell^2 diag|k|^2) z_hat = (S_xx - S_yy + 2 i S_xy)_hat,

with ``[[w]]`` the Toeplitz (Laurent) matrix of ``w`` and ``k`` the reciprocal vectors in units
of ``1 / sqrt(Lx Ly)``. ``g`` is band-limited to the same orders as ``z``, so every product above
is band-limited too and the right-hand side and ``[[w]]`` are exact (an FFT on a grid of
``4M + 2`` points), without finite differences. A uniform layer has ``w = 0``: ``z = 0``, and the
factorisation falls back to Laurent's rule there, which is exact for a constant ``eps``.
For a 1-D (lamellar) grating ``z = 1`` solves the system exactly, so the vector formulation
reduces to Li's rule (Li, JOSA A 13, 1870 (1996)) without a special case. Finally ``z`` is
divided by the edge-weighted mean ``<w |z|> / <w>`` of its magnitude, so that ``|z| ~ 1`` on
the edges whatever ``ell`` (fmmax divides by the maximum, which is not differentiable where
two points tie, as they do in a symmetric cell).

Raw complex permittivity grids ``(..., L, Nx, Ny)`` give one structure tensor per wavelength,
each normalised to unit mean weight, averaged over the wavelengths: one field per pattern.
"""

from __future__ import annotations

import math

import torch

from .fourier import Harmonics, laurent_matrix, pixel_fourier_coefficients

__all__ = ["DEFAULT_SMOOTHING", "doubled_angle_field"]

# Smoothing length ``ell`` in units of sqrt(Lx Ly), per harmonic order: ``ell = s / (M + 1)``
# (fmmax scales its smoothness weight by 1 / (number of harmonics) for the same reason: the
# field may sharpen as the basis grows). With the normalisation below the disk of
# benchmarks/rcwa_convergence.py moved by < 1.5e-3 in T0 for s = 0.5 ... 2 at M = 3 ... 6;
# a sharper field (s = 0.15) helped the cross's concave corners a little (M = 8: 0.139
# against 0.146 at 640 nm; Li's converged value is 0.124), so s is not critical.
DEFAULT_SMOOTHING = 0.5

# Relative Tikhonov term that keeps the normal equations solvable for a uniform pattern.
_REGULARISATION = 1e-9


def _reciprocal(harmonics: Harmonics, period: tuple[float, float], dtype, device):
    """Reciprocal vectors ``(count,)`` x 2 of the harmonics in units of ``2 pi / sqrt(Lx Ly)``."""
    orders = harmonics.orders(device).to(dtype)
    lx, ly = period
    scale = math.sqrt(lx * ly)
    return orders[:, 0] * scale / lx, orders[:, 1] * scale / ly


def _evaluation_matrix(order_max: int, points: int, dtype, device, centred: bool):
    """``E[i, m] = exp(2 pi i m x_i)``, ``(points, 2 order_max + 1)``; x_i: centres or edges."""
    m = torch.arange(-order_max, order_max + 1, device=device, dtype=torch.float64)
    x = (
        torch.arange(points, device=device, dtype=torch.float64) + (0.5 if centred else 0.0)
    ) / points
    return torch.exp(2j * torch.pi * x[:, None] * m[None, :]).to(dtype)


def _evaluate(coefficients: torch.Tensor, ex: torch.Tensor, ey: torch.Tensor) -> torch.Tensor:
    """Fourier series ``(..., 2M+1, 2N+1)`` at the points of ``ex``, ``ey``: ``(..., Px, Py)``."""
    return ex @ coefficients @ ey.transpose(-1, -2)


def doubled_angle_field(
    grid: torch.Tensor,
    period_nm: tuple[float, float],
    harmonics: Harmonics,
    smoothing: float = DEFAULT_SMOOTHING,
) -> torch.Tensor:
    """Smooth doubled-angle normal field ``z = |z| exp(2 i theta)`` of a pattern.

    Parameters
    ----------
    grid : tensor ``(..., C, Nx, Ny)``
        ``C`` channels over the unit cell (axis -2 is x): a fill fraction (``C = 1``, real) or a
        complex permittivity per wavelength. Each channel's structure tensor is normalised to
        unit mean weight and the channels are averaged, so the field does not depend on the
        contrast, an offset, or the wavelength.
    period_nm : ``(Lx, Ly)`` in nm.
    harmonics : :class:`~hyplex.optics.fourier.Harmonics`
        Orders of ``z`` (and of the pattern's gradient); the solver's own truncation.
    smoothing : float > 0
        ``ell (M + 1)`` with ``ell`` the smoothing length in units of ``sqrt(Lx Ly)``.

    Returns
    -------
    complex tensor ``(..., Nx, Ny)``: ``z`` at the pixel centres, ``|z| <~ 1``; ``|z| ~ 1`` on
    straight edges, smaller near corners, on tight curves and far from any edge. Differentiable
    with respect to ``grid``.
    """
    if not smoothing > 0:
        raise ValueError(f"smoothing must be > 0, got {smoothing}")
    M, N = harmonics.M, harmonics.N
    complex_dtype = grid.dtype if grid.is_complex() else torch.complex128
    if not grid.is_complex() and grid.dtype == torch.float32:
        complex_dtype = torch.complex64
    real_dtype = torch.float64 if complex_dtype == torch.complex128 else torch.float32
    device = grid.device
    nx, ny = grid.shape[-2:]

    # Fourier coefficients of the pattern, orders -M..M (exact pixel integrals), and of its
    # gradient g = grad rho (units: per sqrt(Lx Ly)); 2 pi i k rho_k.
    coefficients = pixel_fourier_coefficients(grid.to(complex_dtype), M, N)  # (..., C, 2M+1, 2N+1)
    kx, ky = _reciprocal(harmonics, period_nm, real_dtype, device)
    shape = (2 * M + 1, 2 * N + 1)
    gx_hat = 2j * torch.pi * kx.reshape(shape) * coefficients
    gy_hat = 2j * torch.pi * ky.reshape(shape) * coefficients

    # g on a grid fine enough that its quadratic products are alias-free up to orders +-2M
    # (band limit 2M of the products plus the 2M orders read back: 4M + 1 points, rounded up).
    px, py = 4 * M + 2, 4 * N + 2
    ex = _evaluation_matrix(M, px, complex_dtype, device, centred=False)
    ey = _evaluation_matrix(N, py, complex_dtype, device, centred=False)
    gx, gy = _evaluate(gx_hat, ex, ey), _evaluate(gy_hat, ex, ey)
    # Structure tensor S = Re(g g^H) per channel (a real pattern has a real g).
    sxx, syy = gx.real.square() + gx.imag.square(), gy.real.square() + gy.imag.square()
    sxy = (gx * gy.conj()).real
    weight = sxx + syy  # (..., C, px, py)
    mean = weight.mean(dim=(-2, -1), keepdim=True)
    # Double where: a uniform channel (mean 0) gets a safe divisor, then contributes nothing.
    flat = mean <= 1e-30
    scale = torch.where(flat, torch.zeros_like(mean), 1.0 / torch.where(flat, 1.0, mean))
    weight = (weight * scale).mean(-3)
    target = ((sxx - syy + 2j * sxy) * scale).mean(-3)

    # Normal equations ([[w]] + ell^2 |2 pi k|^2 + reg) z_hat = target_hat.
    w_hat = torch.fft.fft2(weight.to(complex_dtype)) / (px * py)
    t_hat = torch.fft.fft2(target.to(complex_dtype)) / (px * py)
    rows = torch.remainder(torch.arange(-2 * M, 2 * M + 1, device=device), px)
    cols = torch.remainder(torch.arange(-2 * N, 2 * N + 1, device=device), py)
    w_coefficients = w_hat[..., rows, :][..., cols]  # orders -2M..2M, -2N..2N
    system = laurent_matrix(w_coefficients, harmonics)
    orders = harmonics.orders(device)
    rhs = t_hat[..., torch.remainder(orders[:, 0], px), torch.remainder(orders[:, 1], py)]
    ell = smoothing / (max(M, N) + 1)
    stiffness = (2 * torch.pi * ell) ** 2 * (kx.square() + ky.square()) + _REGULARISATION
    system = system + torch.diag_embed(stiffness.to(complex_dtype))
    z_hat = torch.linalg.solve(system, rhs.unsqueeze(-1)).squeeze(-1)

    z_hat = z_hat.reshape(*z_hat.shape[:-1], *shape)
    # Normalise by the edge-weighted mean of |z|, <w |z|> / <w> (module docstring).
    on_grid = _evaluate(z_hat, ex, ey)
    magnitude = (on_grid.real.square() + on_grid.imag.square() + 1e-300).sqrt()
    typical = (weight * magnitude).mean(dim=(-2, -1)) / weight.mean(dim=(-2, -1)).clamp_min(1e-30)
    typical = torch.where(typical > 1e-12, typical, 1.0)
    z_hat = z_hat / typical[..., None, None]
    # z at the centres of the pattern's pixels.
    cx = _evaluation_matrix(M, nx, complex_dtype, device, centred=True)
    cy = _evaluation_matrix(N, ny, complex_dtype, device, centred=True)
    return _evaluate(z_hat, cx, cy)

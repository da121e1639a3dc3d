"""Fourier harmonics and convolution (Toeplitz) matrices for the Fourier modal method.

A unit cell of periods ``(Lx, Ly)`` is sampled on a pixel grid of shape ``(Nx, Ny)``; axis -2
is x, axis -1 is y, and pixel ``(i, j)`` covers ``[i Lx/Nx, (i+1) Lx/Nx) x [j Ly/Ny, (j+1) Ly/Ny)``.
The grid is read as a *piecewise-constant* (staircase) function, and its Fourier coefficients
are the exact integrals over the pixels, not a sampled DFT::

    c(p) = 1/Lx * integral_0^Lx f(x) exp(-2 pi i p x / Lx) dx
         = [1/Nx sum_i f_i exp(-2 pi i p i / Nx)] * exp(-i pi p / Nx) * sinc(p / Nx)

(the DFT times the transform of one pixel). This is exact for every order ``p``, so a coarse
grid never aliases, and the inverse rule below is exact for the staircase structure.

Field harmonics are truncated to a rectangle ``m in [-M, M], n in [-N, N]``; the flattened
harmonic index runs over ``m`` in the outer and ``n`` in the inner loop.

Factorisation rules (the reason high-contrast RCWA converges or does not):

- Laurent's rule, ``[[eps]]``: correct for the product of ``eps`` with a field component that
  is continuous across every interface (Li, JOSA A 13, 1870 (1996), Theorem 1). It is used for
  ``D_z = eps E_z`` (vertical sidewalls).
- Li's inverse rule, ``[[1/eps]]^-1``: correct where the field is discontinuous but ``eps``
  times it is continuous (Li 1996, Theorem 2).
- For crossed gratings whose boundaries run along x and y (every pixel grid, a zigzag
  boundary in Li's words), Li, JOSA A 14, 2758 (1997): ``D_x = eps_xx E_x`` with
  ``eps_xx = ceil(floor(eps)_x)_y``, i.e. the inverse rule along x applied row by row,
  then Laurent's rule along y; ``eps_yy`` swaps the roles of x and y.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = [
    "Harmonics",
    "pixel_fourier_coefficients",
    "pixel_fourier_coefficients_2d",
    "pixel_fourier_coefficients_1d",
    "laurent_matrix",
    "inverse_rule_matrices",
]


@dataclass(frozen=True)
class Harmonics:
    """Rectangular truncation of the plane-wave basis.

    Attributes
    ----------
    M, N : int
        Highest diffraction order kept along x and y; ``(2M+1)(2N+1)`` harmonics in all.
    """

    M: int
    N: int

    def __post_init__(self) -> None:
        for name, value in (("M", self.M), ("N", self.N)):
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"harmonic order {name} must be an integer >= 0, got {value!r}")

    @property
    def count(self) -> int:
        """Number of harmonics ``(2M+1)(2N+1)``."""
        return (2 * self.M + 1) * (2 * self.N + 1)

    def orders(self, device=None) -> torch.Tensor:
        """Integer diffraction orders ``(count, 2)`` as ``(m, n)`` rows, m-major."""
        m = torch.arange(-self.M, self.M + 1, device=device)
        n = torch.arange(-self.N, self.N + 1, device=device)
        mm, nn = torch.meshgrid(m, n, indexing="ij")
        return torch.stack([mm.reshape(-1), nn.reshape(-1)], dim=-1)

    def zeroth_index(self) -> int:
        """Flattened index of the (0, 0) order."""
        return self.M * (2 * self.N + 1) + self.N

    def difference_indices(self, device=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Index arrays ``(count, count)`` of ``m - m' + 2M`` and ``n - n' + 2N``.

        They gather a Toeplitz-block-Toeplitz matrix out of coefficients of shape
        ``(4M+1, 4N+1)`` holding orders ``-2M..2M`` by ``-2N..2N``.
        """
        o = self.orders(device)
        dm = o[:, 0, None] - o[None, :, 0] + 2 * self.M
        dn = o[:, 1, None] - o[None, :, 1] + 2 * self.N
        return dm, dn


def _pixel_factor(orders: torch.Tensor, n_pixels: int, dtype) -> torch.Tensor:
    """exp(-i pi p / N) sinc(p / N): the Fourier transform of one pixel of width 1/N."""
    p = orders.to(torch.float64) / n_pixels
    return (torch.exp(-1j * torch.pi * p) * torch.sinc(p)).to(dtype)


def pixel_fourier_coefficients_1d(grid: torch.Tensor, max_order: int, dim: int) -> torch.Tensor:
    """Exact Fourier coefficients of a piecewise-constant grid along one axis.

    Parameters
    ----------
    grid : complex tensor ``(..., Nx, Ny)``
    max_order : int
        Orders ``-max_order..max_order`` are returned.
    dim : int
        -2 for x or -1 for y.

    Returns
    -------
    Tensor ``(..., Ny, 2*max_order+1)`` for ``dim=-2`` (one row of coefficients per y pixel)
    or ``(..., Nx, 2*max_order+1)`` for ``dim=-1``.
    """
    n_pixels = grid.shape[dim]
    spectrum = torch.fft.fft(grid, dim=dim) / n_pixels
    orders = torch.arange(-max_order, max_order + 1, device=grid.device)
    picked = torch.index_select(spectrum, dim, torch.remainder(orders, n_pixels))
    shape = [1] * picked.ndim
    shape[dim] = orders.numel()
    picked = picked * _pixel_factor(orders, n_pixels, picked.dtype).reshape(shape)
    if dim in (-2, grid.ndim - 2):
        picked = picked.transpose(-1, -2)
    return picked


def pixel_fourier_coefficients_2d(grid: torch.Tensor, M: int, N: int) -> torch.Tensor:
    """Exact 2-D Fourier coefficients ``(..., 4M+1, 4N+1)`` of orders ``-2M..2M, -2N..2N``.

    Parameters
    ----------
    grid : complex tensor ``(..., Nx, Ny)``, piecewise constant over pixels.
    M, N : int
        Harmonic truncation; the convolution matrix needs orders up to twice of it.
    """
    return pixel_fourier_coefficients(grid, 2 * M, 2 * N)


def pixel_fourier_coefficients(grid: torch.Tensor, max_x: int, max_y: int) -> torch.Tensor:
    """Exact 2-D Fourier coefficients ``(..., 2 max_x + 1, 2 max_y + 1)`` of a pixel grid.

    Parameters
    ----------
    grid : complex tensor ``(..., Nx, Ny)``, piecewise constant over pixels.
    max_x, max_y : int
        Orders ``-max_x..max_x`` along x (axis -2) and ``-max_y..max_y`` along y are returned.
    """
    nx, ny = grid.shape[-2:]
    spectrum = torch.fft.fft2(grid) / (nx * ny)
    p = torch.arange(-max_x, max_x + 1, device=grid.device)
    q = torch.arange(-max_y, max_y + 1, device=grid.device)
    picked = spectrum.index_select(-2, torch.remainder(p, nx)).index_select(
        -1, torch.remainder(q, ny)
    )
    fx = _pixel_factor(p, nx, picked.dtype)
    fy = _pixel_factor(q, ny, picked.dtype)
    return picked * fx[:, None] * fy[None, :]


def laurent_matrix(coefficients: torch.Tensor, harmonics: Harmonics) -> torch.Tensor:
    """Toeplitz-block-Toeplitz matrix ``[[f]]`` ``(..., n_h, n_h)``, Laurent's rule.

    ``[[f]]_{(m,n),(m',n')} = f_{m-m', n-n'}`` (Li 1997, the Toeplitz-block-Toeplitz form).

    Parameters
    ----------
    coefficients : tensor ``(..., 4M+1, 4N+1)`` from :func:`pixel_fourier_coefficients_2d`.
    """
    dm, dn = harmonics.difference_indices(coefficients.device)
    return coefficients[..., dm, dn]


def _toeplitz(coefficients: torch.Tensor, size: int) -> torch.Tensor:
    """Toeplitz ``T[a, b] = c[a - b + size - 1]`` from coefficients ``(..., 2 size - 1)``."""
    a = torch.arange(size, device=coefficients.device)
    return coefficients[..., a[:, None] - a[None, :] + size - 1]


def inverse_rule_matrices(
    inverse_grid: torch.Tensor, harmonics: Harmonics
) -> tuple[torch.Tensor, torch.Tensor]:
    """Li's (1997) factorisation of the in-plane permittivity for a staircase grid.

    Parameters
    ----------
    inverse_grid : complex tensor ``(..., Nx, Ny)``
        ``1 / eps`` on the pixel grid.
    harmonics : Harmonics

    Returns
    -------
    eps_xx, eps_yy : tensors ``(..., n_h, n_h)``
        ``eps_xx = ceil(floor(eps)_x)_y`` and ``eps_yy = ceil(floor(eps)_y)_x``
        (Li, JOSA A 14, 2758 (1997): inverse rule across, Laurent along each boundary).
    """
    M, N = harmonics.M, harmonics.N
    # eps_xx: along x, the inverse rule for every row of pixels at fixed y ...
    rows = pixel_fourier_coefficients_1d(inverse_grid, 2 * M, dim=-2)  # (..., Ny, 4M+1)
    row_blocks = torch.linalg.inv(_toeplitz(rows, 2 * M + 1))  # (..., Ny, 2M+1, 2M+1)
    # ... then Laurent's rule along y: exact Fourier integral over the pixel rows.
    row_spectrum = pixel_fourier_coefficients_1d(row_blocks.movedim(-3, -1), 2 * N, dim=-1)
    # row_spectrum: (..., 2M+1, 2M+1, 4N+1) indexed [m, m', n - n' + 2N]
    # eps_yy: the same with x and y exchanged.
    cols = pixel_fourier_coefficients_1d(inverse_grid, 2 * N, dim=-1)  # (..., Nx, 4N+1)
    col_blocks = torch.linalg.inv(_toeplitz(cols, 2 * N + 1))  # (..., Nx, 2N+1, 2N+1)
    col_spectrum = pixel_fourier_coefficients_1d(col_blocks.movedim(-3, -1), 2 * M, dim=-1)
    # col_spectrum: (..., 2N+1, 2N+1, 4M+1) indexed [n, n', m - m' + 2M]

    o = harmonics.orders(inverse_grid.device)
    m, n = o[:, 0] + M, o[:, 1] + N  # positions inside the blocks
    dm, dn = harmonics.difference_indices(inverse_grid.device)
    eps_xx = row_spectrum[..., m[:, None], m[None, :], dn]
    eps_yy = col_spectrum[..., n[:, None], n[None, :], dm]
    return eps_xx, eps_yy

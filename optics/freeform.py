"""Free-form unit cells: a density grid, filtered and projected for fabrication.

The standard density-based topology-optimisation pipeline (Wang, Lazarov & Sigmund, Struct.
Multidisc. Optim. 43, 767 (2011))::

    latent (Nx, Ny) --sigmoid--> density rho in [0, 1]
        --conic filter, radius R = min feature--> rho~      (smooth, length scale R)
        --tanh projection (beta, eta)----------> rho-bar    (nearly 0/1, differentiable)

The grid follows :mod:`hyplex.optics.geometry` (axis -2 is x, one unit cell, periodic), so the
fill ``rho-bar`` is a :class:`hyplex.optics.rcwa.Layer` pattern as it is. The filter is a
circular convolution because the cell is periodic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .cell import cell_period, plot_fill

__all__ = ["conic_filter", "tanh_projection", "freeform_fill", "FreeForm"]


def conic_filter(density: torch.Tensor, radius_nm: float, period_nm) -> torch.Tensor:
    """Periodic conic (hat) filter of a density grid, the standard minimum-length filter.

    ``rho~_i = sum_j w_ij rho_j / sum_j w_ij`` with ``w_ij = max(0, 1 - |x_i - x_j| / R)``
    (Bruns & Tortorelli, CMAME 190, 3443 (2001); Wang, Lazarov & Sigmund, Struct. Multidisc.
    Optim. 43, 767 (2011)), computed as a circular convolution because the cell is
    periodic.

    Parameters
    ----------
    density : real tensor ``(..., Nx, Ny)``, axis -2 is x.
    radius_nm : filter radius R in nm, ``0 <= R < min(Lx, Ly) / 2`` (0: no filtering).
    period_nm : float or ``(Lx, Ly)``.

    Returns
    -------
    tensor ``(..., Nx, Ny)``, differentiable in ``density``.
    """
    px, py = cell_period(period_nm)
    density = torch.as_tensor(density)
    if density.ndim < 2 or density.is_complex():
        raise ValueError(f"density must be a real grid (..., Nx, Ny), got {tuple(density.shape)}")
    if not (math.isfinite(radius_nm) and 0 <= radius_nm < min(px, py) / 2):
        raise ValueError(
            f"radius_nm must lie in [0, {min(px, py) / 2:g}) nm (half the period), got {radius_nm}"
        )
    if radius_nm == 0:
        return density
    nx, ny = density.shape[-2:]
    options = {"dtype": density.dtype, "device": density.device}
    ix, iy = torch.arange(nx, **options), torch.arange(ny, **options)
    dx = torch.minimum(ix, nx - ix) * (px / nx)  # periodic distance to pixel 0
    dy = torch.minimum(iy, ny - iy) * (py / ny)
    weights = (1.0 - torch.sqrt(dx[:, None] ** 2 + dy[None, :] ** 2) / radius_nm).clamp(min=0.0)
    weights = weights / weights.sum()
    spectrum = torch.fft.rfft2(density) * torch.fft.rfft2(weights)
    return torch.fft.irfft2(spectrum, s=(nx, ny))


def tanh_projection(density: torch.Tensor, beta: float, eta: float = 0.5) -> torch.Tensor:
    """Smoothed Heaviside projection towards 0/1 (Wang, Lazarov & Sigmund 2011).

    ``(tanh(beta eta) + tanh(beta (rho - eta))) / (tanh(beta eta) + tanh(beta (1 - eta)))``;
    it maps 0 to 0 and 1 to 1 and tends to the step at ``eta`` as ``beta`` grows.
    """
    if not (math.isfinite(beta) and beta > 0):
        raise ValueError(f"beta (projection steepness) must be > 0, got {beta}")
    if not 0 <= eta <= 1:
        raise ValueError(f"eta (projection threshold) must lie in [0, 1], got {eta}")
    numerator = math.tanh(beta * eta) + torch.tanh(beta * (density - eta))
    return numerator / (math.tanh(beta * eta) + math.tanh(beta * (1 - eta)))


def freeform_fill(density, period_nm, min_feature_nm: float, beta: float = 8.0, eta: float = 0.5):
    """Fill fractions ``(..., Nx, Ny)`` of a free-form design: filter, then project.

    The conic filter radius is ``min_feature_nm``: for the robust formulation with an eroded
    threshold of 0.75 it guarantees solid and void features of that size (Qian & Sigmund,
    CMAME 253, 237 (2013)); for a single design at ``eta = 0.5`` the length scale is imposed
    only approximately.

    Parameters
    ----------
    density : tensor ``(..., Nx, Ny)`` in [0, 1] (use ``torch.sigmoid`` of a latent to
        optimise without bounds).
    period_nm : float or ``(Lx, Ly)``.
    min_feature_nm : minimum solid/void feature in nm, ``0 <= m < min(Lx, Ly) / 2``.
    beta, eta : projection steepness and threshold (:func:`tanh_projection`).
    """
    px, py = cell_period(period_nm)
    density = torch.as_tensor(density)
    if not min_feature_nm < min(px, py) / 2:
        raise ValueError(
            f"min_feature_nm={min_feature_nm:g} is infeasible in a {px:g} x {py:g} nm cell: "
            f"it must be below half the period ({min(px, py) / 2:g} nm)"
        )
    if not torch.isfinite(density).all() or (density < 0).any() or (density > 1).any():
        raise ValueError("density must be finite and lie in [0, 1]")
    filtered = conic_filter(density, min_feature_nm, (px, py))
    return tanh_projection(filtered, beta, eta).clamp(0.0, 1.0)


@dataclass(frozen=True)
class FreeForm:
    """A free-form unit cell: a density grid, filtered and projected for fabrication.

    Attributes
    ----------
    density : tensor ``(Nx, Ny)`` in [0, 1], axis -2 is x.
    min_feature_nm : filter radius (see :func:`freeform_fill`).
    beta, eta : projection steepness and threshold.
    """

    density: torch.Tensor
    min_feature_nm: float = 0.0
    beta: float = 8.0
    eta: float = 0.5

    @classmethod
    def from_latent(cls, latent: torch.Tensor, **kwargs) -> FreeForm:
        """Density ``sigmoid(latent)``: an unbounded ``(Nx, Ny)`` variable for gradient steps."""
        return cls(torch.sigmoid(torch.as_tensor(latent)), **kwargs)

    def fill(self, period_nm) -> torch.Tensor:
        """Differentiable fill fractions ``(Nx, Ny)`` (grey where the projection is soft)."""
        return freeform_fill(self.density, period_nm, self.min_feature_nm, self.beta, self.eta)

    def binary(self, period_nm) -> torch.Tensor:
        """The fabricated design ``(Nx, Ny)`` of 0/1: the filtered density thresholded at eta
        (the ``beta -> infinity`` limit), a grid the FDTD reference accepts."""
        self.fill(period_nm)  # validates the density and the length scale
        filtered = conic_filter(self.density, self.min_feature_nm, period_nm).detach()
        return (filtered > self.eta).to(filtered.dtype)

    def plot(self, period_nm, ax=None):
        """Draw the projected fill over the unit cell; returns the Axes."""
        import matplotlib.pyplot as plt

        px, py = cell_period(period_nm)
        fill = self.fill(period_nm).detach().cpu().double().numpy()
        title = f"FreeForm {fill.shape[0]}x{fill.shape[1]}, m={self.min_feature_nm:g} nm"
        return plot_fill(fill, px, py, ax if ax is not None else plt.gca(), title)

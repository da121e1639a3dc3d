"""The design space of single-pillar inverse design, and its RCWA forward model.

A design is a vector ``x = (p_1 .. p_P, d)`` in nm: the parameters of one shape family from
:data:`hyplex.optics.geometry.SHAPES` (``p``) and the pillar thickness ``d``. Fabrication
constraints make a box ``low <= x <= high`` (:meth:`DesignSpace.box`); optimisers move in the
unit box ``u`` (``x = low + (high - low) u``) or in an unbounded latent ``z`` with
``u = sigmoid(z)``, so that every iterate is fabricable. :class:`RCWASpectrum` maps a batch of
designs to the unpolarised transmittance, differentiably::

        superstrate (air)                     normal incidence, unpolarised
    ---------------------------------
        pillar: shape p (nm), thickness d     in a square cell of side period_nm
    ---------------------------------
        substrate (SiO2)                      T(λ) = mean of TE and TM transmittance
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .geometry import ParametricShape, get_shape
from .rcwa import Layer, solve

__all__ = ["DesignSpace", "RCWASpectrum"]


@dataclass(frozen=True)
class DesignSpace:
    """A shape family in a square cell plus the pillar thickness, with the feasible box.

    Attributes
    ----------
    family : name in :data:`hyplex.optics.geometry.SHAPES` (``"disk"``, ``"cross"``, ...).
    period_nm : side of the square cell.
    thickness_bounds_nm : ``(low, high)`` pillar thickness, ``0 < low <= high``.
    min_feature_nm : smallest solid feature and gap, >= 0.
    """

    family: str = "disk"
    period_nm: float = 400.0
    thickness_bounds_nm: tuple[float, float] = (50.0, 300.0)
    min_feature_nm: float = 0.0

    def __post_init__(self) -> None:
        low, high = (float(v) for v in self.thickness_bounds_nm)
        if not (math.isfinite(low) and math.isfinite(high) and 0 < low <= high):
            raise ValueError(
                f"thickness_bounds_nm must be (low, high) with 0 < low <= high nm, "
                f"got {self.thickness_bounds_nm}"
            )
        self.shape_class.bounds(self.period_nm, self.min_feature_nm)  # raises if infeasible

    @property
    def shape_class(self) -> type[ParametricShape]:
        return get_shape(self.family)

    @property
    def names(self) -> tuple[str, ...]:
        """Names of the design vector's entries: the shape's parameters, then thickness."""
        return (*self.shape_class.parameter_names, "thickness_nm")

    @property
    def dimension(self) -> int:
        return len(self.names)

    def box(self, dtype=torch.float64, device=None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(low, high)``, each ``(D,)`` in nm."""
        low, high = self.shape_class.bounds(self.period_nm, self.min_feature_nm)
        low = np.append(low, self.thickness_bounds_nm[0])
        high = np.append(high, self.thickness_bounds_nm[1])
        return tuple(torch.as_tensor(v, dtype=dtype, device=device) for v in (low, high))

    def from_unit(self, unit: torch.Tensor) -> torch.Tensor:
        """Designs ``(..., D)`` in nm from points of the unit box ``[0, 1]^D``."""
        low, high = self.box(unit.dtype, unit.device)
        return low + (high - low) * unit

    def to_unit(self, params: torch.Tensor) -> torch.Tensor:
        low, high = self.box(params.dtype, params.device)
        return (params - low) / torch.where(high > low, high - low, torch.ones_like(high))

    def from_latent(self, latent: torch.Tensor) -> torch.Tensor:
        """Designs ``(..., D)`` in nm from unbounded latents (sigmoid to the box)."""
        return self.from_unit(torch.sigmoid(latent))

    def to_latent(self, params: torch.Tensor) -> torch.Tensor:
        return torch.logit(self.to_unit(params).clamp(1e-6, 1 - 1e-6))

    def sample(self, count: int, generator: torch.Generator, device=None) -> torch.Tensor:
        """``count`` designs ``(count, D)`` uniform in the box."""
        unit = torch.rand(count, self.dimension, generator=generator, dtype=torch.float64)
        return self.from_unit(unit.to(device))

    def split(self, params) -> tuple[ParametricShape, float]:
        """One design vector ``(D,)`` -> (shape, thickness in nm)."""
        vector = torch.as_tensor(params).detach().cpu().double().reshape(-1)
        return self.shape_class.from_vector(vector[:-1]), float(vector[-1])


@dataclass(frozen=True, eq=False)
class RCWASpectrum:
    """The forward model: designs ``(..., D)`` in nm -> unpolarised transmittance ``(..., L)``.

    Renders the shapes with :meth:`~hyplex.optics.geometry.ParametricShape.render_batch` on a
    ``grid`` and runs one batched :func:`hyplex.optics.rcwa.solve`; differentiable.
    """

    space: DesignSpace
    wavelengths_nm: torch.Tensor
    material: object = "cSi"
    substrate: object = "SiO2"
    superstrate: object = "air"
    harmonics: int = 3
    grid: tuple[int, int] = (48, 48)
    #: Fourier factorisation of :func:`hyplex.optics.rcwa.solve` (default: its normal-vector rule).
    factorization: str = "vector"

    def __call__(self, params: torch.Tensor) -> torch.Tensor:
        pattern = self.space.shape_class.render_batch(
            params[..., :-1], self.space.period_nm, self.grid
        )
        layer = Layer(params[..., -1], self.material, pattern)
        result = solve(
            [layer],
            self.wavelengths_nm.to(params.device),
            self.space.period_nm,
            harmonics=self.harmonics,
            superstrate=self.superstrate,
            substrate=self.substrate,
            factorization=self.factorization,
        )
        return result.unpolarized("T")

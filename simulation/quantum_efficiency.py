"""Quantum efficiency of a silicon photodiode from the optical constants of silicon.

A front-side pixel with a single-layer anti-reflection coating, after the standard one-dimensional
collection model (S. M. Sze, K. K. Ng, "Physics of Semiconductor Devices", 3rd ed., 2007,
sec. 13.2, eq. 13.14, with a field-free dead layer at the surface)::

        air
    ------------------ Si3N4 anti-reflection film, t_arc      -> T_in(lambda) by TMM
    ------------------ silicon surface
      dead layer d_0   (recombination: carriers lost)          -> exp(-alpha d_0)
      collection depth d_c (depletion + diffusion)             -> 1 - exp(-alpha d_c)
    ------------------

    QE(lambda) = FF * T_in(lambda) * exp(-alpha d_0) * (1 - exp(-alpha d_c)),
    alpha = 4 pi k(lambda) / lambda

with k of crystalline silicon from Green 2008 (``hyplex.optics`` material ``cSi``) and
T_in from ``hyplex.optics.thinfilm``. FF is the effective fill factor (microlenses included).
The defaults give 0.48 at 400 nm, a peak of 0.73 at 500-550 nm, 0.20 at 850 nm and 0.03 at
1000 nm, the shape of front-illuminated CMOS sensors' EMVA 1288 reports; use a measured curve
where one exists (``SensorModel(qe_wavelengths_nm=..., qe=...)``).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from hyplex.simulation.grids import check_wavelengths


def silicon_quantum_efficiency(
    wavelengths_nm,
    collection_depth_um: float = 7.0,
    dead_layer_nm: float = 20.0,
    arc_thickness_nm: float = 65.0,
    fill_factor: float = 0.75,
) -> np.ndarray:
    """QE (electrons per incident photon) of a silicon pixel, shape (L,), in [0, 1].

    Parameters
    ----------
    wavelengths_nm : array_like, shape (L,)
        In 250-1450 nm (the range of the silicon table).
    collection_depth_um : float
        Depth below the dead layer from which carriers are collected, um (> 0).
    dead_layer_nm : float
        Surface layer whose carriers recombine, nm (>= 0).
    arc_thickness_nm : float
        Si3N4 anti-reflection film thickness, nm (>= 0; 0 for bare silicon).
    fill_factor : float
        Effective optical fill factor in (0, 1].
    """
    from hyplex.optics.materials import get_material
    from hyplex.optics.thinfilm import stack_response

    grid = check_wavelengths(wavelengths_nm)
    if not collection_depth_um > 0 or not dead_layer_nm >= 0 or not arc_thickness_nm >= 0:
        raise ValueError("need collection_depth_um > 0, dead_layer_nm >= 0, arc_thickness_nm >= 0")
    if not 0 < fill_factor <= 1:
        raise ValueError(f"fill_factor must lie in (0, 1], got {fill_factor}")
    silicon = get_material("cSi").refractive_index(grid)
    alpha_per_nm = 4 * math.pi * silicon.imag / grid
    result = stack_response(
        [1.0, get_material("Si3N4"), torch.from_numpy(silicon)],
        torch.tensor([arc_thickness_nm], dtype=torch.float64),
        torch.from_numpy(grid),
    )
    transmitted = result.T.detach().numpy()
    collected = np.exp(-alpha_per_nm * dead_layer_nm) * -np.expm1(
        -alpha_per_nm * collection_depth_um * 1e3
    )
    return np.clip(fill_factor * transmitted * collected, 0.0, 1.0)

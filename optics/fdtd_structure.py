"""Describe an RCWA layer stack to Meep: materials as susceptibilities, shapes as primitives.

:func:`describe` turns the unit-cell description that :func:`hyplex.optics.rcwa.solve` takes
into the JSON-able structure that ``_meep_worker.py`` builds (lengths in um, frequencies in
1/um), plus the symmetries Meep may exploit. Anything without an exact time-domain form is
refused with :class:`UnsupportedStructureError` naming what to use instead.

Materials
---------
- :class:`~hyplex.optics.materials.LorentzMaterial` (``cSi_meep``, ``aSi_meep``, ``SiO2_meep``):
  its oscillators are Meep's ``LorentzianSusceptibility`` terms verbatim (same convention).
- Sellmeier (``SiO2``, ``BK7``, ``Si3N4``): each term B l^2 / (l^2 - C) equals an undamped
  Lorentzian B f0^2 / (f0^2 - f^2) with f0 = 1 / sqrt(C) (l in um, f = 1 / l).
- A constant real index n: epsilon = n^2.
- Tabulated data (``cSi``, ``aSi``, ``TiO2``) and constant complex indices are refused.

Geometry
--------
- A :class:`~hyplex.optics.geometry.Shape` gives exact cylinders and boxes (Meep smooths their
  edges); a binary grid becomes a union of boxes (pixel runs merged); grey fill fractions and
  raw permittivity grids are refused.
- A structure whose every object is a box spanning the whole period along y (a 1-D grating:
  e.g. a ``Rectangle(w, Ly)`` or an ``(Nx, 1)`` / y-constant binary grid) is flagged
  ``uniform_y``: it runs exactly in a 2-D cell (see ``_meep_worker.py``).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .geometry import Shape
from .materials import ConstantMaterial, LorentzMaterial, SellmeierMaterial, get_material
from .rcwa import Layer

__all__ = ["UnsupportedStructureError", "describe"]

_LORENTZ_TWINS = {"cSi": "cSi_meep", "aSi": "aSi_meep"}


class UnsupportedStructureError(ValueError):
    """The structure or material cannot be expressed in the FDTD reference."""


def _medium(material, wavelengths_nm: np.ndarray, where: str) -> dict:
    """Meep medium spec ``{"epsilon", "lorentz": [[f_n, gamma_n, sigma_n]]}`` (f in 1/um)."""
    if isinstance(material, torch.Tensor):
        raise UnsupportedStructureError(
            f"{where}: a per-wavelength index tensor has no time-domain model; give a "
            "material name or a Material"
        )
    material = get_material(material)
    material.refractive_index(wavelengths_nm)  # raises, naming the range, if out of range
    if isinstance(material, ConstantMaterial):
        if material.index.imag != 0:
            raise UnsupportedStructureError(
                f"{where}: a constant complex index {material.index} cannot be broadband in "
                "FDTD (Meep's conductivity loss scales as 1/f); use a LorentzMaterial"
            )
        return {"epsilon": material.index.real**2, "lorentz": []}
    if isinstance(material, SellmeierMaterial):
        pairs = zip(material.b, material.c_um2, strict=True)
        terms = [[1.0 / math.sqrt(c), 0.0, b] for b, c in pairs]
        return {"epsilon": 1.0 + material.a, "lorentz": terms}
    if isinstance(material, LorentzMaterial):
        terms = [[f, gamma, sigma] for f, gamma, sigma in material.oscillators]
        return {"epsilon": material.epsilon_inf, "lorentz": terms}
    twin = _LORENTZ_TWINS.get(material.name)
    hint = f"; use {twin!r}, Meep's Lorentz fit of the same material" if twin else ""
    raise UnsupportedStructureError(
        f"{where}: {material.name!r} is a {type(material).__name__}, which has no time-domain "
        f"model for Meep{hint}"
    )


def _grid_blocks(pattern: np.ndarray, period_nm: tuple[float, float]) -> list[dict]:
    """Binary grid (Nx, Ny) -> union of blocks (nm, cell-centred): runs along y merged along x."""
    nx, ny = pattern.shape
    dx, dy = period_nm[0] / nx, period_nm[1] / ny
    runs: dict[tuple[int, int], int] = {}  # (j0, j1) -> first i of the current open block
    blocks = []

    def close(i_end, j0, j1, i0):
        size = ((i_end - i0) * dx, (j1 - j0) * dy)
        center = ((i0 + i_end) / 2 * dx - period_nm[0] / 2, (j0 + j1) / 2 * dy - period_nm[1] / 2)
        blocks.append({"kind": "block", "center": center, "size": size})

    for i in range(nx + 1):
        row = set()
        if i < nx:
            j = 0
            while j < ny:
                if pattern[i, j]:
                    j0 = j
                    while j < ny and pattern[i, j]:
                        j += 1
                    row.add((j0, j))
                j += 1
        for key in list(runs):
            if key not in row:
                close(i, *key, runs.pop(key))
        for key in row:
            runs.setdefault(key, i)
    return blocks


def _layer_spec(layer: Layer, index: int, period_nm, wavelengths_nm) -> tuple[dict, dict]:
    """(layer spec for the worker, symmetry flags) of one Layer."""
    where = f"layers[{index}]"
    if not isinstance(layer, Layer):
        raise TypeError(f"{where} must be a hyplex.optics.rcwa.Layer, got {type(layer)}")
    if layer.permittivity is not None:
        raise UnsupportedStructureError(
            f"{where}: a raw permittivity grid has no dispersion model for FDTD; describe the "
            "layer by material + pattern (a Shape or a binary grid)"
        )
    thickness = torch.as_tensor(layer.thickness_nm)
    if thickness.numel() != 1:
        raise UnsupportedStructureError(
            f"{where}: batched thicknesses {tuple(thickness.shape)}; FDTD takes one design per "
            "structure: pass a list of designs to solve_many"
        )
    thickness_nm = float(thickness)
    if not (math.isfinite(thickness_nm) and thickness_nm >= 0):
        raise ValueError(f"{where}.thickness_nm must be >= 0 nm, got {thickness_nm}")
    symmetry = {
        "mirror_x": True,
        "mirror_y": True,
        "c4": period_nm[0] == period_nm[1],
        "uniform_y": True,
    }
    spec = {"thickness_um": thickness_nm / 1000.0, "objects": []}
    if layer.pattern is None:
        spec["background"] = _medium(layer.material, wavelengths_nm, f"{where}.material")
        return spec, symmetry
    spec["background"] = _medium(layer.background, wavelengths_nm, f"{where}.background")
    fill = _medium(layer.material, wavelengths_nm, f"{where}.material")
    if isinstance(layer.pattern, Shape):
        layer.pattern.check_fits(period_nm)
        primitives = layer.pattern.primitives()
        symmetry = {
            "mirror_x": layer.pattern.mirror_x,
            "mirror_y": layer.pattern.mirror_y,
            "c4": layer.pattern.is_c4(period_nm),
        }
    else:
        pattern = torch.as_tensor(layer.pattern).detach().cpu().double().numpy()
        if pattern.ndim != 2:
            raise UnsupportedStructureError(
                f"{where}.pattern has shape {pattern.shape}; FDTD takes one (Nx, Ny) grid per "
                "structure: pass a list of designs to solve_many"
            )
        binary = np.isclose(pattern, 0.0, atol=1e-9) | np.isclose(pattern, 1.0, atol=1e-9)
        if not binary.all():
            raise UnsupportedStructureError(
                f"{where}.pattern has fill fractions strictly between 0 and 1 "
                f"({int((~binary).sum())} pixels); FDTD needs a binary grid or an exact Shape "
                "from hyplex.optics.geometry (Meep smooths the edges itself)"
            )
        solid = pattern > 0.5
        primitives = _grid_blocks(solid, period_nm)
        symmetry = {
            "mirror_x": bool((solid == solid[::-1, :]).all()),
            "mirror_y": bool((solid == solid[:, ::-1]).all()),
            "c4": solid.shape[0] == solid.shape[1]
            and period_nm[0] == period_nm[1]
            and bool((solid == np.rot90(solid)).all()),
        }
    # A 1-D grating (lines along y): every primitive is a box spanning the period along y.
    symmetry["uniform_y"] = all(
        p["kind"] == "block" and p["size"][1] >= period_nm[1] * (1 - 1e-9) for p in primitives
    )
    for primitive in primitives:
        item = {"kind": primitive["kind"], "material": fill}
        item["center"] = [c / 1000.0 for c in primitive["center"]]
        if primitive["kind"] == "cylinder":
            item["radius"] = primitive["radius"] / 1000.0
        else:
            item["size"] = [s / 1000.0 for s in primitive["size"]]
        spec["objects"].append(item)
    return spec, symmetry


def describe(layers, wavelengths_nm, period_nm, superstrate, substrate) -> tuple[dict, dict]:
    """Meep description of one structure (without polarisation) and its symmetry.

    Parameters
    ----------
    layers : sequence of :class:`~hyplex.optics.rcwa.Layer`, top to bottom, one design.
    wavelengths_nm : ndarray ``(L,)``, used to check each material's valid range.
    period_nm : ``(Lx, Ly)`` in nm.
    superstrate, substrate : material-like; the superstrate must be a constant real index.

    Returns
    -------
    structure : dict with ``period_um``, ``superstrate``, ``substrate`` (media) and ``layers``
        (``thickness_um``, ``background`` medium and ``objects``).
    symmetry : dict of booleans ``mirror_x``, ``mirror_y``, ``c4`` (TE = TM at normal incidence)
        and ``uniform_y`` (nothing varies along y: a film or a 1-D grating, exact in 2-D).
    """
    if len(layers) == 0:
        raise ValueError("layers is empty; give at least one Layer between the half-spaces")
    sup = _medium(superstrate, wavelengths_nm, "superstrate")
    if sup["lorentz"]:
        raise UnsupportedStructureError(
            "superstrate: FDTD here needs a constant real index for the incidence medium "
            "(e.g. 'air' or a number); put dispersive media in layers or the substrate"
        )
    specs = []
    symmetry = {"mirror_x": True, "mirror_y": True, "c4": True, "uniform_y": True}
    for i, layer in enumerate(layers):
        spec, sym = _layer_spec(layer, i, period_nm, wavelengths_nm)
        specs.append(spec)
        symmetry = {key: symmetry[key] and sym[key] for key in symmetry}
    structure = {
        "period_um": [period_nm[0] / 1000.0, period_nm[1] / 1000.0],
        "superstrate": sup,
        "substrate": _medium(substrate, wavelengths_nm, "substrate"),
        "layers": specs,
    }
    if not any(spec["objects"] for spec in specs):  # 1-D: every symmetry holds
        symmetry = {"mirror_x": False, "mirror_y": False, "c4": True, "uniform_y": True}
    return structure, symmetry

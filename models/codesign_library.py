"""A small response library solved on the spot, for quick co-design runs and tests.

``hyplex design --quick`` without ``--library`` needs a *realizable* encoder, hence a library
of fabricable unit cells. :func:`quick_library` draws ``count`` silicon rectangles (seeded,
:class:`hyplex.optics.library_spec.LibrarySpec`) and solves them serially with the RCWA of
:func:`hyplex.optics.library_build.build_library` at low Fourier order: harmonics ``(1, 1)``
(3 x 3 = 9 orders) on a 32 x 32 cell, 18 wavelengths over 390-740 nm. That is ~70 designs per
second on one core, coarse but physical (a converged library uses (4, 4) or more: ``hyplex
library build``). The library is band-averaged onto the training grid by the encoder. A file
that exists is reused (resumed if unfinished).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hyplex.optics.library import ResponseLibrary, SolverSettings, read_library

__all__ = ["quick_library_spec", "quick_library"]


def quick_library_spec(
    count: int = 384,
    wavelengths_nm=None,
    harmonics: int = 1,
    grid: int = 32,
    seed: int = 0,
):
    """The :class:`~hyplex.optics.library_spec.LibrarySpec` of :func:`quick_library`:
    cSi rectangles, period 400 nm, thickness 60-300 nm, min feature 40 nm, on SiO2."""
    from hyplex.optics.library_spec import LibrarySpec

    if wavelengths_nm is None:
        wavelengths_nm = np.linspace(390.0, 740.0, 18)
    return LibrarySpec(
        family="rectangle",
        count=int(count),
        wavelengths_nm=tuple(np.asarray(wavelengths_nm, dtype=np.float64).tolist()),
        period_nm=400.0,
        thickness_range_nm=(60.0, 300.0),
        min_feature_nm=40.0,
        solver=SolverSettings(harmonics=(harmonics, harmonics), grid=(grid, grid)),
        seed=int(seed),
    )


def quick_library(path, progress: bool = False, **spec_options) -> ResponseLibrary:
    """Build (or reuse) the quick library at ``path`` and read it; see the module docstring."""
    from hyplex.optics.library_build import build_library

    path = Path(path)
    spec = quick_library_spec(**spec_options)
    build_library(path, spec, chunk_size=64, serial=True, progress=progress)
    return read_library(path)

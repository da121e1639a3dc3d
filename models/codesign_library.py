"""The quick response library of co-design: 384 c-Si rectangles at a converged order.

``hyplex design --quick`` without ``--library`` needs a *realizable* encoder, hence a library
of fabricable unit cells. :func:`quick_library` gives ``count`` silicon rectangles (seeded,
:class:`hyplex.optics.library_spec.LibrarySpec`): period 400 nm, thickness 60-300 nm, minimum
feature 40 nm, on SiO2, 18 wavelengths over 390-740 nm (band-averaged onto the training grid
by the encoder), solved with the normal-vector RCWA at M = 8 (289 orders) on a 128 px grid in
complex64.

Why that order. Until issue 21 it was M = 1 (9 orders) on a 32 px grid: 70 designs/s, but
the nine filters a quick design chose from it were off by rms 0.35 and up to 0.98 in T against
converged spectra (``benchmarks/designed_vs_converged.py``). M = 8 is what ``hyplex library
build --target-accuracy 0.01`` chose for this stack (the smallest order within rms 0.01 of
the converged reference, M = 10, on three probe designs: 0.0072); the stored accuracy
estimate, a seeded 2 % sample (8 designs) re-solved at M = 10, is rms 0.0078, max 0.049
(``hyplex library info``). The README gives the commands and the measured costs.

It costs ~18 s per design on one core (6,900 s for the 384), so the designs ship with hyplex
(``models/data/quick_library.h5``, built by the README's command): a request for the default
stack and seed with ``count <= 384`` is the file's first ``count`` designs (the design list is
prefix-stable), copied in milliseconds. Any other request (another seed, more designs, other
wavelengths or settings) is solved on the spot with the requested settings; pass
``harmonics=1, grid=32, factorization="li", precision="complex128"`` for the old fast and
inaccurate library. A file at ``path`` holding the same designs solved with other solver
settings (an old quick library) is replaced; one with the same settings is reused (resumed if
unfinished); anything else there is refused by :func:`~hyplex.optics.library_build.build_library`.
"""

from __future__ import annotations

import logging
import math
from dataclasses import replace
from pathlib import Path

import numpy as np

from hyplex.optics.library import (
    LibraryError,
    Record,
    ResponseLibrary,
    SolverSettings,
    read_library,
    read_metadata,
    read_records,
    write_library,
)

__all__ = ["QUICK_SOLVER", "SHIPPED_LIBRARY", "quick_library_spec", "quick_library"]

log = logging.getLogger(__name__)

#: The settings ``hyplex library build --target-accuracy 0.01`` chose for the quick stack.
QUICK_SOLVER = SolverSettings(
    harmonics=(8, 8), factorization="vector", grid=(128, 128), precision="complex64"
)
#: The 384 designs of the default quick library, solved with :data:`QUICK_SOLVER`.
SHIPPED_LIBRARY = Path(__file__).resolve().parent / "data" / "quick_library.h5"


def quick_library_spec(
    count: int = 384,
    wavelengths_nm=None,
    harmonics: int = QUICK_SOLVER.harmonics[0],
    grid: int = QUICK_SOLVER.grid[0],
    seed: int = 0,
    factorization: str = QUICK_SOLVER.factorization,
    precision: str = QUICK_SOLVER.precision,
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
        solver=SolverSettings(
            harmonics=(harmonics, harmonics),
            grid=(grid, grid),
            factorization=factorization,
            precision=precision,
        ),
        seed=int(seed),
    )


def _spec_of(path: Path):
    from hyplex.optics.library_spec import LibrarySpec

    return LibrarySpec.from_library(read_metadata(path))


def _shipped_covers(spec) -> bool:
    """Whether ``spec``'s designs are the first ``spec.count`` of the shipped library."""
    if not SHIPPED_LIBRARY.exists():
        return False
    shipped = _spec_of(SHIPPED_LIBRARY)
    return spec.count <= shipped.count and replace(shipped, count=spec.count) == spec


def _copy_shipped(path: Path, spec, chunk_size: int) -> bool:
    """Write the shipped library's first ``spec.count`` designs to ``path`` if they are what
    ``spec`` asks for; returns whether it did."""
    if not _shipped_covers(spec):
        return False
    shipped = _spec_of(SHIPPED_LIBRARY)
    library: ResponseLibrary = read_library(SHIPPED_LIBRARY).subset(np.arange(spec.count))
    library.generation = dict(library.generation, count=spec.count, chunk_size=chunk_size)
    records = read_records(SHIPPED_LIBRARY)
    accuracy = records["accuracy"]
    if accuracy is not None and spec.count < shipped.count:
        # the estimate's sample is drawn from the 384-design list this library is a prefix of
        parent = {"designs": shipped.count, "file": SHIPPED_LIBRARY.name}
        accuracy = Record(accuracy.summary | {"parent": parent}, accuracy.arrays)
    records["accuracy"] = accuracy
    write_library(path, library, math.ceil(spec.count / chunk_size), records=records)
    return True


def quick_library(path, progress: bool = False, **spec_options) -> ResponseLibrary:
    """The quick library at ``path``: copied from the shipped file, reused, or solved; see the
    module docstring. ``spec_options`` go to :func:`quick_library_spec`."""
    from hyplex.optics.library_build import build_library

    path = Path(path)
    spec = quick_library_spec(**spec_options)
    # designs per RCWA call: 8 at high order (M = 8 at 18 wavelengths holds ~6 GB per call of
    # 8), 64 at low order; the spectra do not depend on it (map_batch is batch-independent)
    chunk_size = 64 if spec.solver.harmonics[0] <= 3 else 8
    if path.exists():
        try:
            stored = _spec_of(path)
        except (LibraryError, KeyError, TypeError, ValueError):
            stored = None  # build_library says what is wrong with it
        same_designs = stored is not None and replace(stored, count=spec.count) == spec
        # an old low-order file of the same designs: solved again (or copied) at this order
        old_solver = (
            stored is not None
            and stored.solver != spec.solver
            and replace(stored, count=spec.count, solver=spec.solver) == spec
        )
        # another count of the shipped designs: a fresh copy, not hours of growing or a refusal
        other_count = same_designs and stored.count != spec.count and _shipped_covers(spec)
        if old_solver or other_count:
            why = f"solved with {stored.solver}" if old_solver else f"of {stored.count} designs"
            log.warning("%s: a quick library %s; replacing it", path, why)
            path.unlink()
    if not path.exists() and not _copy_shipped(path, spec, chunk_size):
        log.info("solving %d quick-library designs at M=%d", spec.count, spec.solver.harmonics[0])
    build_library(path, spec, chunk_size=chunk_size, serial=True, progress=progress)
    return read_library(path)

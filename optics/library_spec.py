"""What a response library holds and how one batch of its designs is solved.

:class:`LibrarySpec` names a shape family on one stack, a wavelength grid, RCWA settings and a
seed. Design ``i`` is row ``i`` of ``numpy.random.default_rng(seed).random((N, P + 1))`` mapped
onto the family's feasible box (:meth:`~hyplex.optics.geometry.ParametricShape.bounds`) and
the thickness range, so the list is deterministic and a larger ``count`` extends it without
changing the designs already drawn. :func:`solve_designs` renders a batch with
:meth:`~hyplex.optics.geometry.ParametricShape.render_batch` and solves it with
:func:`hyplex.optics.rcwa.solve`::

        superstrate (air)                 incident plane wave, TE and TM
    ---------------------------
        pillar of `material`, shape `family` (params_nm), thickness_nm, in the superstrate
    ---------------------------
        substrate (SiO2)                  T(lambda) = total transmitted power
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from .geometry import SHAPES, get_shape
from .library import LibraryError, ResponseLibrary, SolverSettings, read_metadata
from .materials import get_material
from .memory import (
    available_memory_bytes,
    check_disk,
    check_memory,
    fits_hint,
    format_bytes,
    rcwa_memory_bytes,
)
from .parallel import use_safe_threading
from .rcwa import Layer, solve

__all__ = [
    "LibrarySpec",
    "check_resources",
    "check_solve_memory",
    "design_bytes",
    "sample_designs",
    "solve_designs",
    "spec_to_dict",
]


@dataclass(frozen=True)
class LibrarySpec:
    """What to generate: one shape family on one stack, sampled uniformly.

    Attributes
    ----------
    family : key of :data:`hyplex.optics.geometry.SHAPES` (``"disk"``, ``"rectangle"``, ...).
    count : number of designs N.
    wavelengths_nm : ``(L,)`` strictly increasing vacuum wavelengths, nm.
    period_nm : square lattice period, nm.
    thickness_range_nm : ``(low, high)`` pillar thickness range, nm.
    min_feature_nm : minimum solid feature and gap, nm (sets the parameter box).
    material, substrate, superstrate : material names; pillars of ``material`` in
        ``superstrate`` on ``substrate``.
    solver : RCWA settings.
    store_jones : also store the complex Jones matrices ``t``.
    seed : seed of the design list.
    """

    family: str = "rectangle"
    count: int = 10_000
    wavelengths_nm: tuple[float, ...] = tuple(np.linspace(400.0, 1000.0, 31).tolist())
    period_nm: float = 400.0
    thickness_range_nm: tuple[float, float] = (100.0, 400.0)
    min_feature_nm: float = 40.0
    material: str = "cSi"
    substrate: str = "SiO2"
    superstrate: str = "air"
    solver: SolverSettings = field(default_factory=SolverSettings)
    store_jones: bool = False
    seed: int = 0

    def __post_init__(self):
        get_shape(self.family)  # clear error for an unknown family
        if int(self.count) < 1:
            raise ValueError(f"count must be >= 1 design, got {self.count}")
        wl = np.asarray(self.wavelengths_nm, dtype=np.float64).reshape(-1)
        if wl.size < 1 or not np.isfinite(wl).all() or (wl <= 0).any():
            raise ValueError("wavelengths_nm must be positive, finite nm")
        if (np.diff(wl) <= 0).any():
            raise ValueError("wavelengths_nm must be strictly increasing")
        low, high = (float(v) for v in self.thickness_range_nm)
        if not (0 < low <= high and math.isfinite(high)):
            raise ValueError(f"thickness_range_nm must be 0 < low <= high nm, got {(low, high)}")
        for role in ("material", "substrate", "superstrate"):
            get_material(getattr(self, role)).refractive_index(wl)  # unknown or out of range
        self.parameter_bounds()  # raises for an infeasible min_feature_nm or period
        object.__setattr__(self, "count", int(self.count))
        object.__setattr__(self, "wavelengths_nm", tuple(wl.tolist()))
        object.__setattr__(self, "thickness_range_nm", (low, high))
        object.__setattr__(self, "period_nm", float(self.period_nm))
        object.__setattr__(self, "min_feature_nm", float(self.min_feature_nm))
        if isinstance(self.solver, dict):
            object.__setattr__(self, "solver", SolverSettings(**self.solver))

    @property
    def parameter_names(self) -> tuple[str, ...]:
        return SHAPES[self.family].parameter_names

    def parameter_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Box of the shape parameters, ``(P,)`` and ``(P,)`` in nm."""
        return SHAPES[self.family].bounds(self.period_nm, self.min_feature_nm)

    def generation(self, chunk_size: int) -> dict:
        """The sampling record stored with the file (compared on resume)."""
        return {
            "sampler": "uniform-box",
            "seed": int(self.seed),
            "count": self.count,
            "thickness_range_nm": list(self.thickness_range_nm),
            "min_feature_nm": self.min_feature_nm,
            "chunk_size": int(chunk_size),
        }

    @classmethod
    def from_library(cls, library: ResponseLibrary | dict) -> LibrarySpec:
        """The spec a built library was generated from (a library or :func:`read_metadata`)."""
        meta = library if isinstance(library, dict) else vars(library)
        generation = meta.get("generation")
        if not generation:
            raise LibraryError("this library records no generation settings (built by hand)")
        return cls(
            family=meta["family"],
            count=len(meta["thickness_nm"]) if "thickness_nm" in meta else meta["count"],
            wavelengths_nm=tuple(np.asarray(meta["wavelengths_nm"]).tolist()),
            period_nm=meta["period_nm"],
            thickness_range_nm=tuple(generation["thickness_range_nm"]),
            min_feature_nm=generation["min_feature_nm"],
            material=meta["material"],
            substrate=meta["substrate"],
            superstrate=meta["superstrate"],
            solver=meta["solver"],
            store_jones=meta["t"] is not None if "t" in meta else meta["has_jones"],
            seed=generation["seed"],
        )


def sample_designs(spec: LibrarySpec, count: int | None = None):
    """The deterministic design list: params ``(N, P)`` nm and thickness ``(N,)`` nm."""
    count = spec.count if count is None else int(count)
    low, high = spec.parameter_bounds()
    uniform = np.random.default_rng(spec.seed).random((count, low.size + 1))
    params = low + uniform[:, :-1] * (high - low)
    t_low, t_high = spec.thickness_range_nm
    return params, t_low + uniform[:, -1] * (t_high - t_low)


def solve_designs(
    spec: LibrarySpec,
    params_nm,
    thickness_nm,
    jones: bool | None = None,
    solver: SolverSettings | None = None,
):
    """RCWA spectra of a batch of designs (no gradients).

    Parameters
    ----------
    spec : the stack, wavelengths and solver settings (``count`` and ``seed`` are unused).
    params_nm : ``(B, P)`` shape parameters, nm.
    thickness_nm : ``(B,)`` pillar thicknesses, nm.
    jones : also return ``t``; default ``spec.store_jones``.
    solver : settings to use instead of ``spec.solver`` (a convergence probe's other orders).

    Returns
    -------
    T ``(B, L, 2)`` float64 numpy (TE, TM) and ``t`` ``(B, L, 2, 2)`` complex128 or None.
    """
    use_safe_threading()
    jones = spec.store_jones if jones is None else jones
    params = torch.as_tensor(np.asarray(params_nm, dtype=np.float64))
    thickness = torch.as_tensor(np.asarray(thickness_nm, dtype=np.float64))
    settings = spec.solver if solver is None else solver
    with torch.no_grad():
        pattern = SHAPES[spec.family].render_batch(params, spec.period_nm, settings.grid)
        layer = Layer(thickness, spec.material, pattern=pattern, background=spec.superstrate)
        result = solve(
            [layer],
            torch.tensor(spec.wavelengths_nm, dtype=torch.float64),
            spec.period_nm,
            harmonics=settings.harmonics,
            superstrate=spec.superstrate,
            substrate=spec.substrate,
            angle_deg=settings.angle_deg,
            azimuth_deg=settings.azimuth_deg,
            factorization=settings.factorization,
            dtype=settings.dtype,
        )
        T = result.T.to(torch.float64).numpy()  # noqa: N806
        t = result.t.to(torch.complex128).numpy() if jones else None
    return T, t


def design_bytes(spec: LibrarySpec) -> tuple[int, int]:
    """Bytes per design: ``(in the HDF5 file, in memory while the file is created)``.

    The file holds params ``(P,)``, thickness, T ``(L, 2)``, t ``(L, 2, 2)`` complex if
    stored, and the done flag. Creating (or growing) a file holds the uniform draws, params,
    thickness and the NaN-filled spectra at once; counted twice for the copies h5py and
    :func:`sample_designs` make.
    """
    n_par, n_wl = len(spec.parameter_names), len(spec.wavelengths_nm)
    stored = 8 * n_par + 8 + 16 * n_wl + (64 * n_wl if spec.store_jones else 0) + 1
    return stored, 2 * (stored + 8 * (n_par + 1))


def _solve_bytes(spec: LibrarySpec, batch: int, harmonics=None, grid=None, solver=None) -> int:
    solver = spec.solver if solver is None else solver
    return rcwa_memory_bytes(
        solver.harmonics if harmonics is None else harmonics,
        solver.grid if grid is None else grid,
        batch=batch,
        wavelengths=len(spec.wavelengths_nm),
        complex_bytes=8 if solver.precision == "complex64" else 16,
    )


def check_solve_memory(spec: LibrarySpec, solver: SolverSettings, batch: int = 1) -> None:
    """Refuse an RCWA call of ``batch`` designs with ``solver`` that cannot fit in memory.

    Raises :class:`~hyplex.optics.memory.MemoryBudgetError` naming the harmonics.
    """
    needed = _solve_bytes(spec, batch, solver=solver)
    (m, n), n_wl = solver.harmonics, len(spec.wavelengths_nm)
    check_memory(
        needed,
        f"harmonics={m if m == n else (m, n)} ({(2 * m + 1) * (2 * n + 1):,} orders; the RCWA "
        f"of {batch} design(s) at {n_wl} wavelengths)",
        setting="harmonics",
        value=m,
    )


def _designs_done(path) -> int:
    """Designs already solved in the library at ``path`` (0 if there is none, or no library)."""
    if path is None or not Path(path).is_file():
        return 0
    try:
        return int(read_metadata(path, locking=False)["done"])
    except (LibraryError, OSError, KeyError, ValueError):
        return 0  # not a library: the build says what is wrong with it


def check_resources(spec: LibrarySpec, path=None, chunk_size: int = 128, workers: int = 1):
    """Refuse, before anything is allocated, a build that cannot fit this machine.

    Checks the memory of creating the file (``count`` designs), the disk it takes at ``path``
    (if given; a file already there counts as space already taken), and the RCWA of one chunk
    on each of ``workers`` local processes (``workers=0``: the solves run elsewhere; none
    either when the library at ``path`` already holds every design: a finished file, such as
    the shipped M = 8 quick library, opens on a machine without the ~6 GB a chunk of it needs).

    Raises
    ------
    hyplex.optics.memory.MemoryBudgetError
        A ValueError whose message names the setting (``count``, ``harmonics``, ``grid`` or
        ``chunk_size``), what it needs, what the machine has, and what would fit; its
        ``setting`` attribute holds the setting's name.
    """
    available = available_memory_bytes()
    stored, in_memory = design_bytes(spec)
    count = spec.count
    check_memory(
        count * in_memory,
        f"count={count:,} designs ({format_bytes(in_memory)} each while the file is created)",
        setting="count",
        value=count,
        hint=fits_hint(lambda k: k * in_memory, available, "count", low=1),
        available=available,
    )
    if path is not None:
        path = Path(path)
        existing = path.stat().st_size if path.is_file() else 0
        check_disk(
            count * stored - existing,
            path,
            f"count={count:,} designs ({format_bytes(stored)} each in {path.name})",
            setting="count",
            value=count,
        )
    pending = count - _designs_done(path)
    if workers < 1 or pending < 1:  # a finished file is read, not solved: no RCWA memory
        return
    batch = min(int(chunk_size), count)
    if workers * _solve_bytes(spec, batch) <= available:
        return
    (m, n), grid, n_wl = spec.solver.harmonics, spec.solver.grid, len(spec.wavelengths_nm)
    one = _solve_bytes(spec, 1)
    if one > available:  # not even one design: the harmonics or the grid are too large
        if _solve_bytes(spec, 1, grid=1) > available:
            what = (
                f"harmonics={m if m == n else (m, n)} ({(2 * m + 1) * (2 * n + 1):,} orders; "
                f"the RCWA of one design at {n_wl} wavelengths)"
            )
            setting, value, estimate = "harmonics", m, lambda k: _solve_bytes(spec, 1, k)
        else:
            what = (
                f"grid={grid[0] if grid[0] == grid[1] else grid} pixels per side (the RCWA of "
                f"one design at {n_wl} wavelengths)"
            )
            setting, value = "grid", grid[0]
            estimate = lambda k: _solve_bytes(spec, 1, grid=k)  # noqa: E731
        check_memory(
            one,
            what,
            setting=setting,
            value=value,
            hint=fits_hint(estimate, available, setting, low=int(setting == "grid")),
            available=available,
        )
    check_memory(
        workers * _solve_bytes(spec, batch),
        f"chunk_size={batch} designs x {n_wl} wavelengths per RCWA call"
        + (f" on each of {workers} workers" if workers > 1 else ""),
        setting="chunk_size",
        value=batch,
        hint=fits_hint(lambda k: workers * _solve_bytes(spec, k), available, "chunk_size", low=1),
        available=available,
    )


def spec_to_dict(spec: LibrarySpec) -> dict:
    """A JSON-ready dict of ``spec`` (e.g. for logs and benchmark output)."""
    return asdict(spec)

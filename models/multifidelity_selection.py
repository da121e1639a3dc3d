"""Multi-fidelity choice of a library encoder's designs: screen on cheap spectra, re-solve a
pool at a converged fidelity, choose again on the converged spectra only.

A large response library is cheap only at a low RCWA order: ``hyplex library build`` solves at
M = 2, whose spectra are 0.23-0.27 rms in transmittance from converged ones in the co-design
band (README, "Co-design"); solving all of its designs at the converged order (M = 8) takes
hours. Choosing the nine designs on the cheap spectra chooses on wrong physics. This module
spends the expensive solver only on the designs that the cheap screen ranks best, in the manner
of successive halving with two fidelities (Jamieson & Talwalkar, "Non-stochastic Best Arm
Identification and Hyperparameter Optimization", AISTATS 2016, Algorithm 1: every arm is
evaluated with a small budget, the larger budget goes to the survivors, and the final choice is
made on the larger budget's figures only)::

    cheap library (N designs, M = 2)
        --screen_pool: R rounds of separability selection, F designs each-->  pool (R F designs)
        --solve_pool: the pool at the converged order (cached per design)--> pool library
        --separability_selection on the pool library's spectra only-->        F designs

The criterion at both fidelities is :func:`hyplex.models.encoder.separability_selection`:
greedy forward selection (Whitney, IEEE Trans. Comput. C-20, 1971) on the mean pairwise
Bhattacharyya coefficient of the classes' noisy barcodes (Kailath, IEEE Trans. Commun.
Technol. 15(1), 1967; Gaussian closed form of the distance). Screening round ``r`` runs it over
the designs that rounds ``1 .. r - 1`` did not take, so the pool holds the cheap criterion's
best set and ``R - 1`` runner-up sets: for each role in the chosen nine there are ``R``
alternatives, and the converged re-selection can replace any design that the cheap spectra
overrated. The pools are nested (the pool of ``R`` rounds begins with the pool of ``R - 1``).

The pool library (:func:`pool_library`) carries the re-solved spectra and the converged solver
settings only (no Jones matrices, no cheap spectra), so an encoder built on it cannot see the
cheap fidelity. Its rows are the pool's order; ``source_indices`` maps them back to the cheap
library's rows (the design's geometry is the same in both).
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from hyplex.models.encoder import library_responses, separability_selection
from hyplex.optics.atomic_io import atomic_write
from hyplex.optics.library import ResponseLibrary, SolverSettings

__all__ = [
    "MultiFidelityPool",
    "covering_wavelengths",
    "multifidelity_pool",
    "pool_library",
    "screen_pool",
    "solve_pool",
]

# solve(library, indices (B,), wavelengths_nm (L',), solver) -> T (B, L', 2) in [0, 1]
Solver = Callable[[ResponseLibrary, np.ndarray, np.ndarray, SolverSettings], np.ndarray]


def screen_pool(
    candidates,
    capture,
    cubes,
    labels,
    rounds: int,
    n_filters: int = 9,
    seed: int = 0,
    progress: bool = False,
) -> np.ndarray:
    """The screening step: ``rounds`` separability selections of ``n_filters`` distinct designs
    each, every round over the candidates that earlier rounds did not take.

    Parameters
    ----------
    candidates : ``(N, L)`` cheap transmissions in [0, 1] on the capture's grid.
    capture : :class:`~hyplex.models.encoder_capture.CameraCapture` (noise and exposure).
    cubes : ``(S, L, H, W)`` apparent reflectance of the training scenes (unitless).
    labels : ``(S, H, W)`` integer class ids.
    rounds : ``R >= 1``; ``R n_filters <= N``.
    n_filters : ``F``, designs per round.
    seed : pixels and sensor noise of every round (the same draw, so rounds differ only in
        the candidates left).
    progress : tqdm bar over the rounds.

    Returns
    -------
    ``(R F,)`` int64 rows of ``candidates``, round by round, each round in its greedy order.
    """
    candidates = np.asarray(candidates, dtype=np.float64)
    if candidates.ndim != 2:
        raise ValueError(f"candidates must be (N, L), got shape {candidates.shape}")
    rounds, n_filters = int(rounds), int(n_filters)
    if rounds < 1 or n_filters < 1 or rounds * n_filters > len(candidates):
        raise ValueError(
            f"rounds x n_filters must be in [1, {len(candidates)}] with both >= 1, got "
            f"rounds={rounds}, n_filters={n_filters}"
        )
    from tqdm.auto import tqdm

    remaining = np.arange(len(candidates))
    pool: list[np.ndarray] = []
    for _ in tqdm(range(rounds), desc="screening rounds", disable=not progress):
        chosen = separability_selection(
            candidates[remaining], capture, cubes, labels, n_filters, distinct=True, seed=seed
        )
        pool.append(remaining[chosen])
        remaining = np.setdiff1d(remaining, remaining[chosen], assume_unique=True)
    return np.concatenate(pool).astype(np.int64)


def covering_wavelengths(library_nm, grid_nm) -> np.ndarray:
    """Bool mask ``(K,)`` of the library wavelengths (nm) from the last one at or below the
    grid's first wavelength to the first one at or above its last: the fewest a re-solve needs
    for resampling onto ``grid_nm``. Raises ``ValueError`` if the library does not cover it."""
    library_nm = np.asarray(library_nm, dtype=np.float64)
    grid_nm = np.asarray(grid_nm, dtype=np.float64)
    if library_nm[0] > grid_nm.min() or library_nm[-1] < grid_nm.max():
        raise ValueError(
            f"the library's {library_nm[0]:g}-{library_nm[-1]:g} nm do not cover the training "
            f"grid's {grid_nm.min():g}-{grid_nm.max():g} nm"
        )
    low = np.flatnonzero(library_nm <= grid_nm.min())[-1]
    high = np.flatnonzero(library_nm >= grid_nm.max())[0]
    mask = np.zeros(library_nm.size, dtype=bool)
    mask[low : high + 1] = True
    return mask


def rcwa_solver(library, indices, wavelengths_nm, solver) -> np.ndarray:
    """The default expensive solver: :func:`hyplex.optics.library_spec.solve_designs` on the
    library's stack (its generation settings) at ``wavelengths_nm``; ``(B, L', 2)`` T."""
    from hyplex.optics.library_spec import LibrarySpec, solve_designs

    spec = replace(
        LibrarySpec.from_library(library), wavelengths_nm=tuple(float(w) for w in wavelengths_nm)
    )
    T, _ = solve_designs(  # noqa: N806 - physics notation
        spec, library.params_nm[indices], library.thickness_nm[indices], jones=False,
        solver=solver,
    )  # fmt: skip
    return np.asarray(T, dtype=np.float64)


def _cache_key(library: ResponseLibrary, wavelengths_nm, solver: SolverSettings) -> str:
    """Digest of everything a re-solved spectrum depends on: the stack, every design's
    geometry, the wavelengths and the solver settings."""
    digest = hashlib.sha256()
    stack = {
        "family": library.family, "period_nm": library.period_nm, "material": library.material,
        "substrate": library.substrate, "superstrate": library.superstrate,
        "solver": asdict(solver), "wavelengths_nm": [float(w) for w in wavelengths_nm],
    }  # fmt: skip
    digest.update(json.dumps(stack, sort_keys=True, default=list).encode())
    digest.update(np.ascontiguousarray(library.params_nm, dtype=np.float64).tobytes())
    digest.update(np.ascontiguousarray(library.thickness_nm, dtype=np.float64).tobytes())
    if library.density is not None:
        digest.update(np.ascontiguousarray(library.density).tobytes())
    return digest.hexdigest()[:20]


def _read_cached(folder: Path, key: str, index: int, shape) -> np.ndarray | None:
    path = folder / f"design_{index}.npz"
    if not path.exists():
        return None
    with np.load(path, allow_pickle=False) as stored:
        if str(stored["key"]) != key or int(stored["index"]) != index:
            return None
        spectra = np.asarray(stored["T"], dtype=np.float64)
    return spectra if spectra.shape == tuple(shape) else None


def _write_cached(folder: Path, key: str, index: int, spectra: np.ndarray) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, key=np.asarray(key), index=np.asarray(index), T=spectra)
    atomic_write(folder / f"design_{index}.npz", lambda handle: handle.write(buffer.getvalue()))


def solve_pool(
    library: ResponseLibrary,
    indices,
    solver: SolverSettings,
    wavelengths_nm,
    cache_dir=None,
    solve: Solver | None = None,
    progress: bool = False,
) -> tuple[np.ndarray, int]:
    """Re-solve designs of ``library`` at ``solver``'s fidelity, one design at a time.

    Parameters
    ----------
    library : the cheap library (its geometry and stack; its spectra are not read).
    indices : ``(B,)`` rows of ``library``.
    solver : the expensive settings (e.g. M = 8, 128 px, complex64).
    wavelengths_nm : ``(L',)`` wavelengths to solve at, nm.
    cache_dir : cache root; each design's spectra go to ``multifidelity_<key>/design_<i>.npz``
        (``key``: a digest of the library's geometry and stack, the wavelengths and
        ``solver``), written atomically as soon as the design is solved, so an interrupted run
        keeps what it finished, a rerun solves only what is missing, and runs on several
        seeds may share the folder at once. None: no cache.
    solve : the expensive solver (default :func:`rcwa_solver`); tests pass a fake.
    progress : tqdm bar over the designs.

    Returns
    -------
    ``(T (B, L', 2) float64 TE/TM transmittance, number of designs solved now)``.
    """
    indices = np.asarray(indices, dtype=np.int64).reshape(-1)
    if indices.size == 0 or indices.min() < 0 or indices.max() >= len(library):
        raise ValueError(f"indices must be rows of the library in [0, {len(library)}), got "
                         f"{indices.tolist()[:10]}")  # fmt: skip
    wavelengths_nm = np.asarray(wavelengths_nm, dtype=np.float64)
    solve = rcwa_solver if solve is None else solve
    key = _cache_key(library, wavelengths_nm, solver)
    folder = None if cache_dir is None else Path(cache_dir) / f"multifidelity_{key}"
    shape = (wavelengths_nm.size, 2)
    solved = {}
    for index in dict.fromkeys(int(i) for i in indices):
        cached = None if folder is None else _read_cached(folder, key, index, shape)
        if cached is not None:
            solved[index] = cached
    missing = [int(i) for i in dict.fromkeys(indices.tolist()) if int(i) not in solved]
    from tqdm.auto import tqdm

    solved_now = 0
    for index in tqdm(missing, desc=f"re-solving at M = {solver.harmonics[0]}",
                      disable=not progress):  # fmt: skip
        cached = None if folder is None else _read_cached(folder, key, index, shape)
        if cached is not None:  # solved meanwhile by a run on another seed
            solved[index] = cached
            continue
        spectra = np.asarray(solve(library, np.asarray([index]), wavelengths_nm, solver))
        if spectra.shape != (1, wavelengths_nm.size, 2) or not np.isfinite(spectra).all():
            raise ValueError(
                f"the solver returned {spectra.shape} (finite: {np.isfinite(spectra).all()}) "
                f"for design {index}, expected finite (1, {wavelengths_nm.size}, 2)"
            )
        solved[index] = spectra[0].astype(np.float64)
        solved_now += 1
        if folder is not None:
            _write_cached(folder, key, index, solved[index])
    return np.stack([solved[int(i)] for i in indices]), solved_now


def pool_library(library: ResponseLibrary, indices, T, solver, wavelengths_nm) -> ResponseLibrary:  # noqa: N803
    """The designs ``indices (B,)`` of ``library`` with re-solved spectra ``T (B, L', 2)`` at
    ``wavelengths_nm (L',)`` nm and ``solver``'s settings; no Jones matrices, nothing of the
    cheap spectra."""
    subset = library.subset(np.asarray(indices, dtype=np.int64))
    return replace(subset, wavelengths_nm=np.asarray(wavelengths_nm, dtype=np.float64),
                   T=np.asarray(T, dtype=np.float64), t=None, solver=solver,
                   done=np.ones(len(subset), dtype=bool))  # fmt: skip


@dataclass(frozen=True)
class MultiFidelityPool:
    """The outcome of screening and re-solving.

    Attributes
    ----------
    library : the pool library (converged spectra only), rows in screening order.
    source_indices : ``(R F,)`` rows of the cheap library, one per pool row.
    rounds : ``R``, screening rounds.
    solver : the expensive settings.
    cheap_rms : rms difference in T (TE and TM) between the cheap and the re-solved spectra
        of the pool, at the re-solved wavelengths.
    solved_now : designs solved by this call (the rest came from the cache).
    seconds : wall time of screening and re-solving, s.
    """

    library: ResponseLibrary
    source_indices: np.ndarray
    rounds: int
    solver: SolverSettings
    cheap_rms: float
    solved_now: int
    seconds: float

    def summary(self) -> dict:
        """JSON-ready record (indices, settings, figures)."""
        return {
            "rounds": self.rounds,
            "pool_size": int(len(self.source_indices)),
            "source_library_indices": self.source_indices.tolist(),
            "solver": asdict(self.solver),
            "wavelengths_nm": self.library.wavelengths_nm.tolist(),
            "cheap_rms_T": round(self.cheap_rms, 4),
            "solved_now": self.solved_now,
            "seconds": round(self.seconds, 1),
        }


def multifidelity_pool(
    library: ResponseLibrary,
    capture,
    cubes,
    labels,
    rounds: int,
    solver: SolverSettings,
    n_filters: int = 9,
    seed: int = 0,
    cache_dir=None,
    solve: Solver | None = None,
    progress: bool = False,
) -> MultiFidelityPool:
    """Screen ``library`` on its own (cheap) spectra with :func:`screen_pool`, re-solve the
    pool at ``solver`` with :func:`solve_pool` at the library wavelengths that cover the
    capture's grid, and return the converged pool library. The final choice is left to the
    caller: a :class:`~hyplex.models.encoder.LibrarySelectionEncoder` on ``result.library``
    with ``selection = "separability"`` chooses on the converged spectra only.

    ``cubes (S, L, H, W)``, ``labels (S, H, W)``: the training scenes on the capture's grid
    (L bands, nm); ``seed`` as in :func:`screen_pool`; ``cache_dir``, ``solve``: as in
    :func:`solve_pool`.
    """
    began = time.perf_counter()
    candidates, rows = library_responses(library, capture.wavelengths_nm)
    pool = rows[screen_pool(candidates, capture, cubes, labels, rounds, n_filters, seed,
                            progress)]  # fmt: skip
    keep = covering_wavelengths(library.wavelengths_nm, capture.wavelengths_nm)
    wavelengths = library.wavelengths_nm[keep]
    T, solved_now = solve_pool(library, pool, solver, wavelengths, cache_dir, solve, progress)  # noqa: N806
    cheap_rms = float(np.sqrt(np.mean((library.T[pool][:, keep] - T) ** 2)))
    return MultiFidelityPool(
        pool_library(library, pool, T, solver, wavelengths), pool, int(rounds), solver,
        cheap_rms, solved_now, time.perf_counter() - began,
    )  # fmt: skip

"""Convergence probes: the converged Fourier order of a library's stack, and the smallest order
whose spectra lie within a target of it.

An RCWA spectrum changes with the number of Fourier orders kept (``M``: orders ``-M..M``
along x and y, ``(2M+1)^2`` harmonics) until the truncated series has converged; at low order
it can be far from the answer (a c-Si rectangle at M = 1 is off by up to 0.99 in T, see the
README). A probe measures this on a few designs of the library's own design list.

Definitions (``T`` ``(k, L, 2)``: TE/TM transmittance of the ``k`` probe designs at the
library's ``L`` wavelengths; means run over designs, wavelengths and polarisations)::

    rms(A, B)     = sqrt(mean (A - B)^2)          max|dT|(A, B) = max |A - B|

    ladder        T(M) for M = m0, m0 + 1, ..., solved with the reference settings
                  (``reference``: by default the normal-vector factorisation on a 128 x 128
                  grid, whose grey edge pixels converge with the grid, see below)
    converged     the ladder stops at the first step whose change is within the tolerance,
                  rms(T(M_c - 1), T(M_c)) <= tolerance; M_c, the higher order of that pair,
                  is the converged order, T(M_c) the reference, and (factorisation, M_c,
                  grid, precision) is stored as its settings
    chosen        for a target e, the smallest M whose spectra with the *library's* settings
                  (its factorisation, grid, precision) satisfy rms(T_lib(M), T(M_c)) <= e

The reference is uncertain by about its last step (<= tolerance; less where the ladder
converges geometrically), so a target should be a few times the tolerance (the defaults are
0.01 and 0.005); a target below the tolerance is refused. Taking the higher order of the pair
as the reference also means that a library built with the reference's own settings one order
below it is measured against something it is not (its error is that last step). A
probe that does not converge below ``max_order``, or a target no candidate meets, raises
:class:`ConvergenceError` with the table measured so far.

Why the vector rule and a fine grid for the reference. Li's rule (Li, JOSA A 14, 2758 (1997))
applies the inverse rule to every grey edge pixel in both directions, so the rendered
anti-aliased edge of a rectangle that does not sit on the pixel grid is averaged wrongly
(harmonic mean for a field tangential to the edge). The error is first order in the pixel
size and does not shrink with M: measured on three c-Si rectangles from the quick library's
list, M = 5, Li against itself on a 256 px grid: RMS 0.127 / 0.059 / 0.022 on 32 / 64 /
128 px, while the normal-vector rule (:mod:`hyplex.optics.factorization`, the anisotropic
average of Kottke et al., PRE 77, 036611 (2008)) moved 0.028 / 0.007 / 0.002. On a
pixel-aligned rectangle (no grey pixels) the two rules agree to 0.008 at M = 6.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace

import numpy as np

from .library import LibraryError, SolverSettings
from .library_records import Record
from .library_spec import LibrarySpec, check_solve_memory, sample_designs, solve_designs

__all__ = [
    "ConvergenceError",
    "ConvergenceProbe",
    "DEFAULT_REFERENCE",
    "DEFAULT_TOLERANCE",
    "probe_convergence",
    "probe_designs",
    "rms",
]

#: The reference formulation: the normal-vector rule on a fine grid (module docstring).
DEFAULT_REFERENCE = SolverSettings(harmonics=(1, 1), factorization="vector", grid=(128, 128))
#: Largest rms change from M_c - 1 to M_c that counts as converged.
DEFAULT_TOLERANCE = 0.005


class ConvergenceError(LibraryError):
    """No order converged below ``max_order``, or no order meets the target accuracy."""


def rms(a, b) -> float:
    """Root-mean-square difference of two spectra arrays of equal shape."""
    diff = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    return float(np.sqrt(np.mean(diff**2)))


def _max_abs(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


@dataclass
class ConvergenceProbe:
    """The outcome of :func:`probe_convergence` (stored as the ``convergence_probe`` record).

    Attributes
    ----------
    indices : ``(k,)`` probe designs, rows of the spec's design list.
    reference : the reference settings, ``harmonics`` = ``(M_c, M_c)`` once converged.
    tolerance : the rms change per order that counts as converged.
    ladder : ``[{"M", "seconds_per_design", "change_to_next", "max_change_to_next"}]``; the
        last rung is the converged order (``change_to_next`` None).
    ladder_T : ``(n_rungs, k, L, 2)`` the ladder's spectra.
    converged_order : ``M_c``, or None if the ladder never converged.
    candidates : ``[{"M", "rms", "max_abs_dT", "seconds_per_design"}]`` with the library's
        settings against the reference (empty without a target).
    library_solver : the library's settings the candidates used (harmonics = the choice).
    target, chosen_order : the target rms and the smallest order meeting it (or None).
    """

    indices: np.ndarray
    reference: SolverSettings
    tolerance: float
    ladder: list = field(default_factory=list)
    ladder_T: np.ndarray | None = None  # noqa: N815
    converged_order: int | None = None
    candidates: list = field(default_factory=list)
    library_solver: SolverSettings | None = None
    target: float | None = None
    chosen_order: int | None = None

    @property
    def reference_T(self) -> np.ndarray:  # noqa: N802
        """``(k, L, 2)`` spectra at the converged order."""
        if self.converged_order is None:
            raise ConvergenceError("the probe did not converge; it has no reference")
        rung = [r["M"] for r in self.ladder].index(self.converged_order)
        return self.ladder_T[rung]

    def table(self) -> str:
        """A plain-text table of the ladder and the candidates."""
        lines = [f"reference ladder ({self.reference.factorization}, grid {self.reference.grid}):"]
        for r in self.ladder:
            change = r["change_to_next"]
            lines.append(
                f"  M={r['M']:2d}  rms change to M+1 "
                + ("   -   " if change is None else f"{change:.4f}")
                + f"  {r['seconds_per_design']:.1f} s/design"
            )
        if self.candidates:
            lib = self.library_solver
            lines.append(f"candidates ({lib.factorization}, grid {lib.grid}):")
            for c in self.candidates:
                lines.append(
                    f"  M={c['M']:2d}  rms {c['rms']:.4f}  max|dT| {c['max_abs_dT']:.3f}  "
                    f"{c['seconds_per_design']:.2f} s/design"
                )
        return "\n".join(lines)

    def summary(self) -> dict:
        """JSON-ready description (without the spectra)."""
        return {
            "indices": [int(i) for i in self.indices],
            "reference": self.reference.to_dict(),
            "tolerance": self.tolerance,
            "ladder": self.ladder,
            "converged_order": self.converged_order,
            "candidates": self.candidates,
            "library_solver": None
            if self.library_solver is None
            else self.library_solver.to_dict(),
            "target": self.target,
            "chosen_order": self.chosen_order,
        }

    def to_record(self) -> Record:
        arrays = {"indices": np.asarray(self.indices, dtype=np.int64)}
        if self.ladder_T is not None:
            arrays["ladder_T"] = self.ladder_T
        return Record(self.summary(), arrays)

    @classmethod
    def from_record(cls, record: Record) -> ConvergenceProbe:
        s = record.summary
        return cls(
            indices=np.asarray(record.arrays.get("indices", s["indices"]), dtype=np.int64),
            reference=SolverSettings.from_json(s["reference"]),
            tolerance=float(s["tolerance"]),
            ladder=list(s["ladder"]),
            ladder_T=record.arrays.get("ladder_T"),
            converged_order=s["converged_order"],
            candidates=list(s["candidates"]),
            library_solver=(
                None
                if s["library_solver"] is None
                else SolverSettings.from_json(s["library_solver"])
            ),
            target=s["target"],
            chosen_order=s["chosen_order"],
        )


def probe_designs(spec: LibrarySpec, count: int, seed: int = 0) -> np.ndarray:
    """``count`` distinct design indices of ``spec``'s list, drawn with ``seed``, sorted."""
    count = int(count)
    if not 1 <= count <= spec.count:
        raise ValueError(f"probe designs must number 1..{spec.count} (the library), got {count}")
    return np.sort(np.random.default_rng(seed).choice(spec.count, size=count, replace=False))


def _timed_solve(spec, params, thickness, solver) -> tuple[np.ndarray, float]:
    """Spectra ``(k, L, 2)`` one design per RCWA call (bounded memory), and s per design."""
    check_solve_memory(spec, solver, batch=1)
    began = time.perf_counter()
    spectra = [
        solve_designs(spec, params[i : i + 1], thickness[i : i + 1], jones=False, solver=solver)[0]
        for i in range(len(thickness))
    ]
    return np.concatenate(spectra), (time.perf_counter() - began) / max(1, len(thickness))


def probe_convergence(
    spec: LibrarySpec,
    designs: int | np.ndarray = 3,
    seed: int = 0,
    reference: SolverSettings = DEFAULT_REFERENCE,
    tolerance: float = DEFAULT_TOLERANCE,
    start_order: int = 2,
    max_order: int = 12,
    target: float | None = None,
    log=None,
) -> ConvergenceProbe:
    """Climb the order ladder on a few designs of ``spec`` until it converges; optionally
    choose the smallest order that meets ``target`` with ``spec.solver``'s other settings.

    Parameters
    ----------
    spec : the library (stack, wavelengths, design list); its ``solver`` gives the candidates'
        factorisation, grid and precision (its harmonics are ignored).
    designs : number of probe designs (drawn with ``seed``) or an index array into the list.
    reference : factorisation, grid and precision of the ladder (harmonics are ignored).
    tolerance : rms change to the next order, in T, below which the ladder has converged.
    start_order, max_order : the ladder's first and last M (the cost grows as ``M^6``).
    target : rms in T the chosen order must reach against the reference; None: no choice.
    log : ``log(str)`` for progress lines (default: silent).

    Returns
    -------
    ConvergenceProbe with ``converged_order`` and, for a target, ``chosen_order``.

    Raises
    ------
    ConvergenceError
        No rung up to ``max_order`` changed by <= ``tolerance``, or no candidate up to
        ``max_order`` meets ``target`` (the message carries the table).
    """
    if not (math.isfinite(tolerance) and tolerance > 0):
        raise ValueError(f"tolerance must be a positive rms in T, got {tolerance}")
    if target is not None and not (math.isfinite(target) and target >= tolerance):
        raise ValueError(
            f"target must be an rms in T no smaller than the tolerance {tolerance} (the "
            f"reference is uncertain by about that much), got {target}"
        )
    if not 0 <= int(start_order) < int(max_order):
        raise ValueError(f"need 0 <= start_order < max_order, got {start_order}, {max_order}")
    log = log or (lambda line: None)
    indices = (
        probe_designs(spec, designs, seed)
        if np.ndim(designs) == 0
        else np.asarray(designs, dtype=np.int64)
    )
    params, thickness = sample_designs(spec, int(indices.max()) + 1)
    params, thickness = params[indices], thickness[indices]
    probe = ProbeState(spec, params, thickness, log)
    result = ConvergenceProbe(indices=indices, reference=reference, tolerance=float(tolerance))

    spectra, order = [], int(start_order)
    spectra.append(probe.solve(replace(reference, harmonics=(order, order)), "reference"))
    result.ladder.append(probe.rung(order))
    while True:
        if order + 1 > max_order:
            result.ladder_T = np.stack(spectra)
            raise ConvergenceError(
                f"the probe did not converge to rms change <= {tolerance} by M={max_order} on "
                f"{len(indices)} designs; raise max_order or the tolerance\n{result.table()}"
            )
        spectra.append(
            probe.solve(replace(reference, harmonics=(order + 1, order + 1)), "reference")
        )
        change = rms(spectra[-2], spectra[-1])
        result.ladder[-1].update(
            change_to_next=change, max_change_to_next=_max_abs(spectra[-2], spectra[-1])
        )
        result.ladder.append(probe.rung(order + 1))
        log(f"M={order} -> {order + 1}: rms change {change:.4f}")
        order += 1
        if change <= tolerance:
            result.converged_order = order
            break
    result.ladder_T = np.stack(spectra)
    result.reference = replace(reference, harmonics=(result.converged_order,) * 2)
    if target is None:
        return result

    result.target, result.library_solver = float(target), spec.solver
    truth = result.reference_T
    same = replace(spec.solver, harmonics=(0, 0)) == replace(reference, harmonics=(0, 0))
    # with the reference's own settings M_c - 1 is within the tolerance (<= target) of M_c
    for m in range(1, (result.converged_order if same else int(max_order)) + 1):
        settings = replace(spec.solver, harmonics=(m, m))
        rungs = [r["M"] for r in result.ladder]
        if same and m in rungs:  # the ladder solved it already
            T, seconds = (
                result.ladder_T[rungs.index(m)],
                result.ladder[rungs.index(m)]["seconds_per_design"],
            )  # noqa: N806
        else:
            T = probe.solve(settings, "candidate")  # noqa: N806
            seconds = probe.last_seconds
        error = rms(T, truth)
        result.candidates.append(
            {"M": m, "rms": error, "max_abs_dT": _max_abs(T, truth), "seconds_per_design": seconds}
        )
        log(f"candidate M={m}: rms {error:.4f} against the reference M={result.converged_order}")
        if error <= target:
            result.chosen_order = m
            result.library_solver = settings
            return result
    raise ConvergenceError(
        f"no order up to M={max_order} with {spec.solver.factorization} on a "
        f"{spec.solver.grid} grid reaches rms {target} against the reference "
        f"(M={result.converged_order}); try the vector factorisation, a finer grid or a larger "
        f"max_order\n{result.table()}"
    )


class ProbeState:
    """The probe designs and the last solve's time (internal helper of the probe)."""

    def __init__(self, spec, params, thickness, log):
        self.spec, self.params, self.thickness, self.log = spec, params, thickness, log
        self.last_seconds = float("nan")

    def solve(self, settings: SolverSettings, what: str) -> np.ndarray:
        T, self.last_seconds = _timed_solve(self.spec, self.params, self.thickness, settings)  # noqa: N806
        self.log(
            f"{what} M={settings.harmonics[0]} ({settings.factorization}, "
            f"grid {settings.grid[0]}): {self.last_seconds:.2f} s/design"
        )
        return T

    def rung(self, order: int) -> dict:
        return {
            "M": order,
            "seconds_per_design": self.last_seconds,
            "change_to_next": None,
            "max_change_to_next": None,
        }

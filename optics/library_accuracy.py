"""How accurate a response library is: its spectra against spectra re-solved at the converged
order on a seeded random sample of its designs.

The estimate (stored as the library's ``accuracy`` record, :mod:`hyplex.optics.library_records`)::

    sample      k = max(minimum, ceil(fraction * N_done)) finished designs, drawn with ``seed``
    reference   their spectra at the converged order M_c of the library's stack, with the
                reference settings (default: normal-vector rule, 128 px grid), M_c from a
                convergence probe (:mod:`hyplex.optics.library_probe`: the first order whose
                rms change to M_c + 1 is <= tolerance), reused from the file when it has one
    error       rms = sqrt(mean (T_library - T_reference)^2) over the sample's designs,
                wavelengths and TE/TM; max|dT| = max |T_library - T_reference|; both per
                design too (``rms_per_design``, ``max_abs_per_design``)

The reference is itself uncertain by about the tolerance (its last change), so an estimate
below the tolerance means "as converged as the reference can tell".

Resuming and atomicity. Reference spectra are committed one design at a time to a sidecar,
``LIB.accuracy-partial.npz`` (rewritten atomically, keyed by the sample and the reference
settings); a killed run resumes from it. The record is added to the library by
:func:`hyplex.optics.library.update_records` (a copy renamed over the file), so the library
is never half-updated; the sidecar is removed afterwards. A version 1 library, or one never
estimated, has no record: :func:`read_accuracy` returns None, "accuracy unknown".
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from .atomic_io import atomic_write
from .library import (
    LibraryError,
    SolverSettings,
    read_library,
    read_metadata,
    read_records,
    update_records,
)
from .library_probe import (
    DEFAULT_REFERENCE,
    DEFAULT_TOLERANCE,
    ConvergenceProbe,
    probe_convergence,
)
from .library_records import Record
from .library_spec import LibrarySpec, check_solve_memory, solve_designs

__all__ = ["AccuracyEstimate", "accuracy_sample", "estimate_accuracy", "read_accuracy"]


@dataclass
class AccuracyEstimate:
    """A library's error against converged spectra (module docstring).

    Attributes
    ----------
    indices : ``(k,)`` sampled designs (rows of the library).
    T_reference : ``(k, L, 2)`` their spectra at the reference settings.
    rms_per_design, max_abs_per_design : ``(k,)`` errors of the library's spectra, in T.
    reference : settings of the reference (harmonics = the converged order).
    library_solver : the library's own settings.
    tolerance : the probe's convergence tolerance (the reference's own uncertainty).
    fraction, minimum, seed : how the sample was drawn.
    seconds_per_design : reference solve time (NaN where all came from the probe).
    computed_utc : when the estimate was finished.
    """

    indices: np.ndarray
    T_reference: np.ndarray  # noqa: N815
    rms_per_design: np.ndarray
    max_abs_per_design: np.ndarray
    reference: SolverSettings
    library_solver: SolverSettings
    tolerance: float
    fraction: float
    minimum: int
    seed: int
    seconds_per_design: float = float("nan")
    computed_utc: str = ""
    reference_order_source: str = "probe"  # or "given" (estimate_accuracy(reference_order=))

    @property
    def rms(self) -> float:
        """rms error over the whole sample (every design, wavelength and polarisation)."""
        return float(np.sqrt(np.mean(self.rms_per_design**2)))

    @property
    def max_abs_dT(self) -> float:  # noqa: N802
        return float(np.max(self.max_abs_per_design))

    def summary(self) -> dict:
        return {
            "rms": self.rms,
            "max_abs_dT": self.max_abs_dT,
            "designs": int(self.indices.size),
            "worst_design_rms": float(np.max(self.rms_per_design)),
            "reference": self.reference.to_dict(),
            "converged_order": int(self.reference.harmonics[0]),
            "library_solver": self.library_solver.to_dict(),
            "tolerance": self.tolerance,
            "fraction": self.fraction,
            "minimum": self.minimum,
            "seed": self.seed,
            "seconds_per_design": (
                None if math.isnan(self.seconds_per_design) else self.seconds_per_design
            ),
            "computed_utc": self.computed_utc,
            "reference_order_source": self.reference_order_source,
        }

    def to_record(self) -> Record:
        arrays = {
            "indices": np.asarray(self.indices, dtype=np.int64),
            "T_reference": self.T_reference,
            "rms_per_design": self.rms_per_design,
            "max_abs_per_design": self.max_abs_per_design,
        }
        return Record(self.summary(), arrays)

    @classmethod
    def from_record(cls, record: Record) -> AccuracyEstimate:
        s, a = record.summary, record.arrays
        return cls(
            indices=a["indices"],
            T_reference=a["T_reference"],
            rms_per_design=a["rms_per_design"],
            max_abs_per_design=a["max_abs_per_design"],
            reference=SolverSettings.from_json(s["reference"]),
            library_solver=SolverSettings.from_json(s["library_solver"]),
            tolerance=float(s["tolerance"]),
            fraction=float(s["fraction"]),
            minimum=int(s["minimum"]),
            seed=int(s["seed"]),
            seconds_per_design=float("nan")
            if s["seconds_per_design"] is None
            else s["seconds_per_design"],
            computed_utc=s["computed_utc"],
            reference_order_source=s.get("reference_order_source", "probe"),
        )


def read_accuracy(path) -> AccuracyEstimate | None:
    """The library's stored estimate, or None where it has none ("accuracy unknown")."""
    record = read_records(path, locking=False)["accuracy"]
    return None if record is None else AccuracyEstimate.from_record(record)


def accuracy_sample(done_indices, fraction: float, minimum: int, seed: int) -> np.ndarray:
    """Sorted ``max(minimum, ceil(fraction * n))`` of ``done_indices`` (all if fewer), seeded."""
    done_indices = np.asarray(done_indices, dtype=np.int64)
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1] (share of the designs), got {fraction}")
    if int(minimum) < 1:
        raise ValueError(f"minimum must be >= 1 design, got {minimum}")
    if done_indices.size == 0:
        raise LibraryError("the library has no finished designs to estimate its accuracy on")
    k = min(done_indices.size, max(int(minimum), math.ceil(fraction * done_indices.size)))
    pick = np.random.default_rng(seed).choice(done_indices.size, size=k, replace=False)
    return np.sort(done_indices[pick])


def _reference_order(path, spec, reference, tolerance, probe_designs, max_order, seed, log):
    """(probe, whether it is new) from the file's probe when it fits, else a new probe."""
    stored = read_records(path, locking=False)["convergence_probe"]
    if stored is not None:
        probe = ConvergenceProbe.from_record(stored)
        fits = probe.converged_order is not None and probe.tolerance <= tolerance
        fits = fits and replace(probe.reference, harmonics=(0, 0)) == replace(
            reference, harmonics=(0, 0)
        )
        if fits:
            log(f"reference order M={probe.converged_order} from the file's convergence probe")
            return probe, False
    log(f"convergence probe on {probe_designs} designs (tolerance {tolerance}) ...")
    probe = probe_convergence(
        spec,
        designs=probe_designs,
        seed=seed,
        reference=reference,
        tolerance=tolerance,
        max_order=max_order,
        log=log,
    )
    return probe, True


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".accuracy-partial.npz")


def estimate_accuracy(
    path,
    fraction: float = 0.01,
    minimum: int = 5,
    seed: int = 0,
    reference: SolverSettings = DEFAULT_REFERENCE,
    tolerance: float = DEFAULT_TOLERANCE,
    probe_designs: int = 3,
    max_order: int = 12,
    reference_order: int | None = None,
    log=None,
) -> AccuracyEstimate:
    """(Re)compute a library's accuracy estimate and store it in the file (module docstring).

    Parameters
    ----------
    path : a finished (or partly finished) library built by :func:`build_library` (its
        generation record gives the stack); the sample is drawn from its finished designs.
    fraction, minimum, seed : the sample (``max(minimum, ceil(fraction * N_done))`` designs).
    reference : factorisation, grid and precision of the reference (harmonics ignored).
    tolerance, probe_designs, max_order : the convergence probe, when the file has no probe
        with this reference and a tolerance at least as tight.
    reference_order : skip the probe and take this converged order (e.g. the one a probe of
        another library of the same stack found); recorded as given, not probed.
    log : ``log(str)`` for progress lines.

    Returns the estimate, also stored as the file's ``accuracy`` record (atomically; a file
    without a ``convergence_probe`` record gets the probe too). Resumes a killed run.
    """
    path = Path(path)
    log = log or (lambda line: None)
    meta = read_metadata(path)
    try:
        spec = LibrarySpec.from_library(meta)
    except LibraryError as error:
        raise LibraryError(f"{path}: cannot re-solve its designs: {error}") from None
    library = read_library(path, nonfinite="drop")
    indices = accuracy_sample(np.flatnonzero(library.done), fraction, minimum, seed)
    if reference_order is None:
        probe, new_probe = _reference_order(
            path, spec, reference, tolerance, probe_designs, max_order, seed, log
        )
    else:  # an order given: no probe, no probe spectra to reuse
        if int(reference_order) < 1:
            raise ValueError(f"reference_order must be >= 1, got {reference_order}")
        order = (int(reference_order),) * 2
        probe = ConvergenceProbe(
            np.zeros(0, np.int64), replace(reference, harmonics=order), tolerance
        )
        new_probe = False
    settings = probe.reference
    n_wl = library.wavelengths_nm.size
    # the sample's designs and stack are part of the key: a partial file left beside a library
    # that was rebuilt with another seed or stack must not lend its spectra to other designs
    designs = np.column_stack([library.params_nm[indices], library.thickness_nm[indices]])
    key = json.dumps(
        {
            "indices": indices.tolist(),
            "reference": settings.to_dict(),
            "designs": hashlib.sha256(np.ascontiguousarray(designs, np.float64)).hexdigest(),
            "stack": [spec.material, spec.substrate, spec.superstrate, spec.period_nm],
            "wavelengths_nm": library.wavelengths_nm.tolist(),
        },
        default=str,
    )
    T_ref = np.full((indices.size, n_wl, 2), np.nan)  # noqa: N806
    sidecar = _sidecar(path)
    if sidecar.exists():
        with np.load(sidecar) as saved:
            if str(saved["key"]) == key:
                T_ref = saved["T_reference"].copy()  # noqa: N806
                log(f"resuming: {int(np.isfinite(T_ref[:, 0, 0]).sum())} designs from {sidecar}")
    for row, index in enumerate(indices):  # the probe solved some of them already
        if probe.ladder_T is None:  # an order given, nothing solved yet
            break
        hit = np.flatnonzero(probe.indices == index)
        if hit.size and not np.isfinite(T_ref[row]).all():
            T_ref[row] = probe.reference_T[hit[0]]
    check_solve_memory(spec, settings, batch=1)
    solved, began = 0, time.perf_counter()
    for row, index in enumerate(indices):
        if np.isfinite(T_ref[row]).all():
            continue
        T_ref[row] = solve_designs(
            spec,
            library.params_nm[index : index + 1],
            library.thickness_nm[index : index + 1],
            jones=False,
            solver=settings,
        )[0][0]
        solved += 1
        atomic_write(sidecar, lambda handle: np.savez(handle, key=np.array(key), T_reference=T_ref))
        log(f"reference {solved}: design {index} ({time.perf_counter() - began:.0f} s)")
    diff = library.T[indices] - T_ref
    estimate = AccuracyEstimate(
        indices=indices,
        T_reference=T_ref,
        rms_per_design=np.sqrt(np.mean(diff**2, axis=(1, 2))),
        max_abs_per_design=np.max(np.abs(diff), axis=(1, 2)),
        reference=settings,
        library_solver=library.solver,
        tolerance=probe.tolerance,
        fraction=float(fraction),
        minimum=int(minimum),
        seed=int(seed),
        seconds_per_design=(time.perf_counter() - began) / solved if solved else float("nan"),
        computed_utc=datetime.now(UTC).isoformat(timespec="seconds"),
        reference_order_source="probe" if reference_order is None else "given",
    )
    records = {"accuracy": estimate.to_record()}
    if new_probe and read_records(path, locking=False)["convergence_probe"] is None:
        records["convergence_probe"] = probe.to_record()
    update_records(path, records)
    sidecar.unlink(missing_ok=True)
    return estimate

"""How far a co-design's filters are from the spectra they were designed with.

A co-design picks library designs (``design.npz``: ``library_indices``, ``params_nm``,
``thickness_nm``) by their library spectra. This re-solves those designs with converged RCWA
settings (by default the reference of the shipped quick library's convergence probe: the
normal-vector rule at its converged order on a 128 px grid, complex128) and reports, per
filter:

    rms, max|dT|        library T against the re-solved T, over the library's wavelengths
                        and TE/TM (what the library claimed)
    response rms, max   the same for the unpolarised response resampled onto the bundle's
                        training grid (what the encoder trained with,
                        :func:`hyplex.models.encoder.library_responses`)

Reproduce (the last stdout line is one JSON object; a table goes to stderr)::

    .venv/bin/python benchmarks/designed_vs_converged.py --bundle out/issue21/design_old/bundle \\
        --library out/issue21/design_old_library.h5
"""
# ruff: noqa: E402  (BLAS thread settings must precede the imports that read them)

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from hyplex.models.codesign_library import SHIPPED_LIBRARY
from hyplex.models.encoder import resample_matrix
from hyplex.optics.library import SolverSettings, read_library, read_records
from hyplex.optics.library_probe import ConvergenceProbe
from hyplex.optics.library_spec import LibrarySpec, solve_designs
from hyplex.optics.parallel import use_safe_threading


def default_reference() -> SolverSettings | None:
    """The shipped quick library's converged reference settings, if it records a probe."""
    if not SHIPPED_LIBRARY.exists():
        return None
    record = read_records(SHIPPED_LIBRARY)["convergence_probe"]
    return None if record is None else ConvergenceProbe.from_record(record).reference


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, required=True, help="design bundle folder")
    parser.add_argument("--library", type=Path, required=True, help="the library it chose from")
    parser.add_argument("--order", type=int, help="reference M (default: the shipped probe's)")
    parser.add_argument("--grid", type=int, default=128)
    parser.add_argument("--factorization", default="vector")
    args = parser.parse_args(argv)
    use_safe_threading()
    reference = default_reference()
    if args.order is not None or reference is None:
        reference = SolverSettings(
            harmonics=(args.order or 10,) * 2,
            factorization=args.factorization,
            grid=(args.grid, args.grid),
        )
    library = read_library(args.library)
    spec = replace(LibrarySpec.from_library(library), solver=reference)
    with np.load(args.bundle / "design.npz", allow_pickle=False) as design:
        indices = design["library_indices"]
        training_nm = design["wavelengths_nm"]
    params, thickness = library.params_nm[indices], library.thickness_nm[indices]
    began = time.perf_counter()
    converged = np.concatenate(
        [
            solve_designs(spec, params[i : i + 1], thickness[i : i + 1], jones=False)[0]
            for i in range(len(indices))
        ]  # fmt: skip
    )
    seconds = time.perf_counter() - began
    designed = library.T[indices]
    resample = resample_matrix(library.wavelengths_nm, training_nm)
    response_designed = np.clip(designed.mean(-1) @ resample, 0, 1)
    response_converged = np.clip(converged.mean(-1) @ resample, 0, 1)
    rows = []
    for f, index in enumerate(indices):
        diff = designed[f] - converged[f]
        response = response_designed[f] - response_converged[f]
        rows.append(
            {
                "filter": f,
                "library_index": int(index),
                "params_nm": [round(float(v), 1) for v in params[f]],
                "thickness_nm": round(float(thickness[f]), 1),
                "rms": float(np.sqrt(np.mean(diff**2))),
                "max_abs_dT": float(np.abs(diff).max()),
                "response_rms": float(np.sqrt(np.mean(response**2))),
                "response_max_abs": float(np.abs(response).max()),
            }
        )
        print(
            f"filter {f}: design {index:3d} ({rows[-1]['params_nm']}, t {rows[-1]['thickness_nm']}"
            f" nm): rms {rows[-1]['rms']:.3f} max {rows[-1]['max_abs_dT']:.3f}; response rms "
            f"{rows[-1]['response_rms']:.3f} max {rows[-1]['response_max_abs']:.3f}",
            file=sys.stderr,
        )
    all_diff = designed - converged
    result = {
        "benchmark": "designed_vs_converged",
        "bundle": str(args.bundle),
        "library": str(args.library),
        "library_solver": library.solver.to_dict(),
        "reference": reference.to_dict(),
        "filters": rows,
        "rms": float(np.sqrt(np.mean(all_diff**2))),
        "max_abs_dT": float(np.abs(all_diff).max()),
        "response_rms": float(np.sqrt(np.mean((response_designed - response_converged) ** 2))),
        "seconds_per_design": seconds / len(indices),
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()

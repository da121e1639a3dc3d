"""`benchmarks/fidelity.py --quick` as a test: the 1-D gratings (a-Si, c-Si; 0 and 30 degrees;
TE and TM), the film and one 3-D cell (the cylinder), each at two coarse Meep resolutions,
Richardson-extrapolated with an assumed order and compared with the RCWA / TMM. The bounds are
loose because two coarse rungs are far from converged; the full table (README) holds the real
numbers. A few minutes on 2 cores."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "fidelity.py"
GRATINGS = {
    f"grating_{m}_{a}deg_{p}" for m in ("aSi", "cSi") for a in (0, 30) for p in ("TE", "TM")
}


def test_fidelity_quick(tmp_path):
    env = {**os.environ, "MPLBACKEND": "Agg", "OPENBLAS_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--cache-dir", str(tmp_path / "cache")]
        + ["--out", str(tmp_path / "fidelity.png")]
        + ["--save-ladders", str(tmp_path / "ladders.npz")],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    rows = {"film", "cylinder"} | GRATINGS
    for key in (
        "rms_dT_vs_extrapolated",
        "meep_convergence_order",
        "meep_extrapolation_error",
        "error_exceeds_agreement",
        "rms_dT",
        "max_abs_dT",
        "harmonics_M",
        "meep_resolution_px_per_um",
    ):
        assert set(summary[key]) == rows, key
    rms = summary["rms_dT_vs_extrapolated"]
    error = summary["meep_extrapolation_error"]
    assert summary["max_rms_dT_vs_extrapolated"] == max(rms.values())
    assert summary["goal_met"] == (max(rms.values()) < 0.02)
    # Two rungs: the order is assumed, never fitted, and the output says so.
    assert not any(summary["meep_order_fitted"].values())
    # Every row whose extrapolation error exceeds its agreement is flagged and said in words.
    for name in rows:
        flagged = summary["error_exceeds_agreement"][name]
        assert flagged == (error[name] > rms[name]), name
        said = any(
            v.startswith(f"{name}: ") and "larger than the agreement" in v
            for v in summary["verdicts"]
        )
        assert said == flagged, name
    # Known answers: the film against the exact TMM, the lossy a-Si gratings at normal incidence
    # (smooth spectra) against the RCWA (Li, exact in 1-D); measured 0.0005 and 0.003-0.016.
    assert rms["film"] < 0.005
    assert rms["grating_aSi_0deg_TE"] < 0.02 and rms["grating_aSi_0deg_TM"] < 0.05
    assert (tmp_path / "fidelity.png").stat().st_size > 10_000
    assert (tmp_path / "ladders.npz").stat().st_size > 1_000

"""`benchmarks/fidelity.py --quick` as a test: RCWA vs Meep FDTD on four silicon structures at
coarse settings (< 2 min). The bound is loose because 24-32 px/um and M = 4 are far from
converged; the full table (README) holds the real numbers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "fidelity.py"


def test_fidelity_quick(tmp_path):
    env = {**os.environ, "MPLBACKEND": "Agg", "OPENBLAS_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--cache-dir", str(tmp_path / "cache")]
        + ["--out", str(tmp_path / "fidelity.png")],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(summary["rms_dT"]) == {"film", "square", "cylinder", "cross"}
    # The film has an exact answer (TMM): Meep at 200 px/um is within its discretisation error.
    assert summary["rms_dT"]["film"] < 0.01
    assert summary["max_rms_dT"] < 0.25  # measured 0.16 (square) at 32 px/um and M = 4
    assert (tmp_path / "fidelity.png").stat().st_size > 10_000

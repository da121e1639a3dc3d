"""The README's fidelity table is reproducible from the stored spectra: `benchmarks/fidelity.py
--stored benchmarks/results/fidelity_meep.npz --offline` rebuilds it without Meep or the RCWA (in
seconds) and must give the numbers recorded in benchmarks/results/fidelity.json."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"


@pytest.mark.skipif(
    not (RESULTS / "fidelity.json").exists(), reason="no recorded table yet (run the benchmark)"
)
def test_table_rebuilds_from_stored_spectra(tmp_path):
    recorded = json.loads((RESULTS / "fidelity.json").read_text())
    env = {**os.environ, "MPLBACKEND": "Agg", "OPENBLAS_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "fidelity.py"), "--offline"]
        + ["--stored", str(RESULTS / "fidelity_meep.npz")]
        + ["--out", str(tmp_path / "fidelity.png"), "--markdown", str(tmp_path / "table.md")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    for key in ("rms_dT_vs_extrapolated", "meep_convergence_order", "meep_extrapolation_error"):
        assert set(summary[key]) == set(recorded[key]), key
        for row, value in recorded[key].items():
            np.testing.assert_allclose(summary[key][row], value, atol=2e-5, err_msg=f"{key} {row}")
    assert summary["error_exceeds_agreement"] == recorded["error_exceeds_agreement"]
    assert summary["max_rms_dT_vs_extrapolated"] == max(summary["rms_dT_vs_extrapolated"].values())
    assert (RESULTS / "fidelity_meep.npz").stat().st_size < 1_000_000  # small enough to commit

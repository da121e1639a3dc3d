"""The README's fidelity table is reproducible from the stored spectra: `benchmarks/fidelity.py
--stored benchmarks/results/fidelity_meep.npz --offline` rebuilds it without Meep or the RCWA (in
seconds) and must give the numbers recorded in benchmarks/results/fidelity.json (the run's JSON
line) and the table recorded in benchmarks/results/fidelity.md."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"


def _table_rows(markdown: str) -> list[str]:
    """The table's data rows (``| name | ...``), header and separator left out."""
    lines = [line for line in markdown.splitlines() if line.startswith("| ")]
    return [line for line in lines if not line.startswith("| row |")]


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
    assert not summary["quick"] and not recorded["quick"]
    for key in ("rms_dT_vs_extrapolated", "meep_convergence_order", "meep_extrapolation_error"):
        assert set(summary[key]) == set(recorded[key]), key
        for row, value in recorded[key].items():
            np.testing.assert_allclose(summary[key][row], value, atol=2e-5, err_msg=f"{key} {row}")
    for key in (
        "error_exceeds_agreement",
        "pre_asymptotic",
        "meep_order_fitted",
        "meep_ladders_px_per_um",
        "goal_met",
        "worst",
        "verdicts",
    ):
        assert summary[key] == recorded[key], key
    assert summary["max_rms_dT_vs_extrapolated"] == max(summary["rms_dT_vs_extrapolated"].values())
    # Every ladder has three or more rungs, so every order was fitted, none assumed.
    assert all(len(rungs) >= 3 for rungs in summary["meep_ladders_px_per_um"].values())
    assert all(summary["meep_order_fitted"].values())
    # The RCWA references are the converged ones the table states.
    for row, check in summary["rcwa"].items():
        if row == "film":
            assert check == {}  # the exact TMM
            continue
        assert check["harmonics"] == ([100, 0] if row.startswith("grating") else [11, 11]), row
        assert check["factorization"] == ("li" if row.startswith("grating") else "vector (default)")
    # The markdown table written now is the one recorded in fidelity.md, line for line.
    rebuilt = _table_rows((tmp_path / "table.md").read_text())
    assert len(rebuilt) == len(summary["rms_dT_vs_extrapolated"])
    assert rebuilt == _table_rows((RESULTS / "fidelity.md").read_text())
    assert (RESULTS / "fidelity_meep.npz").stat().st_size < 1_000_000  # small enough to commit

"""`benchmarks/codesign.py --smoke` as a test: every row of the co-design table trains a few
steps on tiny scenes and the last stdout line is the JSON summary with the goal checks
(the figures themselves mean nothing at this size; the full table is in the benchmark's run)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "codesign.py"
ROWS = {
    "rgb",
    "pca_linear",
    "pca_learned",
    "codesign",
    "codesign_gumbel",
    "unconstrained",
    "identity",
}


def test_codesign_benchmark_smoke(tmp_path):
    env = {**os.environ, "MPLBACKEND": "Agg", "OPENBLAS_NUM_THREADS": "1"}
    command = [sys.executable, str(SCRIPT), "--smoke", "--threads", "1"]
    command += ["--cache-dir", str(tmp_path / "cache"), "--plot", str(tmp_path / "table.png")]
    proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(summary["rows"]) == ROWS
    for name in ("psnr", "sam", "miou", "real_fake_accuracy"):
        assert all(isinstance(row[name], float) for row in summary["rows"].values())
    assert summary["rows"]["rgb"]["design"]["n_filters"] == 3
    assert summary["rows"]["identity"]["design"]["n_filters"] == 34
    # the Hyplex row reuses the PCA encoder of the learned PCA row
    pca = summary["rows"]["pca_learned"]["design"]["library_indices"]
    assert summary["rows"]["pca_linear"]["design"]["library_indices"] == pca
    for goal in ("codesign_psnr_minus_pca_linear_db", "miou_9ch_minus_rgb_points",
                 "miou_9ch_over_full_cube"):  # fmt: skip
        assert isinstance(summary[f"{goal}_met"], bool)
    # issue 16: the reported co-design row chooses by class separability (9 distinct designs),
    # the Gumbel-softmax row stays beside it, and every row's segmenter whitens its input
    codesign, gumbel = summary["rows"]["codesign"], summary["rows"]["codesign_gumbel"]
    assert codesign["selection"] == "separability" and gumbel["selection"] == "gumbel"
    assert codesign["design"]["distinct_designs"] == 9
    assert summary["config"]["segmenter_config"]["whiten"] is True
    assert summary["peer"].startswith("Hyplex PCA-target")
    assert "| encoder |" in proc.stderr  # the markdown table
    assert (tmp_path / "table.png").stat().st_size > 5_000

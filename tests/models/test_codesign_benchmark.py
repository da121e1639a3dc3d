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


def test_multifidelity_option_gives_only_the_codesign_row_the_resolved_pool(tmp_path, monkeypatch):
    """``--refine-pool``: the codesign row chooses among the re-solved pool (real RCWA here at
    a tiny order, M = 1 on 16 px), the Gumbel row keeps the whole library."""
    import argparse
    import importlib.util

    import numpy as np
    import torch

    from hyplex.models.codesign_library import quick_library

    spec = importlib.util.spec_from_file_location("codesign_benchmark_mf", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, bench)  # its dataclasses look themselves up
    spec.loader.exec_module(bench)
    torch.set_num_threads(1)
    library = quick_library(tmp_path / "lib.h5", count=32)
    config = bench.benchmark_config("smoke", seed=1)
    args = argparse.Namespace(refine_pool=1, refine_harmonics=1, refine_grid=16,
                              cache_dir=tmp_path)  # fmt: skip
    pool = bench.converged_pool(config, library, args)
    assert pool.source_indices.shape == (9,) and pool.library.solver.harmonics == (1, 1)
    # the pool holds the re-solved spectra (M = 1 is far from the library's M = 8)
    assert pool.cheap_rms > 0.01 and pool.library.t is None
    rows = [row for row in bench.ROWS if row.key in ("codesign", "codesign_gumbel")]
    figures = bench.run_rows(config, library, tmp_path / "scenes", rows=rows, log=lambda _: None,
                             row_libraries={"codesign": pool.library})  # fmt: skip
    chosen = figures["codesign"]["design"]["library_indices"]
    assert sorted(chosen) == list(range(9))  # rows of the 9-design pool, every one distinct
    assert max(figures["codesign_gumbel"]["design"]["library_indices"]) < 32
    again = bench.converged_pool(config, library, args)  # cached: nothing solved again
    assert again.solved_now == 0 and np.array_equal(again.library.T, pool.library.T)

"""`benchmarks/openset.py`: the goal checks of its summary (fast), and a smoke run of the
whole machinery (slow: it builds twin scenes and trains every method a few steps)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[3] / "benchmarks" / "openset.py"


def _benchmark():
    spec = importlib.util.spec_from_file_location("openset_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(seed, auroc, fpr, drop=0.0, before=0.6, after=0.7):
    methods = {
        m: {
            "auroc": auroc[m],
            "fpr95": fpr[m],
            "aupr": 0.5,
            "id_miou_drop": drop,
            "train_seconds": 1.0,
        }
        for m in auroc
    }
    return {
        "seed": seed,
        "methods": methods,
        "baseline_miou": 60.0,
        "act": {"auroc_before": before, "auroc_after": after, "train_seconds": 2.0},
        "coverage": {"in_hull_set_outside_share": 0.1, "out_of_hull_set_outside_share": 0.9},
        "group": {"common": 0.9, "counter": 0.8, "drop": 10.0, "worst_group": 0.5},
        "forgery": None,
    }


def test_summary_means_and_goals():
    bench = _benchmark()
    auroc = dict.fromkeys(bench.METHODS, 0.7)
    fpr = dict.fromkeys(bench.METHODS, 0.8)
    auroc.update(DAL=0.8, CEDL=0.76, NSReg=0.74, BCE=0.7)
    fpr.update(DAL=0.5)
    high = {**auroc, "DAL": 0.9}
    runs = [_run(0, auroc, fpr), _run(1, high, fpr, drop=3.0, after=0.61)]
    summary = bench.summarise(runs, quick=True, wall=1.0)
    assert summary["auroc"]["DAL"] == pytest.approx(0.85)
    assert summary["best_method"] == "DAL" and summary["best_outlier_method"] == "DAL"
    assert summary["act_auroc_before"] == pytest.approx(0.6)
    assert summary["act_auroc_after"] == pytest.approx(0.655)
    goals = summary["goals"]
    assert goals["outlier_method_beats_msp_and_energy_by_5_auroc_points_and_cuts_fpr95_30pct"]
    assert summary["id_miou_drop"]["OE"] == pytest.approx(1.5)  # mean over seeds
    assert goals["no_method_costs_more_than_2_miou_points"]
    assert (
        goals["cedl_beats_bce_by_5_auroc_points"] and not goals["nsreg_beats_bce_by_5_auroc_points"]
    )
    assert goals["act_raises_target_auroc_by_3_points"]
    assert summary["seeds"] == [0, 1] and summary["forgery"]["f1"] is None


@pytest.mark.slow
def test_benchmark_smoke_run():
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    command = [sys.executable, str(SCRIPT), "--smoke", "--seeds", "1"]
    proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    for key in (
        "auroc",
        "fpr95",
        "id_miou_drop",
        "best_method",
        "act_auroc_before",
        "act_auroc_after",
        "seeds",
        "goals",
    ):
        assert key in summary
    assert set(summary["auroc"]) == set(_benchmark().METHODS)
    assert summary["errors"] == {}, summary["errors"]

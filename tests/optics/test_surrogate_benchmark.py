"""The failure table of `benchmarks/surrogate.py`: where in the design box the misses sit."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "surrogate.py"


def _benchmark():
    spec = importlib.util.spec_from_file_location("surrogate_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_failures_by_input_bins_each_input_over_its_box():
    failures_by_input = _benchmark().failures_by_input
    values = np.array([[50.0, 100.0], [150.0, 100.0], [150.0, 390.0], [199.0, 390.0]])
    mse = np.array([0.0, 0.01, 0.001, 0.005])  # 0.005 itself is a miss (not below)
    table = failures_by_input(["width_nm", "thickness_nm"], values, mse, [0.0, 100.0],
                              [200.0, 400.0], bins=2)  # fmt: skip
    assert table["width_nm"] == {"0-100": 0.0, "100-200": pytest.approx(2 / 3, abs=1e-4)}
    assert table["thickness_nm"]["100-250"] == 0.5 and table["thickness_nm"]["250-400"] == 0.5
    empty = failures_by_input(["w"], values[:1], mse[:1], [0.0], [200.0], bins=2)
    assert empty["w"] == {"0-100": 0.0, "100-200": None}


def test_matching_rows_and_library_accuracy_keys():
    bench = _benchmark()
    ours = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]])
    theirs = np.array([[7.0, 8.0, 9.0], [0.0, 0.0, 0.0], [1.0, 2.0, 3.0]])
    mine, found = bench.matching_rows(ours, theirs)
    assert mine.tolist() == [0, 2] and found.tolist() == [2, 0]
    mine, found = bench.matching_rows(ours[1:2], theirs)
    assert mine.size == 0 and found.size == 0
    unknown = bench.library_accuracy_keys(None)  # a version 1 library: accuracy unknown
    assert unknown["library_accuracy_rms"] is None and unknown["library_accuracy_goal"] == 0.01
    known = bench.library_accuracy_keys(
        {"rms": 0.02, "max_abs_dT": 0.1, "designs": 5, "converged_order": 10}
    )
    assert known["library_accuracy_rms"] == 0.02 and known["library_accuracy_meets_goal"] is False

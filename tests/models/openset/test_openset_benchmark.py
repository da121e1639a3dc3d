"""`benchmarks/openset.py`: the goal checks of its summary (fast), and a smoke run of the
whole machinery (slow: it builds twin scenes and trains every method a few steps)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ..benchmark_scripts import load_benchmark

SCRIPT = Path(__file__).resolve().parents[3] / "benchmarks" / "openset.py"


def _benchmark():
    return load_benchmark("openset")


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


def test_auroc_by_type_leaves_out_the_types_training_already_covers():
    """The heads' "unseen types" figure: per planted type against all known pixels, and the
    novel types pooled without the unknown pixels of a type that is seen in effect."""
    import numpy as np

    bench = _benchmark()
    scores = np.zeros((3, 4, 4))
    unknown = np.zeros((3, 4, 4), bool)
    unknown[:, :2, :2] = True
    scores[0][unknown[0]] = 1.0  # "paint": every unknown pixel above every known one
    scores[1][unknown[1]] = 0.0  # "concrete": indistinguishable from the known pixels
    scores[2][unknown[2]] = 1.0
    scores[:, 3, 3] = 0.5  # one known pixel per scene scores in between
    categories = [["paint"], ["concrete"], ["paint"]]
    result = bench.auroc_by_type(scores, unknown, categories, novel={"paint"})
    assert result["by_type"]["paint"] == pytest.approx(1.0)
    assert result["by_type"]["concrete"] < 0.5
    assert result["novel_types"] == pytest.approx(1.0)  # concrete's pixels left out
    pooled = bench.auroc_by_type(scores, unknown, categories, novel={"paint", "concrete"})
    assert pooled["novel_types"] < 1.0


def test_summary_of_the_novel_type_and_no_shift_figures():
    bench = _benchmark()
    auroc = dict.fromkeys(bench.METHODS, 0.7)
    fpr = dict.fromkeys(bench.METHODS, 0.8)
    runs = [_run(0, auroc, fpr), _run(1, auroc, fpr)]
    for run, (cedl, nsreg, bce) in zip(runs, [(0.9, 0.86, 0.8), (0.8, 0.8, 0.72)], strict=True):
        for method, value in zip(bench.HEADS, (cedl, nsreg, bce), strict=True):
            run["methods"][method]["auroc_novel_types"] = value
            run["methods"][method]["auroc_by_type"] = {"paint": value, "concrete": 0.5}
        run["act"]["auroc_no_shift"] = 0.72
    summary = bench.summarise(runs, quick=True, wall=1.0)
    heads = summary["anomaly_heads"]
    assert heads["auroc_novel_types"]["CEDL"] == pytest.approx(0.85)
    assert heads["auroc_by_type"]["BCE"] == {"paint": pytest.approx(0.76), "concrete": 0.5}
    assert summary["goals"]["cedl_and_nsreg_beat_bce_by_5_auroc_points_on_novel_types"]
    assert not summary["goals"]["cedl_and_nsreg_beat_bce_by_5_auroc_points_on_unseen_types"]
    assert summary["act_auroc_no_shift"] == pytest.approx(0.72)
    assert summary["act_auroc_before_novel_types"] is None  # not measured in these runs


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


def test_options_may_name_act(capsys):
    """``--options`` takes ACT's options too (its ablations on the development seeds), and
    still refuses a name that is no method."""
    with pytest.raises(SystemExit):
        _benchmark().main(["--smoke", "--options", '{"NOPE": {}}'])
    assert "'ACT'" in capsys.readouterr().err


def test_summary_of_the_heads_with_one_seen_type():
    """The heads' papers' setting (one seen anomaly type at a time) is summarised beside the
    main rows, with a goal of its own per head."""
    bench = _benchmark()
    auroc = dict.fromkeys(bench.METHODS, 0.7)
    fpr = dict.fromkeys(bench.METHODS, 0.8)
    runs = [_run(0, auroc, fpr), _run(1, auroc, fpr)]
    for run, (cedl, nsreg, bce) in zip(runs, [(0.8, 0.7, 0.7), (0.76, 0.72, 0.7)], strict=True):
        run["heads_one_seen_type"] = {
            m: {
                "auroc": v,
                "auroc_novel_types": v + 0.01,
                "by_seen_type": {"wood": v - 0.1, "roof": v + 0.1},
            }
            for m, v in zip(bench.HEADS, (cedl, nsreg, bce), strict=True)
        }
    summary = bench.summarise(runs, quick=True, wall=1.0)
    one_seen = summary["anomaly_heads"]["one_seen_type"]
    assert one_seen["auroc"]["CEDL"] == pytest.approx(0.78)
    assert one_seen["auroc_novel_types"]["BCE"] == pytest.approx(0.71)
    assert one_seen["by_seen_type"]["NSReg"] == {
        "wood": pytest.approx(0.61),
        "roof": pytest.approx(0.81),
    }
    goals = summary["goals"]
    assert goals["cedl_beats_bce_by_5_auroc_points_with_one_seen_type"]
    assert not goals["nsreg_beats_bce_by_5_auroc_points_with_one_seen_type"]
    # a seed whose block failed is left out, not counted as zero
    runs.append(_run(2, auroc, fpr))
    runs[-1]["heads_one_seen_type"] = {"error": "ValueError: boom"}
    again = bench.summarise(runs, quick=True, wall=1.0)
    assert again["anomaly_heads"]["one_seen_type"]["auroc"]["CEDL"] == pytest.approx(0.78)
    assert again["errors"] == {"heads_one_seen_type (seed 2)": "ValueError: boom"}


def test_heads_with_one_seen_type_train_on_that_type_only(monkeypatch):
    """Each narrow training set plants objects of its one auxiliary category only, and every
    head is trained on it and scored on the main test scenes."""
    import copy

    import numpy as np
    import torch

    import hyplex.models.openset as openset
    from hyplex.models.encoder_baselines import FixedResponseEncoder
    from hyplex.models.segmentation import build_segmenter

    bench = _benchmark()
    config = {**bench.settings(quick=False, smoke=True), "one_seen_types": 2}
    centres = np.linspace(420.0, 980.0, 9)
    responses = np.exp(-0.5 * ((bench.GRID_NM[None] - centres[:, None]) / 40.0) ** 2)
    encoder = FixedResponseEncoder(responses, bench.GRID_NM)
    counts = {"train": 3, "auxiliary": 3, "heldout": 2, "test": 3}
    data = openset.build_openset_data(encoder, bench.GRID_NM, counts=counts, shape=(16, 16))
    test_scenes = openset.make_openset_scenes(
        data.split, bench.GRID_NM, 3, "test", (16, 16), seed=4
    )
    config["counts"], config["shape"] = counts, (16, 16)
    torch.manual_seed(0)
    segmenter = build_segmenter("attention", in_channels=9, n_classes=4, width=4, depth=1)
    planted = []
    original = openset.make_openset_scenes

    def recording(*args, **kwargs):
        scenes = original(*args, **kwargs)
        planted.append({c for here in scenes.categories for c in here})
        return scenes

    monkeypatch.setattr(openset, "make_openset_scenes", recording)
    out = bench.heads_with_one_seen_type(
        0, config, encoder, data, copy.deepcopy(segmenter), test_scenes, set()
    )
    assert planted == [{"wood"}, {"roof"}]
    for method in bench.HEADS:
        assert set(out[method]["by_seen_type"]) == {"wood", "roof"}
        assert 0.0 <= out[method]["auroc"] <= 1.0
        assert out[method]["auroc_novel_types"] is None  # no type counted as novel here

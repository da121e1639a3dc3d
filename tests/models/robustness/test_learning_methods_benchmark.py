"""benchmarks/learning_methods.py --smoke: the JSON's blocks and goals (slow: ~1 min)."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ..benchmark_scripts import load_benchmark

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.slow
def test_learning_methods_smoke_prints_every_block_and_goal(tmp_path):
    out = tmp_path / "result.json"
    completed = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "learning_methods.py"),
            "--smoke",
            "--seeds",
            "1",
            "--only",
            "robustness,noisy_labels",
            "--out",
            str(out),
        ],  # fmt: skip
        capture_output=True,
        text=True,
        timeout=900,
        check=True,
    )
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    assert result == json.loads(out.read_text())
    for block in ("flow", "translation", "temporal", "pretraining", "real_fake"):
        assert result[block] == {"missing": "not run (--only)"}
    for method in ("standard", "pgd_at", "mail"):
        assert {"miou_clean", "miou_pgd", "miou_etf_1", "success_etf_10"} <= set(
            result["robustness"][method]
        )
    assert {"idn_20", "idn_40", "group"} <= set(result["noisy_labels"])
    assert len(result["goals_met"]) == 10
    assert result["goals_met"]["flow_coverage_in_0.85_0.95"] is False  # not run, not faked


def _benchmark_module():
    return load_benchmark("learning_methods")


def _run(method_points, main_epsilon="3"):
    """One seed's rows: per method a main point and its trade-off curve {epsilon: (clean, pgd)}."""
    rows = {"standard": {"miou_clean": 0.36, "miou_pgd": 0.06, "success_etf_1": 0.2,
                         "success_etf_10": 0.1}}  # fmt: skip
    for method, points in method_points.items():
        clean, pgd = points[main_epsilon]
        rows[method] = {"miou_clean": clean, "miou_pgd": pgd}
        rows[method]["trade_off"] = {
            f"train_epsilon_{e}": {"miou_clean": c, "miou_pgd": r} for e, (c, r) in points.items()
        }
    return rows


def test_robustness_goal_reads_mail_on_its_trade_off_curve_at_pgd_at_clean_miou():
    """Clean mIoUs 1.2 points apart fail the plain comparison; on MAIL's curve (training budget
    2 / 3 / 4) at PGD-AT's clean mIoU MAIL's PGD mIoU is read by linear interpolation."""
    lm = _benchmark_module()
    pgd_at = {"2": (0.26, 0.10), "3": (0.214, 0.134), "4": (0.18, 0.15)}
    mail = {"2": (0.27, 0.11), "3": (0.226, 0.130), "4": (0.19, 0.16)}
    block = lm.robustness_block([_run({"pgd_at": pgd_at, "mail": mail})], 3.0)
    # between MAIL's (0.19, 0.16) and (0.226, 0.130): 0.16 - 0.03 * (0.214 - 0.19) / 0.036
    assert block["mail_pgd_miou_at_pgd_at_clean"] == pytest.approx(0.14)
    assert block["goal_plain_comparison"] is False
    assert block["goal_on_trade_off_curve"] is True
    assert block["goals"]["mail_ge_pgd_at_robust_miou_at_equal_clean"] is True
    # a MAIL curve below PGD-AT's point at the same clean mIoU misses the goal
    lower = {"2": (0.27, 0.09), "3": (0.226, 0.120), "4": (0.19, 0.13)}
    block = lm.robustness_block([_run({"pgd_at": pgd_at, "mail": lower})], 3.0)
    assert block["mail_pgd_miou_at_pgd_at_clean"] < 0.134
    assert block["goals"]["mail_ge_pgd_at_robust_miou_at_equal_clean"] is False


def test_robust_miou_at_clean_never_extrapolates():
    lm = _benchmark_module()
    curve = {"a": {"miou_clean": 0.2, "miou_pgd": 0.15}, "b": {"miou_clean": 0.3, "miou_pgd": 0.1}}
    assert lm.robust_miou_at_clean(curve, 0.25) == pytest.approx(0.125)
    assert lm.robust_miou_at_clean(curve, 0.31) is None
    assert lm.robust_miou_at_clean(curve, 0.19) is None


def test_codesign_goal_is_the_mean_over_seeds_of_the_converged_run(tmp_path, monkeypatch):
    """The co-design goal is judged on the mean ratio over >= 3 seeds of the converged
    4000-design run (seed 0 at the top level, the others under other_seeds), not on seed 0
    alone; fewer than three seeds is "not measured"; the shipped library's runs are listed."""
    lm = _benchmark_module()
    results = tmp_path / "results"
    results.mkdir()
    line = lambda record: "log line\n" + json.dumps(record)  # noqa: E731
    (results / "codesign_full.json").write_text(line({"miou_9ch_over_full_cube": 0.841}))
    (results / "codesign_full_seed1.json").write_text(line({"miou_9ch_over_full_cube": 0.903}))
    monkeypatch.setattr(lm, "HERE", tmp_path)
    missing = lm.codesign_goal()
    assert missing["value"] is None and missing["met"] is False
    assert missing["shipped_library"] == {
        "codesign_full.json": pytest.approx(0.841),
        "codesign_full_seed1.json": pytest.approx(0.903),
    }
    record = {"miou_9ch_over_full_cube": 0.99, "config": {"seed": 0},
              "other_seeds": {"1": {"miou_over_full_cube": 0.90}}}  # fmt: skip
    (results / lm.CODESIGN_REPORTED).write_text(line(record))
    assert lm.codesign_goal()["value"] is None  # two seeds only
    record["other_seeds"]["2"] = {"miou_over_full_cube": 0.80}
    (results / lm.CODESIGN_REPORTED).write_text(line(record))
    goal = lm.codesign_goal()
    assert goal["value"] == pytest.approx(0.8967, abs=1e-4) and goal["met"] is False
    assert goal["per_seed"] == {"0": 0.99, "1": 0.90, "2": 0.80}
    record["other_seeds"]["2"] = {"miou_over_full_cube": 0.83}
    (results / lm.CODESIGN_REPORTED).write_text(line(record))
    assert lm.codesign_goal()["met"] is True  # mean 0.9067


def test_robustness_seed_averages_trainings_on_the_larger_heldout_set(monkeypatch):
    """Each figure is the mean over ROBUSTNESS_TRAININGS trainings (seeds seed + 1000 r, the
    same for every method) evaluated on ROBUSTNESS_HELDOUT_FACTOR times the held-out scenes.
    Training and evaluation are replaced by stand-ins that record what they were given."""
    import hyplex.models.robustness as robustness
    import hyplex.models.robustness.evaluation as evaluation

    lm = _benchmark_module()
    config = {**lm.settings(quick=False, smoke=True), "epsilon": 3.0}
    encoder = lm.gaussian_encoder()
    data = lm.twin_data(5, config, encoder)
    calls = []

    def fake_train(model, x, y, white, mail, seed=0, **_):
        model.training_seed = seed
        calls.append((mail.method, mail.epsilon, seed))
        return {}

    def fake_report(model, barcodes, labels, white, epsilon, **kwargs):
        assert len(barcodes) == lm.ROBUSTNESS_HELDOUT_FACTOR * config["heldout"]
        assert labels.shape == (len(barcodes), *barcodes.shape[2:])
        value = float(model.training_seed)
        return {"miou_clean": value, "miou_pgd": value / 2, "success_etf_1": 0.0,
                "success_etf_10": 0.0}  # fmt: skip

    monkeypatch.setattr(robustness, "adversarial_train_segmenter", fake_train)
    monkeypatch.setattr(evaluation, "red_team_report", fake_report)
    rows = lm.robustness_seed(5, config, encoder, data)
    seeds = [5 + 1000 * r for r in range(lm.ROBUSTNESS_TRAININGS)]
    assert lm.ROBUSTNESS_TRAININGS >= 2 and lm.ROBUSTNESS_HELDOUT_FACTOR >= 2
    for method in ("standard", "pgd_at", "mail"):
        assert rows[method]["miou_clean"] == pytest.approx(np.mean(seeds))
        assert sorted(s for m, e, s in calls if m == method and e == 3.0) == seeds
    assert rows["mail"]["trade_off"]["train_epsilon_2"]["miou_pgd"] == pytest.approx(
        np.mean(seeds) / 2
    )


class _FakeProcess:
    def __init__(self, status):
        self.returncode = status

    def wait(self):
        return self.returncode


def test_external_process_results_and_failure(tmp_path):
    """The second process's blocks are read from its JSON; a failed process is an error (not a
    missing block), and its temporary JSON is removed either way."""
    lm = _benchmark_module()
    out = tmp_path / "external.json"
    out.write_text(json.dumps({"temporal": {"flip": 0.1}, "flow": {"psnr": 30.0}, "other": 1}))
    assert lm.finish_external_process((_FakeProcess(0), out), ["temporal", "flow"]) == {
        "temporal": {"flip": 0.1},
        "flow": {"psnr": 30.0},
    }
    assert not out.exists()
    out.write_text("{}")
    with pytest.raises(RuntimeError, match="exited with status 3"):
        lm.finish_external_process((_FakeProcess(3), out), ["temporal"])
    assert not out.exists()


@pytest.mark.slow
def test_two_processes_give_the_figures_of_one(tmp_path):
    """--jobs 2 (a sibling block in a second process) gives the same JSON blocks as --jobs 1."""
    results = []
    for jobs in ("1", "2"):
        out = tmp_path / f"jobs{jobs}.json"
        command = [sys.executable, str(ROOT / "benchmarks" / "learning_methods.py"), "--smoke",
                   "--seeds", "1", "--only", "temporal,noisy_labels", "--jobs", jobs,
                   "--out", str(out)]  # fmt: skip
        subprocess.run(command, capture_output=True, text=True, timeout=900, check=True)
        results.append(json.loads(out.read_text()))
    for block in ("temporal", "noisy_labels"):
        assert "missing" not in results[0][block]
        assert _figures(results[0][block]) == _figures(results[1][block])


def _figures(record):
    """``record`` without its timings (``*seconds*``, ``wall_s``): the figures only."""
    if isinstance(record, dict):
        return {k: _figures(v) for k, v in record.items() if "seconds" not in k and k != "wall_s"}
    if isinstance(record, list):
        return [_figures(v) for v in record]
    return record

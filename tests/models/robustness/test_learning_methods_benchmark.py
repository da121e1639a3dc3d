"""benchmarks/learning_methods.py --smoke: the JSON's blocks and goals (slow: ~1 min)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

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

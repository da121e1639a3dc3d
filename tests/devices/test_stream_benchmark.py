"""`benchmarks/stream.py` on a small sensor as a test: it records compressed through the
throttled write queue and prints the issue-19 keys, and the file verifies frame by frame (the
rates themselves mean nothing at this size; the 4000x3000 figures are in the README)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "stream.py"
KEYS = {
    "dropped",
    "frames",
    "compression_ratio",
    "write_mb_s_needed",
    "write_mb_s_measured",
    "throttle_mbps",
    "recorder_cpu_cores",
    "ratio_by_exposure",
    "verified",
}


@pytest.mark.slow  # ~25 s, mostly the twin's set-up in a fresh process
@pytest.mark.timeout(300)
def test_stream_benchmark_smoke(tmp_path):
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, str(SCRIPT), "--shape", "96x128", "--seconds", "1.5"]
    command += ["--fps", "10", "--compression", "zstd", "--throttle-mbps", "50"]
    command += ["--ratio-shape", "96x128", "--ratio-exposures", "300,3000"]
    command += ["--folder", str(tmp_path)]
    proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=280)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert KEYS <= set(result)
    assert result["verified"] is True and result["recorded"] >= 1
    assert result["compression_ratio"] > 1.0 and result["throttle_mbps"] == 50.0
    assert [row["exposure_us"] for row in result["ratio_by_exposure"]] == [300.0, 3000.0]
    assert not list(tmp_path.glob("*.h5"))  # the recording is deleted unless --keep

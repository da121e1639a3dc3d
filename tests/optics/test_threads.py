"""The process-wide thread policy (hyplex.optics.threads): how N is chosen, that it reaches
torch, numba and BLAS, that the command line sets it, and that the RCWA stays on one thread."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from hyplex.optics import threads
from hyplex.optics.library import SolverSettings
from hyplex.optics.library_build import build_library
from hyplex.optics.library_spec import LibrarySpec


@pytest.fixture
def clean_env(monkeypatch):
    for name in ("HYPLEX_THREADS", "OMP_NUM_THREADS", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_explicit_beats_the_environment_which_beats_the_free_cores(clean_env):
    clean_env.setattr(threads, "usable_cores", lambda: 8)
    clean_env.setattr(threads, "free_cores", lambda cores=None: (5, 3.0))
    assert threads.resolve_threads().threads == 5
    assert threads.resolve_threads().source == "free cores"
    clean_env.setenv("LOCAL_WORLD_SIZE", "2")  # torchrun: two ranks share the free cores
    assert threads.resolve_threads().threads == 2
    clean_env.delenv("LOCAL_WORLD_SIZE")
    clean_env.setenv("OMP_NUM_THREADS", "2")  # caps the automatic choice
    assert threads.resolve_threads().threads == 2
    clean_env.setenv("HYPLEX_THREADS", "3")
    assert threads.resolve_threads() == threads.ThreadPolicy(3, "HYPLEX_THREADS", 8)
    assert threads.resolve_threads(7) == threads.ThreadPolicy(7, "explicit", 8)


@pytest.mark.parametrize("value", ["0", "-2", "two", "1.5"])
def test_a_bad_count_is_refused_with_its_name(clean_env, value):
    clean_env.setenv("HYPLEX_THREADS", value)
    with pytest.raises(ValueError, match="HYPLEX_THREADS must be a whole number"):
        threads.resolve_threads()
    with pytest.raises(ValueError, match="--threads"):
        threads.resolve_threads(0)


@pytest.mark.parametrize(
    ("load", "own", "now", "free"),
    [
        (0.0, 0.0, 0.0, 2),
        (0.4, 0.0, 0.1, 2),
        (1.0, 0.0, 0.0, 1),  # a job busy for a minute, paused at this moment
        (0.1, 0.0, 1.0, 1),  # a job that just started: the load average has not seen it
        (1.9, 1.0, 0.9, 1),
        (1.2, 1.0, 0.2, 2),  # the load is this process's own
        (6.0, 0.0, 2.0, 1),
    ],
)
def test_free_cores_leave_the_busy_ones_alone(monkeypatch, load, own, now, free):
    monkeypatch.setattr(os, "getloadavg", lambda: (load, load, load))
    monkeypatch.setattr(threads, "_own_cpu_share", lambda: own)
    monkeypatch.setattr(threads, "_busy_now", lambda: now)
    assert threads.free_cores(2)[0] == free


def test_no_reading_counts_every_core_as_free(monkeypatch):
    def missing():
        raise OSError("no load average here")

    monkeypatch.setattr(os, "getloadavg", missing)
    monkeypatch.setattr(threads, "_busy_now", lambda: None)
    assert threads.free_cores(4) == (4, None)


def test_a_busy_process_is_seen_at_once(monkeypatch):
    cpus = os.sched_getaffinity(0)
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        os.sched_setaffinity(spinner.pid, {min(cpus)})
        busy = max(threads._busy_now(0.3) for _ in range(3))
    finally:
        spinner.kill()
        spinner.wait()
    assert busy >= 0.7  # one core's worth (others may add more)


def test_usable_cores_follow_the_affinity_and_a_cgroup_quota(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    monkeypatch.setattr(threads, "_cgroup_quota", lambda: None)
    assert threads.usable_cores() == 4
    monkeypatch.setattr(threads, "_cgroup_quota", lambda: 1.5)
    assert threads.usable_cores() == 2


APPLY = """
import json, numpy, torch, numba
from threadpoolctl import threadpool_info
from hyplex.optics.threads import apply_thread_policy
policy = apply_thread_policy()
print(json.dumps({
    "policy": policy.to_dict(), "torch": torch.get_num_threads(),
    "interop": torch.get_num_interop_threads(), "numba": numba.get_num_threads(),
    "pools": sorted({p["num_threads"] for p in threadpool_info()}),
}))
"""


@pytest.mark.timeout(180)
def test_the_policy_reaches_torch_numba_and_blas_in_a_fresh_process():
    env = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}
    env["HYPLEX_THREADS"] = "1"
    run = subprocess.run(
        [sys.executable, "-c", APPLY], capture_output=True, text=True, env=env, timeout=170
    )
    assert run.returncode == 0, run.stderr
    got = json.loads(run.stdout.splitlines()[-1])
    assert got["policy"]["threads"] == 1 and got["policy"]["source"] == "HYPLEX_THREADS"
    assert got["torch"] == got["interop"] == got["numba"] == 1
    assert got["pools"] == [1]


CLI = """
import json, os, sys
from hyplex.cli import app
try:
    app(sys.argv[1:])
except SystemExit as stop:
    assert not stop.code, stop.code
import torch
print(json.dumps({"torch": torch.get_num_threads(), "env": {
    k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")}}))
"""


@pytest.mark.timeout(180)
def test_the_command_line_sets_the_policy_before_torch_is_imported():
    env = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}
    env["HYPLEX_THREADS"] = "2"
    run = subprocess.run(
        [sys.executable, "-c", CLI, "--threads", "1", "optics", "materials"],
        capture_output=True,
        text=True,
        env=env,
        timeout=170,
    )
    assert run.returncode == 0, run.stderr
    got = json.loads(run.stdout.splitlines()[-1])
    assert got["torch"] == 1  # --threads beats HYPLEX_THREADS, and torch picked it up
    assert set(got["env"].values()) == {"1"}


def test_a_library_build_runs_the_rcwa_on_one_thread_and_gives_the_count_back(
    tmp_path, monkeypatch
):
    spec = LibrarySpec(
        family="disk",
        count=4,
        wavelengths_nm=(500.0, 700.0),
        solver=SolverSettings(harmonics=(1, 1), grid=(12, 12)),
        seed=1,
    )
    seen = []
    monkeypatch.setattr(
        "hyplex.optics.library_build._solve_chunk",
        _spy(seen, "hyplex.optics.library_build._solve_chunk"),
    )
    # the policy's count is 2 here (torch only: numba and BLAS stay as the suite set them)
    monkeypatch.setattr(
        "hyplex.optics.library_build.apply_thread_policy", lambda: torch.set_num_threads(2)
    )
    before = torch.get_num_threads()
    try:
        build_library(tmp_path / "lib.h5", spec, chunk_size=2, serial=True, progress=False)
        assert seen == [1, 1]  # one torch thread during each solve
        assert torch.get_num_threads() == 2  # and the policy's count after the build
    finally:
        torch.set_num_threads(before)


def _spy(seen, target):
    import importlib

    module_name, name = target.rsplit(".", 1)
    original = getattr(importlib.import_module(module_name), name)

    def wrapper(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return original(*args, **kwargs)

    return wrapper

"""Benchmark: co-design steps on a loaded machine against an idle one, under the thread policy.

Issue 20, item 4: on a 2-core machine with one core busy, ``hyplex design --quick --resume``
ran at 2.2-3.3 s per step against 35 steps/s fresh, because torch kept one intra-op thread
per core on that path (each OpenMP region then waits a scheduler slice for the thread that
shares its core with the busy process). :mod:`hyplex.optics.threads` now sizes every pool to
the free cores at the entry point. This measures what ``design --quick --resume`` does: a
fresh process sets the policy as the command line's root callback does, resumes a quick
co-design checkpoint and trains ``--steps`` more steps; the figure is the training loop's
wall time per step. Conditions, each in its own process:

- ``idle``: as the machine is (other jobs on a shared machine count: see ``load_before``);
- ``loaded``: a busy-loop process pinned to one core, started ``--settle`` s before;
- ``loaded_all_cores`` (unless ``--no-baseline``): the same load, but every usable core given
  to torch (``HYPLEX_THREADS=<cores>``), which is what the resume path did before the policy.

The goal is ``ratio = loaded / idle <= 2`` (one of 2 cores lost costs at most 2x).

Reproduce (the last stdout line is one JSON object; about 2-4 min on 2 cores)::

    .venv/bin/python benchmarks/threads.py
    .venv/bin/python benchmarks/threads.py --steps 40 --no-baseline
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

START = 2  # steps of the prepared checkpoint


def worker(folder: Path, steps: int) -> dict:
    """One measurement in this (fresh) process: the policy, then a resumed quick co-design."""
    from hyplex.optics.threads import configure_threads

    policy = configure_threads()  # what `hyplex ...` does first

    import torch

    from hyplex.models.codesign import CHECKPOINT_NAME, train_codesign
    from hyplex.models.codesign_config import quick_config
    from hyplex.models.codesign_library import quick_library

    library = quick_library(folder / "quick_library.h5")
    config = quick_config()
    start_file = folder / "checkpoint.start.pt"
    if start_file.exists():
        shutil.copyfile(start_file, folder / CHECKPOINT_NAME)
    result = train_codesign(
        config, folder, resume=True, library=library, progress=False, stop_after=START + steps
    )
    done = len(result.history["loss"]) - START
    return {
        "seconds_per_step": result.train_seconds / max(1, done),
        "steps": done,
        "threads": policy.threads,
        "policy": policy.source,
        "busy_cores_seen": policy.busy,
        "torch_threads": torch.get_num_threads(),
    }


def run_worker(folder: Path, steps: int, env: dict | None = None) -> dict:
    command = [sys.executable, __file__, "--worker", str(folder), "--steps", str(steps)]
    done = subprocess.run(
        command, capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=1800
    )
    if done.returncode != 0:
        raise RuntimeError(f"worker failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def prepare(folder: Path) -> None:
    """The quick library, the scene cache and a checkpoint at step START (not timed)."""
    from hyplex.models.codesign import CHECKPOINT_NAME

    run_worker(folder, 0)
    shutil.copyfile(folder / CHECKPOINT_NAME, folder / "checkpoint.start.pt")


def start_load(cpu: int) -> subprocess.Popen:
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        os.sched_setaffinity(spinner.pid, {cpu})
    except (AttributeError, OSError):  # not on Linux: the scheduler places it
        pass
    return spinner


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=60, help="timed steps per condition")
    parser.add_argument("--baseline-steps", type=int, default=8, help="steps, all-cores run")
    parser.add_argument("--settle", type=float, default=5.0, help="s of load before timing")
    parser.add_argument("--no-baseline", action="store_true", help="skip loaded_all_cores")
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker is not None:
        print(json.dumps(worker(args.worker, args.steps)))
        return

    from hyplex.optics.threads import usable_cores

    cores = usable_cores()
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else [0]
    with tempfile.TemporaryDirectory(prefix="hyplex-threads-") as tmp:
        folder = Path(tmp)
        prepare(folder)
        results = {"load_before": round(os.getloadavg()[0], 2)}
        results["idle"] = run_worker(folder, args.steps)
        spinner = start_load(cpus[0])
        try:
            time.sleep(args.settle)
            results["loaded"] = run_worker(folder, args.steps)
            if not args.no_baseline:
                results["loaded_all_cores"] = run_worker(
                    folder, args.baseline_steps, {"HYPLEX_THREADS": str(cores)}
                )
        finally:
            spinner.kill()
            spinner.wait()
    idle = results["idle"]["seconds_per_step"]
    loaded = results["loaded"]["seconds_per_step"]
    summary = {
        "benchmark": "threads",
        "cores": cores,
        "steps": args.steps,
        **results,
        "ratio_loaded_to_idle": round(loaded / idle, 3),
        "goal_ratio_max": 2.0,
        "goal_met": loaded / idle <= 2.0,
    }
    if "loaded_all_cores" in results:
        summary["ratio_all_cores_to_policy_loaded"] = round(
            results["loaded_all_cores"]["seconds_per_step"] / loaded, 2
        )
    print(json.dumps(summary))


if __name__ == "__main__":
    main()

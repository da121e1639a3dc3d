"""RCWA batch parallelism: results independent of thread count, batch split and process state,
and the one-thread rule of the solver (hyplex.optics.parallel)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading

import numpy as np
import pytest
import torch

from hyplex.optics import parallel
from hyplex.optics.library import SolverSettings
from hyplex.optics.library_spec import LibrarySpec, sample_designs, solve_designs, spec_to_dict

SPEC = LibrarySpec(
    family="rectangle",
    count=6,
    wavelengths_nm=(500.0, 640.0, 780.0),
    solver=SolverSettings(harmonics=(2, 1), grid=(16, 16)),
    store_jones=True,
    seed=11,
)

FRESH = """
import hashlib, json, sys
import numpy as np
from hyplex.optics.library_spec import LibrarySpec, sample_designs, solve_designs
spec = LibrarySpec(**json.loads(sys.argv[1]))
params, thickness = sample_designs(spec)
T, t = solve_designs(spec, params, thickness)
print(hashlib.sha256(T.tobytes() + t.tobytes()).hexdigest())
"""


def _digest(T, t) -> str:  # noqa: N803
    return hashlib.sha256(np.ascontiguousarray(T).tobytes() + t.tobytes()).hexdigest()


@pytest.fixture(scope="module")
def reference():
    params, thickness = sample_designs(SPEC)
    return params, thickness, _digest(*solve_designs(SPEC, params, thickness))


@pytest.mark.parametrize("workers", ["1", "2", "3", "5"])
def test_spectra_do_not_depend_on_the_batch_split(reference, monkeypatch, workers):
    params, thickness, digest = reference
    monkeypatch.setenv("HYPLEX_WORKERS", workers)
    assert _digest(*solve_designs(SPEC, params, thickness)) == digest
    # and not on the chunk a design is solved in
    parts = [solve_designs(SPEC, params[i : i + 2], thickness[i : i + 2]) for i in (0, 2, 4)]
    T = np.concatenate([p[0] for p in parts])  # noqa: N806
    t = np.concatenate([p[1] for p in parts])
    assert _digest(T, t) == digest


def test_spectra_do_not_depend_on_threads_raised_since_the_last_solve(reference):
    params, thickness, digest = reference
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)  # what a caller, or numba's OpenMP layer, may do
        assert _digest(*solve_designs(SPEC, params, thickness)) == digest
        assert torch.get_num_threads() == 1  # every solve puts torch back on one thread
    finally:
        torch.set_num_threads(before)


def test_a_fresh_process_with_other_thread_settings_gives_the_same_bits(reference):
    env_sets = [
        {"HYPLEX_WORKERS": "1", "OMP_NUM_THREADS": "2"},
        {"HYPLEX_WORKERS": "4", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"},
    ]
    for extra in env_sets:
        run = subprocess.run(
            [sys.executable, "-c", FRESH, json.dumps(spec_to_dict(SPEC))],
            capture_output=True,
            text=True,
            env={**os.environ, **extra},
            timeout=240,
        )
        assert run.returncode == 0, run.stderr
        assert run.stdout.split()[-1] == reference[2], extra


def test_map_batch_returns_one_layout_however_it_splits():
    matrices = torch.randn(12, 6, 6, dtype=torch.complex128)
    whole = parallel.map_batch(torch.linalg.eig, matrices, workers=1)
    split = parallel.map_batch(torch.linalg.eig, matrices, workers=3)
    for a, b in zip(whole, split, strict=True):
        assert a.is_contiguous() and b.is_contiguous() and a.stride() == b.stride()
        assert torch.equal(a, b)


def test_single_torch_thread_restores_the_count_even_when_nested_or_concurrent():
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        errors = []

        def inner():
            try:
                with parallel.single_torch_thread():
                    assert torch.get_num_threads() == 1
            except BaseException as error:  # pragma: no cover - reported below
                errors.append(error)

        with parallel.single_torch_thread():
            assert torch.get_num_threads() == 1
            with parallel.single_torch_thread():
                assert torch.get_num_threads() == 1
            worker = threading.Thread(target=inner)
            worker.start()
            worker.join(timeout=30)
            assert torch.get_num_threads() == 1  # the inner blocks did not restore early
        assert not errors
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)

"""The quick co-design library: shipped at a converged order with its accuracy, served by prefix,
old low-order files replaced (issue 21, item 3)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from hyplex.models.codesign_library import (
    QUICK_SOLVER,
    SHIPPED_LIBRARY,
    quick_library,
    quick_library_spec,
)
from hyplex.optics.library import read_library, read_metadata
from hyplex.optics.library_build import build_library
from hyplex.optics.library_spec import sample_designs, solve_designs


def test_the_shipped_library_is_converged_to_its_stored_accuracy():
    meta = read_metadata(SHIPPED_LIBRARY)
    assert meta["done"] == meta["count"] == 384 and meta["solver"] == QUICK_SOLVER
    accuracy, probe = meta["accuracy"], meta["convergence_probe"]
    assert accuracy is not None and probe is not None
    assert accuracy["rms"] <= 0.01  # the goal, measured on its own sample
    assert accuracy["designs"] >= 5 and accuracy["converged_order"] > QUICK_SOLVER.harmonics[0]
    assert probe["chosen_order"] == QUICK_SOLVER.harmonics[0] and probe["target"] == 0.01
    # it is the seeded design list of the quick spec
    params, thickness = sample_designs(quick_library_spec())
    library = read_library(SHIPPED_LIBRARY)
    np.testing.assert_array_equal(library.params_nm, params)
    np.testing.assert_array_equal(library.thickness_nm, thickness)


@pytest.mark.slow
def test_a_shipped_design_is_what_the_solver_gives():
    """One design re-solved with the shipped settings (about 10-40 s on 2 cores)."""
    library = read_library(SHIPPED_LIBRARY)
    T, _ = solve_designs(quick_library_spec(), library.params_nm[:1], library.thickness_nm[:1])
    np.testing.assert_allclose(T, library.T[:1], atol=1e-6)


def test_a_prefix_is_served_from_the_shipped_file(tmp_path):
    began = time.perf_counter()
    library = quick_library(tmp_path / "lib.h5", count=24)
    assert time.perf_counter() - began < 20  # a copy, not 24 RCWA solves at M = 8
    shipped = read_library(SHIPPED_LIBRARY)
    np.testing.assert_array_equal(library.T, shipped.T[:24])
    assert library.solver == QUICK_SOLVER and len(library) == 24
    meta = read_metadata(tmp_path / "lib.h5")
    assert meta["accuracy"]["parent"]["designs"] == 384  # the estimate it inherits
    again = quick_library(tmp_path / "lib.h5", count=24)  # reused as it is
    np.testing.assert_array_equal(again.T, library.T)


def test_an_old_low_order_quick_library_is_replaced(tmp_path):
    path = tmp_path / "quick_library.h5"
    old = quick_library_spec(count=8, harmonics=1, grid=32, factorization="li",
                             precision="complex128")  # fmt: skip
    build_library(path, old, serial=True, progress=False)
    assert read_metadata(path)["solver"].harmonics == (1, 1)
    library = quick_library(path, count=8)
    assert library.solver == QUICK_SOLVER
    np.testing.assert_array_equal(library.T, read_library(SHIPPED_LIBRARY).T[:8])


def test_a_copied_library_opens_without_the_memory_to_solve_it(tmp_path, monkeypatch):
    """Serving the shipped file solves nothing, so it must not need the ~6 GB one M = 8 chunk
    takes: with 1 GB 'available' the copy and a reuse succeed (a build with designs left to
    solve is still refused up front)."""
    from hyplex.optics.memory import MemoryBudgetError

    monkeypatch.setenv("HYPLEX_MEMORY_BYTES", str(10**9))
    library = quick_library(tmp_path / "lib.h5", count=16)
    again = quick_library(tmp_path / "lib.h5", count=16)
    np.testing.assert_array_equal(again.T, library.T)
    with pytest.raises(MemoryBudgetError, match="chunk_size"):
        quick_library(tmp_path / "other.h5", count=16, seed=3)  # not shipped: to be solved
    # the command line's own check before it starts agrees: resuming the finished file is fine
    from typer.testing import CliRunner

    from hyplex.cli.library import library_app

    options = ["build", "--out", str(tmp_path / "lib.h5"), "--count", "16",
               "--wavelength-start-nm", "390", "--wavelength-stop-nm", "740",
               "--wavelengths", "18", "--thickness-min-nm", "60", "--thickness-max-nm", "300",
               "--harmonics", "8", "--grid", "128", "--precision", "complex64",
               "--chunk-size", "8", "--no-accuracy", "--serial", "--no-progress"]  # fmt: skip
    result = CliRunner().invoke(library_app, options)
    assert result.exit_code == 0 and "16 already in the file" in result.output, result.output


def test_another_count_of_the_shipped_designs_is_copied_again(tmp_path, monkeypatch):
    """A smaller (or larger) quick library already at the path is replaced by the shipped
    prefix, never grown by solving designs the shipped file holds."""
    from hyplex.optics import library_build

    def no_solving(*args, **kwargs):
        raise AssertionError("a shipped design was solved")

    monkeypatch.setattr(library_build, "_solve_chunk", no_solving)
    path = tmp_path / "lib.h5"
    quick_library(path, count=8)
    grown = quick_library(path, count=24)
    np.testing.assert_array_equal(grown.T, read_library(SHIPPED_LIBRARY).T[:24])
    assert read_metadata(path)["accuracy"]["parent"]["designs"] == 384
    shrunk = quick_library(path, count=4)
    assert len(shrunk) == 4

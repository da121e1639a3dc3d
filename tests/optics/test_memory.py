"""Memory estimates before allocation (hyplex.optics.memory) and their use by library builds."""

from __future__ import annotations

import numpy as np
import pytest

from hyplex.optics.library import SolverSettings
from hyplex.optics.library_build import build_library
from hyplex.optics.library_spec import LibrarySpec, check_resources, design_bytes
from hyplex.optics.memory import (
    MemoryBudgetError,
    available_memory_bytes,
    check_memory,
    fits_hint,
    format_bytes,
    largest_fitting,
    rcwa_memory_bytes,
)


def test_format_bytes():
    assert format_bytes(320e9) == "320 GB"
    assert format_bytes(24.4e9) == "24 GB"
    assert format_bytes(1.23e12) == "1.2 TB"
    assert format_bytes(999) == "999 B"
    assert format_bytes(5.3e6) == "5.3 MB"


def test_available_memory_reads_the_machine_or_the_override(monkeypatch):
    monkeypatch.delenv("HYPLEX_MEMORY_BYTES", raising=False)
    assert available_memory_bytes() > 1e6
    monkeypatch.setenv("HYPLEX_MEMORY_BYTES", "2.5e9")
    assert available_memory_bytes() == 2_500_000_000
    monkeypatch.setenv("HYPLEX_MEMORY_BYTES", "lots")
    with pytest.raises(ValueError, match="HYPLEX_MEMORY_BYTES"):
        available_memory_bytes()


def test_rcwa_estimate_scales_like_the_solver():
    base = rcwa_memory_bytes(5, 64, batch=16, wavelengths=16)
    # measured peak RSS of rcwa.solve on a CPU: 3.4 GB for M=5, 16 designs x 16 wavelengths
    assert 2.5e9 < base < 5e9
    assert rcwa_memory_bytes(5, 64, batch=32, wavelengths=16) > 1.9 * base  # linear in batch
    assert rcwa_memory_bytes(5, 64, batch=16, wavelengths=16, grad=True) > 1.5 * base
    # (2M+1)^2 harmonics: matrices of (2n)^2, so ~ M^4
    assert rcwa_memory_bytes(10, 64, 1, 1) > 10 * rcwa_memory_bytes(5, 64, 1, 1)
    assert rcwa_memory_bytes(100000, 64, 1, 1) > 1e24  # no overflow, no allocation
    assert rcwa_memory_bytes((3, 1), (32, 16)) < rcwa_memory_bytes(3, 32)


def test_check_memory_names_what_needs_it_and_what_fits():
    budget = 24_000_000_000
    estimate = lambda m: rcwa_memory_bytes(m, 64, batch=1, wavelengths=61)  # noqa: E731
    best = largest_fitting(estimate, budget)
    assert estimate(best) <= budget < estimate(best + 1)
    check_memory(estimate(best), "harmonics=ok", available=budget)  # fits: no error
    with pytest.raises(MemoryBudgetError) as caught:
        check_memory(
            estimate(100000),
            "harmonics=100000",
            setting="harmonics",
            value=100000,
            hint=fits_hint(estimate, budget, "harmonics"),
            available=budget,
        )
    error = caught.value
    assert isinstance(error, ValueError) and isinstance(error, MemoryError)
    assert error.setting == "harmonics" and error.value == 100000
    assert str(error).startswith("harmonics=100000 needs about ")
    assert f"this machine has 24 GB available; expected harmonics <= {best} to fit" in str(error)
    assert largest_fitting(lambda k: 10**30, budget) is None


SPEC = LibrarySpec(
    family="disk",
    count=16,
    wavelengths_nm=(500.0, 600.0),
    solver=SolverSettings(harmonics=(1, 1), grid=(16, 16)),
)


def test_library_resources_are_checked_before_the_file_is_made(tmp_path, monkeypatch):
    monkeypatch.setenv("HYPLEX_MEMORY_BYTES", "24e9")
    check_resources(SPEC, tmp_path / "ok.h5", chunk_size=8, workers=2)  # a small build fits
    stored, in_memory = design_bytes(SPEC)
    assert stored == 8 + 8 + 16 * 2 + 1 and in_memory > stored
    cases = {
        "count": LibrarySpec(**{**vars(SPEC), "count": 10**11}),
        "harmonics": LibrarySpec(**{**vars(SPEC), "solver": SolverSettings(harmonics=100000)}),
        "grid": LibrarySpec(**{**vars(SPEC), "solver": SolverSettings(grid=10**8)}),
    }
    for setting, spec in cases.items():
        path = tmp_path / f"{setting}.h5"
        with pytest.raises(MemoryBudgetError, match=rf"{setting}=.*24 GB") as caught:
            build_library(path, spec, chunk_size=8, serial=True, progress=False)
        assert caught.value.setting == setting
        assert not path.exists()  # refused before anything was written
    huge_chunk = LibrarySpec(**{**vars(SPEC), "count": 10**6})
    with pytest.raises(MemoryBudgetError, match="chunk_size=100000") as caught:
        check_resources(huge_chunk, None, chunk_size=100_000, workers=4)
    assert caught.value.setting == "chunk_size"


def test_a_directory_is_not_a_library_path(tmp_path):
    from hyplex.optics.library import LibraryError

    with pytest.raises(LibraryError, match="is a directory; expected a library file"):
        build_library(tmp_path, SPEC, serial=True, progress=False)


def test_disk_is_checked(tmp_path, monkeypatch):
    import hyplex.optics.memory as memory

    monkeypatch.setattr(memory.shutil, "disk_usage", lambda _: type("U", (), {"free": 100})())
    with pytest.raises(MemoryBudgetError, match="on disk"):
        check_resources(SPEC, tmp_path / "lib.h5", chunk_size=8)
    assert np.isfinite(design_bytes(SPEC)[0])

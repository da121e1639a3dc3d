"""Multi-fidelity design choice (hyplex.models.multifidelity_selection): screen on the cheap
spectra, re-solve the pool with the expensive solver, choose on the re-solved spectra only.

A fake cheap/expensive pair: the classes differ only in band 3. On the cheap spectra design 3
is the band-3 band-pass and design 5 a weaker one; the expensive solver says design 3 is in
fact flat and design 5 the full band-pass. The screen must keep both, and the final choice must
be design 5, which the cheap spectra would never choose."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hyplex.models.encoder import LibrarySelectionEncoder, separability_selection
from hyplex.models.encoder_capture import CameraCapture
from hyplex.models.multifidelity_selection import (
    covering_wavelengths,
    multifidelity_pool,
    screen_pool,
    solve_pool,
)
from hyplex.optics.library import ResponseLibrary, SolverSettings

torch.set_num_threads(1)
GRID = np.linspace(420.0, 700.0, 10)
CHEAP = SolverSettings(harmonics=(2, 2), grid=(64, 64))
EXPENSIVE = SolverSettings(harmonics=(8, 8), grid=(128, 128), precision="complex64")


def _scenes(seed=0, size=12):
    """Two classes, flat 0.5 reflectance, the second +0.25 in band 3: ``(S, L, H, W)``,
    ``(S, H, W)``."""
    rng = np.random.default_rng(seed)
    labels = np.broadcast_to((np.arange(size) >= size // 2).astype(int), (2, size, size)).copy()
    cubes = 0.5 + 0.01 * rng.standard_normal((2, GRID.size, size, size))
    cubes[:, 3][labels == 1] += 0.25
    return torch.as_tensor(cubes, dtype=torch.float32), torch.as_tensor(labels)


def _band_pass(band, peak=0.9, floor=0.05):
    spectrum = np.full(GRID.size, floor)
    spectrum[band] = peak
    return spectrum


def _cheap_spectra():
    """``(8, L)``: band-passes at bands 0, 1, 2, 3, 4, a weak band-3 pass (design 5), 6, 7."""
    spectra = np.stack([_band_pass(b) for b in range(8)])
    spectra[5] = _band_pass(3, peak=0.45)
    return spectra


def _expensive_spectra():
    """The converged truth: design 3 is flat and dark, design 5 the full band-3 pass."""
    spectra = _cheap_spectra()
    spectra[3] = np.full(GRID.size, 0.05)
    spectra[5] = _band_pass(3)
    return spectra


def _library():
    cheap = _cheap_spectra()
    return ResponseLibrary(
        wavelengths_nm=GRID, family="rectangle", parameter_names=("width_x", "width_y"),
        params_nm=np.stack([np.arange(8.0) + 100.0, np.arange(8.0) + 200.0], 1),
        thickness_nm=np.full(8, 600.0), period_nm=400.0, material="cSi", substrate="glass",
        superstrate="air", solver=CHEAP, T=np.stack([cheap, cheap], -1),
        done=np.ones(8, dtype=bool),
    )  # fmt: skip


class FakeSolver:
    """The expensive solver: the converged spectra of the designs asked for; counts calls."""

    def __init__(self, fail_after=None):
        self.calls: list[int] = []
        self.fail_after = fail_after

    def __call__(self, library, indices, wavelengths_nm, solver):
        assert solver == EXPENSIVE
        if self.fail_after is not None and len(self.calls) >= self.fail_after:
            raise KeyboardInterrupt  # an interrupted run
        self.calls.extend(int(i) for i in indices)
        keep = np.isin(GRID, wavelengths_nm)
        spectra = _expensive_spectra()[indices][:, keep]
        return np.stack([spectra, spectra], -1)


def test_screen_takes_runner_up_rounds_without_repeats():
    cubes, labels = _scenes()
    capture = CameraCapture(GRID)
    pool = screen_pool(_cheap_spectra(), capture, cubes, labels, rounds=2, n_filters=1)
    assert pool.tolist() == [3, 5]  # the cheap criterion's best, then its runner-up
    nested = screen_pool(_cheap_spectra(), capture, cubes, labels, rounds=4, n_filters=2)
    first = screen_pool(_cheap_spectra(), capture, cubes, labels, rounds=1, n_filters=2)
    assert len(set(nested.tolist())) == 8 and nested[:2].tolist() == first.tolist()  # nested
    with pytest.raises(ValueError, match="rounds x n_filters"):
        screen_pool(_cheap_spectra(), capture, cubes, labels, rounds=5, n_filters=2)


def test_final_choice_comes_from_the_resolved_pool_on_converged_spectra_only(tmp_path):
    cubes, labels = _scenes()
    capture = CameraCapture(GRID)
    library, solver = _library(), FakeSolver()
    pool = multifidelity_pool(library, capture, cubes, labels, rounds=2, solver=EXPENSIVE,
                              n_filters=1, cache_dir=tmp_path, solve=solver)  # fmt: skip
    assert pool.source_indices.tolist() == [3, 5] and sorted(solver.calls) == [3, 5]
    # the pool library holds the expensive spectra and settings, nothing of the cheap ones
    expected = _expensive_spectra()[[3, 5]]
    assert np.array_equal(pool.library.T, np.stack([expected, expected], -1))
    assert pool.library.t is None and pool.library.solver == EXPENSIVE
    assert pool.cheap_rms > 0.1
    # the encoder on the pool chooses on the converged spectra: design 5, which the cheap
    # spectra rank below design 3 (a leak of the cheap spectra would choose 3)
    encoder = LibrarySelectionEncoder(pool.library, GRID, 1, capture)
    chosen = separability_selection(encoder.library_spectra, capture, cubes, labels, 1)
    design = encoder.fix_selection(chosen)
    assert pool.source_indices[design["library_indices"]].tolist() == [5]
    assert np.allclose(design["responses"][0], _band_pass(3), atol=1e-6)
    cheap_choice = separability_selection(_cheap_spectra(), capture, cubes, labels, 1)
    assert cheap_choice.tolist() == [3]


def test_pool_is_cached_per_design_and_settings_and_survives_an_interruption(tmp_path):
    library = _library()
    wavelengths = GRID[2:6]
    interrupted = FakeSolver(fail_after=1)
    with pytest.raises(KeyboardInterrupt):
        solve_pool(library, [3, 5], EXPENSIVE, wavelengths, tmp_path, interrupted)
    assert interrupted.calls == [3]  # design 3 finished and was written before the stop
    rerun = FakeSolver()
    T, solved_now = solve_pool(library, [5, 3, 5], EXPENSIVE, wavelengths, tmp_path, rerun)  # noqa: N806
    assert rerun.calls == [5] and solved_now == 1
    assert np.array_equal(T[:, :, 0], _expensive_spectra()[[5, 3, 5]][:, 2:6])
    again = FakeSolver()
    assert solve_pool(library, [3, 5], EXPENSIVE, wavelengths, tmp_path, again)[1] == 0
    assert again.calls == []
    # another wavelength set (or solver, or geometry) is another key: solved afresh
    other = FakeSolver()
    solve_pool(library, [3], EXPENSIVE, GRID[2:7], tmp_path, other)
    assert other.calls == [3]
    assert not list(tmp_path.rglob("*.partial"))


def test_solver_output_and_indices_are_checked(tmp_path):
    library = _library()
    with pytest.raises(ValueError, match="rows of the library"):
        solve_pool(library, [8], EXPENSIVE, GRID, tmp_path, FakeSolver())

    def broken(library, indices, wavelengths_nm, solver):
        return np.full((1, wavelengths_nm.size, 2), np.nan)

    with pytest.raises(ValueError, match="expected finite"):
        solve_pool(library, [1], EXPENSIVE, GRID, None, broken)


def test_covering_wavelengths_keeps_the_bracketing_samples():
    library_nm = np.arange(400.0, 1001.0, 20.0)
    mask = covering_wavelengths(library_nm, np.linspace(400.0, 730.0, 34))
    assert library_nm[mask][[0, -1]].tolist() == [400.0, 740.0]
    with pytest.raises(ValueError, match="do not cover"):
        covering_wavelengths(library_nm, [390.0, 500.0])

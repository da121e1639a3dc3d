"""Tests for hyplex.optics.fdtd: Meep against the exact TMM, the cache, the structure
translation and its errors. These run Meep (Debian's python3-meep, installed by `make test`)
in a subprocess of /usr/bin/python3."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest
import torch

from hyplex.optics import fdtd, geometry, rcwa
from hyplex.optics.fdtd_structure import UnsupportedStructureError, describe
from hyplex.optics.materials import get_material
from hyplex.optics.thinfilm import stack_response

WAVELENGTHS = np.linspace(400.0, 1000.0, 25)


def _film_tmm(thickness_nm=100.0):
    indices = [
        np.ones_like(WAVELENGTHS),
        get_material("cSi_meep").refractive_index(WAVELENGTHS),
        get_material("SiO2").refractive_index(WAVELENGTHS),
    ]
    result = stack_response(indices, [thickness_nm], WAVELENGTHS)
    return np.asarray(result.T), np.asarray(result.R)


def _film(resolution, cache_dir):
    return fdtd.solve(
        [rcwa.Layer(100.0, "cSi_meep")],
        WAVELENGTHS,
        period_nm=400.0,
        substrate="SiO2",
        settings=fdtd.FDTDSettings(resolution=resolution),
        cache_dir=cache_dir,
        progress=False,
    )


def test_meep_film_agrees_with_tmm_to_second_order(tmp_path):
    """100 nm c-Si (Meep's own Lorentz fit) on Sellmeier glass: the exact answer is the TMM.
    Meep's error must be small and shrink ~4x when the grid step halves (second order)."""
    tmm_T, tmm_R = _film_tmm()
    errors = {}
    for resolution in (100, 200):
        result = _film(resolution, tmp_path)
        assert result.T.shape == (WAVELENGTHS.size, 2)
        np.testing.assert_allclose(result.T[:, 0], result.T[:, 1])  # 1-D: TE = TM
        errors[resolution] = np.sqrt(np.mean((result.T[:, 0] - tmm_T) ** 2))
        assert np.abs(result.R[:, 0] - tmm_R).max() < 0.12
    assert errors[200] < 0.008, errors
    assert errors[100] / errors[200] > 2.5, errors  # measured 3.6


def test_cache_returns_identical_results_without_rerunning(tmp_path, monkeypatch):
    first = _film(60, tmp_path)
    assert not first.cached and first.wall_s > 0

    def no_meep(*args, **kwargs):
        raise AssertionError("the cache should have answered without starting Meep")

    monkeypatch.setattr(subprocess, "Popen", no_meep)
    second = _film(60, tmp_path)
    assert second.cached and second.wall_s == 0.0
    np.testing.assert_array_equal(first.T, second.T)
    np.testing.assert_array_equal(first.R, second.R)
    # A different setting is a different key: it must try to run (and hit the stub).
    with pytest.raises(AssertionError, match="cache should have answered"):
        _film(61, tmp_path)


def test_patterned_cell_runs_and_conserves_energy(tmp_path):
    """A coarse 3-D run of a lossless pillar: T + R = 1 up to the discretisation, and one
    polarisation is run for a C4 pillar (TE = TM)."""
    layers = [rcwa.Layer(120.0, 3.5, geometry.Disk(100.0))]
    result = fdtd.solve(
        layers,
        [600.0, 800.0, 1000.0],
        period_nm=400.0,
        substrate=1.45,
        settings=fdtd.FDTDSettings(resolution=25),
        cache_dir=tmp_path,
        progress=False,
    )
    assert len(result.jobs) == 1
    np.testing.assert_allclose(result.T[:, 0], result.T[:, 1])
    np.testing.assert_allclose(result.T + result.R, 1.0, atol=0.03)


def test_rectangle_runs_both_polarisations(tmp_path):
    """A rectangle is not C4: TE and TM differ, and each comes from its own run."""
    layers = [rcwa.Layer(120.0, 3.5, geometry.Rectangle(300.0, 100.0))]
    result = fdtd.solve(
        layers,
        [700.0, 900.0],
        period_nm=400.0,
        substrate=1.45,
        settings=fdtd.FDTDSettings(resolution=20),
        cache_dir=tmp_path,
        progress=False,
    )
    assert len(result.jobs) == 2
    assert np.abs(result.T[:, 0] - result.T[:, 1]).max() > 0.02


@pytest.mark.parametrize(
    ("layer", "match"),
    [
        (rcwa.Layer(100.0, "cSi", geometry.Disk(80.0)), "cSi_meep"),
        (rcwa.Layer(100.0, 3.5 + 0.1j), "constant complex index"),
        (rcwa.Layer(100.0, 3.5, torch.full((8, 8), 0.5)), "strictly between 0 and 1"),
        (rcwa.Layer(100.0, permittivity=torch.ones(1, 8, 8, dtype=torch.complex128)), "raw"),
        (rcwa.Layer(torch.tensor([100.0, 120.0]), 3.5), "solve_many"),
        (rcwa.Layer(100.0, 3.5, torch.ones(2, 8, 8)), "solve_many"),
        (rcwa.Layer(100.0, torch.ones(3, dtype=torch.complex128)), "index tensor"),
    ],
)
def test_unsupported_structures_get_clear_errors(layer, match):
    with pytest.raises(UnsupportedStructureError, match=match):
        describe([layer], WAVELENGTHS, (400.0, 400.0), "air", "SiO2")


def test_other_bad_input():
    layer = rcwa.Layer(100.0, "cSi_meep")
    with pytest.raises(UnsupportedStructureError, match="superstrate"):
        describe([layer], WAVELENGTHS, (400.0, 400.0), "SiO2", "SiO2")
    with pytest.raises(ValueError, match="valid for wavelength_nm in \\[400, 1000\\]"):
        describe([layer], np.array([300.0, 500.0]), (400.0, 400.0), "air", "SiO2")
    with pytest.raises(ValueError, match="does not fit|must lie|fit"):
        describe([rcwa.Layer(100.0, 3.5, geometry.Disk(300.0))], WAVELENGTHS, (400.0,) * 2, 1, 1)
    with pytest.raises(ValueError, match="wavelengths_nm"):
        fdtd.solve([layer], [500.0, -1.0], 400.0)
    with pytest.raises(ValueError, match="period_nm"):
        fdtd.solve([layer], [500.0], 0.0)
    with pytest.raises(ValueError, match="resolution"):
        fdtd.FDTDSettings(resolution=0)
    with pytest.raises(ValueError, match="empty"):
        fdtd.solve([], [500.0], 400.0)


def test_missing_meep_says_how_to_install(monkeypatch):
    monkeypatch.setenv("HYPLEX_MEEP_PYTHON", "/nonexistent/python3")
    with pytest.raises(fdtd.MeepNotFoundError, match="apt-get install -y python3-meep"):
        fdtd.meep_version()


def test_failed_job_reports_meep_stderr(tmp_path, monkeypatch):
    """NaN fields (here forced by a Courant number far past the stability limit) surface as
    FDTDError carrying Meep's own message."""
    layers = [rcwa.Layer(120.0, 3.5, geometry.Disk(100.0))]
    with pytest.raises(fdtd.FDTDError, match="NaN or Inf"):
        fdtd.solve(
            layers,
            [700.0],
            period_nm=400.0,
            substrate=1.45,
            settings=fdtd.FDTDSettings(resolution=10, courant=1.5, max_time=50.0),
            cache_dir=tmp_path,
            progress=False,
        )
    assert not list(tmp_path.glob("fdtd-*.npz"))  # no partial result in the cache


def test_binary_grid_becomes_exact_blocks_and_symmetry_is_detected():
    rng = np.random.default_rng(0)
    grid = rng.random((12, 10)) > 0.5
    structure, symmetry = describe(
        [rcwa.Layer(100.0, 3.5, torch.as_tensor(grid, dtype=torch.float64))],
        WAVELENGTHS,
        (480.0, 400.0),
        "air",
        1.45,
    )
    assert symmetry == {"mirror_x": False, "mirror_y": False, "c4": False, "uniform_y": False}
    # Rasterise the blocks back at pixel centres: the union must equal the grid.
    x = (np.arange(12) + 0.5) * 0.040 - 0.240
    y = (np.arange(10) + 0.5) * 0.040 - 0.200
    X, Y = np.meshgrid(x, y, indexing="ij")
    covered = np.zeros_like(grid)
    for block in structure["layers"][0]["objects"]:
        (cx, cy), (sx, sy) = block["center"], block["size"]
        covered |= (np.abs(X - cx) < sx / 2) & (np.abs(Y - cy) < sy / 2)
    np.testing.assert_array_equal(covered, grid)

    cross = geometry.cross(300.0, 100.0, 400.0, grid=(16, 16), supersample=1).round()
    _, symmetry = describe([rcwa.Layer(100.0, 3.5, cross)], WAVELENGTHS, (400.0,) * 2, 1, 1)
    assert symmetry == {"mirror_x": True, "mirror_y": True, "c4": True, "uniform_y": False}
    _, symmetry = describe(
        [rcwa.Layer(100.0, 3.5, geometry.Rectangle(300.0, 100.0))], WAVELENGTHS, (400.0,) * 2, 1, 1
    )
    assert symmetry == {"mirror_x": True, "mirror_y": True, "c4": False, "uniform_y": False}


def test_sellmeier_and_lorentz_media_match_the_materials_module():
    """The medium handed to Meep must reproduce the material's own permittivity."""
    from hyplex.optics.fdtd_structure import _medium

    for name in ("SiO2", "BK7", "cSi_meep", "SiO2_meep"):
        spec = _medium(name, WAVELENGTHS, name)
        f = 1000.0 / WAVELENGTHS
        eps = spec["epsilon"] + sum(
            s * f0**2 / (f0**2 - f**2 - 1j * f * g) for f0, g, s in spec["lorentz"]
        )
        np.testing.assert_allclose(eps, get_material(name).permittivity(WAVELENGTHS), rtol=1e-12)

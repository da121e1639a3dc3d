"""Tests for the 2-D Meep path (films and 1-D gratings, normal and oblique incidence), mirror
symmetry in 3-D and the resolution ladder. Meep runs in a subprocess of /usr/bin/python3."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hyplex.optics import fdtd, geometry, rcwa
from hyplex.optics.fdtd_structure import UnsupportedStructureError
from hyplex.optics.thinfilm import stack_response

FILM = [rcwa.Layer(100.0, 2.0)]  # non-dispersive: Meep's sub-pixel smoothing applies


def _tmm(wavelengths, angle_deg):
    """Exact TE, TM transmittance ``(L, 2)`` of the film on n = 1.45."""
    columns = [
        np.asarray(
            stack_response([1.0, 2.0, 1.45], [100.0], wavelengths, angle_deg, polarization=pol).T
        )
        for pol in ("s", "p")
    ]
    return np.stack(columns, -1)


@pytest.mark.parametrize(
    "angle_deg",
    # 30 degrees: 18 Meep processes (one per wavelength, polarisation and rung), ~1-2 min.
    [0.0, pytest.param(30.0, marks=pytest.mark.slow)],
)
def test_2d_film_ladder_matches_the_tmm(tmp_path, angle_deg):
    """A 100 nm n = 2 film on n = 1.45 in a 2-D cell, TE and TM: single runs are off by up to
    ~0.01 at 50-200 px/um; the extrapolated ladder must be within 1e-3 of the exact TMM, with
    a fitted order near 2 (smoothing applies to non-dispersive media). 25 px/um is not yet
    asymptotic (its error has the other sign). A film has no period: a 50 nm wide cell is
    as exact as any, and cheap."""
    wavelengths = np.array([455.0, 555.0, 655.0]) if angle_deg else np.linspace(450, 750, 7)
    ladder = fdtd.solve_ladder(
        FILM,
        wavelengths,
        50.0,
        [50, 100, 200],
        substrate=1.45,
        settings=fdtd.FDTDSettings(dimensions=2),
        angle_deg=angle_deg,
        cache_dir=tmp_path,
        progress=False,
    )
    exact = _tmm(wavelengths, angle_deg)
    assert all(run.dimensions == 2 for run in ladder.runs)
    assert ladder.T.shape == ladder.T_error.shape == (wavelengths.size, 2)
    assert ladder.T_ladder.shape == (3, wavelengths.size, 2)
    rung_error = np.abs(ladder.T_ladder - exact).max(axis=(1, 2))  # (3,)
    extrapolated_error = np.abs(ladder.T - exact).max()
    assert rung_error[1] > 1e-3  # 100 px/um is not enough (measured 0.003) ...
    assert extrapolated_error < 1e-3  # ... the extrapolation is (measured 2e-5) ...
    assert extrapolated_error < 0.25 * rung_error[-1]  # ... and beats the finest run
    assert np.abs(ladder.R - (1 - exact)).max() < 1e-3  # lossless: R = 1 - T
    assert ladder.order_fitted
    assert np.all((ladder.T_order > 1.5) & (ladder.T_order < 2.6)), ladder.T_order
    # The ladder's rungs are the same cache entries as single runs at integer resolutions.
    single = fdtd.solve(
        FILM,
        wavelengths,
        50.0,
        substrate=1.45,
        settings=fdtd.FDTDSettings(resolution=100, dimensions=2),
        angle_deg=angle_deg,
        cache_dir=tmp_path,
        progress=False,
    )
    assert single.cached
    np.testing.assert_array_equal(single.T, ladder.T_ladder[1])
    if angle_deg:
        # TE and TM differ at 30 degrees, and each wavelength is its own Meep run.
        assert np.abs(exact[:, 0] - exact[:, 1]).max() > 0.05
        assert len(ladder.runs[0].jobs) == 2 * wavelengths.size


def test_2d_cell_equals_3d_cell_for_a_grating_uniform_along_y(tmp_path):
    """A 1-D grating (lines along y) is exact in 2-D: the 3-D cell, whose fields are then
    uniform along y, must give the same spectra at the same resolution, for TE and TM."""
    layers = [rcwa.Layer(150.0, 3.0, geometry.Rectangle(200.0, 400.0))]
    results = {
        dims: fdtd.solve(
            layers,
            [550.0, 700.0, 850.0],
            400.0,
            substrate=1.45,
            settings=fdtd.FDTDSettings(resolution=20, dimensions=dims),
            cache_dir=tmp_path,
            progress=False,
        )
        for dims in (2, 3)
    }
    assert results[2].dimensions == 2 and results[3].dimensions == 3
    assert np.abs(results[2].T[:, 0] - results[2].T[:, 1]).max() > 0.02  # TE != TM
    np.testing.assert_allclose(results[2].T, results[3].T, atol=1e-4)
    np.testing.assert_allclose(results[2].R, results[3].R, atol=1e-4)


def test_symmetry_reduced_3d_run_equals_the_full_cell(tmp_path):
    """Mirror planes x = 0 and y = 0 (phase -1 normal to the E field, +1 along it; Meep docs,
    "Exploiting Symmetry") cut the cell 4x; a wrong phase would cancel the source. The
    reduced cell must reproduce the full one for both polarisations of a rectangle."""
    layers = [rcwa.Layer(120.0, "cSi_meep", geometry.Rectangle(240.0, 120.0))]
    results = {
        sym: fdtd.solve(
            layers,
            np.linspace(500.0, 1000.0, 6),
            400.0,
            substrate=1.45,
            settings=fdtd.FDTDSettings(resolution=20, use_symmetry=sym),
            cache_dir=tmp_path,
            progress=False,
        )
        for sym in (True, False)
    }
    assert set(results[True].jobs).isdisjoint(results[False].jobs)  # really two runs
    assert np.abs(results[True].T[:, 0] - results[True].T[:, 1]).max() > 0.05  # TE != TM
    np.testing.assert_allclose(results[True].T, results[False].T, atol=1e-3)  # measured 6e-5
    np.testing.assert_allclose(results[True].R, results[False].R, atol=1e-3)


def test_cell_dimension_requests_are_checked(tmp_path):
    disk = [rcwa.Layer(100.0, 3.5, geometry.Disk(100.0))]
    grating = [rcwa.Layer(100.0, 3.5, torch.tensor([[0.0], [1.0]], dtype=torch.float64))]
    kwargs = {"substrate": 1.45, "cache_dir": tmp_path, "progress": False}
    with pytest.raises(UnsupportedStructureError, match="uniform along y"):
        fdtd.solve(disk, [600.0], 400.0, settings=fdtd.FDTDSettings(dimensions=2), **kwargs)
    with pytest.raises(UnsupportedStructureError, match="oblique incidence runs in 2-D"):
        fdtd.solve(disk, [600.0], 400.0, angle_deg=20.0, **kwargs)
    with pytest.raises(UnsupportedStructureError, match="oblique incidence runs in 2-D"):
        fdtd.solve(
            grating, [600.0], 400.0, angle_deg=20.0, settings=fdtd.FDTDSettings(dimensions=3)
        )
    with pytest.raises(UnsupportedStructureError, match="dimensions=1"):
        fdtd.solve(grating, [600.0], 400.0, settings=fdtd.FDTDSettings(dimensions=1), **kwargs)
    with pytest.raises(ValueError, match="angle_deg"):
        fdtd.solve(FILM, [600.0], 400.0, angle_deg=90.0, **kwargs)
    with pytest.raises(ValueError, match="dimensions"):
        fdtd.FDTDSettings(dimensions=4)
    with pytest.raises(ValueError, match="distinct"):
        fdtd.solve_ladder(FILM, [600.0], 400.0, [100, 100], **kwargs)


@pytest.mark.slow
def test_asi_grating_ladder_agrees_with_rcwa_li(tmp_path):
    """a-Si grating (period 400 nm, 200 nm lines, 300 nm tall, on n = 1.45) in 2-D, TM:
    Meep converges at first order (a-Si is a Lorentz medium, not smoothed); the extrapolated
    ladder must land closer to the RCWA (Li's rule, exact in 1-D) than the finest run does."""
    wavelengths = np.linspace(455.0, 745.0, 8)
    layers = [rcwa.Layer(300.0, "aSi_meep", torch.tensor([[0.0], [1.0], [1.0], [0.0]]).double())]
    ladder = fdtd.solve_ladder(
        layers, wavelengths, 400.0, [100, 200, 400], substrate=1.45, cache_dir=tmp_path
    )
    with torch.no_grad():
        exact = rcwa.solve(
            layers, wavelengths, 400.0, harmonics=(60, 0), substrate=1.45, factorization="li"
        ).T.numpy()
    finest = np.sqrt(np.mean((ladder.T_ladder[-1] - exact) ** 2, axis=0))
    extrapolated = np.sqrt(np.mean((ladder.T - exact) ** 2, axis=0))
    assert extrapolated[1] < 0.5 * finest[1], (extrapolated, finest)
    assert extrapolated.max() < 0.005, extrapolated
    assert 0.6 < ladder.T_order[1] < 1.6  # first order, fitted


def test_grid_misalignment_names_interfaces_off_the_grid():
    """Staircase error depends on sub-pixel positions, so ladders must keep interfaces on the
    grid: 100 nm layers and 200 nm boxes sit on it at multiples of 10 px/um, not at 135."""
    from hyplex.optics.fdtd_structure import describe

    layers = [rcwa.Layer(100.0, 3.5, geometry.Rectangle(200.0, 100.0))]
    structure, _ = describe(layers, np.array([600.0]), (400.0, 400.0), "air", 1.45)
    for resolution in (40, 80, 120, 160):
        settings = fdtd.FDTDSettings(resolution=resolution)
        assert fdtd.grid_misalignment(structure, settings, 3) == []
    off = fdtd.grid_misalignment(structure, fdtd.FDTDSettings(resolution=135), 3)
    assert any("bottom" in item for item in off)  # 100 nm = 13.5 px
    assert any("edge x" in item for item in off)  # x edges at +-100 nm
    assert any("edge y" in item for item in off)  # y edges at +-50 nm
    # At 90 px/um only the 50 nm half-height along y misses the grid.
    off = fdtd.grid_misalignment(structure, fdtd.FDTDSettings(resolution=90), 3)
    assert off and all("edge y" in item for item in off)


def test_a_line_wrapped_across_the_cell_face_equals_the_centred_line(tmp_path):
    """Periodicity: a 200 nm line of n = 2 on a 400 nm period, centred, touching a cell face
    and split across it (pattern columns [0,1,1,0], [1,1,0,0], [1,0,0,1]) is one grating, so
    the 2-D Meep spectra must agree (the shifts are whole pixels at 50 px/um). Before the fix
    the split line became two blocks that only touched the faces, Meep put air on the face's
    grid points, and T was 0.044 off; Meep's own noise between the three is ~1e-5)."""
    wavelengths = np.array([500.0, 650.0])
    spectra = {}
    for name, columns in (("centre", [0, 1, 1, 0]), ("touch", [1, 1, 0, 0]),
                          ("wrap", [1, 0, 0, 1])):  # fmt: skip
        grid = torch.tensor([[c] for c in columns], dtype=torch.float64)
        spectra[name] = fdtd.solve(
            [rcwa.Layer(300.0, 2.0, grid)],
            wavelengths,
            400.0,
            substrate=1.45,
            settings=fdtd.FDTDSettings(resolution=50, dimensions=2),
            cache_dir=tmp_path,
            progress=False,
        ).T
    for name in ("touch", "wrap"):
        np.testing.assert_allclose(spectra[name], spectra["centre"], atol=1e-4, err_msg=name)

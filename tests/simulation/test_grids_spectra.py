"""Grids, resampling, the ENVI reader and the real spectral libraries."""

import numpy as np
import pytest

from hyplex.simulation.envi import parse_header, read_spectral_library
from hyplex.simulation.grids import (
    bin_edges,
    check_same_grid,
    hyplex_grid,
    prototype_grid,
    quadrature_weights,
    resample,
)
from hyplex.simulation.spectra import (
    COLOUR_LIBRARIES,
    EARTHLIB_CLASSES,
    load_earthlib,
    load_reflectances,
)


def test_hyplex_grids():
    assert hyplex_grid().shape == (204,) and hyplex_grid()[[0, -1]].tolist() == [397, 1003]
    assert prototype_grid().shape == (34,) and np.allclose(np.diff(prototype_grid()), 10)


def test_resample_conserves_band_integrals_and_constants():
    fine = np.linspace(380, 1020, 2000)
    spectrum = 1 + np.sin(fine / 17.0) ** 2
    grid = prototype_grid()
    coarse = resample(fine, spectrum, grid)
    edges = bin_edges(grid)
    exact = [
        np.trapezoid(np.interp(x := np.linspace(a, b, 4001), fine, spectrum), x) / (b - a)
        for a, b in zip(edges[:-1], edges[1:], strict=True)
    ]
    assert np.allclose(coarse, exact, rtol=1e-6)
    assert np.allclose(resample(fine, np.ones_like(fine), hyplex_grid()), 1.0)
    # one convention: the quadrature weights are the resampler's bin widths, so the sum of
    # band averages integrates the source over the bins (395-735 nm on the 34-band grid)
    assert np.allclose(quadrature_weights(grid), 10.0)
    assert np.sum(quadrature_weights(grid)) == pytest.approx(340.0)
    inside = (fine >= edges[0]) & (fine <= edges[-1])
    integral = np.trapezoid(spectrum[inside], fine[inside])
    assert np.sum(quadrature_weights(grid) * coarse) == pytest.approx(integral, rel=1e-3)
    assert np.sum(quadrature_weights(grid) * grid) == pytest.approx((735**2 - 395**2) / 2)


def test_resample_onto_the_same_grid_is_the_identity(rng):
    grid = hyplex_grid()
    values = rng.random((3, 204))
    assert np.array_equal(resample(grid, values, grid), values)
    # a bin average onto the same points would smooth by (1, 6, 1) / 8: not done
    spike = np.zeros(34)
    spike[10] = 1.0
    assert np.array_equal(resample(prototype_grid(), spike, prototype_grid()), spike)


def test_error_mode_accepts_sources_that_cover_the_target_points():
    # an FVgNET cube (1 nm steps, 397-1003 nm) onto the hyplex grid: the end bins reach half a
    # step beyond the data and hold the end values
    source = np.arange(397.0, 1004.0)
    coarse = resample(source, source, hyplex_grid())
    assert coarse.shape == (204,) and np.allclose(coarse[1:-1], hyplex_grid()[1:-1], atol=1e-9)
    step = hyplex_grid()[1] - 397.0  # held at 397 over [397 - step / 2, 397]: mean 397 + step / 8
    assert coarse[0] == pytest.approx(397.0 + step / 8, rel=1e-9)
    source = np.linspace(400.0, 730.0, 12)
    assert np.allclose(resample(source, np.ones(12), prototype_grid()), 1.0)
    with pytest.raises(ValueError, match="target grid points span 400-730 nm, outside"):
        resample(np.linspace(401.0, 730.0, 12), np.ones(12), prototype_grid())


def test_resample_extrapolation_policies():
    source = np.array([500.0, 600.0, 700.0])
    with pytest.raises(ValueError, match="outside the source"):
        resample(source, [1, 2, 3], prototype_grid())
    held = resample(source, [1.0, 1.0, 1.0], prototype_grid(), extrapolation="constant")
    assert np.allclose(held, 1.0)
    zero = resample(source, [1.0, 1.0, 1.0], prototype_grid(), extrapolation="zero")
    assert zero[0] == 0 and zero[-1] == 0 and zero[15] == 1.0


def test_mismatched_grids_raise_a_clear_error():
    with pytest.raises(ValueError, match="mismatched wavelength grids for scene and encoder"):
        check_same_grid(hyplex_grid(), prototype_grid(), "scene and encoder")
    with pytest.raises(ValueError, match="strictly increasing"):
        resample([500.0, 400.0], [1, 2], prototype_grid())


def test_envi_reader_round_trip(tmp_path):
    data = np.arange(12, dtype="<f4").reshape(3, 4) / 10
    (tmp_path / "lib.sli").write_bytes(data.tobytes())
    (tmp_path / "lib.sli.hdr").write_text(
        "ENVI\nsamples = 4\nlines = 3\nbands = 1\nheader offset = 0\nfile type = ENVI Spectral"
        " Library\ndata type = 4\nbyte order = 0\nwavelength units = Micrometers\n"
        "spectra names = { a ,\n b , c }\nwavelength = { 0.4 , 0.5 ,\n 0.6 , 0.7 }\n"
    )
    library = read_spectral_library(tmp_path / "lib.sli")
    assert library.names == ["a", "b", "c"]
    assert np.allclose(library.wavelengths_nm, [400, 500, 600, 700])
    assert np.allclose(library.spectra, data)
    with pytest.raises(ValueError, match="first line"):
        parse_header("not envi")


def test_earthlib_classes_are_labelled_real_spectra(grid204):
    library = load_earthlib(grid204, ["vegetation", "soil", "paint"], max_per_class=20)
    assert len(library) == 60 and library.reflectance.shape == (60, 204)
    assert set(library.labels) == {"vegetation", "soil", "paint"}
    vegetation = library.select("vegetation").reflectance
    red, nir = np.argmin(abs(grid204 - 670)), np.argmin(abs(grid204 - 850))
    assert np.all(vegetation[:, nir] > 2 * vegetation[:, red])  # the red edge
    assert library.extrapolated.sum() == 2  # the bins of 397 and 400 nm reach below 400 nm
    assert {"soil", "vegetation", "road", "roof", "paint", "metal", "wood"} <= set(EARTHLIB_CLASSES)


@pytest.mark.parametrize("name", COLOUR_LIBRARIES)
def test_colour_science_libraries(name, grid34):
    library = load_reflectances(name, grid34)
    assert library.reflectance.shape == (len(library), 34) and len(library) >= 14
    assert np.all(np.isfinite(library.reflectance)) and library.reflectance.min() >= 0


def test_colorchecker_values_match_colour_science(grid34):
    import colour

    library = load_reflectances("colorchecker", grid34)
    reference = colour.SDS_COLOURCHECKERS["BabelColor Average"]["dark skin"]
    at_550 = library.reflectance[library.names.index("dark skin"), 15]  # 550 nm
    assert at_550 == pytest.approx(reference[550], rel=0.02)

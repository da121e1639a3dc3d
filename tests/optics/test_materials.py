"""Tests of hyplex.optics.materials against the published sources and for the torch/numpy API."""

import time

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hyplex.optics.materials import (
    ConstantMaterial,
    LorentzMaterial,
    Material,
    SellmeierMaterial,
    TabulatedMaterial,
    available_materials,
    get_material,
)

REQUIRED = ["air", "cSi", "aSi", "SiO2", "TiO2", "Si3N4", "BK7", "cSi_meep"]
DISPERSIVE = [name for name in available_materials() if name != "air"]
# Fraunhofer lines (nm) used in glass catalogues: d (He), F (H), C (H).
D_LINE, F_LINE, C_LINE = 587.5618, 486.1327, 656.2725


def sample_wavelengths(material: Material, count: int = 301) -> np.ndarray:
    low, high = material.wavelength_range_nm
    return np.linspace(low, high, count)


# --- known values from the sources ---------------------------------------------------------


def test_fused_silica_matches_malitson():
    silica = get_material("SiO2")
    assert silica.refractive_index(D_LINE) == pytest.approx(1.4585, abs=1e-4)  # Malitson nd
    assert silica.refractive_index(632.8).real == pytest.approx(1.4570, abs=1e-4)


def test_bk7_matches_schott_datasheet():
    bk7 = get_material("BK7")
    n_d, n_f, n_c = (bk7.refractive_index(w).real for w in (D_LINE, F_LINE, C_LINE))
    assert n_d == pytest.approx(1.5168, abs=1e-4)  # SCHOTT nd
    assert (n_d - 1) / (n_f - n_c) == pytest.approx(64.17, abs=0.05)  # SCHOTT Abbe number Vd


def test_silicon_nitride_is_about_two_and_transparent():
    index = get_material("Si3N4").refractive_index(633.0)
    assert 2.0 < index.real < 2.06 and index.imag == 0


@pytest.mark.parametrize(
    ("wavelength_nm", "expected"),
    [(500.0, 4.294 + 0.044165j), (800.0, 3.675 + 0.0054113j), (1000.0, 3.572 + 5.0930e-4j)],
)
def test_crystalline_silicon_matches_green_2008_table(wavelength_nm, expected):
    index = get_material("cSi").refractive_index(wavelength_nm)
    assert index.real == pytest.approx(expected.real, rel=1e-9)
    assert index.imag == pytest.approx(expected.imag, rel=1e-9)


def test_crystalline_silicon_between_knots_is_bracketed_by_table():
    index = get_material("cSi").refractive_index(505.0)
    assert 4.241 < index.real < 4.294 and 0.039367 < index.imag < 0.044165


def test_amorphous_silicon_matches_pierce_spicer_and_is_transparent_past_edge():
    amorphous = get_material("aSi")
    index = amorphous.refractive_index(619.9)
    assert index.real == pytest.approx(4.23) and index.imag == pytest.approx(0.461)
    tail = amorphous.refractive_index(np.linspace(953.8, 2066.0, 400))
    assert np.all(tail.imag == 0)  # no spline ringing into the tabulated k = 0 band


@pytest.mark.parametrize(
    ("wavelength_nm", "n", "k", "tolerance"),
    # Points of the 1-2.5 nm Sarkar 2019 table left out of the subsampled CSV.
    [
        (405.0, 2.325770, 0.0, 1e-5),
        (555.0, 2.161723, 0.0, 1e-5),
        (765.0, 2.100300, 0.0, 1e-5),
        (995.0, 2.075994, 0.0, 1e-5),
        (1025.0, 2.074051, 0.0, 1e-5),
        (1325.0, 2.061598, 0.0, 1e-5),
        (301.0, 2.813419, 0.577750, 2e-4),
        (363.0, 2.481942, 0.000165, 1e-4),
    ],
)
def test_titania_subsampling_reproduces_left_out_sarkar_points(wavelength_nm, n, k, tolerance):
    index = get_material("TiO2").refractive_index(wavelength_nm)
    assert abs(index.real - n) < tolerance and abs(index.imag - k) < tolerance


def test_titania_and_required_materials_cover_visible_near_infrared():
    for name in ("cSi", "aSi", "SiO2", "TiO2", "Si3N4", "BK7", "cSi_meep"):
        low, high = get_material(name).wavelength_range_nm
        assert low <= 400 and high >= 1000, name
    assert np.all(get_material("TiO2").refractive_index(np.linspace(366, 1600, 500)).imag == 0)


# --- Meep's Lorentzian fits ----------------------------------------------------------------


def test_meep_crystalline_silicon_fit_agrees_with_green_2008():
    wavelengths = np.linspace(400, 1000, 601)
    green = get_material("cSi").refractive_index(wavelengths)
    meep = get_material("cSi_meep").refractive_index(wavelengths)
    assert np.max(np.abs(meep.real / green.real - 1)) < 0.01
    assert np.max(np.abs(meep.imag - green.imag)) < 0.02
    # The transcription, not just the shape: at 500 nm the fit is within 0.1 % of Green in n.
    assert meep[100].real == pytest.approx(green[100].real, rel=1e-3)


def test_lorentz_with_zero_damping_equals_sellmeier():
    """Meep's fused_quartz (Malitson as Lorentzians, f_n = 1/sqrt(C_n)) equals the Sellmeier."""
    fused_quartz = LorentzMaterial(
        "fused_quartz",
        (210.0, 6700.0),
        "Meep fused_quartz",
        1.0,
        [
            (1 / 0.0684043, 0.0, 0.696166300),
            (1 / 0.1162414, 0.0, 0.407942600),
            (1 / 9.896161, 0.0, 0.897479400),
        ],
    )
    wavelengths = np.linspace(250, 2000, 50)
    np.testing.assert_allclose(
        fused_quartz.refractive_index(wavelengths),
        get_material("SiO2").refractive_index(wavelengths),
        rtol=1e-12,
    )


def test_lorentz_sign_convention_gives_absorption():
    """exp(-i omega t): a damped oscillator with sigma > 0 has Im(eps) > 0."""
    oscillator = LorentzMaterial("one", (300, 900), "test", 1.0, [(2.0, 0.5, 1.0)])
    frequency = 1000.0 / 600.0
    expected = 1.0 + 1.0 * 2.0**2 / (2.0**2 - frequency**2 - 1j * frequency * 0.5)
    assert oscillator.permittivity(600.0) == pytest.approx(expected, rel=1e-12)
    assert oscillator.permittivity(600.0).imag > 0


@pytest.mark.parametrize("name", DISPERSIVE)
def test_absorption_is_non_negative_and_permittivity_is_index_squared(name):
    material = get_material(name)
    wavelengths = sample_wavelengths(material, 2001)
    index = material.refractive_index(wavelengths)
    eps = material.permittivity(wavelengths)
    assert np.all(np.isfinite(index)) and np.all(index.imag >= 0) and np.all(eps.imag >= -1e-12)
    np.testing.assert_allclose(eps, index**2, rtol=1e-12, atol=1e-12)


@settings(max_examples=40, deadline=None)
@given(
    name=st.sampled_from(DISPERSIVE),
    fractions=st.lists(st.floats(0.0, 1.0), min_size=1, max_size=20),
)
def test_any_wavelength_in_range_gives_finite_absorbing_index(name, fractions):
    material = get_material(name)
    low, high = material.wavelength_range_nm
    wavelengths = np.clip(low + (high - low) * np.asarray(fractions), low, high)
    index = material.refractive_index(wavelengths)
    assert np.all(np.isfinite(index)) and np.all(index.real > 0) and np.all(index.imag >= 0)


# --- torch / numpy API ---------------------------------------------------------------------


@pytest.mark.parametrize("name", available_materials())
def test_torch_and_numpy_paths_agree_and_keep_shape(name):
    material = get_material(name)
    low, high = material.wavelength_range_nm
    low, high = (400.0, 1000.0) if high == np.inf else (low, high)
    wavelengths = np.linspace(low, high, 24).reshape(2, 3, 4)
    from_numpy = material.refractive_index(wavelengths)
    from_torch64 = material.refractive_index(torch.from_numpy(wavelengths))
    from_torch32 = material.refractive_index(torch.from_numpy(wavelengths).float())
    assert from_numpy.dtype == np.complex128 and from_numpy.shape == (2, 3, 4)
    assert from_torch64.dtype == torch.complex128 and from_torch64.shape == (2, 3, 4)
    assert from_torch32.dtype == torch.complex64 and from_torch32.shape == (2, 3, 4)
    np.testing.assert_allclose(from_torch64.numpy(), from_numpy, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(from_torch32.numpy(), from_numpy, rtol=1e-5, atol=1e-6)
    eps = material.permittivity(torch.from_numpy(wavelengths))
    np.testing.assert_allclose(eps.numpy(), material.permittivity(wavelengths), rtol=1e-13)


def test_scalar_empty_and_integer_inputs():
    silicon = get_material("cSi")
    scalar = silicon.refractive_index(500)
    assert isinstance(scalar, np.complex128) and np.shape(scalar) == ()
    assert silicon.refractive_index(np.array([])).shape == (0,)
    as_int_tensor = silicon.refractive_index(torch.tensor([500, 800]))
    assert as_int_tensor.dtype == torch.complex128
    assert as_int_tensor[0].item() == pytest.approx(4.294 + 0.044165j)


@pytest.mark.parametrize("name", DISPERSIVE)
def test_gradient_matches_central_finite_difference(name):
    material = get_material(name)
    low, high = material.wavelength_range_nm
    # Off-knot points inside the range, avoiding the aSi absorption edge at 953.8 nm.
    wavelengths = torch.tensor(
        [low + 0.137 * (high - low), low + 0.3571 * (high - low), low + 0.4123 * (high - low)],
        dtype=torch.float64,
        requires_grad=True,
    )
    index = material.refractive_index(wavelengths)
    (grad_n,) = torch.autograd.grad(index.real.sum(), wavelengths, retain_graph=True)
    (grad_k,) = torch.autograd.grad(index.imag.sum(), wavelengths)
    step = 1e-4
    plain = wavelengths.detach().numpy()
    difference = (
        material.refractive_index(plain + step) - material.refractive_index(plain - step)
    ) / (2 * step)
    np.testing.assert_allclose(grad_n.numpy(), difference.real, rtol=1e-5, atol=1e-12)
    np.testing.assert_allclose(grad_k.numpy(), difference.imag, rtol=1e-5, atol=1e-12)


@pytest.mark.parametrize("name", ["cSi", "TiO2", "aSi"])
def test_spline_is_c1_and_c2_across_knots(name):
    material = get_material(name)
    knots = material.wavelength_nm[1:-1]
    knots = knots[knots < material.transparent_from_nm - 1]  # k is only C0 at an edge

    def derivatives(points):
        wavelengths = torch.tensor(points, dtype=torch.float64, requires_grad=True)
        index = material.refractive_index(wavelengths)
        result = []
        for part in (index.real, index.imag):
            (first,) = torch.autograd.grad(part.sum(), wavelengths, create_graph=True)
            (second,) = torch.autograd.grad(first.sum(), wavelengths, retain_graph=True)
            result += [first.detach(), second.detach()]
        return result

    epsilon = 1e-7
    for left, right in zip(derivatives(knots - epsilon), derivatives(knots + epsilon), strict=True):
        np.testing.assert_allclose(left, right, rtol=1e-4, atol=1e-6 * left.abs().max().item())
    # Without autograd: one-sided difference quotients of n meet at every knot.
    step = 1e-3
    n_at = {shift: material.refractive_index(knots + shift).real for shift in (-step, 0, step)}
    left_slope = (n_at[0] - n_at[-step]) / step
    right_slope = (n_at[step] - n_at[0]) / step
    np.testing.assert_allclose(
        left_slope, right_slope, rtol=1e-3, atol=1e-3 * np.abs(left_slope).max()
    )


def test_constant_material_stays_on_autograd_graph():
    glass = get_material(1.5 + 0.01j)
    assert isinstance(glass, ConstantMaterial)
    wavelengths = torch.linspace(400, 1000, 5, requires_grad=True, dtype=torch.float64)
    index = glass.refractive_index(wavelengths)
    assert torch.all(index == torch.tensor(1.5 + 0.01j, dtype=torch.complex128))
    (gradient,) = torch.autograd.grad(index.real.sum(), wavelengths)
    assert torch.all(gradient == 0)
    assert get_material("air").refractive_index(1e6) == 1.0


def test_refractive_index_of_100_wavelengths_is_fast():
    wavelengths = torch.linspace(400, 1000, 100, dtype=torch.float64)
    for name in ("cSi", "cSi_meep", "SiO2"):
        material = get_material(name)
        material.refractive_index(wavelengths)  # warm the spline cache
        start = time.perf_counter()
        for _ in range(50):
            material.refractive_index(wavelengths)
        assert (time.perf_counter() - start) / 50 < 2e-3, name


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", available_materials())
def test_cuda_input_stays_on_device_and_matches_cpu(name):
    material = get_material(name)
    wavelengths = np.linspace(400.0, 1000.0, 64) if name == "air" else sample_wavelengths(material)
    for dtype, tolerance in ((torch.float64, 1e-12), (torch.float32, 1e-5)):
        on_device = torch.tensor(wavelengths, dtype=dtype, device="cuda", requires_grad=True)
        index = material.refractive_index(on_device)
        assert index.is_cuda and index.dtype == (on_device.dtype.to_complex())
        (gradient,) = torch.autograd.grad(index.real.sum(), on_device)
        assert gradient.is_cuda and torch.all(torch.isfinite(gradient))
        np.testing.assert_allclose(
            index.detach().cpu().numpy(),
            material.refractive_index(wavelengths),
            rtol=tolerance,
            atol=tolerance,
        )


# --- validation and registry ---------------------------------------------------------------


@pytest.mark.parametrize("as_torch", [False, True])
def test_out_of_range_wavelengths_raise_with_range_and_offenders(as_torch):
    silicon = get_material("cSi")
    bad = np.array([200.0, 500.0, 1600.0])
    with pytest.raises(ValueError, match=r"'cSi'.*\[250, 1450\] nm.*min 200 nm, max 1600 nm"):
        silicon.refractive_index(torch.tensor(bad, requires_grad=True) if as_torch else bad)
    with pytest.raises(ValueError, match=r"\[400, 1000\] nm.*max 1001 nm"):
        get_material("cSi_meep").permittivity(1001.0)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_wavelengths_raise(value):
    for wavelengths in (np.array([500.0, value]), torch.tensor([500.0, value])):
        with pytest.raises(ValueError, match=r"\[250, 1450\] nm; got NaN or infinite"):
            get_material("cSi").refractive_index(wavelengths)
    with pytest.raises(ValueError, match="NaN or infinite"):
        get_material("air").refractive_index(value)


@pytest.mark.parametrize("value", [0.0, -500.0])
def test_non_positive_wavelengths_raise(value):
    for name in ("air", "SiO2"):
        with pytest.raises(ValueError, match="non-positive"):
            get_material(name).refractive_index(np.array([value, 500.0]))


def test_registry_names_lookup_and_errors():
    names = available_materials()
    assert set(REQUIRED) <= set(names)
    assert get_material("csi") is get_material("cSi")
    assert get_material("SIO2").name == "SiO2"
    silicon = get_material("cSi")
    assert get_material(silicon) is silicon
    assert isinstance(get_material(2), ConstantMaterial)
    with pytest.raises(ValueError, match="unknown material 'unobtainium'") as error:
        get_material("unobtainium")
    assert all(name in str(error.value) for name in names)
    with pytest.raises(TypeError):
        get_material(True)
    with pytest.raises(ValueError, match="k >= 0"):
        ConstantMaterial(1.5 - 0.1j)
    for name in names:
        material = get_material(name)
        assert material.source and material.name == name


def test_material_classes_validate_their_parameters():
    with pytest.raises(ValueError, match="equal lengths"):
        SellmeierMaterial("bad", (300, 900), "test", b=(1.0,), c_um2=(0.01, 0.02))
    with pytest.raises(ValueError, match="strictly increasing"):
        TabulatedMaterial("bad", [500, 400, 600], [1, 1, 1], [0, 0, 0], "test")
    with pytest.raises(ValueError, match="k must be >= 0"):
        TabulatedMaterial("bad", [400, 500, 600], [1, 1, 1], [0, -1, 0], "test")
    table = TabulatedMaterial("ok", [400, 500, 600, 700], [1.5, 1.4, 1.3, 1.2], [0.1] * 4, "test")
    assert table.log_k and table.refractive_index(450.0).imag == pytest.approx(0.1)


def test_plot_draws_n_and_k():
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    axes = get_material("cSi").plot()
    assert [line.get_label() for line in axes.get_lines()] == ["n", "k"]
    axes = get_material("air").plot(wavelength_nm=torch.linspace(400, 700, 10))
    assert len(axes.get_lines()[0].get_xdata()) == 10

"""Tests for hyplex.optics.thinfilm: against the `tmm` package, analytic cases, stability,
gradients, batching and input validation."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest
import torch

from hyplex.optics.thinfilm import ThinFilmResult, _normal_wavevector, stack_response

tmm = pytest.importorskip("tmm")

WAVELENGTHS = [400.0, 550.0, 700.0, 1000.0]


def _bragg_stack(periods: int = 5, design_nm: float = 550.0):
    high, low = 2.3, 1.46
    films = [high, low] * periods
    return [1.0, *films, 1.52], [design_nm / (4 * n) for n in films]


STACKS = {
    # air / lossy silicon-like film / glass
    "lossy_film": ([1.0, 4 + 0.1j, 1.5], [100.0]),
    # air / (TiO2-like / SiO2-like) x 5 quarter-wave mirror at 550 nm / glass
    "bragg": _bragg_stack(),
    # air / oxide / nitride / lossy silicon-like substrate
    "lossy_substrate": ([1.0, 1.46, 2.0 + 0.01j, 3.9 + 0.02j], [200.0, 80.0]),
    # glass / air gap / glass: evanescent film beyond 41.8 deg (frustrated TIR)
    "dense_incidence": ([1.5, 1.0, 1.33 + 1e-3j, 1.5], [150.0, 60.0]),
}


def _tmm_reference(pol, n_list, thicknesses, angle_deg, wavelength):
    d_list = [np.inf, *thicknesses, np.inf]
    return tmm.coh_tmm(pol, n_list, d_list, np.deg2rad(angle_deg), wavelength)


@pytest.mark.parametrize("pol", ["s", "p"])
@pytest.mark.parametrize("angle", [0.0, 30.0, 60.0])
@pytest.mark.parametrize("name", sorted(STACKS))
def test_matches_tmm_package(name, angle, pol):
    n_list, thicknesses = STACKS[name]
    result = stack_response(n_list, thicknesses, WAVELENGTHS, angle, pol)
    for i, wavelength in enumerate(WAVELENGTHS):
        ref = _tmm_reference(pol, n_list, thicknesses, angle, wavelength)
        assert abs(result.R[i].item() - ref["R"]) < 1e-10
        assert abs(result.T[i].item() - ref["T"]) < 1e-10
        # Same amplitude conventions as Byrnes/tmm, p-polarised sign included: compare
        # the complex amplitudes directly.
        assert abs(result.r[i].item() - ref["r"]) < 1e-10
        assert abs(result.t[i].item() - ref["t"]) < 1e-10


def test_p_amplitude_sign_convention_at_normal_incidence():
    # Byrnes' p reference directions: r_p = -r_s and t_p = t_s at normal incidence, where
    # s and p are physically the same wave.
    n_list, thicknesses = STACKS["lossy_substrate"]
    s = stack_response(n_list, thicknesses, WAVELENGTHS, 0.0, "s")
    p = stack_response(n_list, thicknesses, WAVELENGTHS, 0.0, "p")
    torch.testing.assert_close(p.r, -s.r, rtol=0, atol=1e-14)
    torch.testing.assert_close(p.t, s.t, rtol=0, atol=1e-14)
    torch.testing.assert_close(p.R, s.R, rtol=0, atol=1e-14)


@pytest.mark.parametrize("angle", [0.0, 25.0, 50.0, 75.0])
def test_single_interface_fresnel(angle):
    n1, n2 = 1.0, 1.5
    theta1 = np.deg2rad(angle)
    theta2 = np.arcsin(n1 * np.sin(theta1) / n2)
    c1, c2 = np.cos(theta1), np.cos(theta2)
    expected = {
        "s": ((n1 * c1 - n2 * c2) / (n1 * c1 + n2 * c2), 2 * n1 * c1 / (n1 * c1 + n2 * c2)),
        "p": ((n2 * c1 - n1 * c2) / (n2 * c1 + n1 * c2), 2 * n1 * c1 / (n2 * c1 + n1 * c2)),
    }
    for pol, (r, t) in expected.items():
        result = stack_response([n1, n2], [], [500.0], angle, pol)
        assert abs(result.r.item() - r) < 1e-14
        assert abs(result.t.item() - t) < 1e-14
        assert abs(result.T.item() - abs(t) ** 2 * n2 * c2 / (n1 * c1)) < 1e-14
        assert abs(result.R.item() + result.T.item() - 1) < 1e-14


def test_brewster_angle_has_no_p_reflection():
    brewster = np.rad2deg(np.arctan(1.5))
    p = stack_response([1.0, 1.5], None, [500.0], brewster, "p")
    s = stack_response([1.0, 1.5], None, [500.0], brewster, "s")
    assert p.R.item() < 1e-28
    assert s.R.item() > 0.1


def test_quarter_wave_antireflection_coating():
    substrate, design = 2.25, 600.0
    coating = np.sqrt(substrate)
    wavelengths = torch.tensor([450.0, design, 800.0], dtype=torch.float64)
    result = stack_response([1.0, coating, substrate], [design / (4 * coating)], wavelengths)
    bare = ((1 - substrate) / (1 + substrate)) ** 2
    assert result.R[1].item() < 1e-28
    assert 1e-3 < result.R[0].item() < bare and 1e-3 < result.R[2].item() < bare
    assert abs(result.T[1].item() - 1) < 1e-14


@pytest.mark.parametrize("pol", ["s", "p", "unpolarized"])
def test_energy_conservation_lossless(pol):
    rng = np.random.default_rng(0)
    indices = [1.0, *rng.uniform(1.3, 2.5, size=6), 1.45]
    thicknesses = rng.uniform(10.0, 300.0, size=6)
    angles = torch.tensor([0.0, 20.0, 45.0, 70.0, 85.0], dtype=torch.float64)[:, None]
    result = stack_response(indices, thicknesses, torch.linspace(400, 1000, 31), angles, pol)
    assert result.R.shape == (5, 31)
    torch.testing.assert_close(result.R + result.T, torch.ones_like(result.R), rtol=0, atol=1e-12)
    assert result.R.min() > 0 and result.T.min() > 0


@pytest.mark.parametrize("pol", ["s", "p"])
def test_total_internal_reflection(pol):
    # glass -> MgF2-like film -> air beyond the critical angle of 41.8 deg
    angles = torch.tensor([50.0, 60.0, 80.0], dtype=torch.float64)[:, None]
    result = stack_response([1.5, 1.38, 1.0], [120.0], WAVELENGTHS, angles, pol)
    assert torch.all(result.T == 0)
    torch.testing.assert_close(result.R, torch.ones_like(result.R), rtol=0, atol=1e-12)
    # a thin enough air gap before glass lets light tunnel (frustrated TIR), still lossless
    tunnel = stack_response([1.5, 1.0, 1.5], [100.0], WAVELENGTHS, angles, pol)
    assert tunnel.T.min() > 1e-3
    torch.testing.assert_close(tunnel.R + tunnel.T, torch.ones_like(tunnel.R), rtol=0, atol=1e-12)


def test_forward_branch_of_normal_wavevector():
    # Byrnes appendix D: the forward wave decays (Im q > 0) or, when lossless, carries power
    # forward (Re q > 0). The last index has Im(n^2) < 0, where the principal square root
    # returns the backward wave and the branch must be flipped.
    n = torch.tensor([1.5, 1.0, 4.0 + 0.1j, 0.05 + 3.5j, -1.2 + 0.3j], dtype=torch.complex128)
    kx = torch.tensor(1.2, dtype=torch.complex128)
    q = _normal_wavevector(n, kx)
    torch.testing.assert_close(q * q, n * n - kx * kx, rtol=1e-14, atol=0)
    assert q[0].real > 0 and q[0].imag == 0  # propagating
    assert q[1].imag > 0 and q[1].real == 0  # evanescent beyond the critical angle
    assert torch.all(q[2:].imag > 0)  # lossy, metal-like, Im(n^2) < 0


@pytest.mark.parametrize("dtype", [torch.complex128, torch.complex64])
@pytest.mark.parametrize("thickness_nm", [1e4, 1e6])
def test_thick_absorbing_film_is_stable(thickness_nm, dtype):
    # 10 um and 1 mm of silicon at 400 nm (n = 5.57 + 0.387i): exp(|Im delta|) is e^61 and
    # e^6100, which a naive transfer-matrix product cannot hold.
    silicon = 5.57 + 0.387j
    indices = torch.tensor([1.0, silicon, 1.5], dtype=dtype)
    d = torch.tensor([thickness_nm], dtype=dtype.to_real(), requires_grad=True)
    result = stack_response(indices, d, torch.tensor([400.0]), 30.0, "p")
    assert result.r.dtype == dtype
    for x in (result.R, result.T, result.A, result.r, result.t):
        assert torch.isfinite(x).all()
    assert result.T.item() < 1e-30
    # the film acts as a semi-infinite silicon substrate
    bulk = stack_response(indices[[0, 1]], None, torch.tensor([400.0]), 30.0, "p")
    tolerance = 1e-12 if dtype == torch.complex128 else 1e-6
    assert abs(result.R.item() - bulk.R.item()) < tolerance
    result.A.sum().backward()
    assert torch.isfinite(d.grad).all()


def _finite_difference(function, x: torch.Tensor, step: float) -> torch.Tensor:
    gradient = torch.zeros_like(x)
    for i in range(x.numel()):
        plus, minus = x.clone(), x.clone()
        plus.view(-1)[i] += step
        minus.view(-1)[i] -= step
        gradient.view(-1)[i] = (function(plus) - function(minus)) / (2 * step)
    return gradient


@pytest.mark.parametrize("pol", ["s", "p"])
def test_gradients_match_finite_differences(pol):
    wavelengths = torch.tensor([480.0, 633.0], dtype=torch.float64)
    d0 = torch.tensor([120.0, 85.0], dtype=torch.float64)
    n0 = torch.tensor([1.0, 2.0 + 0.05j, 1.46, 3.9 + 0.02j], dtype=torch.complex128)

    def objective(n, d, wavelengths=wavelengths):
        result = stack_response(n, d, wavelengths, 35.0, pol)
        return (result.R * torch.tensor([1.0, 0.7]) + result.T * torch.tensor([0.3, 1.3])).sum()

    d = d0.clone().requires_grad_(True)
    n = n0.clone().requires_grad_(True)
    lam = wavelengths.clone().requires_grad_(True)
    objective(n, d, lam).backward()
    fd_d = _finite_difference(lambda x: objective(n0, x), d0, 1e-4)
    fd_lam = _finite_difference(lambda x: objective(n0, d0, x), wavelengths, 1e-4)
    # complex leaf: grad = dL/dRe(n) + i dL/dIm(n)
    fd_re = _finite_difference(lambda x: objective(torch.complex(x, n0.imag), d0), n0.real, 1e-6)
    # (the incidence medium must stay lossless: perturb Im(n) of the other layers only)
    fd_im = _finite_difference(
        lambda x: objective(torch.complex(n0.real, torch.cat([n0.imag[:1], x])), d0),
        n0.imag[1:],
        1e-6,
    )
    pairs = [(d.grad, fd_d), (lam.grad, fd_lam), (n.grad.real, fd_re), (n.grad.imag[1:], fd_im)]
    for autograd, fd in pairs:
        assert fd.abs().max() > 1e-4
        assert ((autograd - fd).abs().max() / fd.abs().max()).item() < 1e-6


def test_batched_call_equals_per_item_calls():
    rng = np.random.default_rng(1)
    stacks, n_layers = 3, 5
    indices = torch.tensor(
        rng.uniform(1.2, 3.0, (stacks, 1, n_layers)) + 1j * rng.uniform(0, 0.1, (stacks, 1, 5))
    )
    indices[..., 0] = 1.0
    thicknesses = torch.tensor(rng.uniform(20, 200, (stacks, n_layers - 2)))
    angles = torch.tensor([0.0, 40.0], dtype=torch.float64).reshape(2, 1, 1)
    batched = stack_response(indices, thicknesses, WAVELENGTHS, angles, "p")
    assert batched.R.shape == (2, stacks, len(WAVELENGTHS))
    for a in range(2):
        for b in range(stacks):
            single = stack_response(
                list(indices[b, 0]), thicknesses[b], WAVELENGTHS, angles[a].item(), "p"
            )
            for field in ("R", "T", "A", "r", "t"):
                torch.testing.assert_close(
                    getattr(batched, field)[a, b], getattr(single, field), rtol=0, atol=1e-13
                )


def test_per_layer_forms_polarization_aliases_and_unpolarized():
    class Dispersive:  # a resolved material: anything with refractive_index(wavelength_nm)
        def refractive_index(self, wavelength_nm):
            return 1.9 + 4e3 / wavelength_nm**2 + 0.01j

    wavelengths = torch.tensor(WAVELENGTHS, dtype=torch.float64)
    film = 1.9 + 4e3 / wavelengths**2 + 0.01j
    by_list = stack_response([1.0, Dispersive(), 1.5], [90.0], wavelengths, 45.0, "TM")
    tensor = torch.stack([torch.ones_like(film), film, torch.full_like(film, 1.5)], dim=-1)
    by_tensor = stack_response(tensor, torch.tensor([90.0]), wavelengths, 45.0, "p")
    torch.testing.assert_close(by_list.r, by_tensor.r, rtol=0, atol=1e-15)
    s = stack_response([1.0, film, 1.5], [90.0], wavelengths, 45.0, "TE")
    unpolarized = stack_response(tensor, [90.0], wavelengths, 45.0, "unpolarized")
    torch.testing.assert_close(unpolarized.R, (s.R + by_tensor.R) / 2, rtol=0, atol=1e-15)
    torch.testing.assert_close(unpolarized.T, (s.T + by_tensor.T) / 2, rtol=0, atol=1e-15)
    torch.testing.assert_close(unpolarized.r, s.r, rtol=0, atol=0)
    assert isinstance(unpolarized, ThinFilmResult) and unpolarized.R.dtype == torch.float64


def test_material_names_resolve_through_get_material(monkeypatch):
    class Constant:
        def __init__(self, index):
            self.index = index

        def refractive_index(self, wavelength_nm):
            return torch.full_like(wavelength_nm, self.index, dtype=torch.complex128)

    names = {"air": Constant(1.0), "oxide": Constant(1.46 + 0.001j), "glass": Constant(1.52)}
    fake = types.ModuleType("hyplex.optics.materials")
    fake.get_material = lambda name: names[name]
    monkeypatch.setitem(sys.modules, "hyplex.optics.materials", fake)
    by_name = stack_response(["air", "oxide", "glass"], [110.0], WAVELENGTHS, 20.0, "p")
    by_value = stack_response([1.0, 1.46 + 0.001j, 1.52], [110.0], WAVELENGTHS, 20.0, "p")
    torch.testing.assert_close(by_name.r, by_value.r, rtol=0, atol=0)


def test_precision_follows_indices():
    low = stack_response(
        torch.tensor([1.0, 2.0 + 0.1j, 1.5], dtype=torch.complex64), [50.0], [500.0]
    )
    assert low.r.dtype == torch.complex64 and low.R.dtype == torch.float32
    high = stack_response([1.0, 2.0 + 0.1j, 1.5], [50.0], torch.tensor([500.0]))
    assert high.r.dtype == torch.complex128 and high.R.dtype == torch.float64


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"thicknesses_nm": [-1.0]}, "thicknesses_nm must be finite and >= 0"),
        ({"thicknesses_nm": [float("nan")]}, "thicknesses_nm must be finite and >= 0"),
        ({"thicknesses_nm": [1.0, 2.0]}, r"thicknesses_nm must have shape \(\.\.\., 1\)"),
        ({"indices": [1.0, float("nan"), 1.5]}, "indices contain NaN"),
        ({"indices": [1.0 + 0.1j, 2.0, 1.5]}, "incidence medium .* must be lossless"),
        ({"indices": [1.5]}, "at least 2 layers"),
        ({"wavelengths_nm": [500.0, 0.0]}, "wavelengths_nm must be positive"),
        ({"wavelengths_nm": [float("nan")]}, "wavelengths_nm must be positive"),
        ({"wavelengths_nm": [[500.0]]}, r"wavelengths_nm must have shape \(L,\)"),
        ({"angle_deg": 90.0}, r"angle_deg must lie in \[0, 90\)"),
        ({"angle_deg": -5.0}, r"angle_deg must lie in \[0, 90\)"),
        ({"polarization": "x"}, "polarization must be"),
        ({"indices": torch.ones(3, 3)}, "shapes do not broadcast"),
        ({"indices": [1.0, torch.ones(2), torch.ones(3)]}, "must broadcast to a common shape"),
    ],
)
def test_bad_input_raises_clear_errors(kwargs, message):
    arguments = {
        "indices": [1.0, 2.0, 1.5],
        "thicknesses_nm": [100.0],
        "wavelengths_nm": [500.0, 600.0],
        "angle_deg": 0.0,
        "polarization": "s",
    }
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=message):
        stack_response(**arguments)

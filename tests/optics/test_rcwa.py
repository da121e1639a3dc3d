"""Acceptance tests of the RCWA solver: TMM limit, energy, gradients, symmetry, errors."""

import math

import pytest
import torch
from rcwa_patterns import disk, fd_check, l_shape

from hyplex.optics.rcwa import Layer, solve
from hyplex.optics.thinfilm import stack_response

F64 = torch.float64


# ----------------------------------------------------------------- uniform limit: RCWA == TMM

STACKS = [
    # (RCWA layers, TMM indices between the half-spaces, thicknesses, superstrate, substrate)
    ([("cSi", 120.0)], "air", "SiO2"),
    ([("TiO2", 80.0), ("SiO2", 150.0), ("aSi", 60.0)], "air", "BK7"),
    ([("Si3N4", 300.0), ("cSi", 40.0)], 1.33, "cSi"),  # water on top, absorbing substrate
]


@pytest.mark.parametrize("stack", STACKS)
@pytest.mark.parametrize("angle", [0.0, 25.0, 55.0])
def test_uniform_stack_equals_tmm(stack, angle):
    films, sup, sub = stack
    wl = torch.linspace(420.0, 980.0, 9, dtype=F64)
    layers = [Layer(d, material=m) for m, d in films]
    res = solve(
        layers,
        wl,
        350.0,
        harmonics=(2, 1),
        superstrate=sup,
        substrate=sub,
        angle_deg=angle,
        azimuth_deg=30.0,
    )
    indices = [sup] + [m for m, _ in films] + [sub]
    thick = torch.tensor([d for _, d in films], dtype=F64)
    for k, pol in enumerate("sp"):
        ref = stack_response(indices, thick, wl, angle_deg=angle, polarization=pol)
        assert (res.T[..., k] - ref.T).abs().max() < 1e-6
        assert (res.R[..., k] - ref.R).abs().max() < 1e-6
        assert (res.t[..., k, k] - ref.t).abs().max() < 1e-6  # complex amplitude, phase too
        assert (res.r[..., k, k] - ref.r).abs().max() < 1e-6
    # no polarisation conversion and no higher orders in a uniform stack
    assert res.t[..., 0, 1].abs().max() < 1e-9 and (res.T - res.T0).abs().max() < 1e-9


def test_full_pattern_uses_patterned_path_and_equals_tmm():
    wl = torch.linspace(500.0, 900.0, 5, dtype=F64)
    full = torch.ones(16, 16, dtype=F64)
    res = solve([Layer(150.0, "cSi", pattern=full)], wl, 400.0, harmonics=2, substrate="SiO2")
    ref = stack_response(["air", "cSi", "SiO2"], torch.tensor([150.0], dtype=F64), wl)
    assert (res.T[..., 0] - ref.T).abs().max() < 1e-6


# ----------------------------------------------------------------- energy and symmetry


@pytest.mark.parametrize(
    "pattern, angle, azimuth",
    [(disk(), 0.0, 0.0), (l_shape(), 0.0, 0.0), (l_shape(), 35.0, 20.0), (disk(), 50.0, 0.0)],
)
def test_lossless_patterned_layers_conserve_energy(pattern, angle, azimuth):
    wl = torch.linspace(450.0, 950.0, 6, dtype=F64)
    layers = [Layer(180.0, 3.5, pattern=pattern), Layer(60.0, 2.0)]
    res = solve(
        layers, wl, 450.0, harmonics=3, substrate=1.45, angle_deg=angle, azimuth_deg=azimuth
    )
    assert (res.R + res.T - 1).abs().max() < 1e-6
    assert (res.T > res.T0 + 1e-4).any(), "the grating should diffract into higher orders"


def test_c4_pillar_has_equal_te_and_tm_at_normal_incidence():
    wl = torch.linspace(450.0, 950.0, 6, dtype=F64)
    res = solve([Layer(200.0, "cSi", pattern=disk())], wl, 400.0, harmonics=3)
    assert (res.T[..., 0] - res.T[..., 1]).abs().max() < 1e-9
    assert (res.R[..., 0] - res.R[..., 1]).abs().max() < 1e-9
    assert (res.t[..., 0, 0] - res.t[..., 1, 1]).abs().max() < 1e-9  # same complex amplitude


def test_transposed_pattern_swaps_te_and_tm():
    wl = torch.linspace(450.0, 950.0, 4, dtype=F64)
    p = l_shape()
    a = solve([Layer(150.0, 3.5, pattern=p)], wl, 400.0, harmonics=3)
    b = solve([Layer(150.0, 3.5, pattern=p.T.contiguous())], wl, 400.0, harmonics=3)
    assert (a.T[..., 0] - a.T[..., 1]).abs().max() > 1e-3  # the L is birefringent
    assert (a.T[..., 0] - b.T[..., 1]).abs().max() < 1e-9
    assert (a.T[..., 1] - b.T[..., 0]).abs().max() < 1e-9


def test_batched_designs_equal_single_calls():
    wl = torch.linspace(500.0, 800.0, 3, dtype=F64)
    patterns = torch.stack([disk(24, 0.2), l_shape(), disk(24, 0.35)])
    thick = torch.tensor([100.0, 150.0, 200.0], dtype=F64)
    batched = solve([Layer(thick, 3.5, pattern=patterns)], wl, 400.0, harmonics=2)
    assert batched.T.shape == (3, 3, 2)
    for i in range(3):
        single = solve([Layer(float(thick[i]), 3.5, pattern=patterns[i])], wl, 400.0, harmonics=2)
        assert (batched.T[i] - single.T).abs().max() < 1e-12


def test_li_factorisation_converges_faster_than_laurent():
    """A silicon pillar array: the error against a high-order reference drops faster with Li.

    Away from the Rayleigh anomaly of the glass substrate (580 nm for this period), where
    resonances make every truncation slow (see benchmarks/rcwa_convergence.py).
    """
    wl = torch.tensor([750.0, 900.0], dtype=F64)
    layers = [Layer(200.0, 3.5, pattern=disk(48, 0.28))]
    ref = solve(layers, wl, 400.0, harmonics=7).T
    err = {}
    for fac in ("li", "laurent"):
        err[fac] = (solve(layers, wl, 400.0, harmonics=4, factorization=fac).T - ref).abs().max()
    assert err["li"] < 0.5 * err["laurent"], err


# ----------------------------------------------------------------- gradients


WL = torch.tensor([520.0, 610.0, 770.0], dtype=F64)


def test_gradient_wrt_pattern_symmetric_pillar_normal_incidence():
    """Degenerate modes (C4 pillar at normal incidence) must still give exact gradients."""
    base = 0.1 + 0.8 * disk(20, 0.3)
    gen = torch.Generator().manual_seed(0)
    for direction in (disk(20, 0.3), torch.rand(20, 20, generator=gen, dtype=F64)):

        def f(p):
            return solve([Layer(160.0, 3.5, pattern=p)], WL, 400.0, harmonics=2).T.sum()

        fd_check(f, base, direction, h=1e-5)


def test_gradient_wrt_thickness_wavelength_and_index():
    pattern = l_shape(16)

    def thickness(d):
        return solve([Layer(d, "cSi_meep", pattern=pattern)], WL, 400.0, harmonics=2).T.sum()

    def wavelength(w):
        return solve([Layer(140.0, "cSi_meep", pattern=pattern)], w, 400.0, harmonics=2).R.sum()

    def index(n):
        layers = [Layer(140.0, n.expand(len(WL)).to(torch.complex128), pattern=disk(16))]
        return solve(layers, WL, 400.0, harmonics=2, angle_deg=20.0).T0.sum()

    fd_check(thickness, torch.tensor(140.0, dtype=F64), torch.tensor(1.0, dtype=F64), 1e-4)
    fd_check(wavelength, WL, torch.ones(3, dtype=F64), 1e-4)
    fd_check(index, torch.tensor(3.3, dtype=F64), torch.tensor(1.0, dtype=F64), 1e-6)


def test_complex_transmission_phase_is_differentiable():
    d = torch.tensor(150.0, dtype=F64, requires_grad=True)
    res = solve([Layer(d, 3.5, pattern=disk(16))], WL, 400.0, harmonics=2)
    torch.angle(res.t[..., 0, 0]).sum().backward()
    assert torch.isfinite(d.grad) and d.grad != 0


# ----------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(layers=[Layer(-5.0, "cSi")]), "thickness_nm must be >= 0"),
        (dict(layers=[Layer(10.0, "cSi", pattern=torch.ones(8, dtype=F64))]), "(..., Nx, Ny)"),
        (dict(wavelengths_nm=torch.tensor([900.0, 1200.0], dtype=F64)), "400"),
        (dict(wavelengths_nm=torch.tensor([math.nan], dtype=F64)), "NaN"),
        (dict(layers=[Layer(10.0, "cSi_meep", pattern=torch.full((4, 4), math.nan))]), "NaN"),
        (dict(layers=[Layer(10.0, "cSi_meep", pattern=2 * torch.ones(4, 4))]), "[0, 1]"),
        (dict(angle_deg=90.0), "[0, 90)"),
        (dict(period_nm=-400.0), "period_nm"),
        (dict(superstrate="cSi_meep"), "lossless"),
        (dict(factorization="fancy"), "factorization"),
    ],
)
def test_bad_input_gets_a_clear_error(kwargs, message):
    args = dict(
        layers=[Layer(100.0, "cSi_meep")],
        wavelengths_nm=torch.tensor([500.0]),
        period_nm=400.0,
        harmonics=1,
    )
    args.update(kwargs)
    with pytest.raises(
        ValueError,
        match=message.replace("(", r"\(")
        .replace(")", r"\)")
        .replace("[", r"\[")
        .replace("]", r"\]"),
    ):
        solve(**args)


def test_exact_wood_anomaly_is_finite_and_conserves_energy():
    """At lambda = period an order grazes the superstrate (kz = 0): no NaN, no singular V."""
    thickness = torch.tensor(180.0, dtype=F64, requires_grad=True)
    wl = torch.tensor([450.0, 450.01], dtype=F64)
    layers = [Layer(thickness, 3.5, pattern=l_shape()), Layer(60.0, 2.0)]
    res = solve(layers, wl, 450.0, harmonics=3, substrate=1.45)
    assert (res.R + res.T - 1).abs().max() < 1e-8
    assert (res.T[0] - res.T[1]).abs().max() < 1e-2  # continuous through the anomaly
    res.T.sum().backward()
    assert torch.isfinite(thickness.grad)


def test_split_layer_and_stacked_patterns():
    """Patterned-to-patterned interfaces: a layer cut in two is the same layer; energy holds."""
    wl = torch.linspace(480.0, 900.0, 4, dtype=F64)
    whole = solve([Layer(200.0, 3.5, pattern=l_shape())], wl, 400.0, harmonics=3)
    halves = solve(
        [Layer(120.0, 3.5, pattern=l_shape()), Layer(80.0, 3.5, pattern=l_shape())],
        wl,
        400.0,
        harmonics=3,
    )
    assert (whole.T - halves.T).abs().max() < 1e-9
    assert (whole.t - halves.t).abs().max() < 1e-9
    stacked = solve(
        [
            Layer(120.0, 3.5, pattern=l_shape()),
            Layer(90.0, 2.2, pattern=disk(24)),
            Layer(50.0, 1.45),
        ],
        wl,
        400.0,
        harmonics=3,
        angle_deg=15.0,
    )
    assert (stacked.R + stacked.T - 1).abs().max() < 1e-8


def test_raw_permittivity_grid_equals_pattern_and_is_differentiable():
    wl = torch.tensor([550.0, 800.0], dtype=F64)
    pattern = l_shape(16)
    eps_si = torch.tensor([3.6**2, 3.5**2], dtype=torch.complex128)
    via_pattern = solve([Layer(150.0, torch.sqrt(eps_si), pattern=pattern)], wl, 400.0, harmonics=2)
    grid = (1 + (eps_si[:, None, None] - 1) * pattern).requires_grad_(True)
    via_grid = solve([Layer(150.0, permittivity=grid)], wl, 400.0, harmonics=2)
    assert (via_pattern.T - via_grid.T).abs().max() < 1e-12
    via_grid.T.sum().backward()
    assert torch.isfinite(grid.grad).all() and grid.grad.abs().max() > 0


def test_single_precision_agrees_with_double():
    wl = torch.linspace(450.0, 950.0, 5, dtype=F64)
    layers = [Layer(200.0, "cSi", pattern=disk(32))]
    double = solve(layers, wl, 400.0, harmonics=3)
    single = solve(layers, wl.float(), 400.0, harmonics=3, dtype=torch.complex64)
    assert single.T.dtype == torch.float32
    assert (single.T.double() - double.T).abs().max() < 1e-3


@pytest.mark.slow
def test_li_self_convergence_on_a_silicon_pillar_array():
    """Over M = 3, 5, 7 the change against M = 9 shrinks, for both polarisations (c-Si, glass)."""
    wl = torch.tensor([520.0, 700.0, 880.0], dtype=F64)
    layers = [Layer(200.0, "cSi", pattern=disk(64, 0.25))]
    ref = solve(layers, wl, 400.0, harmonics=9, substrate="SiO2").T
    errors = [
        (solve(layers, wl, 400.0, harmonics=M, substrate="SiO2").T - ref).abs().max().item()
        for M in (3, 5, 7)
    ]
    assert errors[0] > errors[1] > errors[2], errors
    assert errors[2] < 0.5 * errors[0], errors  # measured: 0.128, 0.112, 0.045

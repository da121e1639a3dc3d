"""The vector (normal-vector / Jones) Fourier factorisation of the RCWA.

Limits (lamellar grating = Li's rule, uniform layer = TMM), convergence on the Si disk of
issue 21 against a stored two-formulation reference, energy, symmetry, and gradients against
central finite differences (also through the normal field, at the degenerate modes of a C4
pillar at normal incidence).
"""

import pytest
import torch
from rcwa_patterns import disk, fd_check, l_shape

from hyplex.optics import geometry
from hyplex.optics.fourier import Harmonics
from hyplex.optics.rcwa import Layer, solve
from hyplex.optics.thinfilm import stack_response
from hyplex.optics.vector_field import doubled_angle_field

F64 = torch.float64
VECTOR_RULES = ("vector", "jones", "normal")


def stripes(nx: int = 30, ny: int = 16) -> torch.Tensor:
    """A binary lamellar grating, edges along y.

    (A grey edge column would differ: Li's eps_yy mixes it in 1/eps although E_y is
    tangential there, the vector rule in eps, the right average for a tangential field.)
    """
    p = torch.zeros(nx, ny, dtype=F64)
    p[:11] = 1.0
    return p


# ----------------------------------------------------------------- limits


def test_doubled_angle_field_of_a_lamellar_grating_is_exactly_the_x_normal():
    z = doubled_angle_field(stripes()[None], (400.0, 300.0), Harmonics(3, 2))
    assert (z - 1).abs().max() < 1e-8  # the 1e-9 Tikhonov term of the normal equations


def test_doubled_angle_field_rotates_with_the_pattern():
    """Transposing x and y maps the normal angle theta to pi/2 - theta: z -> -conj(z)."""
    p = l_shape()
    z = doubled_angle_field(p[None], (400.0, 400.0), Harmonics(3, 3))
    zt = doubled_angle_field(p.T.contiguous()[None], (400.0, 400.0), Harmonics(3, 3))
    assert (zt - (-z.conj()).T).abs().max() < 1e-10
    assert z.abs().max() > 0.5  # a real field, not the uniform-layer zero


@pytest.mark.parametrize("rule", VECTOR_RULES)
@pytest.mark.parametrize("angle, azimuth", [(0.0, 0.0), (30.0, 25.0)])
def test_vector_rules_equal_li_on_a_lamellar_grating(rule, angle, azimuth):
    """On edges along y the normal is x everywhere: eps_xx = [[1/eps]]^-1, eps_yy = [[eps]]."""
    wl = torch.tensor([480.0, 650.0, 910.0], dtype=F64)
    layers = [Layer(170.0, 3.5, pattern=stripes())]
    options = dict(harmonics=(4, 2), substrate=1.45, angle_deg=angle, azimuth_deg=azimuth)
    li = solve(layers, wl, (400.0, 300.0), factorization="li", **options)
    vec = solve(layers, wl, (400.0, 300.0), factorization=rule, **options)
    assert (vec.transmission_orders - li.transmission_orders).abs().max() < 1e-9
    assert (vec.r - li.r).abs().max() < 1e-9 and (vec.t - li.t).abs().max() < 1e-9


def test_vector_and_li_approach_each_other_on_a_rectangle():
    """Axis-aligned binary rectangle: Li's rule is exact for the staircase, the vector rule
    blends the normals at the corners; both converge to the same T, the gap shrinks with M.
    Measured max |dT|: 0.028, 0.011, 0.0068 at M = 2, 4, 6."""
    wl = torch.tensor([560.0, 760.0], dtype=F64)
    rect = geometry.rectangle(250.0, 125.0, 400.0, grid=(32, 32))
    layers = [Layer(200.0, 3.5, pattern=rect)]
    gaps = []
    for M in (2, 4, 6):
        li = solve(layers, wl, 400.0, harmonics=M, substrate=1.45, factorization="li").T
        vec = solve(layers, wl, 400.0, harmonics=M, substrate=1.45, factorization="vector").T
        gaps.append((li - vec).abs().max().item())
    assert gaps[0] > gaps[1] > gaps[2], gaps
    assert gaps[2] < 0.5 * gaps[0], gaps


@pytest.mark.parametrize("rule", VECTOR_RULES)
def test_uniform_layers_through_the_patterned_path_equal_tmm(rule):
    """A full pattern, a constant permittivity grid: no normal field, Delta = 0, exact TMM."""
    wl = torch.linspace(500.0, 900.0, 4, dtype=F64)
    thickness = torch.tensor([150.0], dtype=F64)
    ref = stack_response(["air", "cSi", "SiO2"], thickness, wl, angle_deg=35.0, polarization="s")
    full = solve(
        [Layer(150.0, "cSi", pattern=torch.ones(16, 16, dtype=F64))],
        wl,
        400.0,
        harmonics=2,
        substrate="SiO2",
        angle_deg=35.0,
        factorization=rule,
    )
    assert (full.T[..., 0] - ref.T).abs().max() < 1e-6
    assert (full.t[..., 0, 0] - ref.t).abs().max() < 1e-6
    grid = torch.full((1, 8, 8), 2.0**2, dtype=torch.complex128)
    flat = solve(
        [Layer(90.0, permittivity=grid)], torch.tensor([600.0]), 400.0, 2, factorization=rule
    )
    ref2 = stack_response(["air", 2.0, "SiO2"], torch.tensor([90.0]), torch.tensor([600.0]))
    assert (flat.T[..., 0] - ref2.T).abs().max() < 1e-6


# ----------------------------------------------------------------- convergence

# Issue 21's disk: Si (n = 3.5) r = 120 nm, h = 200 nm, period 400 nm, on glass (n = 1.45),
# normal incidence, unpolarised zeroth-order T at 532 / 700 / 900 nm, 128 x 128 grid.
# Reference from `OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/rcwa_convergence.py
# --shapes disk`: "vector" at M = 15 (961 harmonics); "jones" at M = 15 agrees to 4e-5.
# Cross-check: fmmax 1.7.1's Jones formulation on a 400 x 400 grid gives 0.704 / 0.006 / 0.648
# at 625 harmonics (benchmarks/fmmax_disk_crosscheck.py); hyplex's Li rule is still 0.036 off
# at 441 harmonics.
DISK_REFERENCE = torch.tensor([0.70461, 0.00682, 0.64846], dtype=F64)


def _disk_T0(M: int, rule: str) -> torch.Tensor:
    pattern = geometry.disk(120.0, 400.0, grid=(128, 128))
    wl = torch.tensor([532.0, 700.0, 900.0], dtype=F64)
    res = solve(
        [Layer(200.0, 3.5, pattern=pattern)], wl, 400.0, M, substrate=1.45, factorization=rule
    )
    return res.unpolarized("T0")


def test_vector_rule_reaches_the_disk_reference_at_169_harmonics():
    error = (_disk_T0(6, "vector") - DISK_REFERENCE).abs().max()
    assert error <= 0.005, error


def test_vector_rule_beats_li_on_the_disk():
    vector = (_disk_T0(4, "vector") - DISK_REFERENCE).abs().max()
    li = (_disk_T0(4, "li") - DISK_REFERENCE).abs().max()
    assert vector < 0.25 * li, (vector, li)  # measured 0.0086 against 0.125


# ----------------------------------------------------------------- energy and symmetry


@pytest.mark.parametrize("rule", ["vector", "jones"])
@pytest.mark.parametrize(
    "pattern, angle, azimuth",
    [(disk(), 0.0, 0.0), (l_shape(), 35.0, 20.0), (0.2 + 0.6 * disk(24, 0.35), 50.0, 0.0)],
)
def test_lossless_gratings_conserve_energy(rule, pattern, angle, azimuth):
    """The symmetrised operator (Delta P + P Delta) / 2 is Hermitian for real eps."""
    wl = torch.linspace(450.0, 950.0, 5, dtype=F64)
    layers = [Layer(180.0, 3.5, pattern=pattern), Layer(60.0, 2.0)]
    res = solve(
        layers,
        wl,
        450.0,
        harmonics=3,
        substrate=1.45,
        angle_deg=angle,
        azimuth_deg=azimuth,
        factorization=rule,
    )
    assert (res.R + res.T - 1).abs().max() < 1e-9
    assert (res.T > res.T0 + 1e-4).any()


def test_jones_rule_breaks_mirror_symmetry_only_slightly():
    """Jones vectors carry a handedness: a transposed L swaps TE and TM only approximately,
    while "vector" (tested in test_rcwa.py) swaps them exactly."""
    wl = torch.linspace(450.0, 950.0, 4, dtype=F64)
    p = l_shape()
    a = solve([Layer(150.0, 3.5, pattern=p)], wl, 400.0, harmonics=3, factorization="jones")
    b = solve([Layer(150.0, 3.5, pattern=p.T.contiguous())], wl, 400.0, 3, factorization="jones")
    asymmetry = (a.T[..., 0] - b.T[..., 1]).abs().max()
    assert 1e-9 < asymmetry < 0.1, asymmetry  # measured 0.030 at M = 3


# ----------------------------------------------------------------- gradients


WL = torch.tensor([520.0, 610.0, 770.0], dtype=F64)


@pytest.mark.parametrize("rule", ["vector", "jones"])
def test_pattern_gradient_of_a_c4_pillar_at_normal_incidence(rule):
    """Degenerate modes, and the normal field's own dependence on the pattern."""
    base = 0.1 + 0.8 * disk(20, 0.3)
    gen = torch.Generator().manual_seed(0)
    for direction in (disk(20, 0.3), torch.rand(20, 20, generator=gen, dtype=F64)):

        def f(p):
            layers = [Layer(160.0, 3.5, pattern=p)]
            return solve(layers, WL, 400.0, harmonics=2, factorization=rule).T0.sum()

        fd_check(f, base, direction, h=1e-5)


def test_gradient_with_respect_to_the_disk_radius():
    """A shape parameter through the differentiable renderer (grey edges move with r)."""

    def f(radius):
        pattern = geometry.Disk.render_batch(radius[None], 400.0, grid=(48, 48))
        layers = [Layer(180.0, 3.5, pattern=pattern)]
        return solve(layers, WL, 400.0, harmonics=3, substrate=1.45).unpolarized("T0").sum()

    fd_check(f, torch.tensor(113.0, dtype=F64), torch.tensor(1.0, dtype=F64), h=1e-3)


def test_gradient_with_respect_to_thickness_and_a_raw_permittivity_grid():
    pattern = l_shape(16)

    def thickness(d):
        return solve([Layer(d, 3.5, pattern=pattern)], WL, 400.0, harmonics=2).T.sum()

    fd_check(thickness, torch.tensor(140.0, dtype=F64), torch.tensor(1.0, dtype=F64), 1e-4)

    eps = torch.tensor([3.6**2, 3.5**2, 3.4**2], dtype=F64)[:, None, None]

    def grid(p):  # the normal field comes from the grid itself, one channel per wavelength
        layers = [Layer(150.0, permittivity=(1 + (eps - 1) * p).to(torch.complex128))]
        return solve(layers, WL, 400.0, harmonics=2, angle_deg=15.0).T.sum()

    base = 0.05 + 0.9 * pattern
    direction = torch.rand(16, 16, generator=torch.Generator().manual_seed(1), dtype=F64)
    fd_check(grid, base, direction, h=1e-5)


def test_uniform_pattern_has_a_finite_gradient():
    """grad rho = 0 everywhere: the field's normalisations take their safe branch."""
    p = torch.full((12, 12), 0.5, dtype=F64, requires_grad=True)
    solve([Layer(120.0, 3.5, pattern=p)], WL, 400.0, harmonics=2).T.sum().backward()
    assert torch.isfinite(p.grad).all()


# ----------------------------------------------------------------- options


def test_bad_smoothing_is_refused():
    with pytest.raises(ValueError, match="smoothing"):
        solve([Layer(100.0, 3.5, pattern=disk(8))], torch.tensor([500.0]), 400.0, 1, smoothing=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_vector_rule_on_cuda_equals_cpu():
    wl = torch.tensor([532.0, 700.0, 900.0], dtype=F64)
    layers = [Layer(200.0, 3.5, pattern=disk(64, 0.3))]
    cpu = solve(layers, wl, 400.0, harmonics=4, substrate=1.45)
    gpu = solve(layers, wl.cuda(), 400.0, harmonics=4, substrate=1.45, device="cuda")
    assert (gpu.T.cpu() - cpu.T).abs().max() < 1e-9

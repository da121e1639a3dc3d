"""Benchmark: hyplex's differentiable RCWA against the peer solver torcwa 0.1.4.2.

Structure (the issue's metasurface; normal incidence from the top)::

        air                             incident plane wave, TE (E along y) and TM (E along x)
    -----------------------------
        Si pillar, radius r         200 nm tall, square cell of period 400 nm
    -----------------------------
        glass, n = 1.45             transmitted orders

Silicon is n = 3.5 (lossless) or a dispersive material (``--silicon cSi``). The designs are
circular pillars with radii spread over 60-150 nm on a 128 x 128 pixel grid; torcwa gets the same
grid as ``eps = 1 + (eps_Si - 1) * pattern``. Wavelengths are the centres of equal bins over
400-1000 nm, kept off Wood anomalies (see :func:`wavelength_grid`).

Timed, forward and backward, with one torch intra-op thread (torch's MKL hangs in batched LU of
matrices >= ~200 with more): torcwa, one simulation and one ``backward`` per (design,
wavelength); hyplex ``solve`` on chunks of about ``--chunk`` simulations, with
``factorization="laurent"`` (torcwa's physics) on the default batch workers and on
``HYPLEX_WORKERS=1``, with ``"li"`` (Li's inverse rule) and the default ``"vector"``. The
loss is the sum of the unpolarised zeroth-order transmittance T0; gradients are accumulated
on the pattern.

Accuracy: T0 (TE and TM) of each solver against hyplex ``vector`` at 17 x 17 harmonics on a few
designs; ``max_abs_dT_vs_torcwa`` compares hyplex ``laurent`` with torcwa on every design (they
differ by exact pixel Fourier integrals against a sampled DFT). A 300 x 100 nm bar checks the
polarisation mapping and warms both up. Eig fractions: wall time in each eig autograd Function.

Accuracy-matched speed (``speedup_at_0p005_vs_torcwa``, ``speedup_at_0p005_vs_fmmax``): on a
few pillars (``--accuracy-radii``, default 90/120/150 nm; 120 nm with ``--quick``) and
wavelengths (``--accuracy-wavelengths``), the converged T0 is
hyplex ``vector`` at M = ``--converged-harmonics`` (checked against ``jones`` at the same
order: ``converged_check``). Each solver climbs M = 2, 3, ... until two successive orders
are within 0.005 of it (TE and TM, every design and wavelength); it is then timed there,
forward + gradient of the same loss. hyplex runs its default rule; torcwa its Laurent rule
on a sampled DFT; fmmax 1.7.1 its Jones rule (``jones``), in its own venv
(``--fmmax-python``, default ``.venv-fmmax/bin/python``) through benchmarks/fmmax_peer.py,
pinned to one core, its jit compile reported apart from the solve. A solver that never gets
within 0.005 is timed at its highest order and the speedup is marked a lower bound.

Reproduce (the last stdout line is one JSON object; progress goes to stderr)::

    .venv/bin/python benchmarks/rcwa.py --quick    # 4 x 8; accuracy-matched without fmmax
    .venv/bin/python benchmarks/rcwa.py --designs 4 --wavelengths 8 \
        --accuracy-radii 120 --accuracy-wavelengths 4      # the README's row, ~20 min
    .venv/bin/python benchmarks/rcwa.py --designs 16 --wavelengths 25  # 3 pillars x 6
    .venv/bin/python benchmarks/rcwa.py                    # 64 x 100 at the same order
"""
# ruff: noqa: E402  (BLAS and torch thread settings must precede the imports that read them)

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

torch.set_num_threads(1)

import torcwa
import torcwa.torch_eig

import hyplex.optics.eig
from hyplex.optics.materials import get_material
from hyplex.optics.parallel import default_workers
from hyplex.optics.rcwa import Layer, solve

PEER = "torcwa 0.1.4.2"
PERIOD_NM, HEIGHT_NM, GLASS_INDEX = 400.0, 200.0, 1.45
REAL = {torch.complex128: torch.float64, torch.complex64: torch.float32}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class EigTimer:
    """Wall time spent in an autograd Function's forward and backward (patched in place)."""

    def __init__(self, function_class) -> None:
        self.seconds = 0.0
        for name in ("forward", "backward"):
            setattr(function_class, name, staticmethod(self._timed(getattr(function_class, name))))

    def _timed(self, function):
        def wrapper(*args):
            start = time.perf_counter()
            outputs = function(*args)
            self.seconds += time.perf_counter() - start
            return outputs

        return wrapper


OUR_EIG = EigTimer(hyplex.optics.eig._BroadenedEig)
TORCWA_EIG = EigTimer(torcwa.torch_eig.Eig)


def pixel_centres(grid: int) -> tuple[torch.Tensor, torch.Tensor]:
    """x, y (nm from the cell centre) of the pixel centres, each ``(grid, grid)``; axis 0 is x."""
    centres = (torch.arange(grid, dtype=torch.float64) + 0.5) * PERIOD_NM / grid - PERIOD_NM / 2
    return torch.meshgrid(centres, centres, indexing="ij")


def wavelength_grid(count: int) -> torch.Tensor:
    """Centres of ``count`` equal bins over 400-1000 nm, moved >= 1 nm off Wood anomalies.

    At ``lambda = n_medium P / |(m, n)|`` an order grazes the air or the glass (kz = 0): torcwa
    returns T0 = 0 (its NaN replaced) and NaN gradients, e.g. at 580 nm = 1.45 x 400 nm. Within
    ~0.5 nm of one, resonances are so narrow that the two solvers' Fourier coefficients shift
    them visibly (r = 144 nm at 580.2 nm: T0 0.335 against 0.281, gradient norms 2x apart).
    """
    edges = torch.linspace(400.0, 1000.0, count + 1, dtype=torch.float64)
    centres = (edges[1:] + edges[:-1]) / 2
    m = torch.arange(-3, 4, dtype=torch.float64)
    reciprocal = (m[:, None] ** 2 + m[None, :] ** 2).sqrt().flatten()
    anomalies = torch.cat([n * PERIOD_NM / reciprocal[reciprocal > 0] for n in (1, GLASS_INDEX)])
    near = (centres[:, None] - anomalies).abs().amin(-1) < 1.0
    return torch.where(near, centres + 2.0, centres)


def silicon_permittivity(silicon: float | str, wavelengths_nm: torch.Tensor) -> torch.Tensor:
    """Complex permittivity ``(L,)`` of the pillar material."""
    if isinstance(silicon, float):
        return torch.full_like(wavelengths_nm, silicon**2).to(torch.complex128)
    return get_material(silicon).permittivity(wavelengths_nm).to(torch.complex128)


def torcwa_T0(eps_grid: torch.Tensor, wavelength_nm: float, order: int, dtype) -> torch.Tensor:
    """Zeroth-order transmittance ``(2,)`` [TE (y-in), TM (x-in)] of one layer from torcwa."""
    cpu = torch.device("cpu")
    sim = torcwa.rcwa(1 / wavelength_nm, [order] * 2, [PERIOD_NM] * 2, dtype=dtype, device=cpu)
    sim.add_input_layer(eps=1.0)
    sim.add_output_layer(eps=GLASS_INDEX**2)
    sim.set_incident_angle(0.0, 0.0)
    sim.add_layer(HEIGHT_NM, eps=eps_grid.to(dtype))
    sim.solve_global_smatrix()

    def power(polarization: str) -> torch.Tensor:  # power_norm=True: |S|^2 is power
        return sim.S_parameters([[0, 0]], polarization=polarization).abs().square().sum()

    return torch.stack([power("xy") + power("yy"), power("xx") + power("yx")])


def run_torcwa(patterns, silicon, wavelengths, order, dtype, quiet=False):
    """T0 ``(D, L, 2)``, d(sum of unpolarised T0)/d(pattern) ``(D, N, N)`` and seconds."""
    eps_si = silicon_permittivity(silicon, wavelengths)
    T0 = torch.zeros(len(patterns), len(wavelengths), 2, dtype=torch.float64)
    grads = torch.zeros_like(patterns)
    start = time.perf_counter()
    for d in range(len(patterns)):
        pattern = patterns[d].to(REAL[dtype]).clone().requires_grad_()
        for i, wavelength in enumerate(wavelengths.tolist()):
            T = torcwa_T0(1 + (eps_si[i] - 1) * pattern, wavelength, order, dtype)
            T.mean().backward()
            T0[d, i] = T.detach().double()
        grads[d] = pattern.grad
        if not quiet:
            log(f"  torcwa design {d + 1}/{len(patterns)}: {time.perf_counter() - start:.1f} s")
    return T0, grads, time.perf_counter() - start


def run_ours(patterns, silicon, wavelengths, harmonics, dtype, chunk, factorization, grad=True):
    """Like :func:`run_torcwa` for hyplex ``solve``, about ``chunk`` simulations per call."""
    D, L = len(patterns), len(wavelengths)
    designs_per_call, wavelengths_per_call = max(1, chunk // L), min(L, chunk)
    options = dict(superstrate=1.0, substrate=GLASS_INDEX, factorization=factorization, dtype=dtype)
    T0 = torch.zeros(D, L, 2, dtype=torch.float64)
    grads = torch.zeros_like(patterns)
    start = time.perf_counter()
    for d in range(0, D, designs_per_call):
        pattern = patterns[d : d + designs_per_call].to(REAL[dtype]).clone().requires_grad_(grad)
        for i in range(0, L, wavelengths_per_call):
            block = slice(i, i + wavelengths_per_call)
            with torch.set_grad_enabled(grad):
                layer = Layer(HEIGHT_NM, material=silicon, pattern=pattern)
                result = solve([layer], wavelengths[block], PERIOD_NM, harmonics, **options)
            if grad:
                result.T0.mean(-1).sum().backward()
            T0[d : d + len(pattern), block] = result.T0.detach().double()
        if grad:
            grads[d : d + len(pattern)] = pattern.grad
    return T0, grads, time.perf_counter() - start


def timed_ours(factorization: str, workers: int | None, setup: tuple):
    """:func:`run_ours` with ``HYPLEX_WORKERS`` (None: default) and its eig time fraction."""
    os.environ.pop("HYPLEX_WORKERS", None)
    if workers is not None:
        os.environ["HYPLEX_WORKERS"] = str(workers)
    eig_before = OUR_EIG.seconds
    T0, grads, seconds = run_ours(*setup, factorization)
    eig_fraction = (OUR_EIG.seconds - eig_before) / seconds
    log(
        f"  {factorization}, {default_workers()} worker(s): {seconds:.1f} s, eig {eig_fraction:.0%}"
    )
    os.environ.pop("HYPLEX_WORKERS", None)
    return T0, grads, seconds, eig_fraction


def polarization_check(args, dtype) -> float:
    """Max |dT0| of hyplex laurent against torcwa for a 300 x 100 nm bar, where TE != TM."""
    x, y = pixel_centres(args.grid)
    bar = ((x.abs() <= 150) & (y.abs() <= 50)).double()[None]
    wavelengths = torch.tensor([500.0, 600.0, 700.0, 800.0], dtype=torch.float64)
    ours = run_ours(bar, args.silicon, wavelengths, args.harmonics, dtype, 4, "laurent", False)[0]
    theirs = run_torcwa(bar, args.silicon, wavelengths, args.harmonics, dtype, quiet=True)[0]
    error = (ours - theirs).abs().max().item()
    swapped = (ours - theirs.flip(-1)).abs().max().item()
    log(f"  bar at 700 nm, T0 [TE, TM]: {ours[0, 2].tolist()}, torcwa {theirs[0, 2].tolist()}")
    log(f"  max dT {error:.1e} with TE = y-in, TM = x-in; {swapped:.1e} if swapped")
    if error > swapped:
        log("  WARNING: the polarisation mapping fits better swapped")
    return error


TOLERANCE = 0.005


def climb(evaluate, reference: torch.Tensor, ladder: list[int], label: str):
    """Smallest M whose T0 and the next order's are within TOLERANCE of ``reference``.

    ``evaluate(M)`` returns T0 ``(D, L, 2)``. Returns ``(M, reached, errors)``; if no two
    successive orders get there, the highest order tried and ``reached = False``.
    """
    errors, previous_ok = {}, None
    for M in ladder:
        errors[M] = (evaluate(M) - reference).abs().max().item()
        log(f"  {label} M={M:2d}: max |dT0| {errors[M]:.4f}")
        if errors[M] <= TOLERANCE:
            if previous_ok is not None:
                return previous_ok, True, errors
            previous_ok = M
        else:
            previous_ok = None
    return (previous_ok or ladder[-1]), previous_ok is not None, errors


def run_fmmax(python: str, patterns, wavelengths, orders, grad: bool) -> dict:
    """benchmarks/fmmax_peer.py in fmmax's interpreter, pinned to core 0 (MEEP.md)."""
    job = {
        "densities": patterns.tolist(),
        "wavelengths_nm": wavelengths.tolist(),
        "orders": list(orders),
        "grad": grad,
        "formulation": "jones",
        "period_nm": PERIOD_NM,
        "height_nm": HEIGHT_NM,
        "index": 3.5,
        "substrate_index": GLASS_INDEX,
    }
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", XLA_FLAGS=XLA_ONE_CORE)
    peer = Path(__file__).with_name("fmmax_peer.py")
    done = subprocess.run(
        ["taskset", "-c", "0", python, str(peer)],
        input=json.dumps(job),
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    return json.loads(done.stdout)


XLA_ONE_CORE = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"


def accuracy_matched(args, dtype) -> dict:
    """Time to reach 0.005 of the converged T0, each solver at its own needed order."""
    x, y = pixel_centres(args.grid)
    radii = [120.0] if args.quick else [float(r) for r in args.accuracy_radii.split(",")]
    patterns = torch.stack([(x**2 + y**2 <= r**2).double() for r in radii])
    wavelengths = wavelength_grid(4 if args.quick else args.accuracy_wavelengths)
    ladder = [2, 3, 4, 5, 6, 7, 8] + ([] if args.quick else [10, 12])
    top = min(args.converged_harmonics, 10) if args.quick else args.converged_harmonics
    log(f"accuracy-matched: radii {radii}, {len(wavelengths)} wavelengths, converged M={top}")
    converged = run_ours(
        patterns, 3.5, wavelengths, (top,) * 2, torch.complex128, 8, "vector", False
    )
    check = run_ours(patterns, 3.5, wavelengths, (top,) * 2, torch.complex128, 8, "jones", False)
    converged_check = (converged[0] - check[0]).abs().max().item()
    reference = converged[0]
    log(f"  converged ({converged[2]:.0f} s), check against jones: {converged_check:.1e}")
    report = {
        "accuracy_set": f"r {radii} nm, {len(wavelengths)} wavelengths, Si n 3.5",
        "converged": f"hyplex vector M={top} ({(2 * top + 1) ** 2} harmonics)",
        "converged_check": figure(converged_check),
        "tolerance": TOLERANCE,
    }

    def ours(M):
        return run_ours(patterns, 3.5, wavelengths, (M,) * 2, dtype, args.chunk, "vector", False)[0]

    def theirs(M):
        return run_torcwa(patterns, 3.5, wavelengths, M, dtype, quiet=True)[0]

    M_ours, ok_ours, err_ours = climb(ours, reference, ladder, "hyplex vector")
    ours_s = run_ours(patterns, 3.5, wavelengths, (M_ours,) * 2, dtype, args.chunk, "vector")[2]
    M_torcwa, ok_torcwa, err_torcwa = climb(theirs, reference, ladder, "torcwa")
    torcwa_s = run_torcwa(patterns, 3.5, wavelengths, M_torcwa, dtype, quiet=True)[2]
    report.update(
        {
            "ours_harmonics_at_0p005": (2 * M_ours + 1) ** 2,
            "ours_reached_0p005": ok_ours,
            "ours_s_at_0p005": figure(ours_s),
            "torcwa_harmonics_at_0p005": (2 * M_torcwa + 1) ** 2,
            "torcwa_reached_0p005": ok_torcwa,
            "torcwa_max_dT0_by_M": {M: figure(e) for M, e in err_torcwa.items()},
            "torcwa_s_at_0p005": figure(torcwa_s),
            "speedup_at_0p005_vs_torcwa": figure(torcwa_s / ours_s),
            "speedup_at_0p005_vs_torcwa_is_lower_bound": not ok_torcwa,
        }
    )
    log(f"  hyplex M={M_ours} {ours_s:.1f} s; torcwa M={M_torcwa} {torcwa_s:.1f} s")
    python = args.fmmax_python
    if python is None or not Path(python).exists():
        report["fmmax"] = f"not run: no fmmax interpreter at {python}"
        return report
    # Search with forward-only jits (cheaper to compile), then time forward + gradient.
    found = run_fmmax(python, patterns, wavelengths, ladder, grad=False)
    by_order = {r["M"]: torch.tensor(r["T0"], dtype=torch.float64) for r in found["results"]}
    M_fmmax, ok_fmmax, err_fmmax = climb(by_order.__getitem__, reference, ladder, "fmmax jones")
    timed = run_fmmax(python, patterns, wavelengths, [M_fmmax], grad=True)["results"][0]
    fmmax_s = timed["solve_s"]
    report.update(
        {
            "fmmax": f"fmmax {found['fmmax']} (jax {found['jax']}), Jones formulation, one core",
            "fmmax_harmonics_at_0p005": (2 * M_fmmax + 1) ** 2,
            "fmmax_reached_0p005": ok_fmmax,
            "fmmax_max_dT0_by_M": {M: figure(e) for M, e in err_fmmax.items()},
            "fmmax_solve_s_at_0p005": figure(fmmax_s),
            "fmmax_compile_s_at_0p005": figure(timed["compile_s"]),
            "fmmax_compile_s_forward_by_M": {
                r["M"]: figure(r["compile_s"]) for r in found["results"]
            },
            "ours_1_worker_s_at_0p005": None,
            "speedup_at_0p005_vs_fmmax": figure(fmmax_s / ours_s),
            "speedup_at_0p005_vs_fmmax_is_lower_bound": not ok_fmmax,
        }
    )
    os.environ["HYPLEX_WORKERS"] = "1"  # fmmax had one core: so does hyplex here
    ours_1 = run_ours(patterns, 3.5, wavelengths, (M_ours,) * 2, dtype, args.chunk, "vector")[2]
    os.environ.pop("HYPLEX_WORKERS")
    report["ours_1_worker_s_at_0p005"] = figure(ours_1)
    report["speedup_at_0p005_vs_fmmax_1_worker"] = figure(fmmax_s / ours_1)
    log(f"  fmmax M={M_fmmax} solve {fmmax_s:.1f} s (+ compile {timed['compile_s']:.0f} s)")
    return report


def figure(value: float) -> float:
    return float(f"{value:.4g}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--designs", type=int, default=64)
    parser.add_argument("--wavelengths", type=int, default=100)
    parser.add_argument("--grid", type=int, default=128, help="pixels per side of the cell")
    parser.add_argument("--harmonics", type=int, default=4, help="orders -M..M in x and y")
    parser.add_argument("--reference-harmonics", type=int, default=8)
    parser.add_argument("--reference-designs", type=int, default=2)
    parser.add_argument("--silicon", default="3.5", help="refractive index, or a material: cSi")
    parser.add_argument("--dtype", choices=["complex128", "complex64"], default="complex128")
    parser.add_argument("--chunk", type=int, default=50, help="simulations per hyplex call")
    parser.add_argument("--quick", action="store_true", help="4 designs x 8 wavelengths")
    parser.add_argument(
        "--converged-harmonics", type=int, default=12, help="M of the converged T0 (vector)"
    )
    parser.add_argument(
        "--fmmax-python",
        default=None,
        help="interpreter with fmmax + jax (default .venv-fmmax/bin/python, see README; "
        "not run with --quick unless given); 'none' to skip",
    )
    parser.add_argument(
        "--skip-accuracy-matched", action="store_true", help="only the fixed-order timing"
    )
    parser.add_argument(
        "--accuracy-radii", default="90,120,150", help="pillar radii (nm) of the accuracy set"
    )
    parser.add_argument("--accuracy-wavelengths", type=int, default=6)
    args = parser.parse_args()
    if args.quick:
        args.designs, args.wavelengths, args.reference_designs = 4, 8, 1
    dtype = getattr(torch, args.dtype)
    args.silicon = float(args.silicon) if args.silicon[0].isdigit() else args.silicon
    wavelengths = wavelength_grid(args.wavelengths)
    x, y = pixel_centres(args.grid)
    radii = torch.linspace(60.0, 150.0, args.designs, dtype=torch.float64)
    patterns = (x**2 + y**2 <= radii[:, None, None] ** 2).double()  # (D, grid, grid)
    size = f"{2 * args.harmonics + 1}x{2 * args.harmonics + 1}"
    log(f"{args.designs} designs x {args.wavelengths} wavelengths, {size} harmonics, {args.dtype}")

    setup = (patterns, args.silicon, wavelengths, (args.harmonics,) * 2, dtype, args.chunk)
    log("polarisation check (also warms both solvers up):")
    polarization_error = polarization_check(args, dtype)

    log("torcwa:")
    torcwa_eig_before = TORCWA_EIG.seconds
    T_torcwa, g_torcwa, torcwa_s = run_torcwa(*setup[:3], args.harmonics, dtype)
    torcwa_eig_fraction = (TORCWA_EIG.seconds - torcwa_eig_before) / torcwa_s
    log(f"  torcwa: {torcwa_s:.1f} s, eig {torcwa_eig_fraction:.0%}")

    log("hyplex:")
    T_laurent, g_laurent, laurent_s, laurent_eig = timed_ours("laurent", None, setup)
    laurent_1_s = timed_ours("laurent", 1, setup)[2]
    T_li, _, li_s, li_eig = timed_ours("li", None, setup)
    T_vector, _, vector_s, vector_eig = timed_ours("vector", None, setup)

    chosen = torch.linspace(0, args.designs - 1, args.reference_designs).round().long().unique()
    reference_size = f"{2 * args.reference_harmonics + 1}x{2 * args.reference_harmonics + 1}"
    log(f"reference: hyplex vector {reference_size} on designs {chosen.tolist()}")
    reference = (patterns[chosen], args.silicon, wavelengths, (args.reference_harmonics,) * 2)
    T_reference, _, reference_s = run_ours(*reference, torch.complex128, 10, "vector", False)
    log(f"  reference: {reference_s:.1f} s")

    def error(T0: torch.Tensor, reference: torch.Tensor) -> float:
        return figure((T0 - reference).abs().max().item())

    simulations = args.designs * args.wavelengths
    report = {
        "peer": PEER,
        "structure": f"Si pillars ({args.silicon}) h {HEIGHT_NM:g} nm, r 60-150 nm, period "
        f"{PERIOD_NM:g} nm, air / glass n {GLASS_INDEX}, normal incidence",
        "designs": args.designs,
        "wavelengths": args.wavelengths,
        "wavelength_range_nm": [figure(wavelengths[0].item()), figure(wavelengths[-1].item())],
        "grid": f"{args.grid}x{args.grid}",
        "harmonics": size,
        "dtype": args.dtype,
        "loss": "sum of unpolarised zeroth-order T; forward + backward timed",
        "workers_default": default_workers(),
        "torcwa_s": figure(torcwa_s),
        "ours_laurent_s": figure(laurent_s),
        "ours_laurent_1_worker_s": figure(laurent_1_s),
        "ours_li_s": figure(li_s),
        "speedup_vs_torcwa": figure(torcwa_s / laurent_s),
        "speedup_vs_torcwa_1_worker": figure(torcwa_s / laurent_1_s),
        "speedup_li_vs_torcwa": figure(torcwa_s / li_s),
        "ours_vector_s": figure(vector_s),
        "speedup_vector_vs_torcwa": figure(torcwa_s / vector_s),
        "torcwa_ms_per_simulation": figure(1e3 * torcwa_s / simulations),
        "ours_laurent_ms_per_simulation": figure(1e3 * laurent_s / simulations),
        "max_abs_dT_vs_torcwa": error(T_laurent, T_torcwa),
        "grad_rel_diff_vs_torcwa": figure(((g_laurent - g_torcwa).norm() / g_torcwa.norm()).item()),
        "grads_finite": bool(g_torcwa.isfinite().all() and g_laurent.isfinite().all()),
        "polarization_check_max_dT": figure(polarization_error),
        "reference": f"hyplex vector {reference_size} on {len(chosen)} designs",
        "reference_s": figure(reference_s),
        "max_abs_dT0_vs_reference_torcwa": error(T_torcwa[chosen], T_reference),
        "max_abs_dT0_vs_reference_ours_li": error(T_li[chosen], T_reference),
        "max_abs_dT0_vs_reference_ours_laurent": error(T_laurent[chosen], T_reference),
        "max_abs_dT0_vs_reference_ours_vector": error(T_vector[chosen], T_reference),
        "our_eig_fraction": figure(laurent_eig),
        "our_eig_fraction_li": figure(li_eig),
        "our_eig_fraction_vector": figure(vector_eig),
        "torcwa_eig_fraction": figure(torcwa_eig_fraction),
    }
    if not args.skip_accuracy_matched:
        if args.fmmax_python is None and not args.quick:
            args.fmmax_python = str(Path(__file__).resolve().parents[1] / ".venv-fmmax/bin/python")
        elif args.fmmax_python is not None and args.fmmax_python.lower() == "none":
            args.fmmax_python = None
        report.update(accuracy_matched(args, dtype))
    print(json.dumps(report))


if __name__ == "__main__":
    main()

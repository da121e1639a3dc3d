"""Benchmark: hyplex's differentiable RCWA against the peer solver torcwa 0.1.4.2.

Structure (the issue's metasurface; light comes from the top, normal incidence)::

        air                                 incident plane wave, TE (E along y) and TM (E along x)
    ---------------------------------
        silicon pillar, radius r        200 nm thick; square cell, period 400 nm
    ---------------------------------
        glass, n = 1.45                 transmitted orders

Silicon is n = 3.5 (lossless) by default, or a dispersive material (``--silicon cSi``). The
designs are circular pillars with radii spread evenly over 60-150 nm, drawn on a 128 x 128 pixel
grid; torcwa gets the same grid as ``eps = 1 + (eps_Si - 1) * pattern``. Wavelengths are the
centres of equal bins over 400-1000 nm (bin centres avoid the Wood anomaly at exactly 400 nm,
where torcwa's free-space gap matrices divide by kz = 0).

What is timed (forward and backward, wall clock, torch with one intra-op thread):

- torcwa: one simulation per (design, wavelength), loss = unpolarised zeroth-order T,
  ``backward`` per simulation, gradients accumulated on the pattern.
- hyplex ``solve`` with the same loss, in chunks of about ``--chunk`` (design, wavelength)
  pairs per call so that no more than one chunk's graph is alive: ``factorization="laurent"``
  (the same physics as torcwa) with the default batch workers and with ``HYPLEX_WORKERS=1``,
  and the default ``"li"`` (Li's inverse rule).

Accuracy: the zeroth-order T0 (TE and TM) of each solver against a reference, hyplex ``li`` at
17 x 17 harmonics on a few designs; ``max_abs_dT_vs_torcwa`` compares hyplex ``laurent`` with
torcwa on every design (they differ only by hyplex's exact pixel Fourier integrals against
torcwa's sampled DFT). A rectangular bar first checks the polarisation mapping (TE = y-in,
TM = x-in) and warms both solvers up. Time inside the eigen-decomposition (forward and backward)
is measured by wrapping each solver's eig autograd Function.

Reproduce (the last stdout line is one JSON object; progress goes to stderr)::

    .venv/bin/python benchmarks/rcwa.py --quick                        # 4 x 8, < 60 s
    .venv/bin/python benchmarks/rcwa.py --designs 16 --wavelengths 25  # about 8 min
    .venv/bin/python benchmarks/rcwa.py                                # 64 x 100, hours
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402

# torch's bundled MKL hangs in batched LU of matrices >= ~200 with > 1 intra-op thread here.
torch.set_num_threads(1)

import torcwa  # noqa: E402
import torcwa.torch_eig  # noqa: E402

import hyplex.optics.eig  # noqa: E402
from hyplex.optics.materials import get_material  # noqa: E402
from hyplex.optics.parallel import default_workers  # noqa: E402
from hyplex.optics.rcwa import Layer, solve  # noqa: E402

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
            try:
                return function(*args)
            finally:
                self.seconds += time.perf_counter() - start

        return wrapper


OUR_EIG = EigTimer(hyplex.optics.eig._BroadenedEig)
TORCWA_EIG = EigTimer(torcwa.torch_eig.Eig)


def pixel_centres(grid: int) -> tuple[torch.Tensor, torch.Tensor]:
    """x, y (nm, from the cell centre) of the pixel centres, each ``(grid, grid)``; axis 0 is x."""
    centres = (torch.arange(grid, dtype=torch.float64) + 0.5) * PERIOD_NM / grid - PERIOD_NM / 2
    return torch.meshgrid(centres, centres, indexing="ij")


def pillar_patterns(radii_nm: torch.Tensor, grid: int) -> torch.Tensor:
    """Binary fill ``(D, grid, grid)`` of centred circular pillars."""
    x, y = pixel_centres(grid)
    return (x**2 + y**2 <= radii_nm[:, None, None] ** 2).double()


def silicon_material(text: str) -> float | str:
    """``--silicon``: a refractive index (number) or a material name such as ``cSi``."""
    try:
        return float(text)
    except ValueError:
        return text


def silicon_permittivity(silicon: float | str, wavelengths_nm: torch.Tensor) -> torch.Tensor:
    """Complex permittivity ``(L,)`` of the pillar material at the wavelengths."""
    if isinstance(silicon, float):
        return torch.full_like(wavelengths_nm, silicon**2).to(torch.complex128)
    return get_material(silicon).permittivity(wavelengths_nm).to(torch.complex128)


def torcwa_T0(eps_grid: torch.Tensor, wavelength_nm: float, order: int, dtype) -> torch.Tensor:
    """Zeroth-order transmittance ``(2,)`` [TE (y-in), TM (x-in)] of one layer from torcwa."""
    sim = torcwa.rcwa(
        1.0 / wavelength_nm,
        [order, order],
        [PERIOD_NM, PERIOD_NM],
        dtype=dtype,
        device=torch.device("cpu"),
    )
    sim.add_input_layer(eps=1.0)
    sim.add_output_layer(eps=GLASS_INDEX**2)
    sim.set_incident_angle(0.0, 0.0)
    sim.add_layer(HEIGHT_NM, eps=eps_grid.to(dtype))
    sim.solve_global_smatrix()

    def power(polarization: str) -> torch.Tensor:  # |S|^2 is power with power_norm=True
        return sim.S_parameters([[0, 0]], polarization=polarization).abs().square().sum()

    return torch.stack([power("xy") + power("yy"), power("xx") + power("yx")])


def run_torcwa(patterns, eps_si, wavelengths, order, dtype):
    """T0 ``(D, L, 2)``, d(sum of unpolarised T0)/d(pattern) ``(D, N, N)`` and seconds."""
    T0 = torch.zeros(*patterns.shape[:1], len(wavelengths), 2, dtype=torch.float64)
    grads = torch.zeros_like(patterns)
    start = time.perf_counter()
    for d in range(len(patterns)):
        pattern = patterns[d].to(REAL[dtype]).clone().requires_grad_()
        for i, wavelength in enumerate(wavelengths.tolist()):
            T = torcwa_T0(1 + (eps_si[i] - 1) * pattern, wavelength, order, dtype)
            T.mean().backward()
            T0[d, i] = T.detach().double()
        grads[d] = pattern.grad
        log(f"  torcwa design {d + 1}/{len(patterns)}: {time.perf_counter() - start:.1f} s")
    return T0, grads, time.perf_counter() - start


def run_ours(
    patterns, silicon, wavelengths, harmonics, factorization, dtype, chunk, differentiate=True
):
    """Like :func:`run_torcwa` for hyplex ``solve``, about ``chunk`` simulations per call."""
    D, L = len(patterns), len(wavelengths)
    per_call_designs, per_call_wavelengths = max(1, chunk // L), min(L, chunk)
    T0 = torch.zeros(D, L, 2, dtype=torch.float64)
    grads = torch.zeros_like(patterns)
    start = time.perf_counter()
    for d in range(0, D, per_call_designs):
        pattern = patterns[d : d + per_call_designs].to(REAL[dtype]).clone()
        pattern.requires_grad_(differentiate)
        for i in range(0, L, per_call_wavelengths):
            with torch.set_grad_enabled(differentiate):
                result = solve(
                    [Layer(HEIGHT_NM, material=silicon, pattern=pattern)],
                    wavelengths[i : i + per_call_wavelengths],
                    PERIOD_NM,
                    harmonics,
                    superstrate=1.0,
                    substrate=GLASS_INDEX,
                    factorization=factorization,
                    dtype=dtype,
                )
            if differentiate:
                result.T0.mean(-1).sum().backward()
            T0[d : d + len(pattern), i : i + per_call_wavelengths] = result.T0.detach().double()
        if differentiate:
            grads[d : d + len(pattern)] = pattern.grad
    return T0, grads, time.perf_counter() - start


def timed_ours(label, workers, *args, **kwargs):
    """:func:`run_ours` with ``HYPLEX_WORKERS`` set (None = default) and its eig fraction."""
    os.environ.pop("HYPLEX_WORKERS", None)
    if workers is not None:
        os.environ["HYPLEX_WORKERS"] = str(workers)
    eig_before = OUR_EIG.seconds
    T0, grads, seconds = run_ours(*args, **kwargs)
    eig_fraction = (OUR_EIG.seconds - eig_before) / seconds
    log(f"  hyplex {label} ({default_workers()} workers): {seconds:.1f} s, eig {eig_fraction:.0%}")
    os.environ.pop("HYPLEX_WORKERS", None)
    return T0, grads, seconds, eig_fraction


def polarization_check(args, dtype) -> float:
    """Max |dT0| between hyplex laurent and torcwa for a 300 x 100 nm bar (TE != TM)."""
    x, y = pixel_centres(args.grid)
    bar = ((x.abs() <= 150) & (y.abs() <= 50)).double()
    wavelength = torch.tensor([700.0], dtype=torch.float64)
    eps_si = silicon_permittivity(args.silicon, wavelength)
    ours, _, _ = run_ours(
        bar[None],
        args.silicon,
        wavelength,
        args.harmonics,
        "laurent",
        dtype,
        args.chunk,
        differentiate=False,
    )
    theirs, _, _ = run_torcwa(bar[None], eps_si, wavelength, args.harmonics, dtype)
    swapped = (ours[0, 0] - theirs[0, 0].flip(-1)).abs().max().item()
    error = (ours - theirs).abs().max().item()
    log(
        f"  bar at 700 nm: hyplex [TE, TM] {ours[0, 0].tolist()}, torcwa [y-in, x-in] "
        f"{theirs[0, 0].tolist()}; max dT {error:.2e} (swapped {swapped:.2e})"
    )
    if error > swapped:
        log("  WARNING: the polarisation mapping fits better swapped")
    return error


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--designs", type=int, default=64)
    parser.add_argument("--wavelengths", type=int, default=100)
    parser.add_argument("--grid", type=int, default=128, help="pixels per side of the cell")
    parser.add_argument("--harmonics", type=int, default=4, help="orders -M..M in x and y")
    parser.add_argument("--reference-harmonics", type=int, default=8)
    parser.add_argument("--reference-designs", type=int, default=2)
    parser.add_argument(
        "--silicon",
        type=silicon_material,
        default=3.5,
        help="refractive index or material name (cSi)",
    )
    parser.add_argument("--dtype", choices=["complex128", "complex64"], default="complex128")
    parser.add_argument("--chunk", type=int, default=50, help="simulations per hyplex call")
    parser.add_argument("--quick", action="store_true", help="4 designs x 8 wavelengths")
    args = parser.parse_args()
    if args.quick:
        args.designs, args.wavelengths, args.reference_designs = 4, 8, 1
    dtype = getattr(torch, args.dtype)
    edges = torch.linspace(400.0, 1000.0, args.wavelengths + 1, dtype=torch.float64)
    wavelengths = (edges[1:] + edges[:-1]) / 2
    radii = torch.linspace(60.0, 150.0, args.designs, dtype=torch.float64)
    patterns = pillar_patterns(radii, args.grid)
    eps_si = silicon_permittivity(args.silicon, wavelengths)
    harmonics = (args.harmonics, args.harmonics)
    size = f"{2 * args.harmonics + 1}x{2 * args.harmonics + 1}"
    log(
        f"{args.designs} designs x {args.wavelengths} wavelengths, {size} harmonics, "
        f"{args.grid}^2 grid, {args.dtype}, silicon {args.silicon}"
    )

    log("polarisation check (also warms both solvers up):")
    polarization_error = polarization_check(args, dtype)

    log("torcwa:")
    torcwa_eig_before = TORCWA_EIG.seconds
    T_torcwa, g_torcwa, torcwa_s = run_torcwa(patterns, eps_si, wavelengths, args.harmonics, dtype)
    torcwa_eig_fraction = (TORCWA_EIG.seconds - torcwa_eig_before) / torcwa_s
    log(f"  torcwa: {torcwa_s:.1f} s, eig {torcwa_eig_fraction:.0%}")

    log("hyplex:")
    common = (patterns, args.silicon, wavelengths, harmonics)
    T_laurent, g_laurent, laurent_s, laurent_eig = timed_ours(
        "laurent", None, *common, "laurent", dtype, args.chunk
    )
    _, _, laurent_1_s, _ = timed_ours("laurent", 1, *common, "laurent", dtype, args.chunk)
    T_li, _, li_s, li_eig = timed_ours("li", None, *common, "li", dtype, args.chunk)

    reference_designs = torch.linspace(0, args.designs - 1, args.reference_designs).round().long()
    reference_designs = reference_designs.unique()
    reference_size = f"{2 * args.reference_harmonics + 1}x{2 * args.reference_harmonics + 1}"
    log(f"reference: hyplex li {reference_size} on designs {reference_designs.tolist()}")
    start = time.perf_counter()
    T_reference, _, _ = run_ours(
        patterns[reference_designs],
        args.silicon,
        wavelengths,
        (args.reference_harmonics, args.reference_harmonics),
        "li",
        torch.complex128,
        max(1, args.chunk // 5),
        differentiate=False,
    )
    reference_s = time.perf_counter() - start
    log(f"  reference: {reference_s:.1f} s")

    def error_vs_reference(T0: torch.Tensor) -> float:
        return round((T0[reference_designs] - T_reference).abs().max().item(), 5)

    grad_difference = (g_laurent - g_torcwa).norm() / g_torcwa.norm()
    report = {
        "peer": PEER,
        "structure": f"Si pillars (n={args.silicon}) h={HEIGHT_NM:g} nm, period {PERIOD_NM:g} "
        f"nm, r 60-150 nm, on glass n={GLASS_INDEX}, normal incidence",
        "designs": args.designs,
        "wavelengths": args.wavelengths,
        "wavelength_range_nm": [round(wavelengths[0].item(), 2), round(wavelengths[-1].item(), 2)],
        "grid": f"{args.grid}x{args.grid}",
        "harmonics": size,
        "dtype": args.dtype,
        "loss": "sum of unpolarised zeroth-order T, forward + backward",
        "workers_default": default_workers(),
        "torcwa_s": round(torcwa_s, 2),
        "ours_laurent_s": round(laurent_s, 2),
        "ours_laurent_1_worker_s": round(laurent_1_s, 2),
        "ours_li_s": round(li_s, 2),
        "speedup_vs_torcwa": round(torcwa_s / laurent_s, 2),
        "speedup_vs_torcwa_1_worker": round(torcwa_s / laurent_1_s, 2),
        "speedup_li_vs_torcwa": round(torcwa_s / li_s, 2),
        "torcwa_ms_per_simulation": round(1e3 * torcwa_s / T_torcwa[..., 0].numel(), 1),
        "ours_laurent_ms_per_simulation": round(1e3 * laurent_s / T_torcwa[..., 0].numel(), 1),
        "max_abs_dT_vs_torcwa": round((T_laurent - T_torcwa).abs().max().item(), 5),
        "grad_rel_diff_vs_torcwa": round(grad_difference.item(), 5),
        "grads_finite": bool(g_torcwa.isfinite().all() and g_laurent.isfinite().all()),
        "polarization_check_max_dT": round(polarization_error, 5),
        "reference": f"hyplex li {reference_size}, {len(reference_designs)} designs",
        "reference_s": round(reference_s, 2),
        "max_abs_dT0_vs_reference_torcwa": error_vs_reference(T_torcwa),
        "max_abs_dT0_vs_reference_ours_li": error_vs_reference(T_li),
        "max_abs_dT0_vs_reference_ours_laurent": error_vs_reference(T_laurent),
        "our_eig_fraction": round(laurent_eig, 3),
        "our_eig_fraction_li": round(li_eig, 3),
        "torcwa_eig_fraction": round(torcwa_eig_fraction, 3),
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()

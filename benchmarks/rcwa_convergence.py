"""Convergence of the RCWA over the number of harmonics: a silicon pillar array on glass.

Crystalline silicon (Green 2008) cylinders, radius 100 nm, height 200 nm, period 400 nm, on
fused silica, normal incidence, unpolarised, 400-1000 nm. For each truncation M (orders -M..M
along x and y, (2M+1)^2 harmonics) and each factorisation (Li's inverse rule, hyplex's default,
and the plain Laurent rule that torcwa uses), the total transmittance is compared with a
reference computed with Li's rule at a higher truncation.

    .venv/bin/python benchmarks/rcwa_convergence.py            # M = 1..8, reference M = 10
    .venv/bin/python benchmarks/rcwa_convergence.py --quick    # M = 1..5, reference M = 7

Writes out/rcwa_convergence.png and prints one JSON line (last on stdout) with the RMS and max
|dT| of each truncation.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from hyplex.optics import geometry  # noqa: E402
from hyplex.optics.rcwa import Layer, solve  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller truncations, fewer points")
    parser.add_argument("--out", type=Path, default=Path("out/rcwa_convergence.png"))
    args = parser.parse_args()
    orders = range(1, 6) if args.quick else range(1, 9)
    reference_order = 7 if args.quick else 10
    wl = torch.linspace(400.0, 1000.0, 13 if args.quick else 31, dtype=torch.float64)
    pattern = geometry.disk(100.0, 400.0, grid=(96, 96))
    layers = [Layer(200.0, "cSi", pattern=pattern)]

    def transmittance(M: int, factorization: str) -> tuple[np.ndarray, float]:
        start = time.perf_counter()
        with torch.no_grad():
            res = solve(
                layers, wl, 400.0, harmonics=M, substrate="SiO2", factorization=factorization
            )
        seconds = time.perf_counter() - start
        print(
            f"  {factorization:8s} M={M:2d} ({(2 * M + 1) ** 2:3d} harmonics) {seconds:6.1f} s",
            file=sys.stderr,
            flush=True,
        )
        return res.unpolarized("T").numpy(), seconds

    print(f"reference: li, M={reference_order}", file=sys.stderr)
    reference, _ = transmittance(reference_order, "li")
    table = {"li": [], "laurent": []}
    spectra = {}
    for factorization in table:
        for M in orders:
            T, seconds = transmittance(M, factorization)
            spectra[(factorization, M)] = T
            dT = T - reference
            table[factorization].append(
                {
                    "M": M,
                    "harmonics": (2 * M + 1) ** 2,
                    "seconds": round(seconds, 2),
                    "rms_dT": float(np.sqrt(np.mean(dT**2))),
                    "max_dT": float(np.abs(dT).max()),
                }
            )
    _plot(args.out, wl.numpy(), reference, reference_order, spectra, table)
    last = {f: table[f][-1] for f in table}
    print(
        json.dumps(
            {
                "benchmark": "rcwa_convergence",
                "structure": "cSi cylinders r=100 h=200 nm, period 400 nm, on SiO2, normal inc.",
                "reference": f"li M={reference_order}",
                "wavelengths": len(wl),
                "li": table["li"],
                "laurent": table["laurent"],
                "max_dT_ratio_laurent_over_li_at_highest_M": last["laurent"]["max_dT"]
                / last["li"]["max_dT"],
                "plot": str(args.out),
            }
        )
    )


def _plot(out: Path, wl, reference, reference_order, spectra, table) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_s, ax_e) = plt.subplots(1, 2, figsize=(12, 4.5))
    for (factorization, M), T in spectra.items():
        if M in (2, 4, max(m for _, m in spectra)):
            style = "-" if factorization == "li" else ":"
            ax_s.plot(wl, T, style, label=f"{factorization} M={M}")
    ax_s.plot(wl, reference, "k", lw=2, label=f"reference (li M={reference_order})")
    ax_s.set(xlabel="wavelength (nm)", ylabel="T (unpolarised)", title="c-Si pillar array")
    ax_s.legend(fontsize=8)
    for factorization, rows in table.items():
        n = [r["harmonics"] for r in rows]
        ax_e.semilogy(n, [r["rms_dT"] for r in rows], "o-", label=f"{factorization} RMS")
        ax_e.semilogy(n, [r["max_dT"] for r in rows], "s--", label=f"{factorization} max")
    ax_e.set(
        xlabel="number of harmonics (2M+1)^2",
        ylabel="|T - T_ref|",
        title="convergence against the reference",
    )
    ax_e.grid(alpha=0.3, which="both")
    ax_e.legend()
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()

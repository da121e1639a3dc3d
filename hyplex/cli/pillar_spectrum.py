"""The demo job: the transmission spectrum of a silicon metasurface, computed and plotted.

Until the camera twin and the decoders land, ``make demo`` / ``hyplex demo`` runs what exists:
a crystalline-silicon pillar array on glass (a Hyplex-like filter: sub-micron period, a few
hundred nm thick), solved by the differentiable RCWA over 400-1000 nm.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from hyplex.optics import geometry
from hyplex.optics.rcwa import Layer, RCWAResult, solve


@dataclass
class PillarFilter:
    """A square array of cylindrical pillars (all lengths in nm)."""

    radius_nm: float = 110.0
    period_nm: float = 400.0
    height_nm: float = 200.0
    material: str = "cSi"
    substrate: str = "SiO2"
    harmonics: int = 5
    grid: int = 64


def pillar_spectrum(design: PillarFilter, wavelengths_nm: np.ndarray) -> RCWAResult:
    """Solve the pillar array at ``wavelengths_nm`` ``(L,)``; returns the RCWA result."""
    pattern = geometry.disk(design.radius_nm, design.period_nm, grid=(design.grid, design.grid))
    layer = Layer(design.height_nm, design.material, pattern=pattern)
    wl = torch.as_tensor(np.asarray(wavelengths_nm, dtype=np.float64))
    return solve(
        [layer], wl, design.period_nm, harmonics=design.harmonics, substrate=design.substrate
    )


def plot_spectrum(design: PillarFilter, result: RCWAResult, out: Path) -> Path:
    """Plot T, R and A (unpolarised) and the unit cell; writes a PNG to ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    wl = result.wavelengths_nm.numpy()
    T, R = result.unpolarized("T").numpy(), result.unpolarized("R").numpy()
    fig, (ax, ax_cell) = plt.subplots(1, 2, figsize=(10, 4), width_ratios=[3, 1])
    ax.plot(wl, T, label="T (total)")
    ax.plot(wl, result.unpolarized("T0").numpy(), "--", label="T (zeroth order)")
    ax.plot(wl, R, label="R")
    ax.plot(wl, 1 - T - R, label="A = 1 - T - R")
    ax.set(
        xlabel="wavelength (nm)",
        ylabel="fraction of incident power",
        ylim=(0, 1),
        title=f"{design.material} pillars on {design.substrate}, RCWA "
        f"{2 * design.harmonics + 1}x{2 * design.harmonics + 1} orders",
    )
    ax.grid(alpha=0.3)
    ax.legend(loc="best")
    pattern = geometry.disk(design.radius_nm, design.period_nm, grid=(design.grid, design.grid))
    p = design.period_nm
    ax_cell.imshow(pattern.numpy().T, origin="lower", extent=(0, p, 0, p), cmap="Greys")
    ax_cell.set(
        xlabel="x (nm)",
        ylabel="y (nm)",
        title=f"unit cell: r={design.radius_nm:g}, h={design.height_nm:g} nm",
    )
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out

"""PNG report of a calibration: photon transfer, SNR, spectral responses, basis fit."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def plot_report(calibration, path) -> Path:
    """Write a 2 x 2 figure: photon-transfer curve (temporal variance against mean, per
    channel, EMVA 1288), SNR against photons, measured responses with bootstrap bands, and the
    Hyplex basis-fit responses (scaled to the sweep) when present."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sections = calibration.sections
    figure, axes = plt.subplots(2, 2, figsize=(11, 8))
    if "emva" in sections:
        e = sections["emva"]
        signal = np.asarray(e["mean_dn"]) - np.asarray(e["dark_mean_dn"])
        noise = np.asarray(e["variance_dn2"]) - np.asarray(e["dark_variance_dn2"])
        for c in range(signal.shape[1]):
            line = axes[0, 0].plot(signal[:, c], noise[:, c], "o", ms=3, label=f"ch {c}")
            k = np.asarray(e["system_gain_dn_per_e"])[c]
            axes[0, 0].plot(signal[:, c], k * signal[:, c], "-", lw=0.8, color=line[0].get_color())
        axes[0, 0].set(
            xlabel="mu_y - mu_y.dark (DN)",
            ylabel="sigma_y^2 - sigma_y.dark^2 (DN^2)",
            title=f"photon transfer: K = {float(e['system_gain_pooled_dn_per_e']):.4f} DN/e-",
        )
        axes[0, 0].legend(fontsize="x-small", ncol=3)
        photons = np.asarray(e["photons_per_pixel"])
        snr = np.asarray(e["snr"])
        for c in range(snr.shape[1]):
            axes[0, 1].loglog(photons, np.where(snr[:, c] > 0, snr[:, c], np.nan), ".-", lw=0.8)
        axes[0, 1].set(xlabel="photons per pixel", ylabel="SNR", title="SNR curve")
    if "spectral" in sections:
        s = sections["spectral"]
        grid, response = np.asarray(s["wavelengths_nm"]), np.asarray(s["response"])
        error = np.asarray(s["uncertainty"])
        for c, (r, u) in enumerate(zip(response, error, strict=True)):
            line = axes[1, 0].plot(grid, r, label=f"ch {c}")
            axes[1, 0].fill_between(
                grid, r - 2 * u, r + 2 * u, color=line[0].get_color(), alpha=0.3
            )
        axes[1, 0].set(
            xlabel="wavelength (nm)",
            ylabel="DN s^-1 W^-1",
            title="monochromator sweep (deconvolved, 2 sigma)",
        )
        axes[1, 0].legend(fontsize="x-small", ncol=3)
    if "basis_fit" in sections and "spectral" in sections:
        fit = np.asarray(sections["basis_fit"]["response"])
        sweep = np.asarray(sections["spectral"]["response"])
        scale = np.sum(fit * sweep) / np.sum(fit * fit)
        r2 = np.asarray(sections["basis_fit"]["r_squared"])
        for c in range(fit.shape[0]):
            axes[1, 1].plot(grid, sweep[c] / sweep.max(), lw=0.8)
            axes[1, 1].plot(grid, scale * fit[c] / sweep.max(), "--", lw=0.8)
        axes[1, 1].set(
            xlabel="wavelength (nm)",
            ylabel="relative response",
            title=f"Hyplex NNLS fit (dashed), min R^2 = {r2.min():.4f}",
        )
    else:
        axes[1, 1].axis("off")
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path

"""PNG report of a calibration: darks, flat, registration overlay, photon transfer, SNR,
response matrix with error bars, Hyplex basis fit.

::

    +-----------------+-----------------+-----------------------+
    | longest master  | flat (white     | registration overlay  |
    | dark (DN)       | reference, DN)  | (cells on the flat)   |
    +-----------------+-----------------+-----------------------+
    | photon transfer | SNR vs photons  | response matrix, 2 s  |
    | (EMVA 1288)     |                 | error bars            |
    +-----------------+-----------------+-----------------------+
    | basis fit vs    | extra panels (``panels``: e.g. the EMVA   |
    | sweep           | datasheet's)                              |
    +-----------------+-----------------------------------------+

Every panel is drawn from the sections present, so a partial file gives a partial report.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np


def _image(axis, image, title: str, unit: str) -> None:
    image = np.asarray(image, dtype=np.float64)
    low, high = np.percentile(image, [1, 99])
    shown = axis.imshow(image, cmap="gray", vmin=low, vmax=high, interpolation="nearest")
    axis.figure.colorbar(shown, ax=axis, fraction=0.046, label=unit)
    axis.set(title=title, xlabel="column (px)", ylabel="row (px)")


def _darks(axis, sections) -> None:
    dark = sections["dark"]
    masters = np.asarray(dark["master_darks_dn"])
    exposures = np.asarray(dark["exposures_us"], dtype=np.float64)
    longest = int(np.argmax(exposures))
    slope = float(dark.get("mean_dark_slope_dn_per_s", np.nan))
    _image(
        axis,
        masters[longest],
        f"master dark, {exposures[longest] / 1e3:g} ms\n(dark slope {slope:.2f} DN/s)",
        "DN",
    )
    if "defects" in sections:
        hot = np.argwhere(np.asarray(sections["defects"]["hot"]))
        if hot.size:
            axis.plot(hot[:, 1], hot[:, 0], "r+", ms=4, label=f"{len(hot)} hot")
            axis.legend(fontsize="x-small", loc="lower right")


def _flat_image(sections) -> np.ndarray:
    flat = sections["flat"]
    return np.asarray(flat["mean_dn"] if "mean_dn" in flat else flat["gain"])


def _registration(axis, calibration) -> None:
    """The registered cell boundaries (filter codes' contours) over a corner of the flat."""
    image = _flat_image(calibration.sections)
    layout = calibration.layout
    codes = np.asarray(layout.filter_maps(image.shape)[0], dtype=np.float64)
    size = int(min(image.shape[0], image.shape[1], max(6 * layout.pitch_px * 3, 48)))
    row0, col0 = (int(v) for v in np.clip(np.round(layout.offset_px[::-1]) - 4, 0, None))
    row0, col0 = min(row0, image.shape[0] - size), min(col0, image.shape[1] - size)
    crop = (slice(row0, row0 + size), slice(col0, col0 + size))
    extent = (col0 - 0.5, col0 + size - 0.5, row0 + size - 0.5, row0 - 0.5)
    axis.imshow(image[crop], cmap="gray", extent=extent, interpolation="nearest")
    cells = codes[crop]
    boundary = np.zeros(cells.shape, bool)  # a pixel whose right or lower neighbour differs
    boundary[:, :-1] |= cells[:, 1:] != cells[:, :-1]
    boundary[:-1] |= cells[1:] != cells[:-1]
    overlay = np.zeros((*cells.shape, 4))
    overlay[boundary] = (1.0, 0.5, 0.0, 0.8)
    axis.imshow(overlay, extent=extent, interpolation="nearest")
    axis.set(
        title=f"registration: pitch {layout.pitch_px:.3f} px, {layout.rotation_deg:.2f} deg"
        "\n(orange: registered cell boundaries)",
        xlabel="column (px)",
        ylabel="row (px)",
    )


def _photon_transfer(axis, emva) -> None:
    signal = np.asarray(emva["mean_dn"]) - np.asarray(emva["dark_mean_dn"])
    noise = np.asarray(emva["variance_dn2"]) - np.asarray(emva["dark_variance_dn2"])
    for c in range(signal.shape[1]):
        line = axis.plot(signal[:, c], noise[:, c], "o", ms=3, label=f"ch {c}")
        k = np.asarray(emva["system_gain_dn_per_e"])[c]
        axis.plot(signal[:, c], k * signal[:, c], "-", lw=0.8, color=line[0].get_color())
    axis.set(
        xlabel="mu_y - mu_y.dark (DN)",
        ylabel="sigma_y^2 - sigma_y.dark^2 (DN^2)",
        title=f"photon transfer: K = {float(emva['system_gain_pooled_dn_per_e']):.4f} DN/e-",
    )
    axis.legend(fontsize="x-small", ncol=3)


def _snr(axis, emva) -> None:
    photons = np.asarray(emva["photons_per_pixel"], dtype=np.float64)
    snr = np.asarray(emva["snr"])
    abscissa, label = photons, "photons per pixel"
    if not np.all(np.isfinite(photons)):
        abscissa = np.asarray(emva["exposures_us"], dtype=np.float64)
        label = "exposure (us)"
    for c in range(snr.shape[1]):
        axis.loglog(abscissa, np.where(snr[:, c] > 0, snr[:, c], np.nan), ".-", lw=0.8)
    axis.set(xlabel=label, ylabel="SNR", title="SNR curve")


def _responses(axis, sections) -> None:
    spectral = sections["spectral"]
    grid = np.asarray(spectral["wavelengths_nm"])
    response = np.asarray(spectral["response"])
    error = np.asarray(spectral["uncertainty"])
    for c, (r, u) in enumerate(zip(response, error, strict=True)):
        axis.errorbar(grid, r, yerr=2 * u, fmt=".-", ms=2, lw=0.8, capsize=1.5, label=f"ch {c}")
    axis.set(
        xlabel="wavelength (nm)",
        ylabel="DN s^-1 W^-1",
        title="response matrix (deconvolved sweep, 2 sigma)",
    )
    axis.legend(fontsize="x-small", ncol=3)


def _basis_fit(axis, sections) -> None:
    grid = np.asarray(sections["spectral"]["wavelengths_nm"])
    fit = np.asarray(sections["basis_fit"]["response"])
    sweep = np.asarray(sections["spectral"]["response"])
    scale = np.sum(fit * sweep) / np.sum(fit * fit)
    r2 = np.asarray(sections["basis_fit"]["r_squared"])
    for c in range(fit.shape[0]):
        line = axis.plot(grid, sweep[c] / sweep.max(), lw=0.8)
        axis.plot(grid, scale * fit[c] / sweep.max(), "--", lw=0.8, color=line[0].get_color())
    axis.set(
        xlabel="wavelength (nm)",
        ylabel="relative response",
        title=f"Hyplex NNLS fit (dashed), min R^2 = {r2.min():.4f}",
    )


def plot_report(
    calibration,
    path,
    panels: Sequence[Callable[[object, object], None]] = (),
) -> Path:
    """Write the report figure (see the module doc) to ``path`` (PNG); returns the path.

    Parameters
    ----------
    calibration : Calibration
        Complete or partial (missing sections leave their panels empty).
    path : path
    panels : sequence of callable(calibration, matplotlib axis)
        Extra panels drawn in the bottom row after the basis fit (at most two); the hook for
        figures other modules own (the EMVA 1288 datasheet).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if len(panels) > 2:
        raise ValueError(f"at most 2 extra panels fit the report, got {len(panels)}")
    sections = calibration.sections
    figure, axes = plt.subplots(3, 3, figsize=(16, 13))
    if "dark" in sections:
        _darks(axes[0, 0], sections)
    if "flat" in sections:
        _image(axes[0, 1], _flat_image(sections), "flat (white reference)", "DN")
        if calibration.layout is not None:
            _registration(axes[0, 2], calibration)
    if "emva" in sections:
        _photon_transfer(axes[1, 0], sections["emva"])
        _snr(axes[1, 1], sections["emva"])
    if "spectral" in sections:
        _responses(axes[1, 2], sections)
    if "basis_fit" in sections and "spectral" in sections:
        _basis_fit(axes[2, 0], sections)
    for panel, axis in zip(panels, axes[2, 1:], strict=False):
        panel(calibration, axis)
    for axis in axes.flat:
        if not axis.has_data() and not axis.images:
            axis.axis("off")
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=80)
    plt.close(figure)
    return path

"""The EMVA 1288 summary data sheet (Release 4.0 Linear, sec. 10, "Publishing the results":
the summary data sheet of the characterisation), as JSON and PNG.

The summary table lists, for one operation point (wavelength, gain, offset, exposure,
temperature), the figures of sec. 2-4 with their units::

    +---------------------------------------+-------------+-------------------------+
    | quantum efficiency eta                | %           | at the wavelength       |
    | system gain K, inverse 1/K            | DN/e-, e-/DN|                         |
    | temporal dark noise sigma_d, y.dark   | e-, DN      |                         |
    | SNR_max (ratio, dB, bit), 1/SNR_max   |             | sqrt(mu_e.sat)          |
    | absolute sensitivity threshold        | p, p/um^2, e-| mu_p.min, mu_e.min     |
    | saturation capacity                   | p, p/um^2, e-| mu_p.sat, mu_e.sat     |
    | dynamic range (ratio, dB, bit)        |             | mu_p.sat / mu_p.min     |
    | linearity error LE                    | %           |                         |
    | dark current (mean, variance method)  | e-/s        |                         |
    | DSNU (e-, DN), PRNU (%)               |             |                         |
    +---------------------------------------+-------------+-------------------------+

A multispectral camera gets one column per filter channel (R4.0 characterises every channel
of a multimodal sensor like a monochrome camera). The PNG holds the table and the curves the
data sheet shows beside it: photon transfer, SNR against photons, the horizontal and vertical
spectrograms and the accumulated defect-pixel histograms.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, is_dataclass
from pathlib import Path

import numpy as np

#: (key in the data sheet, label, unit, how to compute it from the EMVA section)
ROWS = (
    ("quantum_efficiency_percent", "quantum efficiency eta", "%",
     lambda e: 100.0 * _get(e, "quantum_efficiency")),
    ("system_gain_dn_per_e", "system gain K", "DN/e-", lambda e: _get(e, "system_gain_dn_per_e")),
    ("inverse_system_gain_e_per_dn", "inverse system gain 1/K", "e-/DN",
     lambda e: 1.0 / _get(e, "system_gain_dn_per_e")),
    ("temporal_dark_noise_e", "temporal dark noise sigma_d", "e-",
     lambda e: _get(e, "temporal_dark_noise_e")),
    ("temporal_dark_noise_dn", "temporal dark noise sigma_y.dark", "DN",
     lambda e: np.sqrt(_get(e, "dark_variance_dn2")[0])),
    ("snr_max", "SNR_max", "1", lambda e: _get(e, "snr_max")),
    ("snr_max_db", "SNR_max", "dB", lambda e: _get(e, "snr_max_db")),
    ("snr_max_bits", "SNR_max", "bit", lambda e: _get(e, "snr_max_bits")),
    ("inverse_snr_max_percent", "1/SNR_max", "%", lambda e: 100.0 / _get(e, "snr_max")),
    ("sensitivity_threshold_photons", "absolute sensitivity threshold mu_p.min", "p",
     lambda e: _get(e, "sensitivity_threshold_photons")),
    ("sensitivity_threshold_photons_per_um2", "absolute sensitivity threshold", "p/um^2",
     lambda e: _get(e, "sensitivity_threshold_photons_per_um2")),
    ("sensitivity_threshold_e", "absolute sensitivity threshold mu_e.min", "e-",
     lambda e: _get(e, "sensitivity_threshold_e")),
    ("saturation_photons", "saturation capacity mu_p.sat", "p",
     lambda e: _get(e, "saturation_photons")),
    ("saturation_photons_per_um2", "saturation capacity", "p/um^2",
     lambda e: _get(e, "saturation_photons_per_um2")),
    ("saturation_e", "saturation capacity mu_e.sat", "e-", lambda e: _get(e, "saturation_e")),
    ("dynamic_range", "dynamic range DR", "1",
     lambda e: 10.0 ** (_get(e, "dynamic_range_db") / 20.0)),
    ("dynamic_range_db", "dynamic range", "dB", lambda e: _get(e, "dynamic_range_db")),
    ("dynamic_range_bits", "dynamic range", "bit", lambda e: _get(e, "dynamic_range_bits")),
    ("linearity_error_percent", "linearity error LE", "%",
     lambda e: _get(e, "linearity_error_percent")),
    ("dark_current_mean_e_per_s", "dark current (mean method)", "e-/s",
     lambda e: _get(e, "dark_current_mean_e_per_s")),
    ("dark_current_variance_e_per_s", "dark current (variance method)", "e-/s",
     lambda e: _get(e, "dark_current_variance_e_per_s")),
    ("dsnu_e", "DSNU", "e-", lambda e: _get(e, "dsnu_e")),
    ("dsnu_dn", "DSNU", "DN", lambda e: _get(e, "dsnu_dn")),
    ("prnu_percent", "PRNU", "%", lambda e: _get(e, "prnu_percent")),
)  # fmt: skip


def _get(section: Mapping, key: str) -> np.ndarray:
    value = section.get(key)
    if value is None:
        return np.array([np.nan])
    return np.atleast_1d(np.asarray(value, dtype=np.float64))


def emva_section(result) -> dict:
    """The EMVA figures as one flat mapping: ``result`` is a calibration file's ``emva``
    section, a :class:`~hyplex.calibration.emva.PhotonTransfer`, or a tuple of it and a
    :class:`~hyplex.calibration.emva.NonUniformity`."""
    if isinstance(result, Mapping):
        return dict(result)
    parts = result if isinstance(result, tuple | list) else (result,)
    section = {}
    for part in parts:
        if part is None:
            continue
        if not is_dataclass(part):
            raise TypeError(
                f"expected an EMVA section mapping, PhotonTransfer or NonUniformity, got "
                f"{type(part).__name__}"
            )
        section.update(asdict(part))
    return section


def _number(value: float):
    value = float(value)
    return value if np.isfinite(value) else None


def datasheet(result, operation_point: Mapping | None = None) -> dict:
    """The summary data sheet as a JSON-ready dict.

    Parameters
    ----------
    result : mapping, PhotonTransfer or (PhotonTransfer, NonUniformity)
        See :func:`emva_section`.
    operation_point : mapping, optional
        Wavelength, gain, exposure, temperature... of the measurement (copied as given; the
        section's ``wavelength_nm`` is used when present).

    Returns
    -------
    dict
        ``standard``, ``operation_point``, ``channels`` (C) and ``figures``: key -> {label,
        unit, values (C,; None where not measured)}.
    """
    section = emva_section(result)
    n_channels = int(np.atleast_1d(np.asarray(section.get("system_gain_dn_per_e", [np.nan]))).size)
    point = dict(operation_point or {})
    if "wavelength_nm" in section and "wavelength_nm" not in point:
        point["wavelength_nm"] = float(section["wavelength_nm"])
    if "series" in section:
        point.setdefault("series", str(section["series"]))
    area = section.get("pixel_area_um2")
    if area is not None and np.isfinite(float(area)):
        point.setdefault("pixel_area_um2", float(area))
    figures = {}
    with np.errstate(invalid="ignore", divide="ignore"):
        for key, label, unit, compute in ROWS:
            values = np.broadcast_to(compute(section), (n_channels,))
            figures[key] = {"label": label, "unit": unit, "values": [_number(v) for v in values]}
    return {
        "standard": "EMVA 1288 Release 4.0 Linear",
        "operation_point": point,
        "channels": [f"channel {c}" for c in range(n_channels)],
        "figures": figures,
    }


def _format(value) -> str:
    if value is None:
        return "-"
    if value == 0 or 1e-2 <= abs(value) < 1e5:
        return f"{value:.3g}"
    return f"{value:.2e}"


def _table(axis, sheet: dict, max_columns: int = 9) -> None:
    axis.axis("off")
    channels = sheet["channels"][:max_columns]
    rows = [
        [f"{f['label']} [{f['unit']}]"] + [_format(v) for v in f["values"][: len(channels)]]
        for f in sheet["figures"].values()
    ]
    table = axis.table(cellText=rows, colLabels=["figure", *[c.split()[-1] for c in channels]],
                       loc="center", cellLoc="right")  # fmt: skip
    table.auto_set_font_size(False)
    table.set_fontsize(6.5)
    table.scale(1.0, 1.05)
    point = ", ".join(f"{k} {v}" for k, v in sheet["operation_point"].items())
    axis.set_title(f"{sheet['standard']}: summary data sheet\n{point}", fontsize=9)


def photon_transfer_panel(section: Mapping, axis) -> None:
    """Temporal variance against mean, dark-subtracted, per channel (sec. 6.6)."""
    mean = np.asarray(section["mean_dn"]) - np.asarray(section["dark_mean_dn"])
    variance = np.asarray(section["variance_dn2"]) - np.asarray(section["dark_variance_dn2"])
    axis.plot(mean, variance, ".-", ms=3, lw=0.7)
    axis.set(title="photon transfer", xlabel="mu_y - mu_y.dark (DN)",
             ylabel="sigma_y^2 - sigma_y.dark^2 (DN^2)")  # fmt: skip


def snr_panel(section: Mapping, axis) -> None:
    """SNR against photons per pixel (or exposure), with SNR_max as a dashed line."""
    photons = np.asarray(section["photons_per_pixel"], dtype=np.float64)
    x = photons if np.all(np.isfinite(photons)) else np.asarray(section["exposures_us"])
    snr = np.asarray(section["snr"], dtype=np.float64)
    axis.loglog(x, np.where(snr > 0, snr, np.nan), ".-", ms=3, lw=0.7)
    for value in np.atleast_1d(np.asarray(section.get("snr_max", []), dtype=np.float64)):
        if np.isfinite(value):
            axis.axhline(value, ls="--", lw=0.5, color="gray")
    label = "mu_p (photons)" if x is photons else "exposure (us)"
    axis.set(title="SNR (dashed: SNR_max = sqrt(mu_e.sat))", xlabel=label, ylabel="SNR")


def spectrogram_panel(section: Mapping, axis) -> None:
    """Horizontal and vertical spectrograms of DSNU (e-) and PRNU (%) (sec. 4.3, 8)."""
    if section.get("dsnu_spectrogram_horizontal_e") is None:
        axis.set_title("spectrograms: not measured")
        return
    for key, frequency, label in (
        ("dsnu_spectrogram_horizontal_e", "spectrogram_horizontal_frequency", "DSNU horiz. (e-)"),
        ("dsnu_spectrogram_vertical_e", "spectrogram_vertical_frequency", "DSNU vert. (e-)"),
        ("prnu_spectrogram_horizontal_percent", "spectrogram_horizontal_frequency",
         "PRNU horiz. (%)"),
        ("prnu_spectrogram_vertical_percent", "spectrogram_vertical_frequency", "PRNU vert. (%)"),
    ):  # fmt: skip
        values = np.asarray(section[key], dtype=np.float64)
        axis.semilogy(np.asarray(section[frequency]), np.where(values > 0, values, np.nan),
                      lw=0.7, label=label)  # fmt: skip
    axis.legend(fontsize="x-small")
    axis.set(title="spectrograms", xlabel="frequency (cycles/pixel)", ylabel="standard deviation")


def histogram_panel(section: Mapping, axis) -> None:
    """Accumulated defect-pixel histograms of DSNU (DN) and PRNU (%) (sec. 4.4)."""
    if section.get("dsnu_accumulated_percent") is None:
        axis.set_title("defect-pixel histograms: not measured")
        return
    axis.semilogy(np.asarray(section["dsnu_accumulated_dn"]),
                  np.asarray(section["dsnu_accumulated_percent"]), lw=0.8,
                  label="DSNU (x in DN)")  # fmt: skip
    axis.semilogy(np.asarray(section["prnu_accumulated_percent_deviation"]),
                  np.asarray(section["prnu_accumulated_percent"]), lw=0.8,
                  label="PRNU, high-pass (x in %)")  # fmt: skip
    axis.legend(fontsize="x-small")
    axis.set(title="accumulated histograms", xlabel="|deviation from mean| x",
             ylabel="pixels deviating >= x (%)")  # fmt: skip


def report_panels():
    """Two ``(calibration, axis)`` panels for :func:`hyplex.calibration.report.plot_report`:
    the spectrograms and the accumulated defect-pixel histograms of the ``emva`` section."""

    def spectrograms(calibration, axis):
        if "emva" in calibration.sections:
            spectrogram_panel(calibration.sections["emva"], axis)

    def histograms(calibration, axis):
        if "emva" in calibration.sections:
            histogram_panel(calibration.sections["emva"], axis)

    return (spectrograms, histograms)


def write_datasheet(result, out_dir, operation_point: Mapping | None = None,
                    stem: str = "emva1288_datasheet") -> list[Path]:  # fmt: skip
    """Write the summary data sheet as ``<stem>.json`` and ``<stem>.png`` in ``out_dir``
    (atomic writes; the folder is created).

    Parameters
    ----------
    result : mapping, PhotonTransfer or (PhotonTransfer, NonUniformity)
        A calibration file's ``emva`` section or the results of :mod:`~.emva`.
    out_dir : path
    operation_point : mapping, optional

    Returns
    -------
    list of Path
        [json path, png path].
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    from hyplex.optics.atomic_io import atomic_path

    section = emva_section(result)
    sheet = datasheet(section, operation_point)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, png_path = out_dir / f"{stem}.json", out_dir / f"{stem}.png"
    with atomic_path(json_path) as temporary:
        Path(temporary).write_text(json.dumps(sheet, indent=2))
    figure = Figure(figsize=(17, 11))
    grid = figure.add_gridspec(2, 4, height_ratios=(1.35, 1.0))
    _table(figure.add_subplot(grid[0, :]), sheet)
    axes = [figure.add_subplot(grid[1, i]) for i in range(4)]
    if all(k in section for k in ("mean_dn", "variance_dn2", "dark_mean_dn", "snr")):
        photon_transfer_panel(section, axes[0])
        snr_panel(section, axes[1])
    spectrogram_panel(section, axes[2])
    histogram_panel(section, axes[3])
    figure.tight_layout()
    with atomic_path(png_path) as temporary:
        figure.savefig(temporary, dpi=110, format="png")
    return [json_path, png_path]

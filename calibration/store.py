"""Calibration files: versioned HDF5 with provenance, atomic writes, checked loads.

Layout of a file (format ``hyplex.calibration``, version :data:`FORMAT_VERSION`)::

    /                     attrs: format, format_version, status ("complete" | "partial"),
                                 created_utc, software ("hyplex x.y.z" via importlib.metadata),
                                 camera_id, camera_model, sensor_shape, layout (JSON),
                                 settings (JSON), devices (JSON: instrument identities)
    /<section>/<name>     datasets (arrays) and attrs (scalars, strings), one group per step:
                          dark, flat, defects, emva, registration, sweep, spectral, basis_fit

Writes are atomic (:func:`hyplex.optics.atomic_io.atomic_path`: a unique temporary in the
same folder, fsynced, ``os.replace``d over the target, the folder fsynced): a crash leaves
the old file or the new one, never half of one.
``load_calibration`` checks the format, the version, and optionally the camera and layout it
is about to be used with (:class:`CalibrationMismatch`).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import h5py
import numpy as np

from hyplex.optics.atomic_io import atomic_path
from hyplex.simulation.layout import MosaicLayout

FORMAT = "hyplex.calibration"
FORMAT_VERSION = 1
STATUSES = ("complete", "partial")


class CalibrationMismatch(ValueError):
    """The calibration was made on another camera or another mosaic layout."""


def software_version() -> str:
    try:
        return f"hyplex {version('hyplex')}"
    except PackageNotFoundError:
        return "hyplex (not installed)"


@dataclass
class Provenance:
    """Who and what made a calibration.

    Attributes
    ----------
    camera_id : str  (serial number or a stable id of the camera)
    camera_model : str
    sensor_shape : (int, int)
    devices : dict  (instrument name -> identity string)
    settings : dict (JSON-serialisable settings of every step)
    created_utc : str  (ISO 8601)
    software : str
    """

    camera_id: str
    camera_model: str
    sensor_shape: tuple[int, int]
    devices: dict = field(default_factory=dict)
    settings: dict = field(default_factory=dict)
    created_utc: str = field(
        default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds")
    )
    software: str = field(default_factory=software_version)


@dataclass
class Calibration:
    """A calibration in memory: provenance, layout, status and sections of arrays/scalars."""

    provenance: Provenance
    layout: MosaicLayout | None
    sections: dict[str, dict] = field(default_factory=dict)
    status: str = "complete"


def layout_to_json(layout: MosaicLayout) -> str:
    return json.dumps(asdict(layout))


def layout_from_json(text: str) -> MosaicLayout:
    return MosaicLayout(**json.loads(text))


def layouts_match(a: MosaicLayout, b: MosaicLayout, position_px: float = 0.25) -> bool:
    """Same counts, grid, blocks and gap, and no sub-filter corner moved by more than
    ``position_px``: offset difference, pitch difference x extent, and rotation difference
    (radians) x extent x pitch (a re-registration of the same mosaic passes)."""
    if (a.metapixels, a.grid, a.metapixels_per_block, a.gap_subfilters) != (
        b.metapixels,
        b.grid,
        b.metapixels_per_block,
        b.gap_subfilters,
    ):
        return False
    span = max(a.extent_subfilters())
    rotation = math.radians(abs(a.rotation_deg - b.rotation_deg)) * span * a.pitch_px
    offset = max(abs(x - y) for x, y in zip(a.offset_px, b.offset_px, strict=True))
    return (
        abs(a.pitch_px - b.pitch_px) * span <= position_px and max(rotation, offset) <= position_px
    )


def save_calibration(path, calibration: Calibration) -> Path:
    """Write ``calibration`` to ``path`` atomically (see the module doc); returns the path."""
    if calibration.status not in STATUSES:
        raise ValueError(f"status must be one of {STATUSES}, got {calibration.status!r}")
    path = Path(path)
    with atomic_path(path) as temporary:
        with h5py.File(temporary, "w") as file:
            p = calibration.provenance
            attrs = {
                "format": FORMAT,
                "format_version": FORMAT_VERSION,
                "status": calibration.status,
                "created_utc": p.created_utc,
                "software": p.software,
                "camera_id": p.camera_id,
                "camera_model": p.camera_model,
                "sensor_shape": np.asarray(p.sensor_shape, dtype=np.int64),
                "devices": json.dumps(p.devices),
                "settings": json.dumps(p.settings, default=float),
                "layout": "" if calibration.layout is None else layout_to_json(calibration.layout),
            }
            file.attrs.update(attrs)
            for section, values in calibration.sections.items():
                group = file.create_group(section)
                for name, value in values.items():
                    if value is None:
                        continue
                    if isinstance(value, str | int | float | bool | np.number):
                        group.attrs[name] = value
                    else:
                        group.create_dataset(name, data=np.asarray(value))
    return path


def load_calibration(
    path,
    camera_id: str | None = None,
    layout: MosaicLayout | None = None,
    sensor_shape=None,
    allow_partial: bool = False,
) -> Calibration:
    """Read a calibration file, checking it against the camera it will be used with.

    Raises
    ------
    ValueError
        Not a readable HDF5 file, not a hyplex calibration file, a newer format version, or a
        partial file without ``allow_partial``.
    CalibrationMismatch
        ``camera_id``, ``sensor_shape`` or ``layout`` differ from the file's.
    """
    path = Path(path)
    try:
        file = h5py.File(path, "r")
    except OSError as error:  # not HDF5, truncated, a folder, no permission
        raise ValueError(
            f"{path} is not a readable calibration file ({error}); expected an HDF5 file "
            "written by hyplex calibrate"
        ) from None
    with file:
        attrs = dict(file.attrs)
        if attrs.get("format") != FORMAT:
            raise ValueError(
                f"{path} is not a hyplex calibration file (format {attrs.get('format')!r})"
            )
        if int(attrs["format_version"]) > FORMAT_VERSION:
            raise ValueError(
                f"{path} has format version {attrs['format_version']}, this hyplex reads up to "
                f"{FORMAT_VERSION}: upgrade hyplex"
            )
        sections = {
            name: {**dict(group.attrs), **{k: group[k][()] for k in group}}
            for name, group in file.items()
        }
    provenance = Provenance(
        camera_id=str(attrs["camera_id"]),
        camera_model=str(attrs["camera_model"]),
        sensor_shape=tuple(int(v) for v in attrs["sensor_shape"]),
        devices=json.loads(attrs["devices"]),
        settings=json.loads(attrs["settings"]),
        created_utc=str(attrs["created_utc"]),
        software=str(attrs["software"]),
    )
    stored_layout = layout_from_json(attrs["layout"]) if attrs["layout"] else None
    status = str(attrs["status"])
    if status != "complete" and not allow_partial:
        raise ValueError(
            f"{path} is a partial calibration (an interrupted run): resume it, or "
            "pass allow_partial=True to inspect it"
        )
    if camera_id is not None and camera_id != provenance.camera_id:
        raise CalibrationMismatch(
            f"{path} calibrates camera {provenance.camera_id!r}, not {camera_id!r}"
        )
    if sensor_shape is not None and tuple(sensor_shape) != provenance.sensor_shape:
        raise CalibrationMismatch(
            f"{path} is for a {provenance.sensor_shape} sensor, not {tuple(sensor_shape)}"
        )
    if (
        layout is not None
        and stored_layout is not None
        and not layouts_match(layout, stored_layout)
    ):
        raise CalibrationMismatch(
            f"{path} was registered with layout {stored_layout}, not {layout}: re-register or "
            "recalibrate"
        )
    return Calibration(provenance, stored_layout, sections, status)

"""Calibration files: round trip, provenance, mismatch errors, atomic writes."""

import h5py
import numpy as np
import pytest

from hyplex.calibration.store import (
    Calibration,
    CalibrationMismatch,
    Provenance,
    load_calibration,
    save_calibration,
)
from hyplex.simulation.layout import MosaicLayout

LAYOUT = MosaicLayout(metapixels=(4, 5), pitch_px=5.3, rotation_deg=1.0, offset_px=(2.0, 3.0))


def _calibration(status="complete"):
    provenance = Provenance(
        "cam-7", "twin", (100, 120), devices={"meter": "PM100"}, settings={"slit_um": 500}
    )
    sections = {"spectral": {"response": np.arange(12.0).reshape(3, 4), "units": "DN", "n": 3}}
    return Calibration(provenance, LAYOUT, sections, status)


def test_round_trip_with_provenance(tmp_path):
    path = save_calibration(tmp_path / "cal.h5", _calibration())
    loaded = load_calibration(path, camera_id="cam-7", layout=LAYOUT, sensor_shape=(100, 120))
    assert loaded.layout == LAYOUT
    assert loaded.provenance.devices == {"meter": "PM100"}
    assert loaded.provenance.software.startswith("hyplex")
    assert loaded.provenance.created_utc.endswith("+00:00")
    assert np.array_equal(loaded.sections["spectral"]["response"], np.arange(12.0).reshape(3, 4))
    assert loaded.sections["spectral"]["units"] == "DN"
    assert [p.name for p in tmp_path.iterdir()] == ["cal.h5"]  # no temporary left


def test_other_camera_or_layout_is_a_clear_error(tmp_path):
    path = save_calibration(tmp_path / "cal.h5", _calibration())
    with pytest.raises(CalibrationMismatch, match="cam-7"):
        load_calibration(path, camera_id="cam-8")
    with pytest.raises(CalibrationMismatch, match="sensor"):
        load_calibration(path, sensor_shape=(200, 120))
    moved = MosaicLayout(**{**LAYOUT.__dict__, "offset_px": (3.0, 3.0)})
    with pytest.raises(CalibrationMismatch, match="layout"):
        load_calibration(path, layout=moved)
    nearly = MosaicLayout(**{**LAYOUT.__dict__, "pitch_px": 5.3001})
    load_calibration(path, layout=nearly)  # a re-registration within tolerance


def test_failed_write_keeps_the_previous_file(tmp_path):
    path = save_calibration(tmp_path / "cal.h5", _calibration())
    broken = _calibration()
    broken.sections["bad"] = {"value": object()}
    with pytest.raises(TypeError):
        save_calibration(path, broken)
    assert load_calibration(path).status == "complete"
    assert [p.name for p in tmp_path.iterdir()] == ["cal.h5"]


def test_not_a_calibration_file(tmp_path):
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as file:
        file.attrs["format"] = "something"
    with pytest.raises(ValueError, match="not a hyplex calibration"):
        load_calibration(path)

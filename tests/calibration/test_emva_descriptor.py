"""EMVA 1288 descriptor files (read, write, analyse) and the summary data sheet."""

import json

import numpy as np
import pytest

from hyplex.calibration.emva import photon_transfer, spatial_nonuniformity
from hyplex.calibration.emva_datasheet import datasheet, write_datasheet
from hyplex.calibration.emva_descriptor import (
    DescriptorError,
    analyse,
    read_descriptor,
    write_dataset,
)
from hyplex.simulation.sensor import SensorModel

from .conftest import make_twin

SHAPE = (48, 56)


@pytest.fixture(scope="module")
def measurement():
    """A monochrome exposure series past saturation, on a uniform white field, with stacks."""
    sensor = SensorModel(shape=SHAPE, read_noise_e=3.0, dsnu_e=2.0, prnu_percent=1.0,
                         dark_current_e_per_s=5.0)  # fmt: skip
    twin = make_twin(shape=SHAPE, sensor=sensor)
    rate = np.full(SHAPE, 50.0)  # electrons per us, every pixel
    exposures = np.linspace(0.03, 1.4, 14) * sensor.full_well_e / 50.0
    photons = exposures * 50.0 / 0.6  # a QE of 0.6
    bright, dark = [], []
    for i, t in enumerate(exposures):
        frames = [twin.capture(rate * t * (k < 2), t, seed=4, frame_index=4 * i + k)
                  for k in range(4)]  # fmt: skip
        bright.append(frames[:2])
        dark.append(frames[2:])
    t50 = 0.5 * sensor.full_well_e / 50.0
    stack = [twin.capture(rate * t50, t50, seed=4, frame_index=500 + i) for i in range(6)]
    dark_stack = [twin.capture(rate * 0, t50, seed=4, frame_index=600 + i) for i in range(6)]
    return sensor, exposures, photons, bright, dark, t50, stack, dark_stack


def test_a_written_data_set_reads_back_and_gives_the_same_figures(measurement, tmp_path):
    sensor, exposures, photons, bright, dark, t50, stack, dark_stack = measurement
    path = write_dataset(
        tmp_path / "set", 12,
        [(t, p, pair) for t, p, pair in zip(exposures, photons, bright, strict=True)],
        [(t, pair) for t, pair in zip(exposures, dark, strict=True)],
        [(t50, t50 * 50.0 / 0.6, stack)], [(t50, dark_stack)], info={"Camera": "twin"},
    )  # fmt: skip
    text = path.read_text().splitlines()
    assert "v 4.0" in text and f"n 12 {SHAPE[1]} {SHAPE[0]}" in text
    assert any(line.startswith("b ") for line in text) and "l Camera twin" in text
    dataset = read_descriptor(path)
    assert len(dataset.temporal_bright) == 14 and len(dataset.spatial_bright) == 1
    assert dataset.temporal_bright[0].exposure_ns == pytest.approx(exposures[0] * 1e3, rel=1e-5)
    transfer, uniformity = analyse(dataset, pixel_area_um2=11.9)
    channels = np.zeros(SHAPE, np.int32)
    direct = photon_transfer(bright, dark, exposures, channels, photons)
    assert transfer.system_gain_dn_per_e[0] == pytest.approx(direct.system_gain_dn_per_e[0],
                                                             rel=1e-4)  # fmt: skip
    assert transfer.system_gain_dn_per_e[0] == pytest.approx(sensor.system_gain_dn_per_e, rel=0.03)
    assert transfer.quantum_efficiency[0] == pytest.approx(0.6, rel=0.03)
    assert uniformity.dsnu_e[0] == pytest.approx(sensor.dsnu_e, rel=0.2)
    sheet_paths = write_datasheet((transfer, uniformity), tmp_path / "sheet")
    sheet = json.loads(sheet_paths[0].read_text())
    assert sheet["standard"] == "EMVA 1288 Release 4.0 Linear"
    snr_db = sheet["figures"]["snr_max_db"]["values"][0]
    assert snr_db == pytest.approx(20 * np.log10(np.sqrt(sensor.full_well_e)), abs=0.5)
    assert sheet["figures"]["quantum_efficiency_percent"]["values"][0] == pytest.approx(
        60, rel=0.03
    )
    assert sheet["operation_point"]["pixel_area_um2"] == 11.9
    assert sheet_paths[1].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_an_irradiance_series_is_recognised(measurement, tmp_path):
    _, exposures, photons, bright, dark, *_ = measurement
    # pretend the steps were taken at one exposure with varying irradiance
    one = float(exposures[5])
    path = write_dataset(tmp_path / "irr", 12,
                         [(one, p, pair) for p, pair in zip(photons, bright, strict=True)],
                         [(one, dark[0])])  # fmt: skip
    transfer, uniformity = analyse(path)
    assert transfer.series == "irradiance" and uniformity is None


def test_the_reference_layout_with_windows_paths_parses(tmp_path):
    (tmp_path / "images").mkdir()
    frame = np.full((4, 5), 100, np.uint16)
    for name in ("b1", "b2", "d1", "d2"):
        np.save(tmp_path / "images" / f"{name}.npy", frame)
    (tmp_path / "data.txt").write_text(
        "# Measurement for EMVA1288 Standard Release 3.0\nv 3.0\nn 12 5 4\n"
        "b 40000.0 120.0\ni images\\b1.npy\ni images\\b2.npy\n"
        "d 40000.0\ni images\\d1.npy\ni images\\d2.npy\nl InterfaceType Gigabit Ethernet\n"
    )
    dataset = read_descriptor(tmp_path / "data.txt")
    assert (dataset.bits, dataset.width, dataset.height) == (12, 5, 4)
    assert dataset.temporal_bright[0].photons == 120.0
    assert dataset.temporal_dark[0].images[0].name == "d1.npy"
    assert dataset.info == {"InterfaceType": "Gigabit Ethernet"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("v 4.0\nn 12 5 4\nx 1\n", "unknown line"),
        ("v 4.0\nb 1 2\ni a.png\ni b.png\n", "no 'n bits"),
        ("n 12 5 4\nb 1 2\ni a.png\n", ">= 2 images"),
        ("n 12 5 4\nd 1\ni ../../etc/a.png\ni b.png\n", "outside"),
        ("n 12 5 4\nb 1\ni a.png\ni b.png\n", "b exposure_ns photons"),
        ("n 12 5 4\nb 1 2\ni a.png\ni b.png\nb 1 2\ni c.png\ni d.png\n", "a second b step"),
        ("n 12 5 4\ni a.png\n", "before any b or d"),
    ],
)
def test_bad_descriptors_name_the_line(tmp_path, text, message):
    (tmp_path / "d.txt").write_text(text)
    with pytest.raises(DescriptorError, match=message):
        read_descriptor(tmp_path / "d.txt")


def test_the_datasheet_reads_a_stored_emva_section(measurement, tmp_path):
    """The calibration file's ``emva`` section (a flat mapping) gives the same sheet."""
    from dataclasses import asdict

    _, exposures, photons, bright, dark, _, stack, dark_stack = measurement
    channels = np.zeros(SHAPE, np.int32)
    transfer = photon_transfer(bright, dark, exposures, channels, photons)
    uniformity = spatial_nonuniformity(dark_stack, stack, channels, transfer.system_gain_dn_per_e)
    section = {**asdict(transfer), **asdict(uniformity), "wavelength_nm": 550.0}
    sheet = datasheet(section)
    assert sheet["operation_point"]["wavelength_nm"] == 550.0
    assert sheet == datasheet(section)
    assert sheet["figures"]["dsnu_dn"]["values"][0] == pytest.approx(
        sheet["figures"]["dsnu_e"]["values"][0] * transfer.system_gain_dn_per_e[0]
    )
    assert len(write_datasheet(section, tmp_path)) == 2

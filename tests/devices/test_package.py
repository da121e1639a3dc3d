"""hyplex.devices: lazy exports and the layering of docs/architecture.md."""

import importlib
import pathlib

import hyplex.devices

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_every_export_resolves():
    for name in hyplex.devices.__all__:
        assert getattr(hyplex.devices, name) is not None, name


def test_devices_do_not_import_models_or_calibration():
    for path in (ROOT / "devices").glob("*.py"):
        text = path.read_text()
        for wing in ("models", "calibration"):
            assert f"hyplex.{wing}" not in text and f"from ..{wing}" not in text, path


def test_modules_stay_small():
    for path in (ROOT / "devices").glob("*.py"):
        assert len(path.read_text().splitlines()) < 400, path


def test_sim_url_handler_is_registered_by_the_transport():
    import serial

    importlib.import_module("hyplex.devices.serial_transport")
    assert "hyplex.devices" in serial.protocol_handler_packages
    port = serial.serial_for_url("sim://stage", timeout=0.1)
    port.write(b"?\n")
    assert port.read_until(b"\r\n") == b"<Idle|MPos:0.000,0.000,0.000>\r\n"
    port.close()

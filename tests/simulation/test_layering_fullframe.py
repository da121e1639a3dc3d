"""Layering of the wing, and (slow) a full-size 4000 x 3000 frame end to end."""

import pathlib

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_simulation_imports_only_optics_below_it():
    for path in [*(ROOT / "simulation").glob("*.py")]:
        text = path.read_text()
        for wing in ("models", "devices", "calibration"):
            assert f"hyplex.{wing}" not in text and f"from ..{wing}" not in text, path


def test_package_exports_resolve():
    import hyplex.simulation as simulation

    for name in simulation.__all__:
        assert getattr(simulation, name) is not None


@pytest.mark.slow
def test_full_size_raw_frame_and_barcodes(grid204):
    from hyplex.simulation.barcodes import BarcodeExtractor
    from hyplex.simulation.camera import default_camera
    from hyplex.simulation.scenes import make_scene

    scene = make_scene((300, 400), grid204, n_objects=8, seed=0)
    camera = default_camera(grid204, (3000, 4000), rotation_deg=1.0)
    exposure = camera.auto_exposure_us(scene.radiance, grid204)
    raw = camera.render(scene.radiance, grid204, exposure, seed=1)
    assert raw.shape == (3000, 4000) and raw.dtype == np.uint16
    assert 0 < raw.mean() < camera.sensor.max_dn
    barcodes = BarcodeExtractor(camera.encoder.layout, raw.shape)(raw)
    assert barcodes.shape == (*camera.encoder.layout.metapixels, 9)
    assert np.isfinite(barcodes).all()

"""Layering of the wing, and (slow) a full-size 4000 x 3000 frame end to end."""

import ast
import pathlib

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


ALLOWED = ("hyplex.simulation", "hyplex.optics")  # this wing and the one below it


def hyplex_imports(path: pathlib.Path) -> list[str]:
    """Every hyplex module a file imports (absolute or relative, at any depth), resolved to
    absolute names; ``from hyplex import x`` yields ``hyplex.x``."""
    package = ["hyplex", "simulation"]  # simulation/ is imported as hyplex.simulation
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names if alias.name.split(".")[0] == "hyplex"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if module.split(".")[0] != "hyplex":
                continue
            if module in ("hyplex", "hyplex.simulation", "hyplex.optics") or not node.module:
                found += [f"{module}.{alias.name}" for alias in node.names]
            else:
                found.append(module)
    return found


def test_simulation_imports_only_itself_and_optics():
    files = sorted((ROOT / "simulation").glob("*.py"))
    assert len(files) > 20
    for path in files:
        for module in hyplex_imports(path):
            assert module.startswith(tuple(f"{name}." for name in ALLOWED)) or module in ALLOWED, (
                f"{path.name} imports {module}"
            )


def test_the_import_checker_sees_relative_and_root_imports(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import numpy\nfrom hyplex import __version__\nfrom .. import models\n"
        "from ..devices.camera import Camera\nfrom . import grids\nimport hyplex.optics.tmm\n"
    )
    assert hyplex_imports(sample) == [
        "hyplex.__version__",
        "hyplex.models",
        "hyplex.devices.camera",
        "hyplex.simulation.grids",
        "hyplex.optics.tmm",
    ]


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

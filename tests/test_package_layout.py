"""The wings of docs/architecture.md are installed as hyplex.<wing>."""

import importlib
import pathlib
import subprocess
import sys

import hyplex

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_every_wing_folder_is_an_installed_subpackage():
    for wing in hyplex.WINGS:
        assert (ROOT / wing / "__init__.py").is_file(), f"folder {wing}/ is missing"
        module = importlib.import_module(f"hyplex.{wing}")
        assert pathlib.Path(module.__file__).resolve().parent == (ROOT / wing).resolve()


def test_installed_package_list_names_every_wing():
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders = {p for p in ROOT.iterdir() if (p / "__init__.py").is_file()}
    listed = set(config["packages"])
    for folder in folders:
        name = "hyplex" if folder.name == "hyplex" else f"hyplex.{folder.name}"
        assert name in listed, f"{folder.name}/ is not in pyproject's package list"
        assert config["package-dir"][name] == folder.name
        # subpackages too (models/openset/, ...): a wheel holds only the listed packages, so a
        # missing one imports from the editable checkout and fails from an installed wheel
        for init in folder.rglob("*/__init__.py"):
            parts = init.parent.relative_to(folder).parts
            sub = ".".join((name, *parts))
            assert sub in listed, f"{init.parent.relative_to(ROOT)}/ is not in pyproject's list"


def test_cli_version_and_help():
    out = subprocess.run(
        [sys.executable, "-m", "hyplex", "--version"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.strip() == f"hyplex {hyplex.__version__}"
    help_text = subprocess.run(
        [sys.executable, "-m", "hyplex", "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "demo" in help_text and "optics" in help_text


def test_optics_does_not_import_upper_wings():
    for path in (ROOT / "optics").glob("*.py"):
        text = path.read_text()
        for wing in ("devices", "calibration", "models", "simulation"):
            assert f"hyplex.{wing}" not in text and f"from ..{wing}" not in text, path

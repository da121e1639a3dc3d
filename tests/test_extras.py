"""Optional dependencies (hyplex.optics.extras): the core imports and `hyplex design --help` work
without any extra installed, and each missing extra is named where it is needed.

The "not installed" state is made in a fresh interpreter by a ``sys.meta_path`` finder that
refuses every optional package, so the test needs no second environment.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from hyplex.optics.extras import EXTRAS, MissingExtraError, find_extra, require

BLOCKER = textwrap.dedent(
    """
    import sys

    BLOCKED = {blocked!r}

    class Blocker:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
            return None

    sys.meta_path.insert(0, Blocker())
    """
).format(blocked=sorted(EXTRAS))

CORE = """
import importlib, json
for name in ("hyplex.optics", "hyplex.simulation", "hyplex.models", "hyplex.devices",
             "hyplex.calibration", "hyplex.optics.library_build", "hyplex.optics.rcwa",
             "hyplex.simulation.scenes", "hyplex.models.codesign", "hyplex.models.bundle",
             "hyplex.pipeline.engine", "hyplex.viewer.server", "hyplex.cli"):
    importlib.import_module(name)
from hyplex.cli import app
try:
    app(["design", "--help"])
except SystemExit as stop:
    assert not stop.code, stop.code
leaked = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
print(json.dumps({"leaked": leaked}))
"""

MESSAGES = """
import json, tempfile
messages = {}

def said(key, call):
    try:
        call()
    except ImportError as error:
        messages[key] = [type(error).__name__, str(error)]

def viewer():
    from hyplex.viewer.server import create_app
    create_app(None)

def cluster():
    from hyplex.optics.library import SolverSettings
    from hyplex.optics.library_build import build_library
    from hyplex.optics.library_spec import LibrarySpec
    spec = LibrarySpec(family="disk", count=2, wavelengths_nm=(500.0, 600.0),
                       solver=SolverSettings(harmonics=(1, 1), grid=(8, 8)))
    build_library(tempfile.mkdtemp() + "/lib.h5", spec, progress=False)

def data():
    from hyplex.simulation.spectra import load_earthlib
    load_earthlib()

def camera():
    from hyplex.devices.opencv_camera import OpenCVCamera
    clip = tempfile.mkdtemp() + "/clip.mp4"
    open(clip, "wb").close()
    OpenCVCamera(clip).open()

def instruments():
    import hyplex.devices.serial_transport  # noqa: F401

said("viewer", viewer)
said("cluster", cluster)
said("data", data)
said("devices", camera)
said("serial", instruments)
print(json.dumps(messages))
"""


def _run(body: str) -> dict:
    run = subprocess.run(
        [sys.executable, "-c", BLOCKER + body], capture_output=True, text=True, timeout=240
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.splitlines()[-1])


@pytest.mark.timeout(300)
def test_the_core_and_design_help_need_no_extra():
    assert _run(CORE) == {"leaked": []}


@pytest.mark.timeout(300)
def test_a_missing_extra_is_named_where_it_is_needed():
    messages = _run(MESSAGES)
    expected = {
        "viewer": "viewer",
        "cluster": "cluster",
        "data": "data",
        "devices": "devices",
        "serial": "devices",
    }
    for key, extra in expected.items():
        kind, text = messages[key]
        assert kind == "MissingExtraError", (key, text)
        assert f"needs the [{extra}] extra" in text and f"pip install 'hyplex[{extra}]'" in text


def test_require_returns_the_module_and_names_the_extra_otherwise():
    assert require("json", extra="data") is json
    with pytest.raises(MissingExtraError, match=r"the viewer needs the \[viewer\] extra"):
        require("hyplex_no_such_module", extra="viewer", feature="the viewer")
    with pytest.raises(MissingExtraError, match=r"\[data\]"):
        find_extra("hyplex_no_such_module", extra="data")
    with pytest.raises(KeyError):
        require("hyplex_no_such_module")  # not a declared optional dependency


def test_a_broken_dependency_inside_an_installed_package_is_not_blamed_on_the_extra(
    tmp_path, monkeypatch
):
    (tmp_path / "cv2.py").write_text("import hyplex_missing_dependency_of_cv2\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "cv2", raising=False)
    with pytest.raises(ModuleNotFoundError) as caught:
        require("cv2")
    assert not isinstance(caught.value, MissingExtraError)
    assert caught.value.name == "hyplex_missing_dependency_of_cv2"

"""Every wrong value at the command line is one line naming the value and what was expected,
with exit code 2 (a usage error), fast, with no traceback, before any large allocation.

One row per input class of the audit (issue 20, item 3). Rows whose work would allocate (the
RCWA, a camera twin, a library file) replace that work with a sentinel that fails the row if
it is reached: the check must come first. The machine's memory is fixed at 24 GB through
``HYPLEX_MEMORY_BYTES`` so the messages do not depend on the machine running the tests.
"""

from __future__ import annotations

import importlib
import re
import resource
import time

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from hyplex.cli.app import app

MEMORY = "24000000000"  # 24 GB, the machine the messages quote
SECONDS = 5.0  # each row, after the imports are warm
GROWTH_BYTES = 1 << 30  # peak RSS may not grow more than this during a row


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """The inputs the rows point at: a plain file, a folder, a recording, a decoder, a
    target spectrum, an HDF5 file that is not a calibration, and an empty bundle folder."""
    import torch

    from hyplex.devices.frame import Frame, PixelFormat
    from hyplex.devices.recorder import Recorder, StreamSpec
    from hyplex.models.reconstruction import LinearDecoder
    from hyplex.pipeline.model_files import save_decoder

    root = tmp_path_factory.mktemp("cli_errors")
    (root / "afile").write_text("not a folder\n")
    (root / "adir").mkdir()
    (root / "bundle").mkdir()
    (root / "target.csv").write_text("wavelength_nm,T\n500,0.5\n600,0.6\n700,0.4\n")
    torch.manual_seed(0)
    save_decoder(LinearDecoder(9, 34), root / "rec")  # rec.safetensors + rec.json: 34 bands
    with Recorder(root / "clip.h5", StreamSpec((48, 64), PixelFormat.MONO12)) as recorder:
        data = np.full((48, 64), 1000, np.uint16)
        recorder.write(Frame(data, frame_id=0, seq=0, host_timestamp_ns=0))
    with h5py.File(root / "other.h5", "w") as handle:
        handle.attrs["format"] = "something-else"
    return root


@pytest.fixture(scope="module", autouse=True)
def warm_imports():
    """Import what the commands import, so a row's time is its check, not a first import."""
    import hyplex.calibration.pipeline  # noqa: F401
    import hyplex.cli.pillar_spectrum  # noqa: F401
    import hyplex.devices.discovery  # noqa: F401
    import hyplex.hil.refit  # noqa: F401
    import hyplex.models.codesign  # noqa: F401
    import hyplex.optics.inverse  # noqa: F401
    import hyplex.optics.library_build  # noqa: F401
    import hyplex.pipeline.batch  # noqa: F401
    import hyplex.simulation.scenes  # noqa: F401
    import hyplex.viewer.server  # noqa: F401


# The work each row must not reach (module, attribute).
RCWA = [("hyplex.cli.pillar_spectrum", "pillar_spectrum"), ("hyplex.optics.rcwa", "solve")]
LIBRARY = [("hyplex.optics.library_build", "build_library"), ("hyplex.optics.rcwa", "solve")]
INVERSE = [("hyplex.optics.inverse", "RCWASpectrum"), ("hyplex.optics.rcwa", "solve")]
TWIN = [
    ("hyplex.devices.discovery", "open_camera"),
    ("hyplex.simulation.scenes", "make_scene"),
    ("hyplex.simulation.camera", "default_camera"),
]
VIEWER = [("hyplex.viewer.server", "simulated_session")]
CALIBRATION = [
    ("hyplex.calibration.pipeline", "calibrate"),
    ("hyplex.simulation.camera", "default_camera"),
]
SEGMENT = [("hyplex.pipeline.batch", "run_jobs")]
DESIGN = [("hyplex.models.codesign", "train_codesign")]
REFIT = [("hyplex.hil.refit", "refit_bundle")]

# id, arguments ({d} is the files folder), exit code, what the output names, sentinels
ROWS = [
    # --out a file where a folder is expected, a folder where a file is, a path under a file
    ("segment-out-file", "segment {d}/clip.h5 --reconstructor {d}/rec.json --out {d}/afile",
     2, ["{d}/afile", "is a file", "expected a folder"], SEGMENT),
    ("design-out-file", "design --quick --out {d}/afile",
     2, ["{d}/afile", "is a file", "expected a folder"], DESIGN),
    ("refit-out-file",
     "refit --design {d}/bundle --calibration {d}/afile --out {d}/afile",
     2, ["{d}/afile", "is a file", "expected a folder"], REFIT),
    ("refit-calibration-missing", "refit --design {d}/bundle --calibration {d}/missing.h5",
     2, ["{d}/missing.h5", "does not exist", "expected a calibration file"], REFIT),
    ("spectrum-out-dir", "optics spectrum --out {d}/adir",
     2, ["{d}/adir", "is a directory", "expected a PNG file path"], RCWA),
    ("spectrum-out-under-file", "optics spectrum --out {d}/afile/x.png",
     2, ["{d}/afile", "is a file, not a folder", "expected a PNG file path"], RCWA),
    ("calibrate-out-dir", "calibrate --out {d}/adir",
     2, ["{d}/adir", "is a directory", "expected a calibration file path"], CALIBRATION),
    ("simulate-out-dir", "simulate scene --out {d}/adir",
     2, ["{d}/adir", "is a directory", "expected an HDF5 file path"],
     [("hyplex.simulation.scenes", "make_scene")]),
    ("inverse-out-dir", "inverse --target {d}/target.csv --out {d}/adir",
     2, ["{d}/adir", "is a directory", "expected a JSON file path"], INVERSE),
    # library build --out a folder (was a raw HDF5 errno) or under a file
    ("library-out-dir", "library build --out {d}/adir --count 4 --serial",
     2, ["{d}/adir", "is a directory", "expected a library file path"], LIBRARY),
    ("library-out-under-file", "library build --out {d}/afile/lib.h5 --count 4 --serial",
     2, ["{d}/afile", "is a file, not a folder"], LIBRARY),
    # segment --bands outside the reconstructor's 34 bands (was an IndexError per input)
    ("segment-bands", "segment {d}/clip.h5 --reconstructor {d}/rec.json --out {d}/seg "
     "--bands 30:40", 2, ["'30:40'", "band 34", "expected indices 0..33"], SEGMENT),
    # sizes that cannot fit in memory, refused before allocating
    ("spectrum-harmonics", "optics spectrum --harmonics 100000 --out {d}/s.png",
     2, ["harmonics=100000", "24 GB", "expected harmonics <="], RCWA),
    ("library-harmonics", "library build --harmonics 100000 --out {d}/h.h5 --serial",
     2, ["harmonics=100000", "24 GB", "expected harmonics <="], LIBRARY),
    ("library-grid", "library build --grid 100000000 --out {d}/g.h5 --serial",
     2, ["grid=100000000", "24 GB", "expected grid <="], LIBRARY),
    ("library-count", "library build --count 100000000000 --out {d}/c.h5 --serial",
     2, ["count=100,000,000,000", "24 GB", "expected count <="], LIBRARY),
    ("inverse-harmonics", "inverse --target {d}/target.csv --harmonics 100000 --out {d}/i.json",
     2, ["harmonics=100000", "24 GB", "expected harmonics <="], INVERSE),
    ("inverse-grid", "inverse --target {d}/target.csv --grid 100000000 --out {d}/i.json",
     2, ["grid=100000000", "24 GB", "expected grid <="], INVERSE),
    ("stream-sim-shape", "stream --sim-shape 100000x100000",
     2, ["100000x100000", "24 GB", "expected at most"], TWIN),
    ("view-sim-shape", "view --sim-shape 100000x100000 --seconds 0",
     2, ["100000x100000", "24 GB", "expected at most"], VIEWER),
    ("calibrate-sensor", "calibrate --rows 100000 --cols 100000 --out {d}/cal.h5",
     2, ["100000 rows x 100000 cols", "24 GB", "expected at most"], CALIBRATION),
    # calibrate and stream validation (was a Rich traceback each)
    ("calibrate-pitch", "calibrate --pitch-px 0 --out {d}/cal.h5",
     2, ["--pitch-px", "0.0", "expected a finite number > 0"], CALIBRATION),
    ("calibrate-pitch-nan", "calibrate --pitch-px nan --out {d}/cal.h5",
     2, ["--pitch-px", "nan", "expected a finite number > 0"], CALIBRATION),
    ("calibrate-resume-foreign", "calibrate --resume --out {d}/other.h5",
     2, ["{d}/other.h5", "'something-else'", "expected a hyplex calibration file"],
     CALIBRATION),
    ("calibrate-resume-garbage", "calibrate --resume --out {d}/afile",
     2, ["{d}/afile", "expected a hyplex calibration file"], CALIBRATION),
    ("stream-exposure-nan", "stream --exposure-us nan --sim-shape 64x64",
     2, ["--exposure-us", "nan", "expected a finite number > 0"], TWIN),
    ("stream-frame-rate-inf", "stream --frame-rate-hz inf --sim-shape 64x64",
     2, ["--frame-rate-hz", "inf", "expected a finite number > 0"], TWIN),
    ("stream-policy", "stream --policy sometimes --sim-shape 64x64",
     2, ["'sometimes'", "expected one of"], TWIN),
    ("stream-record-dir", "stream --record {d}/adir --sim-shape 64x64",
     None, ["{d}/adir", "folder", "give a file"], TWIN),
    # view --camera sim would ignore model files: refused
    ("view-sim-model", "view --camera sim --reconstructor {d}/rec.json --seconds 0",
     2, ["--reconstructor", "{d}/rec.json", "expected no --reconstructor"], VIEWER),
    ("view-sim-calibration", "view --calibration {d}/afile --seconds 0",
     2, ["--calibration", "expected no --calibration"], VIEWER),
    # what already held: inverse and library reject bad options with one line
    ("inverse-target-missing", "inverse --target {d}/missing.csv --out {d}/i.json",
     2, ["{d}/missing.csv", "does not exist"], INVERSE),
    ("library-family", "library build --family hexagon --out {d}/f.h5 --serial",
     2, ["hexagon"], LIBRARY),
]  # fmt: skip


def _flat(text: str) -> str:
    """The output without Rich's box drawing and line wrapping."""
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", text).split())


@pytest.mark.parametrize(("args", "code", "named", "sentinels"), [r[1:] for r in ROWS],
                         ids=[r[0] for r in ROWS])  # fmt: skip
def test_a_wrong_value_is_one_line(files, monkeypatch, args, code, named, sentinels):
    def reached(*_, **__):
        raise AssertionError("the command started its work before checking its options")

    for module, attribute in sentinels:  # by module object: a package may shadow its module
        monkeypatch.setattr(importlib.import_module(module), attribute, reached)
    argv = args.format(d=files).split()
    env = {"HYPLEX_MEMORY_BYTES": MEMORY, "COLUMNS": "400", "HYPLEX_THREADS": "1"}
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    began = time.perf_counter()
    result = CliRunner().invoke(app, argv, env=env)
    seconds = time.perf_counter() - began
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - peak
    output = _flat(result.output)

    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"{type(result.exception).__name__}: {result.exception}\n{output}"
    )
    assert "Traceback" not in result.output, result.output
    assert not re.search(r"\b[A-Z]\w*(Error|Exception): ", output), output  # a raw exception
    assert result.exit_code != 0, output
    if code is not None:
        assert result.exit_code == code, output
    for text in named:
        assert text.format(d=files) in output, f"{text!r} not in: {output}"
    assert seconds < SECONDS, f"took {seconds:.1f} s"
    assert grown < GROWTH_BYTES, f"peak memory grew by {grown / 1e9:.1f} GB"


def test_every_audited_class_has_a_row():
    """The audit's classes (issue 20, item 3), each covered by at least one row."""
    ids = {row[0] for row in ROWS}
    for prefix in (
        "segment-out",
        "design-out",
        "refit-out",
        "library-out-dir",
        "segment-bands",
        "spectrum-harmonics",
        "library-harmonics",
        "library-grid",
        "library-count",
        "calibrate-pitch",
        "stream-exposure-nan",
        "stream-record-dir",
        "calibrate-resume",
        "stream-sim-shape",
        "view-sim-model",
    ):
        assert any(i.startswith(prefix) for i in ids), prefix

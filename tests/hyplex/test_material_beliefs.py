"""Per-object material beliefs in the video pipeline: tracking, Noisy-OR accumulation over
frames, sessions continued from the written file."""

from types import SimpleNamespace

import numpy as np
import pytest

from hyplex.pipeline.material_beliefs import MaterialBeliefSink, ObjectTracker

NAMES = ["background", "vegetation", "fake_vegetation"]


def _frame(shift=0, fake_rows=0):
    labels = np.zeros((8, 8), int)
    labels[1:5, 1 + shift : 5 + shift] = 1
    labels[1 : 1 + fake_rows, 1 + shift : 5 + shift] = 2
    return SimpleNamespace(error=None, labels=labels, confidence=np.full((8, 8), 0.5, np.float32))


def test_tracker_keeps_ids_of_moving_objects():
    tracker = ObjectTracker()
    first = tracker.update(_frame(0).labels)
    second = tracker.update(_frame(1).labels)
    assert set(np.unique(first)) == {0, 1} and set(np.unique(second)) == {0, 1}
    far = np.zeros((8, 8), int)
    far[6:, 6:] = 1
    assert set(np.unique(tracker.update(far))) == {0, 2}  # no overlap: a new object


def test_beliefs_accumulate_and_resume(tmp_path):
    path = tmp_path / "clip.beliefs.json"
    sink = MaterialBeliefSink(NAMES, path, reliability=0.4)
    for shift in (0, 1, 1):
        sink.write(_frame(shift, fake_rows=1))  # a quarter of the object looks fake
    sink.close()
    beliefs = dict(sink.memory.retrieve(1))
    # vegetation: share 0.75 x confidence 0.5 x 0.4 = 0.15 per frame; fake: 0.25 * 0.5 * 0.4
    assert beliefs["vegetation"] == pytest.approx(1 - 0.85**3)
    assert beliefs["fake_vegetation"] == pytest.approx(1 - 0.95**3)
    assert sink.top()["1"][0][0] == "vegetation"
    later = MaterialBeliefSink(NAMES, path, resume=path, reliability=0.4)
    later.write(_frame(5))  # a new object in the new session gets a fresh id
    assert set(later.memory.subjects) == {"1", "2"}
    later.write(SimpleNamespace(error="bad frame", labels=None, confidence=None))
    assert later.frames == 1


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="2 classes"):
        MaterialBeliefSink(["only"])
    with pytest.raises(ValueError, match="min_overlap"):
        ObjectTracker(0)


def test_segment_surfaces_material_beliefs_and_continues_a_session(tmp_path):
    import json

    import torch
    import typer
    from typer.testing import CliRunner

    from hyplex.cli.video import register
    from hyplex.devices.frame import Frame, PixelFormat
    from hyplex.devices.recorder import Recorder, StreamSpec
    from hyplex.pipeline.model_files import save_decoder
    from hyplex.pipeline.models import PixelClassifier

    app = typer.Typer()
    register(app)
    app.command("noop")(lambda: None)
    torch.manual_seed(0)
    save_decoder(PixelClassifier(9, 3, hidden=8), tmp_path / "seg.json")
    rng = np.random.default_rng(0)
    with Recorder(tmp_path / "clip.h5", StreamSpec((48, 64), PixelFormat.MONO12)) as recorder:
        for i in range(3):
            data = rng.integers(0, 4095, (48, 64)).astype(np.uint16)
            recorder.write(Frame(data, frame_id=i, seq=i, host_timestamp_ns=i))
    common = [
        "segment",
        str(tmp_path / "clip.h5"),
        "--segmenter",
        str(tmp_path / "seg.json"),
        "--pitch-px",
        "3",
        "--no-video",
        "--no-cube",
        "--input-scale-dn",
        "1000",
    ]
    first = CliRunner().invoke(app, [*common, "--out", str(tmp_path / "a"), "--beliefs"])
    assert first.exit_code == 0, first.output
    assert "object " in first.output
    summary = json.loads((tmp_path / "a" / "segment_summary.json").read_text())[0]
    beliefs = summary["material_beliefs"]
    assert beliefs and all(0 < p <= 1 for c in beliefs.values() for _, p in c)
    memory_file = tmp_path / "a" / "clip.beliefs.json"
    assert summary["outputs"]["beliefs"] == str(memory_file) and memory_file.is_file()
    second = CliRunner().invoke(
        app, [*common, "--out", str(tmp_path / "b"), "--beliefs-from", str(memory_file)]
    )
    assert second.exit_code == 0, second.output
    before = json.loads(memory_file.read_text())["subjects"]
    after = json.loads((tmp_path / "b" / "clip.beliefs.json").read_text())["subjects"]
    assert set(before) <= set(after)  # the earlier session's objects are kept


def test_viewer_status_shows_beliefs():
    from hyplex.viewer.server import LiveSession

    pipeline = SimpleNamespace(summary=SimpleNamespace(dropped=0, corrupt=0))
    session = LiveSession(pipeline, None, [500.0], NAMES)
    frame = _frame(0, fake_rows=1)
    frame.latency_s, frame.unknown, frame.dropped_so_far = 0.01, None, 0
    session._on_result(frame)
    beliefs = session.status()["material_beliefs"]
    assert beliefs["1"][0][0] == "vegetation" and 0 < beliefs["1"][0][1] < 1


def test_specks_are_no_objects():
    labels = np.zeros((6, 6), int)
    labels[0, 0] = 1  # one metapixel of label noise
    labels[2:5, 2:5] = 2
    ids = ObjectTracker(min_pixels=4).update(labels)
    assert ids[0, 0] == 0 and len(np.unique(ids)) == 2

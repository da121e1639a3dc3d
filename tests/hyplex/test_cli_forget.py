"""``hyplex forget``: a new bundle with a report; refusals; the input is never written."""

import hashlib
import json

import pytest
import torch
from tiny_bundles import tiny_bundle
from typer.testing import CliRunner

from hyplex.cli.app import app
from hyplex.models.bundle import load_bundle

torch.set_num_threads(1)
runner = CliRunner()
ENV = {"COLUMNS": "400", "HYPLEX_THREADS": "1"}


@pytest.fixture(scope="module")
def bundle_path(tmp_path_factory):
    return tiny_bundle(tmp_path_factory, n_train_scenes=4, n_val_scenes=2, steps=6)


def _digest(folder):
    h = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        h.update(str(path.relative_to(folder)).encode())
        if path.is_file():
            h.update(path.read_bytes())
    return h.hexdigest()


def _forget(*args):
    return runner.invoke(app, ["forget", *args, "--no-progress"], env=ENV)


def test_bundle_records_its_training_scenes(bundle_path):
    record = json.loads((bundle_path / "bundle.json").read_text())
    assert record["training_scenes"]["ids"] == [f"scene-{k:04d}" for k in range(4)]


def test_forget_scenes_writes_a_new_bundle_and_leaves_the_input(bundle_path, tmp_path):
    before = _digest(bundle_path)
    out = tmp_path / "forgot"
    result = _forget("--bundle", str(bundle_path), "--scenes", "scene-0001", "--method", "GD",
                     "--steps", "5", "--retrain-steps", "5", "--out", str(out))  # fmt: skip
    assert result.exit_code == 0, result.output
    assert _digest(bundle_path) == before
    report = json.loads((out / "unlearning.json").read_text())
    assert set(report["models"]) == {"original", "unlearned", "retrained"}
    for figures in report["models"].values():
        assert 0 <= figures["mia_auc"] <= 1 and 0 <= figures["retain_miou"] <= 1
    assert report["models"]["retrained"]["seconds"] > 0
    assert (out / "unlearning.png").stat().st_size > 1000
    record = json.loads((out / "bundle.json").read_text())
    assert "scene-0001" not in record["training_scenes"]["ids"]
    assert record["training_scenes"]["forgotten"] == ["scene-0001"]
    new, old = load_bundle(out), load_bundle(bundle_path)
    changed = [
        not torch.equal(a, b)
        for a, b in zip(new.segmenter.state_dict().values(), old.segmenter.state_dict().values(),
                        strict=True)
    ]  # fmt: skip
    assert any(changed)
    for a, b in zip(new.reconstructor.state_dict().values(),
                    old.reconstructor.state_dict().values(), strict=True):  # fmt: skip
        assert torch.equal(a, b)
    # the new bundle names what remains: a forgotten scene is no training scene any more,
    # and a second request on it rebuilds the remaining (non-contiguous) scenes by index
    again = _forget("--bundle", str(out), "--scenes", "scene-0001", "--out", str(tmp_path / "x"))
    assert again.exit_code != 0 and "not training scenes" in " ".join(again.output.split())
    second = tmp_path / "forgot2"
    result = _forget("--bundle", str(out), "--scenes", "scene-0002", "--steps", "2",
                     "--no-retrain", "--out", str(second))  # fmt: skip
    assert result.exit_code == 0, result.output
    record = json.loads((second / "bundle.json").read_text())["training_scenes"]
    assert record["ids"] == ["scene-0000", "scene-0003"]
    assert record["forgotten"] == ["scene-0001", "scene-0002"]


def test_forget_a_class(bundle_path, tmp_path):
    names = load_bundle(bundle_path).class_names
    target = next(n for n in names if n != "background")
    out = tmp_path / "noclass"
    result = _forget("--bundle", str(bundle_path), "--class", target, "--method", "WGA",
                     "--steps", "5", "--no-retrain", "--out", str(out))  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads((out / "unlearning.json").read_text())
    assert report["request"] == {
        "kind": "class", "class": target, "scenes": [],
        "training_scenes_from": "bundle.json training_scenes",
    }  # fmt: skip
    assert "retrained" not in report["models"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--class", "unobtainium"], "unknown class 'unobtainium'"),
        (["--class", "background"], "unknown class 'background'"),
        (["--scenes", "scene-0099,holiday"], "scene-0099, holiday: not training scenes"),
        (["--scenes", " , "], "an empty list: not training scenes"),
        (["--scenes", "scene-0000", "--class", "soil"], "exactly one of --scenes and --class"),
        (["--class", "soil", "--method", "oblivion"], "unknown method 'oblivion'"),
    ],
)
def test_refusals_write_nothing(bundle_path, tmp_path, args, message):
    before = _digest(bundle_path)
    out = tmp_path / "never"
    result = _forget("--bundle", str(bundle_path), "--out", str(out), *args)
    assert result.exit_code != 0
    assert message in " ".join(result.output.split())
    assert not out.exists() and _digest(bundle_path) == before
    assert not list(tmp_path.glob(".never*"))


def test_never_writes_over_or_into_its_input(bundle_path, tmp_path):
    before = _digest(bundle_path)
    for out in (bundle_path, bundle_path / "inside"):
        result = _forget("--bundle", str(bundle_path), "--class", "soil", "--out", str(out))
        assert result.exit_code != 0
        assert "the input is never written" in " ".join(result.output.split())
    existing = tmp_path / "existing"
    existing.mkdir()
    result = _forget("--bundle", str(bundle_path), "--class", "soil", "--out", str(existing))
    assert result.exit_code != 0 and "exists" in result.output
    assert _digest(bundle_path) == before


def test_help_lists_every_registered_method():
    from hyplex.models.unlearning import METHODS

    result = runner.invoke(app, ["forget", "--help"], env=ENV)
    assert result.exit_code == 0
    for name in METHODS:
        assert name in result.output

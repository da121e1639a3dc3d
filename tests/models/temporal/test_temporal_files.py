"""A fitted temporal module in a bundle folder: round trip, refusal of corrupt or mismatched
files, the untrained fallback's warning, and multi-clip fitting (``fit_temporal_clips``)."""

import json

import pytest
import torch

from hyplex.models.temporal import (
    GatedLogitSmoother,
    TemporalEventModule,
    fit_temporal,
    fit_temporal_clips,
    smooth_sequence,
)
from hyplex.models.temporal.module_files import (
    TemporalModuleError,
    has_temporal_module,
    load_temporal_module,
    read_temporal_record,
    save_temporal_module,
    segmenter_sha256,
    temporal_for_run,
)

torch.set_num_threads(1)
NAMES = ["background", "vegetation", "soil"]


def _clip(seed, frames=6, channels=9, size=6):
    """A labelled toy clip: two regions whose logits are noisy evidence for their class."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.zeros(frames, size, size, dtype=torch.long)
    labels[:, :, size // 2 :] = 1
    logits = 2.0 * torch.nn.functional.one_hot(labels, 3).permute(0, 3, 1, 2).float()
    logits = logits + 1.5 * torch.randn(logits.shape, generator=generator)
    features = 0.5 + 0.1 * labels[:, None].float().expand(frames, channels, size, size)
    features = features + 0.01 * torch.rand(features.shape, generator=generator)
    return logits, features, labels


def _segmenter():
    torch.manual_seed(0)
    return torch.nn.Conv2d(9, 3, 1)


def _fitted(kind, steps=4):
    torch.manual_seed(0)
    module = GatedLogitSmoother(3) if kind == "gated" else TemporalEventModule(3, 9, window=4)
    fit_temporal_clips(module, [_clip(0), _clip(1)], steps=steps, window=4, seed=0)
    return module.eval()


@pytest.mark.parametrize("kind", ["tcl", "gated"])
def test_a_fitted_module_round_trips_through_the_bundle_folder(kind, tmp_path):
    module, segmenter = _fitted(kind), _segmenter()
    path = save_temporal_module(tmp_path, module, NAMES, 9, segmenter_sha256(segmenter),
                                {"steps": 4}, {"fitted": {"miou": 0.5}})  # fmt: skip
    assert path.name == f"temporal-{kind}.json" and has_temporal_module(tmp_path, kind)
    assert not has_temporal_module(tmp_path, "tcl" if kind == "gated" else "gated")
    loaded, record = load_temporal_module(tmp_path, kind, NAMES, 9, segmenter)
    assert record["training"] == {"steps": 4} and record["module"] == kind
    for name, value in module.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value), name
    logits, features, _ = _clip(5)
    with torch.no_grad():
        expected = smooth_sequence(module, logits, features)[0]
        assert torch.equal(smooth_sequence(loaded, logits, features)[0], expected)
    # a second fit replaces the first and leaves one tensors file
    save_temporal_module(tmp_path, _fitted(kind, 6), NAMES, 9, segmenter_sha256(segmenter))
    assert len(list(tmp_path.glob(f"temporal-{kind}-*.safetensors"))) == 1


def test_a_fitted_module_differs_from_the_untrained_one():
    logits, features, _ = _clip(5)
    torch.manual_seed(0)
    untrained = TemporalEventModule(3, 9, window=4).eval()
    fitted = _fitted("tcl")
    with torch.no_grad():
        before = smooth_sequence(untrained, logits, features)[0]
        after = smooth_sequence(fitted, logits, features)[0]
    assert (after - before).abs().max() > 1e-3


def test_corrupt_or_foreign_files_are_refused(tmp_path):
    segmenter = _segmenter()
    save_temporal_module(tmp_path, _fitted("tcl"), NAMES, 9, segmenter_sha256(segmenter))
    record = read_temporal_record(tmp_path, "tcl")
    tensors = tmp_path / record["tensors_file"]
    payload = bytearray(tensors.read_bytes())
    payload[-3] ^= 0xFF  # one flipped byte in the tensor data
    tensors.write_bytes(bytes(payload))
    with pytest.raises(TemporalModuleError, match="SHA-256 does not match"):
        load_temporal_module(tmp_path, "tcl")
    tensors.unlink()
    with pytest.raises(TemporalModuleError, match="is missing"):
        load_temporal_module(tmp_path, "tcl")
    path = tmp_path / "temporal-tcl.json"
    for edit, message in (
        ({"format": "something-else"}, "not a fitted temporal module"),
        ({"format_version": 7}, "format_version 7"),
        ({"tensors_file": "../elsewhere.safetensors"}, "a file name in the bundle"),
        ({"options": {"window": "16"}}, "option window"),
        ({"options": {"evil": 1}}, "option evil"),
        ({"module": "gated"}, "holds a 'gated' module"),
        ({"n_filters": "9"}, "n_filters is missing or of the wrong type"),
    ):
        path.write_text(json.dumps({**record, **edit}))
        with pytest.raises(TemporalModuleError, match=message):
            load_temporal_module(tmp_path, "tcl")
    path.write_text("{not json")
    with pytest.raises(TemporalModuleError, match="not valid JSON"):
        load_temporal_module(tmp_path, "tcl")
    with pytest.raises(TemporalModuleError, match="hyplex temporal fit"):
        load_temporal_module(tmp_path, "gated")  # none of that kind


def test_tensors_of_another_shape_are_refused(tmp_path):
    from safetensors.torch import save_file

    segmenter = _segmenter()
    save_temporal_module(tmp_path, _fitted("gated"), NAMES, 9, segmenter_sha256(segmenter))
    record = read_temporal_record(tmp_path, "gated")
    state = {k: v.clone() for k, v in _fitted("gated").state_dict().items()}
    state["refine.0.weight"] = torch.zeros(4, 3, 3, 3)  # hidden 4 where the record says 8
    save_file(state, tmp_path / record["tensors_file"])
    import hashlib

    record["tensors_sha256"] = hashlib.sha256(
        (tmp_path / record["tensors_file"]).read_bytes()
    ).hexdigest()
    (tmp_path / "temporal-gated.json").write_text(json.dumps(record))
    with pytest.raises(TemporalModuleError, match="does not load"):
        load_temporal_module(tmp_path, "gated")


def test_mismatched_classes_filters_or_segmenter_are_clear_errors(tmp_path):
    segmenter = _segmenter()
    save_temporal_module(tmp_path, _fitted("tcl"), NAMES, 9, segmenter_sha256(segmenter))
    with pytest.raises(TemporalModuleError, match="mismatched classes"):
        load_temporal_module(tmp_path, "tcl", ["background", "soil", "vegetation"])
    with pytest.raises(TemporalModuleError, match="mismatched channel counts"):
        load_temporal_module(tmp_path, "tcl", NAMES, 16)
    other = torch.nn.Conv2d(9, 3, 1)
    with pytest.raises(TemporalModuleError, match="another segmenter"):
        load_temporal_module(tmp_path, "tcl", NAMES, 9, other)
    with pytest.raises(TemporalModuleError, match="mismatched classes"):
        temporal_for_run("tcl", 4, 9, tmp_path)  # the segmenter gives 4 classes


def test_the_run_uses_the_fitted_module_or_warns_that_it_is_untrained(tmp_path):
    segmenter = _segmenter()
    module, note = temporal_for_run("tcl", 3, 9, tmp_path, NAMES, segmenter)
    assert isinstance(module, TemporalEventModule) and not note["fitted"]
    assert "UNTRAINED" in note["message"] and "hyplex temporal fit" in note["message"]
    assert temporal_for_run("none", 3, 9, tmp_path) == (None, None)
    fitted = _fitted("tcl")
    save_temporal_module(tmp_path, fitted, NAMES, 9, segmenter_sha256(segmenter))
    module, note = temporal_for_run("tcl", 3, 9, tmp_path, NAMES, segmenter)
    assert note["fitted"] and "fitted module" in note["message"]
    assert torch.equal(module.log_bandwidth, fitted.log_bandwidth)
    module, note = temporal_for_run("tcl", 3, 9, tmp_path, NAMES, None, "--segmenter replaces it")
    assert not note["fitted"] and "--segmenter replaces it" in note["message"]


def test_fit_temporal_is_the_one_clip_case_of_fit_temporal_clips():
    clip = _clip(3)
    histories = []
    for fit in ("one", "clips"):
        torch.manual_seed(0)
        module = TemporalEventModule(3, 9, window=4)
        if fit == "one":
            histories.append(fit_temporal(module, *clip, steps=3, window=4, seed=2))
        else:
            histories.append(fit_temporal_clips(module, [clip], steps=3, window=4, seed=2))
    assert histories[0] == histories[1]


def test_fit_temporal_clips_lowers_the_loss_and_checks_its_clips():
    torch.manual_seed(0)
    module = GatedLogitSmoother(3)
    clips = [_clip(k) for k in range(3)]
    losses = fit_temporal_clips(module, clips, steps=40, window=4, lr=0.05, seed=0)
    assert sum(losses[-5:]) < sum(losses[:5])
    with pytest.raises(ValueError, match="at least one"):
        fit_temporal_clips(module, [], steps=1)
    logits, features, labels = clips[0]
    with pytest.raises(ValueError, match="same number of frames"):
        fit_temporal_clips(module, [(logits, features[:3], labels)], steps=1)

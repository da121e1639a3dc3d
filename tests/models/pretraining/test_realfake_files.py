"""The real/fake head file in a bundle: round trip, hash and shape checks, the probability map."""

import json

import numpy as np
import pytest
import torch

from hyplex.models.pretraining.hierarchical_contrastive import HierConHead
from hyplex.models.pretraining.realfake_files import (
    REALFAKE_JSON,
    RealFakeHead,
    RealFakeHeadError,
    has_realfake_head,
    load_realfake_head,
    read_realfake_record,
    save_realfake_head,
)


def _head(seed=0, channels=9, threshold=0.25):
    torch.manual_seed(seed)
    hiercon = HierConHead(channels, band_groups=3, layers=3, layers_per_group=2, width=8)
    return RealFakeHead(hiercon, 40.0, threshold, "tpr95", ["vegetation"], ["fake_vegetation"])


def test_round_trip_gives_the_same_map(tmp_path):
    head = _head().eval()
    path = save_realfake_head(tmp_path, head, {"eer": 0.1})
    assert path == tmp_path / REALFAKE_JSON and has_realfake_head(tmp_path)
    record = read_realfake_record(tmp_path)
    assert record["n_filters"] == 9 and record["criterion"] == "tpr95"
    assert record["config"]["width"] == 8 and record["metrics"] == {"eer": 0.1}
    loaded = load_realfake_head(tmp_path, n_filters=9)
    x = 40.0 * torch.rand(2, 9, 5, 6, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(loaded(x), head(x))
    assert loaded.threshold_logit == 0.25 and loaded.fake_classes == ["fake_vegetation"]
    # a second head replaces the first and leaves one tensors file
    save_realfake_head(tmp_path, _head(seed=1))
    assert len(list(tmp_path.glob("realfake-*.safetensors"))) == 1
    assert read_realfake_record(tmp_path)["tensors_file"] != record["tensors_file"]


def test_a_corrupt_tensors_file_is_refused(tmp_path):
    save_realfake_head(tmp_path, _head())
    tensors = tmp_path / read_realfake_record(tmp_path)["tensors_file"]
    data = bytearray(tensors.read_bytes())
    data[-3] ^= 0xFF  # one weight changed: the file still parses, the hash does not match
    tensors.write_bytes(bytes(data))
    with pytest.raises(RealFakeHeadError, match="SHA-256 does not match"):
        load_realfake_head(tmp_path)
    tensors.unlink()
    with pytest.raises(RealFakeHeadError, match="missing"):
        load_realfake_head(tmp_path)


def test_records_that_are_foreign_or_mismatched_are_refused(tmp_path):
    with pytest.raises(RealFakeHeadError, match="hyplex realfake fit"):
        load_realfake_head(tmp_path)
    save_realfake_head(tmp_path, _head())
    with pytest.raises(RealFakeHeadError, match="mismatched channel counts"):
        load_realfake_head(tmp_path, n_filters=8)
    record_path = tmp_path / REALFAKE_JSON
    record = json.loads(record_path.read_text())
    for change, message in (
        ({"format": "hyplex-openset-head"}, "not a real/fake head"),
        ({"tensors_file": "../x.safetensors"}, "file name in the bundle"),
        ({"config": {**record["config"], "width": 10**6}}, "outside the limits"),
        ({"config": {**record["config"], "width": 16}}, "does not load"),  # shapes differ
        ({"barcode_scale": -1.0}, "does not load"),
    ):
        record_path.write_text(json.dumps({**record, **change}))
        with pytest.raises(RealFakeHeadError, match=message):
            load_realfake_head(tmp_path)
    record_path.write_text("{not json")
    with pytest.raises(RealFakeHeadError, match="not valid JSON"):
        read_realfake_record(tmp_path)


def test_map_is_one_half_at_the_threshold_and_checks_channels():
    head = _head(threshold=0.0).eval()
    pixel = 40.0 * torch.rand(1, 9, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        head.threshold_logit = float(head.pixel_logits(pixel)[0])
        probability = head(pixel.reshape(1, 9, 1, 1))
    assert probability.shape == (1, 1, 1)
    assert float(probability) == pytest.approx(0.5, abs=1e-6)
    with pytest.raises(RealFakeHeadError, match="mismatched channel counts"):
        head(torch.rand(1, 8, 4, 4))
    # negative barcodes (noise after dark subtraction) give finite probabilities
    with torch.no_grad():
        assert torch.isfinite(head(-100.0 * torch.ones(1, 9, 2, 2))).all()
    with pytest.raises(ValueError, match="criterion"):
        RealFakeHead(head.hiercon, 1.0, 0.0, "auc")
    with pytest.raises(ValueError, match="barcode_scale"):
        RealFakeHead(head.hiercon, np.nan, 0.0)

"""The file handling shared by a bundle's heads and fitted modules (hashed safetensors +
JSON record): round trip, replacement, and every refusal of a bad record or tensors file."""

import hashlib
import json

import pytest
import torch

from hyplex.models.bundle_records import (
    MAX_RECORD_BYTES,
    read_hashed_tensors,
    read_record,
    write_hashed_record,
)


class PartError(ValueError):
    pass


FIELDS = {"name": str, "scale": (int, float)}


def read(path):
    return read_record(
        path,
        record_format="test-part",
        version=2,
        fields=FIELDS,
        error=PartError,
        missing="no part here",
        what="a test part",
    )


def write(folder, value: float):
    record = {"format": "test-part", "format_version": 2, "name": "p", "scale": value}
    tensors = {"w": torch.full((3,), value)}
    return write_hashed_record(folder / "part.json", "part", tensors, record, {"k": "v"})


def test_round_trip_and_replacement_remove_the_old_tensors(tmp_path):
    path = write(tmp_path, 1.5)
    record = read(path)
    assert record["scale"] == 1.5 and record["tensors_file"].startswith("part-")
    tensors = read_hashed_tensors(tmp_path, record, path.name, PartError, "part")
    assert torch.equal(tensors["w"], torch.full((3,), 1.5))
    first = record["tensors_file"]
    second = read(write(tmp_path, 2.5))["tensors_file"]
    assert second != first and not (tmp_path / first).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["part.json", second])


def test_a_corrupt_record_can_be_replaced(tmp_path):
    (tmp_path / "part.json").write_text("{broken")
    with pytest.raises(PartError, match="not valid JSON"):
        read(tmp_path / "part.json")
    assert read(write(tmp_path, 3.0))["scale"] == 3.0


def test_bad_records_are_refused_with_their_reason(tmp_path):
    path = tmp_path / "part.json"
    with pytest.raises(PartError, match="no part here"):
        read(path)
    good = read(write(tmp_path, 1.0))
    cases = [
        ({**good, "format": "other"}, "not a test part"),
        ({**good, "format_version": 1}, "format_version 1, expected 2"),
        ({**good, "scale": True}, "scale is missing or of the wrong type"),
        ({k: v for k, v in good.items() if k != "name"}, "name is missing"),
        ({k: v for k, v in good.items() if k != "tensors_sha256"}, "tensors_sha256 is missing"),
        ({**good, "tensors_file": "../elsewhere.safetensors"}, "must be a file name"),
        ({**good, "tensors_file": "part.pt"}, "must be a file name"),
        ([1, 2], "not a test part"),
    ]
    for record, message in cases:
        path.write_text(json.dumps(record))
        with pytest.raises(PartError, match=message):
            read(path)
    path.write_text(" " * (MAX_RECORD_BYTES + 1))
    with pytest.raises(PartError, match="larger than"):
        read(path)


def test_tensors_must_exist_and_match_their_hash(tmp_path):
    path = write(tmp_path, 1.0)
    record = read(path)
    tensors_path = tmp_path / record["tensors_file"]
    data = bytearray(tensors_path.read_bytes())
    data[-1] ^= 1
    tensors_path.write_bytes(bytes(data))
    with pytest.raises(PartError, match="SHA-256 does not match part.json"):
        read_hashed_tensors(tmp_path, record, "part.json", PartError, "part")
    tensors_path.unlink()
    with pytest.raises(PartError, match="is missing"):
        read_hashed_tensors(tmp_path, record, "part.json", PartError, "part")
    tensors_path.write_bytes(b"not safetensors")
    forged = {
        **record,
        "tensors_sha256": hashlib.sha256(b"not safetensors").hexdigest(),
    }
    with pytest.raises(PartError, match="is corrupt"):
        read_hashed_tensors(tmp_path, forged, "part.json", PartError, "part")


def test_add_to_bundle_in_place_or_to_a_copy_that_appears_whole(tmp_path):
    from hyplex.models.bundle_records import add_to_bundle

    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "decoders.txt").write_text("weights")
    first = read(write(bundle, 1.0))["tensors_file"]
    copy = tmp_path / "copy"
    assert add_to_bundle(bundle, copy, lambda folder: write(folder, 2.0)) == copy
    assert read(bundle / "part.json")["scale"] == 1.0  # the original is untouched
    assert read(copy / "part.json")["scale"] == 2.0 and (copy / "decoders.txt").is_file()
    assert not (copy / first).exists()  # the copied old part's tensors went with it

    def fails(folder):
        write(folder, 3.0)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        add_to_bundle(bundle, tmp_path / "never", fails)
    assert not (tmp_path / "never").exists()
    assert add_to_bundle(bundle, None, lambda folder: write(folder, 4.0)) == bundle
    assert read(bundle / "part.json")["scale"] == 4.0

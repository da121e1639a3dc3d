"""Design bundles (hyplex.models.bundle): round trip, grid check, foreign and corrupt input."""

import json
import shutil

import numpy as np
import pytest
import torch

from hyplex.models.bundle import BundleError, load_bundle, save_bundle
from hyplex.models.codesign import train_codesign
from hyplex.models.codesign_config import CodesignConfig

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    from hyplex.models.codesign_library import quick_library

    library = quick_library(tmp_path_factory.mktemp("lib") / "lib.h5", count=24)
    config = CodesignConfig(
        bands=8, wavelength_range_nm=(420.0, 700.0), scene_size=24, n_train_scenes=2,
        n_val_scenes=1, n_objects=3, patch_size=16, batch_size=2, steps=3, finetune_steps=1,
        evaluate_initial=False, reconstructor_config={"width": 8, "n_blocks": 1, "n_stages": 1},
        segmenter_config={"base_channels": 4, "depth": 1}, device="cpu",
    )  # fmt: skip
    return train_codesign(config, None, library=library, progress=False)


@pytest.fixture(scope="module")
def bundle_path(result, tmp_path_factory):
    return save_bundle(tmp_path_factory.mktemp("bundles") / "design", result)


def test_bundle_round_trips(result, bundle_path):
    files = sorted(p.name for p in bundle_path.iterdir())
    assert files == sorted(
        ["bundle.json", "config.json", "decoders.safetensors", "design.npz", "report.png"]
    )
    bundle = load_bundle(bundle_path, wavelengths_nm=result.wavelengths_nm)
    np.testing.assert_array_equal(bundle.wavelengths_nm, result.wavelengths_nm)
    np.testing.assert_array_equal(bundle.responses, result.design["responses"])
    for key in ("library_indices", "params_nm", "thickness_nm"):
        np.testing.assert_array_equal(bundle.design[key], result.design[key])
    assert bundle.design["family"] == "rectangle" and bundle.class_names == result.class_names
    for part in ("reconstructor", "segmenter"):
        saved = getattr(result.model, part).state_dict()
        loaded = getattr(bundle, part).state_dict()
        assert saved.keys() == loaded.keys()
        for key in saved:
            assert torch.equal(saved[key], loaded[key]), f"{part}.{key}"
    assert bundle.layout.n_filters == 9 and bundle.layout == bundle.layout.__class__()
    assert bundle.config["steps"] == 3 and bundle.metrics.keys() == result.metrics.keys()
    model = bundle.model()  # the fabricated encoder with the decoders
    cube = torch.rand(1, 8, 16, 16)
    _, spectra, logits = model(cube, torch.Generator().manual_seed(0))
    assert spectra.shape == (1, 8, 16, 16) and logits.shape == (1, len(result.class_names), 16, 16)
    assert bundle.capture == result.model.encoder.capture.settings
    assert bundle.encoder().capture.exposure_us == result.model.encoder.capture.exposure_us


def test_bundle_for_another_grid_is_a_clear_error(bundle_path):
    with pytest.raises(BundleError, match="trained for 8 bands 420-700 nm.*34 bands 400-730"):
        load_bundle(bundle_path, wavelengths_nm=np.linspace(400.0, 730.0, 34))


def test_foreign_and_corrupt_bundles(result, bundle_path, tmp_path):
    with pytest.raises(BundleError, match="no such bundle directory"):
        load_bundle(tmp_path / "missing")
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("hello")
    with pytest.raises(BundleError, match="not a hyplex design bundle.*bundle.json"):
        load_bundle(tmp_path / "foreign")
    copy = save_bundle(tmp_path / "copy", result, report=False)
    record = json.loads((copy / "bundle.json").read_text())
    (copy / "bundle.json").write_text(json.dumps({**record, "format": "something-else"}))
    with pytest.raises(BundleError, match="format 'something-else'"):
        load_bundle(copy)
    copy = save_bundle(tmp_path / "copy", result, report=False, overwrite=True)
    (copy / "decoders.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(BundleError, match="decoders.safetensors is corrupt"):
        load_bundle(copy)
    with pytest.raises(BundleError, match="exists; pass overwrite=True"):
        save_bundle(copy, result, report=False)


def _copy(bundle_path, tmp_path):
    copy = tmp_path / "tampered"
    shutil.copytree(bundle_path, copy)
    return copy


def _edit_record(copy, edit):
    record = json.loads((copy / "bundle.json").read_text())
    edit(record)
    (copy / "bundle.json").write_text(json.dumps(record))


def _edit_responses(copy, transform):
    with np.load(copy / "design.npz") as stored:
        arrays = {name: stored[name] for name in stored.files}
    arrays["responses"] = transform(arrays["responses"].copy())
    np.savez(copy / "design.npz", **arrays)


def _rebuild_decoder(copy, part, channels=None, **changes):
    """Replace ``part`` by one built for other sizes, weights and config consistent (so only
    the cross-checks against the design can tell)."""
    from safetensors.torch import load_file, save_file

    from hyplex.models.reconstruction import build_reconstructor
    from hyplex.models.segmentation import build_segmenter

    record = json.loads((copy / "bundle.json").read_text())
    config = dict(record[part]["config"])
    if channels is not None:
        changes["n_filters" if "n_filters" in config else "in_channels"] = channels
    config.update(changes)
    build = build_reconstructor if part == "reconstructor" else build_segmenter
    module = build(record[part]["name"], **config)
    tensors = load_file(copy / "decoders.safetensors")
    tensors = {k: v for k, v in tensors.items() if not k.startswith(f"{part}.")}
    tensors.update({f"{part}.{k}": v.contiguous() for k, v in module.state_dict().items()})
    save_file(tensors, copy / "decoders.safetensors", metadata={"format": "hyplex-design-bundle"})
    record[part]["config"] = config
    (copy / "bundle.json").write_text(json.dumps(record))


def _drop_last_class(record):
    record["class_names"] = record["class_names"][:-1]


def _set(section, key, value):
    def edit(record):
        if section is None:
            record[key] = value
        else:
            record[section][key] = value

    return edit


def _widen_segmenter(width):
    """A hostile bundle.json: the segmenter's width raised to ``width`` channels (terabytes of
    weights at 200,000 if built for real), the stored tensors left as they are."""

    def edit(record):
        config = record["segmenter"]["config"]
        config[next(k for k in ("base_channels", "width") if k in config)] = width

    return edit


def _nan(responses):
    responses[0, 0] = np.nan
    return responses


TAMPERINGS = {
    "class names fewer than the segmenter's classes": (
        lambda c: _edit_record(c, _drop_last_class),
        r"segmenter config has n_classes = (\d+), expected \d+ \(\d+ class_names\)",
    ),
    "responses above 1": (
        lambda c: _edit_responses(c, lambda r: r + 0.5),
        r"responses span .*transmissions must lie in \[0, 1\]",
    ),
    "negative responses": (
        lambda c: _edit_responses(c, lambda r: r - 0.5),
        r"responses span .*transmissions must lie in \[0, 1\]",
    ),
    "non-finite responses": (
        lambda c: _edit_responses(c, _nan),
        "responses must be finite",
    ),
    "responses for another F": (
        lambda c: _edit_responses(c, lambda r: r[:-1]),
        r"responses have shape \(8, 8\), expected \(F=9, L=8\)",
    ),
    "layout for 4 filters": (
        lambda c: _edit_record(c, _set("layout", "grid", [2, 2])),
        r"layout's grid \(2, 2\) holds 4 filters, expected 9",
    ),
    "invalid layout": (
        lambda c: _edit_record(c, _set("layout", "grid", [0, 3])),
        "invalid layout: metapixels, grid and metapixels_per_block must be >= 1",
    ),
    "unknown layout field": (
        lambda c: _edit_record(c, _set("layout", "colour", "red")),
        "invalid layout: .*colour",
    ),
    "invalid capture settings": (
        lambda c: _edit_record(c, _set("capture", "fill", 2.0)),
        r"invalid capture settings: fill must lie in \(0, 1\]",
    ),
    "unknown capture setting": (
        lambda c: _edit_record(c, _set("capture", "flash", True)),
        "invalid capture settings: unknown capture settings flash",
    ),
    "missing key": (
        lambda c: _edit_record(c, lambda record: record.pop("capture")),
        "bundle.json lacks capture",
    ),
    "wavelengths of the wrong type": (
        lambda c: _edit_record(c, _set(None, "wavelengths_nm", "420-700")),
        "wavelengths_nm is of type str, expected list",
    ),
    "reconstructor for other bands": (
        lambda c: _rebuild_decoder(c, "reconstructor", n_bands=9),
        r"reconstructor config has n_bands = 9, expected 8 \(L = 8 bands",
    ),
    "reconstructor for other filters": (
        lambda c: _rebuild_decoder(c, "reconstructor", channels=8),
        r"reconstructor config has (n_filters|in_channels) = 8, expected 9 \(F = 9 filters\)",
    ),
    "segmenter for other filters": (
        lambda c: _rebuild_decoder(c, "segmenter", in_channels=8),
        r"segmenter config has in_channels = 8, expected 9 \(F = 9 filters\)",
    ),
    "a config for a 10^12-parameter segmenter": (
        lambda c: _edit_record(c, _widen_segmenter(200_000)),
        r"segmenter weights do not fit its config: bundle.json: base_channels = 200000 is more",
    ),
    "a config wider than its tensors, under the caps": (
        lambda c: _edit_record(c, _widen_segmenter(60_000)),
        r"segmenter weights do not fit its config: tensor \S+ has shape \(\d+, .*\), the "
        r"configured network has "
        r"\(60000, ",
    ),
    "a config for a million stages": (
        lambda c: _edit_record(c, lambda r: r["reconstructor"]["config"].update(n_stages=10**6)),
        r"n_stages = 1000000 is more than 64",
    ),
}


@pytest.mark.parametrize("tampering", sorted(TAMPERINGS))
def test_inconsistent_bundles_are_clear_errors(tampering, bundle_path, tmp_path):
    """Every part of a bundle is checked against the others: each tampering of a saved bundle
    is a BundleError that says what is wrong and what was expected."""
    load_bundle(bundle_path)  # the untouched bundle loads
    tamper, message = TAMPERINGS[tampering]
    copy = _copy(bundle_path, tmp_path)
    tamper(copy)
    with pytest.raises(BundleError, match=message):
        load_bundle(copy)

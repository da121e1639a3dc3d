"""Design bundles (hyplex.models.bundle): round trip, grid check, foreign and corrupt input."""

import json

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

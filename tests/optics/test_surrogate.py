"""Tests of the RCWA surrogate: it learns, beats the mean spectrum, saves safely, differentiates."""

from __future__ import annotations

import dataclasses
import json
import time

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from hyplex.optics.library import LibraryError, SolverSettings, read_library
from hyplex.optics.library_build import build_library
from hyplex.optics.library_spec import LibrarySpec, solve_designs
from hyplex.optics.surrogate import SpectralSurrogate, load_surrogate, save_surrogate
from hyplex.optics.surrogate_training import (
    SurrogateConfig,
    fraction_below,
    mean_spectrum_baseline,
    spectrum_mse,
    split,
    train_surrogate,
)

SPEC = LibrarySpec(
    family="disk",
    count=240,
    wavelengths_nm=tuple(np.linspace(500.0, 900.0, 6).tolist()),
    thickness_range_nm=(100.0, 250.0),
    # Li's rule, as when these thresholds were set (the default is now the vector rule, whose
    # M = 1 disks on 16 px are rougher functions of the radius: mean MSE 0.029 against 0.013)
    solver=SolverSettings(harmonics=(1, 1), grid=(16, 16), factorization="li"),
    seed=1,
)
QUICK = SurrogateConfig(
    hidden=64,
    blocks=2,
    fourier_features=16,
    members=1,
    epochs=150,
    batch_size=32,
    patience=40,
    seed=0,
)


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    path = tmp_path_factory.mktemp("surrogate") / "disks.h5"
    build_library(path, SPEC, chunk_size=120, serial=True, progress=False)
    return read_library(path)


@pytest.fixture(scope="module")
def trained(library):
    return train_surrogate(library, dataclasses.replace(QUICK, device="cpu"))


def test_surrogate_beats_the_mean_spectrum_by_a_wide_margin(trained, library):
    model, report = trained
    summary = report.summary()
    assert summary["test_designs"] == 24 and summary["validation_designs"] == 24
    assert summary["mean_mse"] < 0.25 * summary["baseline_mean_mse"], summary
    assert summary["median_mse"] < 0.1 * summary["baseline_mean_mse"], summary
    assert summary["fraction_mse_below_0.005"] > summary["baseline_fraction_mse_below_0.005"] + 0.3
    assert report.history[report.best_epoch][1] == min(v for _, v in report.history)
    test = report.test_index
    predicted = model.predict(library.params_nm[test], library.thickness_nm[test])
    assert predicted.shape == (24, 6, 2) and ((predicted >= 0) & (predicted <= 1)).all()
    np.testing.assert_allclose(spectrum_mse(predicted, library.T[test]), report.test_mse, atol=1e-7)


def test_metrics():
    target = np.zeros((3, 4, 2))
    predicted = target + np.array([0.0, 0.05, 0.1])[:, None, None]
    np.testing.assert_allclose(spectrum_mse(predicted, target), [0.0, 0.0025, 0.01])
    assert fraction_below(spectrum_mse(predicted, target)) == pytest.approx(2 / 3)
    train = np.stack([np.zeros((4, 2)), np.ones((4, 2))])
    np.testing.assert_allclose(mean_spectrum_baseline(train, target), 0.25)


def test_learning_curve_splits_keep_the_held_out_designs():
    full = split(240, QUICK)
    half = split(240, dataclasses.replace(QUICK, train_fraction=0.5))
    assert [part.size for part in full] == [192, 24, 24] and half[0].size == 96
    assert set(half[0]) < set(full[0])
    np.testing.assert_array_equal(half[1], full[1])
    np.testing.assert_array_equal(half[2], full[2])
    with pytest.raises(ValueError, match="train_fraction"):
        SurrogateConfig(train_fraction=0.0)


def test_surrogate_is_differentiable_in_its_inputs(trained):
    model, _ = trained
    radius = torch.tensor([[80.0], [120.0]], requires_grad=True)
    thickness = torch.tensor([150.0, 200.0], requires_grad=True)
    spectrum = model(radius, thickness)
    assert spectrum.shape == (2, 6, 2)
    spectrum[..., 0].mean().backward()
    assert torch.isfinite(radius.grad).all() and radius.grad.abs().sum() > 0
    assert torch.isfinite(thickness.grad).all() and thickness.grad.abs().sum() > 0
    with pytest.raises(ValueError, match=r"params_nm must have shape \(\.\.\., 1\)"):
        model(torch.zeros(2, 2), thickness)


def test_rotation_symmetry_of_the_solver_and_the_surrogate(library):
    """T_TE(w, h) = T_TM(h, w): the RCWA obeys it, and the surrogate enforces it exactly."""
    spec = dataclasses.replace(SPEC, family="rectangle")
    sizes = np.array([[120.0, 260.0], [260.0, 120.0]])
    T, _ = solve_designs(spec, sizes, np.array([180.0, 180.0]))
    np.testing.assert_allclose(T[0, :, 0], T[1, :, 1], atol=1e-9)
    np.testing.assert_allclose(T[0, :, 1], T[1, :, 0], atol=1e-9)
    description = dict(vars(library), family="rectangle", parameter_names=("w_nm", "h_nm"))
    description = {k: description[k] for k in ("family", "parameter_names", "wavelengths_nm")}
    model = SpectralSurrogate(description, [40.0, 40.0, 100.0], [360.0, 360.0, 400.0], 32, 1)
    T = model(torch.tensor(sizes), torch.tensor([180.0, 180.0]))
    torch.testing.assert_close(T[0], T[1].flip(-1))
    plain = SpectralSurrogate(
        description, [40.0, 40.0, 100.0], [360.0, 360.0, 400.0], 32, 1, symmetric=False
    )
    assert plain.permutation is None and model.permutation == [1, 0]


def test_training_is_seeded(library):
    quick = dataclasses.replace(QUICK, epochs=3, members=2, device="cpu")
    (a, ra), (b, rb) = train_surrogate(library, quick), train_surrogate(library, quick)
    assert a.architecture["members"] == 2 and len(ra.history) == 3
    assert np.array_equal(ra.test_index, rb.test_index) and ra.history == rb.history
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(x, y), name
    _, rc = train_surrogate(library, dataclasses.replace(quick, seed=1))
    assert not np.array_equal(ra.test_index, rc.test_index)


def test_a_hostile_config_is_refused_before_allocation(trained, tmp_path):
    """A 500-byte JSON could ask for a network of gigabytes beside small weights: the counts
    are capped, and widths under the caps are built on the meta device and compared with the
    stored tensors before anything real is allocated."""
    model, _ = trained
    _, config = save_surrogate(model, tmp_path / "net")
    record = json.loads(config.read_text())
    for change, words in (
        # ~1e12 floats if built for real
        ({"hidden": 60_000, "members": 64}, "weights do not fit.*(shape|missing)"),
        ({"blocks": 10**6}, "blocks = 1000000 is more than 64"),
        ({"hidden": 10**9}, "hidden = 1000000000 is more than 65,536"),
    ):
        config.write_text(json.dumps(record | change))
        began = time.perf_counter()
        with pytest.raises(LibraryError, match=words):
            load_surrogate(tmp_path / "net")
        assert time.perf_counter() - began < 10.0


def test_save_load_round_trip_and_checks(trained, library, tmp_path):
    model, report = trained
    weights, config = save_surrogate(model, tmp_path / "net")
    back = load_surrogate(tmp_path / "net")
    test = report.test_index
    args = (library.params_nm[test], library.thickness_nm[test])
    np.testing.assert_array_equal(back.predict(*args), model.predict(*args))
    back.check_library(library)

    other = dataclasses.replace(library, wavelengths_nm=library.wavelengths_nm + 1.0)
    with pytest.raises(LibraryError, match="mismatched wavelength grids"):
        back.check_library(other)
    with pytest.raises(LibraryError, match="material: surrogate 'cSi', library 'aSi'"):
        back.check_library(dataclasses.replace(library, material="aSi"))

    record = json.loads(config.read_text())
    config.write_text(json.dumps(dict(record, format="something-else")))
    with pytest.raises(LibraryError, match="not a hyplex surrogate config"):
        load_surrogate(tmp_path / "net")
    config.write_text(json.dumps(dict(record, hidden=32)))
    with pytest.raises(LibraryError, match="weights do not fit"):
        load_surrogate(tmp_path / "net")
    config.write_text(json.dumps(record))
    weights.write_bytes(b"junk")
    with pytest.raises(LibraryError, match="not a readable safetensors file"):
        load_surrogate(tmp_path / "net")
    with pytest.raises(LibraryError, match="no such surrogate file"):
        load_surrogate(tmp_path / "absent")


def test_an_ensemble_is_the_mean_of_its_symmetric_members(library, tmp_path):
    description = dict(vars(library), family="rectangle", parameter_names=("w_nm", "h_nm"))
    description = {k: description[k] for k in ("family", "parameter_names")}
    description["wavelengths_nm"] = library.wavelengths_nm.tolist()  # JSON-ready, as describe()
    model = SpectralSurrogate(
        description, [40.0, 40.0, 100.0], [360.0, 360.0, 400.0], 16, 1, members=3
    )
    sizes, thickness = torch.tensor([[120.0, 260.0], [260.0, 120.0]]), torch.tensor([180.0] * 2)
    members = model.member_spectra(sizes, thickness)
    assert members.shape == (3, 2, 6, 2) and not torch.equal(members[0], members[1])
    torch.testing.assert_close(model(sizes, thickness), members.mean(0))
    torch.testing.assert_close(members[:, 0], members[:, 1].flip(-1))  # each one symmetric
    torch.testing.assert_close(model.member_spectra(sizes, thickness, [2])[0], members[2])
    save_surrogate(model, tmp_path / "ensemble")
    back = load_surrogate(tmp_path / "ensemble")
    assert back.architecture["members"] == 3
    torch.testing.assert_close(back(sizes, thickness), model(sizes, thickness))


def test_version_1_files_still_load(trained, library, tmp_path):
    """Before ensembles, the single network's modules sat at the top of the state dict."""
    model, report = trained
    weights, config = save_surrogate(model, tmp_path / "old")
    state = load_file(weights)  # then written as before safetensors: old.pt, a state dict
    torch.save({k.removeprefix("networks.0."): v for k, v in state.items()}, tmp_path / "old.pt")
    weights.unlink()
    record = json.loads(config.read_text())
    del record["members"]
    config.write_text(json.dumps(dict(record, format_version=1)))
    args = (library.params_nm[report.test_index], library.thickness_nm[report.test_index])
    old = load_surrogate(tmp_path / "old")
    np.testing.assert_array_equal(old.predict(*args), model.predict(*args))
    config.write_text(json.dumps(dict(record, format_version=7)))
    with pytest.raises(LibraryError, match="format_version 7"):
        load_surrogate(tmp_path / "old")


def test_bad_inputs_are_clear_errors(library):
    with pytest.raises(ValueError, match="fractions"):
        SurrogateConfig(validation_fraction=0.6, test_fraction=0.5)
    with pytest.raises(ValueError, match="too small to split"):
        train_surrogate(library.subset([0, 1]), QUICK)
    with pytest.raises(LibraryError, match="free-form"):
        density = np.zeros((len(library), 4, 4), dtype=np.float32)
        train_surrogate(dataclasses.replace(library, density=density), QUICK)
    description = {"parameter_names": ["r"], "wavelengths_nm": [500.0]}
    with pytest.raises(ValueError, match="low < high"):
        SpectralSurrogate(description, [0.0, 1.0], [0.0, 2.0])
    with pytest.raises(ValueError, match="members must be >= 1"):
        SurrogateConfig(members=0)

"""The multi-fidelity surrogate on a synthetic family whose truth is known: many biased
"low-order" spectra and few exact ones (issue 21, surrogate routes)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from hyplex.optics.library import LibraryError, ResponseLibrary, SolverSettings
from hyplex.optics.multifidelity import (
    MultiFidelitySurrogate,
    load_multifidelity,
    save_multifidelity,
    train_multifidelity,
)
from hyplex.optics.surrogate_training import SurrogateConfig, spectrum_mse, train_surrogate

WAVELENGTHS = np.linspace(450.0, 850.0, 8)


def _spectrum(a, b, t):
    """A smooth TE spectrum of (width a, height b, thickness t) in nm, in [0.1, 0.9]."""
    phase = 2 * np.pi * (t[:, None] * (1 + a[:, None] / 400) / WAVELENGTHS)
    return 0.5 + 0.3 * np.sin(phase + b[:, None] / 150) * np.cos(a[:, None] / 200)


def _truth(params, thickness):
    # rectangles: TE of (w, h) is TM of (h, w), so the symmetric models can fit it exactly
    a, b = params[:, 0], params[:, 1]
    return np.stack([_spectrum(a, b, thickness), _spectrum(b, a, thickness)], -1)


def _low_order(params, thickness):
    """The truth with a smooth, design-dependent bias (what a low order gets wrong)."""
    exact = _truth(params, thickness)
    scale = (0.08 + 0.12 * (thickness[:, None, None] - 100) / 300) * np.ones_like(exact)
    shift = np.cos(WAVELENGTHS / 90.0)[None, :, None] * scale
    return np.clip(exact - shift, 0, 1)


def _library(count, seed, spectra):
    rng = np.random.default_rng(seed)
    params = 40 + rng.random((count, 2)) * 320
    thickness = 100 + rng.random(count) * 300
    return ResponseLibrary(
        wavelengths_nm=WAVELENGTHS,
        family="rectangle",
        parameter_names=("width_nm", "height_nm"),
        params_nm=params,
        thickness_nm=thickness,
        period_nm=400.0,
        material="cSi",
        substrate="SiO2",
        superstrate="air",
        solver=SolverSettings(),
        T=spectra(params, thickness),
        done=np.ones(count, dtype=bool),
    )


CONFIG = SurrogateConfig(
    hidden=64, blocks=2, fourier_features=16, members=1, epochs=80, batch_size=64,
    patience=30, device="cpu", seed=0,
)  # fmt: skip
CORRECTION = SurrogateConfig(
    hidden=32, blocks=1, fourier_features=8, members=1, epochs=150, batch_size=16,
    learning_rate=3e-3, patience=50, device="cpu", seed=0,
)  # fmt: skip


@pytest.fixture(scope="module")
def models():
    torch.set_num_threads(1)
    low_library = _library(1200, 0, _low_order)
    high_library = _library(60, 1, _truth)
    low, _ = train_surrogate(low_library, CONFIG)
    splits = (np.arange(48), np.arange(48, 60), np.zeros(0, dtype=np.int64))
    corrected, report = train_multifidelity(low, high_library, CORRECTION, splits=splits)
    return low, corrected, report


def test_the_correction_beats_the_low_order_model_against_the_truth(models):
    low, corrected, report = models
    test = _library(300, 2, _truth)  # designs neither model saw, with their exact spectra
    low_mse = spectrum_mse(low.predict(test.params_nm, test.thickness_nm), test.T)
    mf_mse = spectrum_mse(corrected.predict(test.params_nm, test.thickness_nm), test.T)
    assert low_mse.mean() > 1e-3  # the bias is real: the low-order model alone is off
    assert mf_mse.mean() < 0.3 * low_mse.mean(), (mf_mse.mean(), low_mse.mean())
    assert np.median(mf_mse) < np.median(low_mse)
    # the correction started from the low-order model (zero head) and only improved it
    assert report.history[report.best_epoch][1] <= report.history[0][1]


def test_rotation_symmetry_save_load_and_frozen_low(models, tmp_path):
    low, corrected, _ = models
    params = torch.tensor([[120.0, 300.0], [300.0, 120.0]])
    thickness = torch.tensor([250.0, 250.0])
    with torch.no_grad():
        T = corrected(params, thickness)  # noqa: N806
    torch.testing.assert_close(T[0, :, 0], T[1, :, 1])  # TE(w, h) = TM(h, w)
    assert not any(p.requires_grad for p in corrected.low.parameters())
    save_multifidelity(corrected, tmp_path / "mf")
    back = load_multifidelity(tmp_path / "mf")
    np.testing.assert_array_equal(
        back.predict(params.numpy(), thickness.numpy()),
        corrected.predict(params.numpy(), thickness.numpy()),
    )
    record = json.loads((tmp_path / "mf.json").read_text())
    hostile = (  # sizes checked before anything real is built
        ({"correction": record["correction"] | {"hidden": 60_000}}, "shape|missing"),
        ({"correction": record["correction"] | {"blocks": 10**6}}, "blocks = 1000000 is more"),
        ({"low": record["low"] | {"members": 10**4}}, "members = 10000 is more than 64"),
    )
    for change, words in hostile:
        (tmp_path / "mf.json").write_text(json.dumps(record | change))
        with pytest.raises(LibraryError, match=words):
            load_multifidelity(tmp_path / "mf")
    (tmp_path / "mf.json").write_text("{}")
    with pytest.raises(LibraryError, match="not a loadable multi-fidelity surrogate"):
        load_multifidelity(tmp_path / "mf")
    assert isinstance(back, MultiFidelitySurrogate)

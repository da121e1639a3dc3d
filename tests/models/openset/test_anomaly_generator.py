"""GenIAS on real reflectance spectra: the KL to the tunable prior, the deviation-based
patching, and the learned perturbation (its margin loss is what makes anomalies differ)."""

import numpy as np
import pytest
import torch

from hyplex.models.openset.anomaly_generator import (
    GenIAS,
    GenIASTraining,
    gaussian_kl,
    patch_anomalies,
)
from hyplex.models.openset.auxiliary import SpectrumGenerator, auxiliary_library
from hyplex.simulation.spectra import load_earthlib

from .conftest import GRID_NM


@pytest.fixture(scope="module")
def spectra():
    library = load_earthlib(GRID_NM, ["vegetation", "soil", "road", "metal"], 150, seed=0)
    return np.clip(library.reflectance, 0, 1).astype(np.float32)


def test_kl_to_a_narrow_prior_matches_torch_distributions():
    mu = torch.tensor([[0.3, -1.0], [0.0, 2.0]])
    log_variance = torch.tensor([[0.1, -0.5], [0.0, 0.7]])
    posterior = torch.distributions.Normal(mu, (0.5 * log_variance).exp())
    prior = torch.distributions.Normal(torch.zeros(2), torch.full((2,), 0.5))
    expected = torch.distributions.kl_divergence(posterior, prior).sum(1)
    assert torch.allclose(gaussian_kl(mu, log_variance, 0.5), expected, atol=1e-6)


def test_patching_replaces_the_most_deviating_window():
    normal = torch.zeros(1, 16)
    generated = torch.zeros(1, 16)
    generated[0, 9:13] = 1.0  # the anomaly lives in bands 9-12
    patched, windows = patch_anomalies(normal, generated, torch.Generator().manual_seed(0))
    start, stop = windows[0].tolist()
    assert 2 <= stop - start <= 8 and patched[0, 9:13].sum() == min(4, stop - start)
    assert patched[0, :start].abs().sum() == 0 and patched[0, stop:].abs().sum() == 0


@torch.no_grad()
def _gap(model, data):
    out = model(torch.as_tensor(data), torch.Generator().manual_seed(0))
    rms = lambda a: ((torch.as_tensor(data) - a) ** 2).mean(1).sqrt()  # noqa: E731
    return float((rms(out["anomaly"]) - rms(out["reconstruction"])).mean())


def test_the_learned_perturbation_makes_distinct_yet_bounded_anomalies(spectra):
    settings = dict(steps=150, delta_min=0.03, delta_max=0.12)
    model = GenIAS(GRID_NM.size)
    model.fit(spectra, GenIASTraining(**settings))
    plain = GenIAS(GRID_NM.size)
    plain.fit(spectra, GenIASTraining(perturbation_weight=0.0, **settings))
    # with GenIAS's margin loss the perturbed decodings leave the normal reconstructions by
    # about delta_min; without it (a plain VAE) psi drifts and the gap stays near zero
    assert _gap(model, spectra) > 0.02
    assert abs(_gap(plain, spectra)) < 0.01
    anomalies, windows = model.sample_anomalies(64, seed=3, return_windows=True)
    assert anomalies.shape == (64, GRID_NM.size) and np.isfinite(anomalies).all()
    assert np.array_equal(anomalies, model.sample_anomalies(64, seed=3))
    assert (windows[:, 1] - windows[:, 0] >= GRID_NM.size // 8).all()
    base_distance = np.abs(anomalies[:, None] - spectra[None]).max(-1).min(1)
    assert np.median(base_distance) > 0.01  # no sample is a copy of a training spectrum


def test_genias_feeds_the_auxiliary_outlier_pool(spectra, openset_data):
    model = GenIAS(GRID_NM.size)
    model.fit(spectra[:64], GenIASTraining(steps=5))
    assert isinstance(model, SpectrumGenerator)
    pool = auxiliary_library(openset_data.split, GRID_NM, generated=model, seed=0)
    generated = pool.reflectance[np.asarray(pool.labels) == "generated"]
    assert generated.shape == (60, GRID_NM.size) and generated.min() >= 0


def test_genias_bad_input():
    with pytest.raises(ValueError, match="not fitted"):
        GenIAS(31).sample_anomalies(3)
    with pytest.raises(ValueError, match=r"\(N >= 2, L=31\)"):
        GenIAS(31).fit(np.zeros((4, 20)))
    with pytest.raises(ValueError, match="delta_min < delta_max"):
        GenIASTraining(delta_min=0.2, delta_max=0.1)

"""AEGIS-style erasure of a material from GenIAS: the concept stops being generated, the AET
search finds more concept-like latents than the concept's own codes, the others survive."""

import numpy as np
import pytest
import torch

from hyplex.models.openset.anomaly_generator import GenIAS, GenIASTraining
from hyplex.models.unlearning.concept_erasure import (
    AEGISSettings,
    ConceptProbe,
    adversarial_latents,
    concept_rate,
    erase_concept,
)


@pytest.fixture(scope="module")
def fitted():
    from hyplex.simulation.spectra import load_earthlib

    grid = np.linspace(400.0, 1000.0, 24)
    library = load_earthlib(grid, ["vegetation", "soil", "paint"], max_per_class=40, seed=0)
    spectra = np.clip(library.reflectance, 0, 1).astype(np.float32)
    labels = np.array(library.labels)
    genias = GenIAS(24, latent_dim=6, channels=8)
    genias.fit(spectra, GenIASTraining(steps=200, batch_size=64, seed=0))
    return genias, ConceptProbe(spectra, list(labels)), spectra, labels


def test_erasure_stops_the_concept_and_keeps_the_others(fitted):
    genias, probe, spectra, labels = fitted
    c = probe.classes.index("paint")
    concept, others = (
        torch.tensor(spectra[labels == "paint"]),
        torch.tensor(spectra[labels != "paint"]),
    )
    with torch.no_grad():
        z_c, _, _ = genias.encode(concept)
        z_o, _, _ = genias.encode(others)
        before = float(((genias.decoder(z_o) - others) ** 2).mean().sqrt())
    rate = concept_rate(genias.decoder, probe, c, z_c)
    assert rate > 0.3
    adversarial = adversarial_latents(genias.decoder, probe, c, z_c, 1.0, 10)
    assert concept_rate(genias.decoder, probe, c, adversarial) > rate  # AET: nearer the centre
    state = {k: v.clone() for k, v in genias.state_dict().items()}
    erased, info = erase_concept(genias, probe, spectra[labels == "paint"], "paint",
                                 AEGISSettings(steps=80, retain_weight=5.0))  # fmt: skip
    assert concept_rate(erased.decoder, probe, c, z_c) < 0.5 * rate
    with torch.no_grad():
        after = float(((erased.decoder(z_o) - others) ** 2).mean().sqrt())
    assert after < before + 0.06  # reflectance RMSE of the other materials
    assert info["steps"] == 80
    assert all(torch.equal(v, genias.state_dict()[k]) for k, v in state.items())  # untouched
    with pytest.raises(ValueError, match="not a probe class"):
        erase_concept(genias, probe, spectra[:3], "unobtainium")

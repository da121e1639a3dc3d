"""``scores_from(model(x), x)`` (what ``hyplex segment`` and ``hyplex view`` compute per frame)
must be the score ``predict(x)`` gives (what ``calibrate`` sets the stored 95 %-TPR threshold
on), for every method of the registry: otherwise the deployed threshold is applied to another
score and the unknown maps are wrong (the audit found ATOL's separate head scored by ``predict``
and the segmenter's own ``-max logit`` by ``scores_from``).

Each detector is fitted for two steps on the shared small twin experiment (so its fitted state,
standardisation buffers and adaptation flags included, is what is compared), then its own
modules are moved off their fitted values by a seeded perturbation, so that a score that
ignored them (or read the segmenter's head instead of the method's) would differ."""

import dataclasses

import numpy as np
import pytest
import torch

from hyplex.models.openset import METHODS, build_detector
from hyplex.pipeline.inference import InferenceConfig, InferenceEngine

torch.set_num_threads(1)

#: options that make each method's fit two steps long (the rest: defaults)
TINY_FITS = {
    "MSP": {},
    "energy": {},
    "OE": {"steps": 2, "batch_size": 2},
    "DOE": {"steps": 2, "batch_size": 2},
    "DAL": {"steps": 2, "batch_size": 2},
    "ATOL": {"steps": 2, "batch_size": 2},
    "Watermarking": {"steps": 2, "batch_size": 2},
    "CEDL": {"steps": 2},
    "NSReg": {"steps": 2},
    "BCE": {"steps": 2},
    "ACT": {"source_steps": 2, "adapt_steps": 2, "self_label_steps": 2},
}


def test_every_registered_method_has_a_tiny_fit():
    assert set(TINY_FITS) == set(METHODS)


def _fitted(name, data, segmenter):
    torch.manual_seed(0)
    detector = build_detector(name, segmenter, **TINY_FITS[name])
    if name == "ACT":  # adapts to unlabelled frames; the shared data must stay untouched
        data = dataclasses.replace(data, target=data.test.barcodes[:2])
    detector.fit(data, seed=0)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for module in detector.head_modules().values():
            for parameter in module.parameters():
                noise = torch.randn(parameter.shape, generator=generator)
                parameter.add_(0.5 * noise * (parameter.std() if parameter.numel() > 1 else 1))
    return detector


@pytest.mark.parametrize("name", sorted(METHODS))
def test_scores_from_the_logits_equal_predict(name, openset_data, closed_set_segmenter):
    detector = _fitted(name, openset_data, closed_set_segmenter)
    x = openset_data.test.barcodes[:2]
    predicted = detector.predict(x)
    model = detector.model.eval()
    with torch.no_grad():
        from_logits = detector.scores_from(model(x), x)
    assert from_logits.shape == predicted.shape == (2, *x.shape[-2:])
    torch.testing.assert_close(from_logits, predicted, rtol=1e-5, atol=1e-5)


def test_the_pipeline_maps_the_calibrated_score_of_atol(openset_data, closed_set_segmenter):
    """End to end for the method the audit caught: the engine's ``unknown`` map is
    ``unknown_probability(predict(x))``, the score the threshold was calibrated on."""
    detector = _fitted("ATOL", openset_data, closed_set_segmenter)
    detector.calibrate(openset_data.heldout.barcodes, valid=openset_data.heldout.labels >= 0)
    x = openset_data.test.barcodes[:2]
    expected = detector.unknown_probability(detector.predict(x)).numpy()
    engine = InferenceEngine(
        segmenter=detector.model,
        config=InferenceConfig(device="cpu", precision="fp32", workers=1, torch_threads=1),
        openset=detector,
    )
    out = engine(np.ascontiguousarray(x.permute(0, 2, 3, 1).numpy()))
    np.testing.assert_allclose(out.extra["unknown"], expected, rtol=1e-4, atol=1e-5)
    # and the share of unknown pixels on held-out ID scenes is the calibrated 5 %, not another
    heldout = openset_data.heldout
    shown = engine(np.ascontiguousarray(heldout.barcodes.permute(0, 2, 3, 1).numpy()))
    share = float((shown.extra["unknown"] > 0.5)[heldout.labels.numpy() >= 0].mean())
    assert share == pytest.approx(0.05, abs=0.01)

"""MSP and energy against hand computations; the detector base class and the registry."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from hyplex.models.openset import (
    METHODS,
    EnergyDetector,
    MaxSoftmaxDetector,
    build_detector,
    detector_class,
    energy_score,
    msp_score,
    score,
)


class Fixed(nn.Module):
    """A 'segmenter' whose logits are its input's first K channels (F = 3 channels)."""

    in_channels = 3

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x):
        return x * self.scale


def test_msp_and_energy_match_hand_computation():
    logits = torch.tensor([2.0, 0.0, -1.0]).reshape(1, 3, 1, 1)
    z = [2.0, 0.0, -1.0]
    total = sum(math.exp(v) for v in z)
    assert msp_score(logits).item() == pytest.approx(-math.exp(2.0) / total, rel=1e-6)
    assert energy_score(logits).item() == pytest.approx(-math.log(total), rel=1e-6)
    t = 2.0
    expected = -t * math.log(sum(math.exp(v / t) for v in z))
    assert energy_score(logits, t).item() == pytest.approx(expected, rel=1e-6)
    # uniform logits are the most unknown for MSP: -1/K
    assert msp_score(torch.zeros(1, 4, 2, 2)).unique().item() == pytest.approx(-0.25)


def test_score_interface_shapes_and_order():
    model = Fixed()
    confident = torch.tensor([8.0, 0.0, 0.0]).reshape(3, 1, 1).expand(3, 2, 2)
    flat = torch.zeros(3, 2, 2)
    barcodes = torch.stack([confident, flat])  # (2, 3, 2, 2)
    for method in ("MSP", "energy"):
        s = score(model, barcodes, method)
        assert s.shape == (2, 2, 2)
        assert (s[1] > s[0]).all(), method  # flat logits are more unknown
    assert isinstance(build_detector("MSP", model), MaxSoftmaxDetector)
    assert isinstance(build_detector("energy", model, temperature=2.0), EnergyDetector)


def test_registry_names_every_method():
    assert set(METHODS) >= {
        "MSP",
        "energy",
        "OE",
        "DOE",
        "DAL",
        "ATOL",
        "Watermarking",
        "CEDL",
        "NSReg",
        "BCE",
    }
    with pytest.raises(ValueError, match="unknown open-set method 'XYZ'"):
        detector_class("XYZ")


def test_bad_inputs_are_named():
    model = Fixed()
    with pytest.raises(ValueError, match="mismatched channel counts"):
        score(model, torch.zeros(1, 9, 4, 4))
    with pytest.raises(ValueError, match=r"\(B, F, H, W\)"):
        score(model, torch.zeros(9, 4))
    with pytest.raises(ValueError, match="temperature"):
        energy_score(torch.zeros(1, 3, 1, 1), 0.0)
    with pytest.raises(ValueError, match="not calibrated"):
        build_detector("MSP", model).unknown_probability(torch.zeros(1, 2, 2))


def test_calibration_sets_the_95_percent_threshold_and_round_trips():
    model = Fixed()
    rng = np.random.default_rng(0)
    barcodes = torch.as_tensor(rng.normal(size=(4, 3, 10, 10)), dtype=torch.float32)
    detector = build_detector("energy", model)
    threshold = detector.calibrate(barcodes)
    scores = detector.predict(barcodes)
    assert (scores <= threshold).float().mean().item() == pytest.approx(0.95, abs=0.01)
    probability = detector.unknown_probability(torch.tensor([threshold]))
    assert probability.item() == pytest.approx(0.5)
    copy = build_detector("energy", Fixed()).restore(detector.config(), detector.tensors())
    assert copy.threshold == threshold and copy.score_scale == detector.score_scale

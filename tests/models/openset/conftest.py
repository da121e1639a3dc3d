"""Shared open-set fixtures: a small twin experiment and a closed-set segmenter trained on it.

Both are session-scoped and deterministic (fixed seeds, one thread); tests that train must
work on ``copy.deepcopy(closed_set_segmenter)`` so that nothing leaks between tests.
"""

import copy

import numpy as np
import pytest
import torch

from hyplex.models.encoder_baselines import FixedResponseEncoder
from hyplex.models.openset import build_openset_data
from hyplex.models.openset.outlier_exposure import train_segmenter
from hyplex.models.segmentation import build_segmenter

GRID_NM = np.linspace(400.0, 1000.0, 31)


def gaussian_encoder(n_filters: int = 9, width_nm: float = 40.0) -> FixedResponseEncoder:
    """``n_filters`` Gaussian band-pass filters (peak 1) across 420-980 nm on :data:`GRID_NM`."""
    centres = np.linspace(420.0, 980.0, n_filters)
    responses = np.exp(-0.5 * ((GRID_NM[None] - centres[:, None]) / width_nm) ** 2)
    return FixedResponseEncoder(responses, GRID_NM)


@pytest.fixture(scope="session")
def openset_data():
    """24 ID, 12 auxiliary-outlier, 6 held-out and 8 test scenes of 24 x 24 pixels."""
    counts = {"train": 24, "auxiliary": 12, "heldout": 6, "test": 8}
    return build_openset_data(gaussian_encoder(), GRID_NM, counts=counts, shape=(24, 24), seed=0)


@pytest.fixture(scope="session")
def _trained_segmenter(openset_data):
    torch.manual_seed(0)
    model = build_segmenter(
        "attention",
        in_channels=9,
        n_classes=len(openset_data.class_names),
        width=8,
        depth=1,
        reduction=2,
    )
    train_segmenter(model, openset_data, steps=150, seed=0)
    return model


@pytest.fixture
def closed_set_segmenter(_trained_segmenter):
    """A fresh copy of the segmenter trained with plain cross-entropy on the ID scenes."""
    return copy.deepcopy(_trained_segmenter)

"""hyplex.models.data.random_crops: one set of corners for every tensor, drawn in a fixed order."""

import numpy as np
import pytest
import torch

from hyplex.models.data import random_crops


def test_random_crops_cut_every_tensor_at_the_same_corners():
    maps = torch.arange(3 * 2 * 6 * 7, dtype=torch.float32).reshape(3, 2, 6, 7)
    labels = torch.arange(3 * 6 * 7).reshape(3, 6, 7)
    x, y = random_crops(np.random.default_rng(4), (maps, labels), 5, 3)
    assert x.shape == (5, 2, 3, 3) and y.shape == (5, 3, 3)
    rng = np.random.default_rng(4)  # items, then tops, then lefts
    index, top, left = rng.integers(0, 3, 5), rng.integers(0, 4, 5), rng.integers(0, 5, 5)
    for k, (i, t, s) in enumerate(zip(index, top, left, strict=True)):
        assert torch.equal(x[k], maps[i, :, t : t + 3, s : s + 3])
        assert torch.equal(y[k], labels[i, t : t + 3, s : s + 3])


def test_random_crops_refuse_mismatched_tensors_and_oversized_crops():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="one N, H, W"):
        random_crops(rng, (torch.zeros(2, 1, 4, 4), torch.zeros(2, 1, 5, 4)), 1, 2)
    with pytest.raises(ValueError, match="size must be"):
        random_crops(rng, (torch.zeros(2, 1, 4, 4),), 1, 5)

"""Max-Matching with user regions: polygons and superpixels as group ids, irregular groups, and
the validation of a region map."""

import numpy as np
import pytest
import torch

from hyplex.models.noisy_labels import (
    check_group_ids,
    max_matching_loss,
    max_matching_mask,
    polygon_group_ids,
    region_labels,
    superpixel_group_ids,
)


def _irregular_groups():
    """Two polygons on a 10 x 10 frame: a triangle and an L (not squares), the rest outside."""
    triangle = [(0.5, 0.5), (6.5, 0.5), (0.5, 6.5)]
    ell = [(6.5, 3.5), (9.5, 3.5), (9.5, 9.5), (2.5, 9.5), (2.5, 7.5), (6.5, 7.5)]
    return polygon_group_ids([triangle, ell], 10, 10)


def test_polygons_rasterise_by_pixel_centre_and_later_polygons_win():
    ids = _irregular_groups()
    assert ids.shape == (10, 10) and ids.dtype == np.int64
    # triangle: pixel centres (x=c, y=r) with x + y < 7 inside the corner at (0.5, 0.5)
    for r in range(10):
        for c in range(10):
            in_triangle = c >= 1 and r >= 1 and c + r < 7
            in_ell = (7 <= c <= 9 and 4 <= r <= 9) or (3 <= c <= 9 and 8 <= r <= 9)
            expected = 1 if in_ell else 0 if in_triangle else -1
            assert ids[r, c] == expected, (r, c)
    square = [(1.5, 1.5), (3.5, 1.5), (3.5, 3.5), (1.5, 3.5)]
    overlapped = polygon_group_ids([[(0, 0), (9, 0), (9, 9), (0, 9)], square], 10, 10)
    assert (overlapped[2:4, 2:4] == 1).all() and overlapped[5, 5] == 0
    with pytest.raises(ValueError, match="polygon 0"):
        polygon_group_ids([[(0, 0), (1, 1)]], 4, 4)


def test_max_matching_picks_the_most_confident_member_of_each_irregular_group():
    ids = _irregular_groups()
    members = ids.reshape(-1) >= 0
    group_ids = torch.as_tensor(ids.reshape(-1)[members])
    n = int(members.sum())
    rng = np.random.default_rng(0)
    probability = rng.uniform(0.05, 0.6, n)  # of each group's label
    group_labels = torch.tensor([2, 0])
    expected = np.zeros(n, dtype=bool)
    for g in (0, 1):
        where = np.flatnonzero(group_ids.numpy() == g)
        best = where[rng.integers(len(where))]
        probability[best] = 0.9  # the one member the group's label fits best
        expected[best] = True
    logits = torch.full((n, 3), -5.0, dtype=torch.float64)
    rows = torch.arange(n)
    targets = group_labels[group_ids]
    logits[rows, targets] = torch.as_tensor(np.log(probability))
    others = torch.as_tensor(np.log((1 - probability) / 2))
    for k in range(3):
        logits[:, k] = torch.where(targets == k, logits[:, k], others)
    log_p = torch.log_softmax(logits, 1)
    scores = log_p.gather(1, targets[:, None]).squeeze(1).exp()
    mask = max_matching_mask(scores, group_ids)
    np.testing.assert_array_equal(mask.numpy(), expected)
    loss = max_matching_loss(logits, group_ids, group_labels)
    torch.testing.assert_close(loss, -log_p[rows[mask], targets[mask]].mean())


def test_max_matching_refuses_a_region_map_that_does_not_fit():
    logits = torch.zeros(5, 2)
    labels = torch.tensor([0, 1])
    with pytest.raises(ValueError, match=r"pixels' shape \(5,\)"):
        max_matching_loss(logits, torch.tensor([0, 0, 1, 1]), labels)
    with pytest.raises(ValueError, match=">= 0"):
        max_matching_loss(logits, torch.tensor([0, -1, 1, 1, 0]), labels)
    with pytest.raises(ValueError, match="< the number of groups 2"):
        max_matching_loss(logits, torch.tensor([0, 2, 1, 1, 0]), labels)
    with pytest.raises(ValueError, match="integer"):
        check_group_ids(np.zeros((2, 3)), (2, 3))
    with pytest.raises(ValueError, match="pixels' shape"):
        region_labels(np.zeros((1, 4, 4), dtype=np.int64), np.zeros((1, 4, 5), dtype=np.int64))


def test_superpixels_follow_the_spectra_and_are_connected():
    """Two materials split by a diagonal: SLIC regions (low compactness) stay on one side."""
    from scipy import ndimage

    height = width = 24
    rows, cols = np.mgrid[0:height, 0:width]
    material = (rows + 0.5 * cols > 16).astype(np.int64)
    spectra = np.array([[0.8, 0.2, 0.1], [0.1, 0.3, 0.9]])
    noise = 0.01 * np.random.default_rng(0).standard_normal((height, width, 3))
    barcodes = (spectra[material] + noise)[None]
    ids = superpixel_group_ids(barcodes, 16, compactness=0.5)
    assert ids.shape == (1, height, width)
    np.testing.assert_array_equal(np.unique(ids), np.arange(ids.max() + 1))
    impure = 0
    for g in np.unique(ids):
        region = ids[0] == g
        assert ndimage.label(region)[1] == 1  # one connected piece
        impure += min(material[region].sum(), (1 - material[region]).sum())
    assert impure <= 0.01 * height * width, impure
    # coarse labels for these irregular regions: one class per region, a class it holds
    compact, labels, pixel_labels = region_labels(material[None], ids, seed=0)
    for g in range(len(labels)):
        assert labels[g] in material[compact[0] == g]
    np.testing.assert_array_equal(pixel_labels, labels[compact])
    with pytest.raises(ValueError, match="compactness"):
        superpixel_group_ids(barcodes, 16, compactness=0.0)

"""Max-Matching: the most confident member of each group is the one learned from."""

import numpy as np
import torch

from hyplex.models.noisy_labels import (
    coarse_region_labels,
    matching_scores,
    max_matching_loss,
    max_matching_mask,
)


def test_max_matching_picks_the_most_confident_member_of_each_group():
    # two groups; the group label is 1 for group 0 and 0 for group 1
    probabilities = torch.tensor(
        [[0.8, 0.2], [0.3, 0.7], [0.6, 0.4],  # group 0: member 1 fits label 1 best
         [0.55, 0.45], [0.9, 0.1]]  # group 1: member 4 fits label 0 best
    )  # fmt: skip
    group_ids = torch.tensor([0, 0, 0, 1, 1])
    group_labels = torch.tensor([1, 0])
    scores = matching_scores(probabilities.log(), None, group_ids, group_labels)
    torch.testing.assert_close(scores, torch.tensor([0.2, 0.7, 0.4, 0.55, 0.9]))
    mask = max_matching_mask(scores, group_ids)
    assert mask.tolist() == [False, True, False, False, True]
    assert max_matching_mask(scores, group_ids, keep=2).tolist() == [False, True, True, True, True]
    # the loss is the cross-entropy of the selected members only
    loss = max_matching_loss(probabilities.log(), group_ids, group_labels)
    assert abs(loss.item() - np.mean([-np.log(0.7), -np.log(0.9)])) < 1e-6


def test_group_attention_favours_members_typical_of_their_group():
    log_p = torch.log(torch.tensor([[0.5, 0.5], [0.5, 0.5], [0.5, 0.5]]))
    features = torch.tensor([[1.0, 0.0], [1.0, 0.1], [0.0, 1.0]])  # member 2 is atypical
    scores = matching_scores(log_p, features, torch.tensor([0, 0, 0]), torch.tensor([1]))
    assert scores[2] < scores[0] and scores[2] < scores[1]


def test_coarse_region_labels_give_each_region_one_class_it_holds():
    maps = np.zeros((1, 4, 4), dtype=np.int64)
    maps[0, :, 2:] = 2
    maps[0, 3, 3] = 1
    group_ids, labels, pixels = coarse_region_labels(maps, cell=2, seed=0)
    assert group_ids.max() + 1 == labels.size == 4
    for g in range(4):
        assert labels[g] in maps[group_ids == g]
        assert np.all(pixels[group_ids == g] == labels[g])


def _toy(n, seed):
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 3, (n,), generator=generator)
    centres = torch.tensor([[0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    return centres[labels] + 0.25 * torch.randn(n, 2, generator=generator), labels


def test_max_matching_beats_cross_entropy_under_group_noise():
    """Groups of 4 whose label is that of one random member (75 % of members mislabelled)."""
    x, y = _toy(1200, 0)
    tx, ty = _toy(600, 1)
    group_ids = torch.arange(len(x)) // 4
    draw = torch.randint(0, 4, (len(x) // 4,), generator=torch.Generator().manual_seed(2))
    carrier = group_ids * 4 + draw[group_ids]
    group_labels = y[carrier[::4]]
    accuracy = {}
    for method in ("ce", "max_matching"):
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Linear(2, 32), torch.nn.ReLU(), torch.nn.Linear(32, 3))
        optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
        for step in range(300):
            logits = net(x)
            if method == "ce" or step < 50:
                loss = torch.nn.functional.cross_entropy(logits, group_labels[group_ids])
            else:
                loss = max_matching_loss(logits, group_ids, group_labels, features=x)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            accuracy[method] = (net(tx).argmax(1) == ty).float().mean().item()
    assert accuracy["max_matching"] > accuracy["ce"] + 0.05, accuracy


def test_uniform_region_labels_mislabel_more_pixels_than_area_weighted_ones():
    rng = np.random.default_rng(0)
    maps = (rng.random((4, 16, 16)) < 0.2).astype(np.int64)  # class 1 covers ~20 % of pixels
    _, _, by_area = coarse_region_labels(maps, cell=8, seed=0)
    _, _, uniform = coarse_region_labels(maps, cell=8, seed=0, by_area=False)
    assert (uniform != maps).mean() > (by_area != maps).mean()


def test_label_blind_group_attention_prefers_the_majority_over_the_labelled_minority():
    """A region named after its one minority pixel (class 1; three background pixels): the
    most confident member is that pixel, but similarity to the region's mean favours the
    background ones, so the benchmark trains without the attention."""
    log_p = torch.log(torch.tensor([[0.65, 0.35], [0.65, 0.35], [0.65, 0.35], [0.4, 0.6]]))
    features = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    group_ids, group_labels = torch.zeros(4, dtype=torch.long), torch.tensor([1])
    plain = max_matching_mask(matching_scores(log_p, None, group_ids, group_labels), group_ids)
    attended = matching_scores(log_p, features, group_ids, group_labels, tau=1.0)
    assert plain.tolist() == [False, False, False, True]
    assert max_matching_mask(attended, group_ids).tolist() == [True, False, False, False]

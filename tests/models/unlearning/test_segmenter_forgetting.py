"""Class and scene requests, the gold-standard retrain, and same-run held-out scenes."""

import numpy as np
import pytest
import torch

from hyplex.models.unlearning.segmenter_forgetting import (
    SceneBarcodes,
    class_request,
    retrain_segmenter,
    scene_ids,
    scene_request,
    training_and_heldout,
)
from hyplex.models.unlearning.toolkit import IGNORE_INDEX


def _data():
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 3, (5, 6, 6), generator=g)
    return SceneBarcodes(torch.randn(5, 4, 6, 6, generator=g), labels, scene_ids(5))


def test_class_request_masks_the_class_and_ignores_it_for_the_retrain():
    data = _data()
    request = class_request(data, 2, batch_size=2)
    forget_pixels = sum(int(b.mask.sum()) for b in request.forget)
    assert forget_pixels == int((data.labels == 2).sum())
    assert all(bool((b.targets[b.mask] == 2).all()) for b in request.forget)
    assert all(not bool((b.targets[b.mask] == 2).any()) for b in request.retain)
    targets = torch.cat([b.targets for b in request.retrain_data])
    assert not bool((targets == 2).any()) and bool((targets == IGNORE_INDEX).any())
    with pytest.raises(ValueError, match="labels no pixel"):
        class_request(data, 7)


def test_scene_request_splits_whole_scenes_and_refuses_strangers():
    data = _data()
    request = scene_request(data, ["scene-0001", "scene-0003"], batch_size=8)
    assert [len(b.targets) for b in request.forget] == [2]
    assert torch.equal(request.forget[0].inputs[1], data.barcodes[3])
    assert [len(b.targets) for b in request.retain] == [3]
    with pytest.raises(ValueError, match="not training scenes of this bundle: scene-0042"):
        scene_request(data, ["scene-0042"])
    with pytest.raises(ValueError, match="nothing to retain"):
        scene_request(data, data.ids)


def test_retrain_is_seeded():
    data = _data()
    batches = class_request(data, 1).retrain_data

    def build():
        return torch.nn.Conv2d(4, 3, 1)

    a, seconds = retrain_segmenter(build, batches, 30, lr=0.05, seed=3)
    b, _ = retrain_segmenter(build, batches, 30, lr=0.05, seed=3)
    assert seconds > 0
    assert all(
        torch.equal(x, y)
        for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    )


def test_heldout_scenes_continue_the_training_run():
    grid = np.linspace(420.0, 700.0, 8)
    train, held = training_and_heldout(grid, ["scene-0000", "scene-0002"], ["scene-0001"], 2,
                                       seed=5, shape=(8, 8), n_objects=1)  # fmt: skip
    from hyplex.models.data import generate_scenes

    reference = generate_scenes(grid, 5, 5, shape=(8, 8), n_objects=1)
    assert np.array_equal(train.cubes, reference.cubes[[0, 2]])
    assert np.array_equal(held.cubes, reference.cubes[[3, 4]])

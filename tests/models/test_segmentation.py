"""Segmentation decoders: shapes, gradients, a tiny separable toy, registry, fake classes."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hyplex.models.layers import recalibrate_batchnorm
from hyplex.models.metrics import mean_iou, real_fake_accuracy
from hyplex.models.segmentation import (
    SEGMENTERS,
    SpectralAttentionSegNet,
    UNet,
    build_segmenter,
    fake_class_ids,
    predict_labels,
)
from hyplex.simulation.scenes import class_names_for

torch.set_num_threads(1)


SMALL = {
    "unet": {"base_channels": 8, "depth": 2},
    "attention": {"width": 8, "depth": 2},
    "separable": {"width": 8, "n_blocks": 2, "factor": 2},  # hyplex.models.realtime
}


@pytest.mark.parametrize("name", sorted(SEGMENTERS))
@pytest.mark.parametrize("in_channels", [3, 9, 34])
def test_odd_sizes_and_finite_gradients(name, in_channels):
    torch.manual_seed(0)
    model = build_segmenter(name, in_channels=in_channels, n_classes=4)
    x = torch.rand(2, in_channels, 13, 17, requires_grad=True)
    logits = model(x)
    assert logits.shape == (2, 4, 13, 17)
    F.cross_entropy(logits, torch.randint(0, 4, (2, 13, 17))).backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    model.eval()
    with torch.no_grad():
        assert model(torch.rand(1, in_channels, 5, 3)).shape == (1, 4, 5, 3)


N_BANDS = 20


def _toy(rng, filters, n_images, size=16):
    """Two classes with different spectral shapes and random brightness, blocky label maps,
    encoded by ``filters`` (9, N_BANDS) into barcodes (N, 9, size, size)."""
    x = np.linspace(0, 1, N_BANDS)
    class_spectra = np.stack([np.exp(-((x - 0.3) ** 2) / 0.02), np.exp(-((x - 0.7) ** 2) / 0.02)])
    coarse = rng.integers(0, 2, (n_images, size // 4, size // 4))
    labels = coarse.repeat(4, axis=1).repeat(4, axis=2)  # (N, 16, 16) blocks of 4x4
    brightness = rng.uniform(0.3, 1.0, labels.shape)[..., None]
    cubes = brightness * class_spectra[labels] + rng.normal(0, 0.01, (*labels.shape, N_BANDS))
    barcodes = np.einsum("cl,nhwl->nchw", filters, cubes)
    barcodes /= 0.05  # order-one inputs
    return torch.from_numpy(barcodes).float(), torch.from_numpy(labels).long()


@pytest.mark.parametrize("name", sorted(SEGMENTERS))
def test_tiny_training_beats_chance(name, adam):
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    filters = rng.random((9, N_BANDS)) / N_BANDS  # one random encoder for train and test
    barcodes, labels = _toy(rng, filters, 8)
    test_barcodes, test_labels = _toy(rng, filters, 4)
    model = build_segmenter(name, in_channels=9, n_classes=2, **SMALL[name])
    optimizer = adam(model.parameters(), lr=1e-2)
    for _ in range(30):
        optimizer.step(F.cross_entropy(model(barcodes), labels))
    # 30 steps are too few for BatchNorm's moving averages to catch up with the weights:
    # recompute the population statistics on the training barcodes (precise BN).
    recalibrate_batchnorm(model, barcodes).eval()
    with torch.no_grad():
        predicted = predict_labels(model(test_barcodes))
    accuracy = (predicted == test_labels).float().mean().item()
    assert accuracy > 0.85, accuracy  # chance is 0.5
    assert mean_iou(predicted, test_labels, 2) > 0.7


def test_recalibrate_batchnorm_computes_population_statistics():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.BatchNorm2d(4)).eval()
    batches = [torch.rand(2, 3, 5, 5), torch.rand(2, 3, 5, 5) + 1.0]
    recalibrate_batchnorm(model, batches)
    with torch.no_grad():
        features = torch.cat([model[0](b) for b in batches])
    expected = features.mean(dim=(0, 2, 3))
    assert torch.allclose(model[1].running_mean, expected, rtol=1e-5, atol=1e-6)
    assert model[1].momentum == 0.1 and not model.training
    with pytest.raises(ValueError, match="at least one"):
        recalibrate_batchnorm(model, [])


@pytest.mark.parametrize("name", sorted(SEGMENTERS))
def test_build_round_trip(name):
    torch.manual_seed(0)
    model = build_segmenter(name, in_channels=9, n_classes=3, **SMALL[name])
    model(torch.rand(2, 9, 8, 8))  # update BatchNorm running statistics
    model.eval()
    assert isinstance(model, SEGMENTERS[name])
    rebuilt = build_segmenter(name, **model.config).eval()
    rebuilt.load_state_dict(model.state_dict())
    x = torch.rand(1, 9, 7, 9)
    with torch.no_grad():
        assert torch.equal(rebuilt(x), model(x))


def test_validation_errors():
    with pytest.raises(ValueError, match="unknown segmenter 'segformer'.*attention.*unet"):
        build_segmenter("segformer", in_channels=9, n_classes=2)
    with pytest.raises(ValueError, match=r"expected input of shape \(B, 9, h, w\)"):
        UNet(9, 2)(torch.zeros(1, 3, 8, 8))
    with pytest.raises(ValueError, match=r"\(B, 9, h, w\)"):
        SpectralAttentionSegNet(9, 2)(torch.zeros(9, 8, 8))
    with pytest.raises(ValueError, match="n_classes"):
        UNet(9, 1)
    with pytest.raises(ValueError, match="n_heads"):
        SpectralAttentionSegNet(9, 2, width=6, depth=1, n_heads=5)
    with pytest.raises(ValueError, match="logits"):
        predict_labels(torch.zeros(3, 4, 4))


def test_fake_class_ids_from_scene_class_names():
    names = class_names_for(("vegetation", "soil", "manmade"), ("vegetation", "manmade"))
    ids = fake_class_ids(names)
    assert [names[i] for i in ids] == ["fake_vegetation", "fake_manmade"]
    assert ids == [4, 5]
    assert fake_class_ids(class_names_for(("soil",), ())) == []
    with pytest.raises(ValueError, match="sequence of str"):
        fake_class_ids("fake_soil")


def test_predict_labels_feeds_real_fake_accuracy():
    names = class_names_for(("vegetation",), ("vegetation",))  # background, vegetation, fake_veg
    logits = torch.zeros(1, 3, 2, 2)
    logits[0, :, 0, 0] = torch.tensor([5.0, 0.0, 0.0])  # background
    logits[0, :, 0, 1] = torch.tensor([0.0, 5.0, 0.0])  # real vegetation
    logits[0, :, 1, :] = torch.tensor([0.0, 0.0, 5.0])[:, None]  # fake vegetation
    labels = predict_labels(logits)
    assert torch.equal(labels, torch.tensor([[[0, 1], [2, 2]]]))
    fake_map = torch.tensor([[[False, False], [True, False]]])
    objects = labels != 0
    accuracy = real_fake_accuracy(labels, fake_map, fake_class_ids(names), mask=objects)
    assert accuracy == pytest.approx(2 / 3)

"""Temporal consistency module: it steadies per-frame segmentation of a video from the twin."""

import numpy as np
import pytest
import torch

from hyplex.models import temporal
from hyplex.models.metrics import mean_iou
from hyplex.models.temporal import (
    GatedLogitSmoother,
    fit_temporal,
    label_flip_rate,
    smooth_sequence,
)


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def clip():
    """12 noisy frames of the twin looking at a synthetic video (34 bands), their barcodes,
    true labels per metapixel, and per-frame logits of a classifier fitted on two frames."""
    from hyplex.devices.sim_camera import SimulatedCamera
    from hyplex.pipeline.models import fit_pixel_classifier
    from hyplex.pipeline.stages import Preprocessor, labels_at_metapixels
    from hyplex.simulation.camera import default_camera
    from hyplex.simulation.grids import prototype_grid
    from hyplex.simulation.video import make_video

    n_frames, sensor = 12, (144, 192)
    grid = prototype_grid()
    video = make_video(n_frames, (36, 48), grid, n_objects=4, speed_px=(0.3, 1.0), seed=3)
    twin = default_camera(grid, sensor, pitch_px=3.0)
    camera = SimulatedCamera(video, twin=twin, exposure_us=300.0, seed=1)  # noisy: flicker
    preprocessor = Preprocessor(twin.encoder.layout, sensor)
    barcodes = np.stack([preprocessor(camera.render_raw(t)) for t in range(n_frames)])
    labels = labels_at_metapixels(video.labels()["class_map"], preprocessor.extractor)
    scale = float(np.nanmedian(barcodes))
    classifier = fit_pixel_classifier(
        barcodes[[0, 3]], labels[[0, 3]], len(video.class_names), scale, steps=150
    )
    x = torch.from_numpy(np.nan_to_num(barcodes / scale)).permute(0, 3, 1, 2).float()
    with torch.no_grad():
        logits = classifier(x)
    return {"x": x, "logits": logits, "labels": labels, "n_classes": len(video.class_names)}


def _labels(module, clip):
    with torch.no_grad():
        out, _ = smooth_sequence(module, clip["logits"], clip["x"])
    return out.argmax(1).numpy()


def test_gate_improves_consistency_over_per_frame(clip):
    truth, n_classes = clip["labels"], clip["n_classes"]
    per_frame = clip["logits"].argmax(1).numpy()
    smoothed = _labels(GatedLogitSmoother(n_classes), clip)
    flips_per_frame = label_flip_rate(per_frame, truth)
    flips_smoothed = label_flip_rate(smoothed, truth)
    assert flips_per_frame > 0.01, "the per-frame labels should flicker on a noisy clip"
    assert flips_smoothed < flips_per_frame, (flips_smoothed, flips_per_frame)
    assert mean_iou(smoothed, truth, n_classes) >= mean_iou(per_frame, truth, n_classes) - 0.02


def test_trained_gate_on_held_out_frames(clip):
    n_classes, truth = clip["n_classes"], clip["labels"]
    module = GatedLogitSmoother(n_classes)
    history = fit_temporal(
        module,
        clip["logits"][:6],
        clip["x"][:6],
        torch.from_numpy(truth[:6]),
        steps=30,
        window=4,
    )
    assert history[-1] < history[0]
    smoothed, per_frame = _labels(module, clip)[6:], clip["logits"].argmax(1).numpy()[6:]
    assert label_flip_rate(smoothed, truth[6:]) < 0.8 * label_flip_rate(per_frame, truth[6:])
    assert (
        mean_iou(smoothed, truth[6:], n_classes) >= mean_iou(per_frame, truth[6:], n_classes) - 0.02
    )


def test_gate_lets_a_changed_input_through_at_once():
    module = GatedLogitSmoother(3, smoothing=0.8)
    still = torch.ones(1, 9, 4, 4)
    old = torch.tensor([5.0, 0.0, 0.0])[None, :, None, None].expand(1, 3, 4, 4)
    new = torch.tensor([0.0, 5.0, 0.0])[None, :, None, None].expand(1, 3, 4, 4)
    with torch.no_grad():
        _, state = module(old, still)
        same_input, _ = module(new, still, state)  # new logits, same scene: smoothed
        _, state = module(old, still)
        moved, _ = module(new, 3.0 * still, state)  # the input changed: follow the new frame
    assert same_input.argmax(1).eq(0).all()
    assert moved.argmax(1).eq(1).all()


def _gate(module, change):
    """The gate of ``module`` (untrained: f = 0) at a relative input change ``change``, read
    off the output: log_softmax keeps differences of log-probabilities, so with two classes
    ``d_out = g d_previous + (1 - g) d_current``."""
    previous = torch.tensor([2.0, 0.0])[None, :, None, None]
    current = torch.tensor([0.0, 3.0])[None, :, None, None]
    before = torch.ones(1, 4, 1, 1)
    after = before / (1.0 - change)  # |after - before| / |after| = change
    with torch.no_grad():
        _, state = module(previous, before)
        out, _ = module(current, after, state)

    def difference(log_probabilities):
        return float(log_probabilities[0, 0] - log_probabilities[0, 1])

    d_previous = difference(torch.log_softmax(previous, 1))
    d_current = difference(torch.log_softmax(current, 1))
    return (difference(out) - d_current) / (d_previous - d_current)


@pytest.mark.parametrize("smoothing", [0.3, 0.5, 0.6, 0.8, 0.95])
def test_gate_halves_at_the_change_threshold(smoothing):
    """As documented: the gate is ``smoothing`` on a still scene, ``smoothing / 2`` at
    ``change_threshold`` (for every smoothing, also <= 0.5), and closes beyond it."""
    module = GatedLogitSmoother(2, smoothing=smoothing, change_threshold=0.1)
    assert _gate(module, 0.0) == pytest.approx(smoothing, abs=1e-5)
    assert _gate(module, 0.1) == pytest.approx(smoothing / 2, abs=1e-4)
    assert _gate(module, 0.3) < smoothing / 6


def test_mean_iou_is_the_metrics_one():
    """One mIoU in the package: temporal's name is metrics' function, which refuses labels
    outside 0..n_classes-1 instead of silently dropping them."""
    assert temporal.mean_iou is mean_iou
    truth = np.array([[0, 1], [1, 5]])
    with pytest.raises(ValueError, match=r"true_labels must lie in \[0, 2\)"):
        temporal.mean_iou(truth.clip(0, 1), truth, 2)


def test_metrics_and_validation():
    truth = np.zeros((3, 2, 2), int)
    predicted = truth.copy()
    predicted[1, 0, 0] = 1
    assert label_flip_rate(predicted, truth) == pytest.approx(2 / 8)
    assert mean_iou(truth, truth, 2) == 1.0
    with pytest.raises(ValueError, match="T >= 2"):
        label_flip_rate(truth[:1], truth[:1])
    with pytest.raises(ValueError, match="smoothing"):
        GatedLogitSmoother(3, smoothing=1.0)
    with pytest.raises(ValueError, match=r"logits must be \(B, 3, h, w\)"):
        GatedLogitSmoother(3)(torch.zeros(1, 4, 2, 2), torch.zeros(1, 9, 2, 2))

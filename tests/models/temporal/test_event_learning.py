"""TCL (temporal event learning): DPC-kNN merging, the drop-in contract, and its trained gain."""

import numpy as np
import pytest
import torch

from hyplex.models.temporal import (
    GatedLogitSmoother,
    TemporalEventModule,
    build_temporal,
    density_peak_merge,
    fit_temporal,
    label_flip_rate,
    smooth_sequence,
)


def _partition(assignment):
    groups = {}
    for index, event in enumerate(assignment):
        groups.setdefault(int(event), set()).add(index)
    return sorted(map(frozenset, groups.values()), key=min)


def test_density_peak_merge_recovers_exactly_the_clusters():
    generator = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0, 0.0], [4.0, 0.0, 1.0], [0.0, 5.0, -2.0]])
    truth = torch.tensor([0, 0, 0, 0, 1, 1, 1, 2, 2, 2, 2, 2, 0, 1])  # 14 frames, shuffled
    tokens = centres[truth] + 0.1 * torch.randn(len(truth), 3, generator=generator)
    merge = density_peak_merge(tokens[None], n_events=3, neighbours=2)
    assert _partition(merge.assignment[0].tolist()) == _partition(truth.tolist())
    # merged tokens are the cluster means, counts the cluster sizes
    for event in range(3):
        members = merge.assignment[0] == event
        torch.testing.assert_close(merge.merged[0, event], tokens[members].mean(0))
        assert merge.counts[0, event] == members.sum()
    # each centre is a member of its own cluster
    assert all(int(merge.assignment[0, c]) == e for e, c in enumerate(merge.centres[0]))


def test_density_peak_merge_weights_and_input_checks():
    tokens = torch.tensor([[[0.0], [0.2], [10.0], [10.1]]])
    merge = density_peak_merge(tokens, 2, 1, weights=torch.tensor([[1.0, 3.0, 1.0, 1.0]]))
    low = merge.assignment[0, 0]
    assert merge.merged[0, low, 0] == pytest.approx(0.15)  # (0 * 1 + 0.2 * 3) / 4
    with pytest.raises(ValueError, match="tokens must be"):
        density_peak_merge(torch.zeros(3, 2), 2)
    with pytest.raises(ValueError, match="weights must be"):
        density_peak_merge(tokens, 2, weights=-torch.ones(1, 4))


def test_module_is_a_drop_in_and_reacts_to_a_change_at_once():
    module = TemporalEventModule(3, in_channels=4, window=6)
    features = torch.ones(8, 4, 2, 4)
    # another material enters the left half at frame 6: those barcodes change shape (a change
    # of every pixel alike would be a change of light, which the white balance removes)
    features[6:, :2, :, :2] = 3.0
    logits = torch.zeros(8, 3, 2, 4)
    logits[:, 0] = 2.0
    logits[6:, 0, :, :2] = 0.0
    logits[6:, 2, :, :2] = 2.0
    with torch.no_grad():
        out, state = smooth_sequence(module, logits, features)
    assert out.shape == (8, 3, 2, 4) and state[0].shape == (1, 6, 4, 2, 4)
    labels = out.argmax(1)
    assert (labels[:6] == 0).all() and (labels[6:, :, 2:] == 0).all()
    assert (labels[6:, :, :2] == 2).all()  # no ghosting behind the change
    with pytest.raises(ValueError, match="features must be"):
        module(logits[:1], torch.ones(1, 5, 2, 2))
    assert build_temporal("none", 3) is None
    assert isinstance(build_temporal("gated", 3), GatedLogitSmoother)
    with pytest.raises(ValueError, match="unknown temporal module"):
        build_temporal("lstm", 3)


def test_events_average_noise_more_than_per_frame_labels():
    """On a still pixel with noisy logits, TCL's event context flips less than per frame."""
    generator = torch.Generator().manual_seed(1)
    n_frames, size = 24, 6
    features = 1.0 + 0.01 * torch.randn(n_frames, 9, size, size, generator=generator)
    logits = torch.zeros(n_frames, 3, size, size)
    logits[:, 1] = 0.3
    logits = logits + torch.randn(logits.shape, generator=generator)
    truth = np.ones((n_frames, size, size), dtype=int)
    module = TemporalEventModule(3)
    with torch.no_grad():
        smoothed = smooth_sequence(module, logits, features)[0].argmax(1).numpy()
    per_frame = label_flip_rate(logits.argmax(1).numpy(), truth)
    assert label_flip_rate(smoothed, truth) < 0.75 * per_frame


def test_training_lowers_the_clip_loss():
    generator = torch.Generator().manual_seed(2)
    n_frames, size = 12, 5
    features = 1.0 + 0.05 * torch.rand(n_frames, 9, size, size, generator=generator)
    truth = torch.zeros(n_frames, size, size, dtype=torch.long)
    truth[:, :, 3:] = 1
    logits = torch.randn(n_frames, 2, size, size, generator=generator)
    logits[:, 1] += 0.8 * (truth.float() * 2 - 1)
    torch.manual_seed(0)
    module = TemporalEventModule(2)
    history = fit_temporal(module, logits, features, truth, steps=30, window=6, seed=0)
    assert np.mean(history[-5:]) < np.mean(history[:5])


def _still_pixels_under_dimming_light(seed=3, n_frames=16, size=4):
    """A still scene whose light falls 5x over the clip (as make_video's 10,000 -> 2,000 lux):
    the barcodes keep their shape, and every frame's logits are a random permutation of
    (1.0, 0.3, 0.0) per pixel (equal confidence, so the importance weights are all equal)."""
    generator = torch.Generator().manual_seed(seed)
    shape = torch.linspace(0.5, 1.5, 9).reshape(1, 9, 1, 1)
    level = torch.linspace(1.0, 0.2, n_frames).reshape(n_frames, 1, 1, 1)
    features = (shape * level).expand(n_frames, 9, size, size).contiguous()
    order = torch.rand(n_frames, 3, size, size, generator=generator).argsort(1)
    logits = torch.tensor([1.0, 0.3, 0.0])[order]
    return logits, features, np.ones((n_frames, size, size), dtype=int)


def test_a_change_of_light_level_alone_is_no_event():
    """Tokens are each frame's barcode shape: under a steady 5x dimming a still pixel's frames
    look alike, the current frame attends to the whole window in proportion to the events'
    sizes, and the context is the window's mean log-probability (window-normalised tokens
    split the ramp into events in time order and pooled mostly the last frames)."""
    logits, features, _ = _still_pixels_under_dimming_light()
    module = TemporalEventModule(3, window=16, mix=0.8)
    with torch.no_grad():
        out = smooth_sequence(module, logits, features)[0][-1]
    log_p = torch.log_softmax(logits, 1)
    expected = torch.log_softmax(0.8 * log_p.mean(0) + 0.2 * log_p[-1], 0)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


def test_the_attention_metric_is_fixed_unless_asked():
    """``W`` stays the identity through training (it overfitted a labelled clip's few frames)
    and is a buffer, so saved weights keep their keys; ``learn_projection=True`` trains it."""
    logits, features, truth = _still_pixels_under_dimming_light(n_frames=8)
    truth = torch.from_numpy(truth)
    fixed = TemporalEventModule(3)
    assert "projection" in fixed.state_dict()
    assert all(p is not fixed.projection for p in fixed.parameters())
    fit_temporal(fixed, logits, features, truth, steps=5, window=6, seed=0)
    torch.testing.assert_close(fixed.projection, torch.eye(9))
    learned = TemporalEventModule(3, learn_projection=True)
    fit_temporal(learned, logits, features, truth, steps=5, window=6, seed=0)
    assert not torch.allclose(learned.projection, torch.eye(9))
    assert set(learned.state_dict()) == set(fixed.state_dict())


def test_a_change_of_light_colour_alone_is_no_event():
    """A still scene of two materials whose light turns from neutral to reddish (every
    filter's barcode scaled by its own factor, as D65 -> A over make_video's clip): after the
    grey-world white balance each pixel's tokens stay put, the current frame attends to the
    whole window and the context is the window's mean log-probability. Without the white
    balance the tilt splits the window into events in time order and the mean is lost."""
    logits, _, _ = _still_pixels_under_dimming_light()
    n_frames = logits.shape[0]
    materials = torch.stack([torch.linspace(0.5, 1.5, 9), torch.linspace(1.4, 0.6, 9)])
    scene = materials[torch.tensor([[0, 1, 0, 1], [1, 0, 1, 0]] * 2)].permute(2, 0, 1)
    tilt = torch.linspace(0.0, 1.0, n_frames).reshape(n_frames, 1, 1, 1)
    colour = 1.0 + tilt * torch.linspace(-0.6, 0.6, 9).reshape(1, 9, 1, 1)  # blue down, red up
    features = scene[None] * colour * torch.linspace(1.0, 0.2, n_frames).reshape(-1, 1, 1, 1)
    log_p = torch.log_softmax(logits, 1)
    expected = torch.log_softmax(0.8 * log_p.mean(0) + 0.2 * log_p[-1], 0)
    with torch.no_grad():
        balanced = smooth_sequence(TemporalEventModule(3, mix=0.8), logits, features)[0][-1]
        raw = TemporalEventModule(3, mix=0.8, white_balance=False)
        unbalanced = smooth_sequence(raw, logits, features)[0][-1]
    torch.testing.assert_close(balanced, expected, atol=1e-5, rtol=1e-5)
    assert (unbalanced - expected).abs().max() > 0.05

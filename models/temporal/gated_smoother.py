"""Temporal consistency of video segmentation: gated propagation of class log-probabilities.

Per-frame segmentation of a video flickers: sensor noise moves pixels near a decision boundary
from one class to the other and back. :class:`GatedLogitSmoother` carries the class
log-probabilities of the previous frame forward and mixes them with the new ones, per pixel::

    z_t = log_softmax(logits_t)                       new evidence          (B, K, h, w)
    c_t = mean_c |x_t - x_{t-1}| / (mean_c |x_t| + eps)  relative input change  (B, 1, h, w)
    g_t = sigmoid(b - w c_t + f([c_t, max p(z_t), max p(s_{t-1})]))   gate, 0..1
    s_t = g_t s_{t-1} + (1 - g_t) z_t                  propagated state / output

``x`` are the frame's input features (the metapixel barcodes). Where the scene is still the
gate stays near ``sigmoid(b)`` (``smoothing``, s) and noise is averaged over ~1/(1-g) frames;
where the input changes (a moving edge, an occlusion, a new object) ``c_t`` is large, the gate
closes and the new frame's evidence takes over at once: no ghosting behind moving objects. The
learned term ``f`` (two 3x3 convolutions, initialised to zero so the untrained module is the
hand-set gate) refines the gate from the confidences of both; :func:`fit_temporal` trains it
with truncated back-propagation through time on a labelled clip. This is exponential logit
smoothing with an occlusion-aware gate, the light end of the recurrent propagation family
(ConvGRU-style gated merging of a per-frame network's outputs, as in video segmentation
with temporal propagation of features or logits).

The hand-set gate (``f = 0``) is ``g(c) = sigmoid(b - w c)`` with ``b = logit(s)`` and ``w`` set
so that at the change threshold ``c*`` the past's weight has halved, ``g(c*) = s / 2``::

    w c* = logit(s) - logit(s / 2) = ln((2 - s) / (1 - s))     >= ln 2 for every s in (0, 1)

(s = 0.6: g falls from 0.6 on a still scene to 0.3 at c*, and to 0.03 at 3 c*). Unlike a gate
of 0.5 at ``c*``, this holds for every ``smoothing``, also at or below 0.5, where the slope
would vanish or change sign.

Consistency is measured by :func:`label_flip_rate`: the fraction of pixels whose predicted
label changes between consecutive frames where the true label does not.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

# Re-exported for callers that import it from here (benchmarks/video.py): one mIoU for the
# whole package, which rejects labels outside 0..n_classes-1 instead of dropping them.
from hyplex.models.metrics import mean_iou

__all__ = [
    "GatedLogitSmoother",
    "gate_refinement",
    "fit_temporal",
    "fit_temporal_clips",
    "label_flip_rate",
    "mean_iou",
    "smooth_sequence",
]


def gate_refinement(in_channels: int, hidden: int) -> nn.Sequential:
    """A learned correction of a temporal gate's logit: two 3x3 convolutions,
    ``(B, in_channels, h, w) -> (B, 1, h, w)``, the last one zero-initialised so that an
    untrained module keeps its hand-set gate (shared by the gated smoother and TCL)."""
    refine = nn.Sequential(
        nn.Conv2d(in_channels, hidden, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(hidden, 1, 3, padding=1),
    )
    nn.init.zeros_(refine[2].weight)
    nn.init.zeros_(refine[2].bias)
    return refine


class GatedLogitSmoother(nn.Module):
    """Occlusion-aware exponential smoothing of class log-probabilities (see the module doc).

    Parameters
    ----------
    n_classes : int
        K, channels of the segmenter's logits.
    smoothing : float
        Gate where the input does not change, in (0, 1): the weight of the past (0.6 averages
        ~2.5 frames).
    change_threshold : float
        Relative input change (mean |x_t - x_{t-1}| / mean |x_t|, unitless) at which the gate
        has fallen to half of ``smoothing`` (the past counts half as much as on a still scene;
        see the module docstring), before the learned refinement.
    hidden : int
        Channels of the learned gate refinement.
    """

    def __init__(
        self,
        n_classes: int,
        smoothing: float = 0.6,
        change_threshold: float = 0.1,
        hidden: int = 8,
    ):
        super().__init__()
        if int(n_classes) != n_classes or n_classes < 2:
            raise ValueError(f"n_classes must be an integer >= 2, got {n_classes!r}")
        if not 0.0 < smoothing < 1.0:
            raise ValueError(f"smoothing must lie in (0, 1), got {smoothing}")
        if not change_threshold > 0:
            raise ValueError(
                f"change_threshold must be > 0 (relative change), got {change_threshold}"
            )
        self.n_classes = int(n_classes)
        bias = math.log(smoothing / (1.0 - smoothing))
        self.gate_bias = nn.Parameter(torch.tensor(float(bias)))
        # sigmoid(bias - slope * threshold) = smoothing / 2:
        # slope * threshold = logit(s) - logit(s / 2) = ln((2 - s) / (1 - s)).
        drop = math.log((2.0 - smoothing) / (1.0 - smoothing))
        self.change_slope = nn.Parameter(torch.tensor(drop / float(change_threshold)))
        self.refine = gate_refinement(3, hidden)

    def forward(self, logits: torch.Tensor, features: torch.Tensor, state=None):
        """One frame.

        Parameters
        ----------
        logits : torch.Tensor, (B, K, h, w)
            The segmenter's output for this frame.
        features : torch.Tensor, (B, C, h, w)
            The frame's input (barcodes); only their change over time is used.
        state : tuple of (Tensor (B, K, h, w), Tensor (B, C, h, w)) or None
            What the previous call returned (None: the first frame of a stream).

        Returns
        -------
        log_probabilities : torch.Tensor, (B, K, h, w)
            Smoothed class log-probabilities (argmax: the labels).
        state : tuple
            To pass with the next frame.
        """
        if logits.ndim != 4 or logits.shape[1] != self.n_classes:
            raise ValueError(
                f"logits must be (B, {self.n_classes}, h, w), got {tuple(logits.shape)}"
            )
        if (
            features.ndim != 4
            or features.shape[0] != logits.shape[0]
            or (features.shape[-2:] != logits.shape[-2:])
        ):
            raise ValueError(
                f"features must be (B, C, h, w) with B, h, w of the logits "
                f"{tuple(logits.shape)}, got {tuple(features.shape)}"
            )
        current = F.log_softmax(logits.float(), dim=1)
        features = features.float()
        if state is None or state[0].shape != current.shape or state[1].shape != features.shape:
            return current, (current, features)
        previous, previous_features = state
        change = (features - previous_features).abs().mean(1, keepdim=True) / (
            features.abs().mean(1, keepdim=True) + 1e-6
        )
        confidence = torch.cat(
            [change, current.exp().amax(1, keepdim=True), previous.exp().amax(1, keepdim=True)], 1
        )
        gate = torch.sigmoid(self.gate_bias - self.change_slope * change + self.refine(confidence))
        mixed = gate * previous + (1.0 - gate) * current
        # renormalise: a convex mix of log-probabilities is a log of a geometric mean
        mixed = F.log_softmax(mixed, dim=1)
        return mixed, (mixed, features)


def smooth_sequence(module, logits, features, state=None):
    """Run ``module`` (a GatedLogitSmoother or a TemporalEventModule) over a clip: logits
    (T, K, h, w), features (T, C, h, w) tensors -> smoothed log-probabilities (T, K, h, w) and
    the final state."""
    outputs = []
    for t in range(logits.shape[0]):
        out, state = module(logits[t : t + 1], features[t : t + 1], state)
        outputs.append(out)
    return torch.cat(outputs, 0), state


def fit_temporal(
    module,
    logits,
    features,
    labels,
    steps: int = 60,
    lr: float = 0.02,
    window: int = 6,
    consistency_weight: float = 1.0,
    seed: int = 0,
) -> list[float]:
    """Train the gate on a labelled clip by truncated back-propagation through time.

    Loss: cross-entropy of the smoothed output plus ``consistency_weight`` x the mean change
    of the output probabilities between consecutive frames where the truth does not change.
    The one-clip case of :func:`fit_temporal_clips` (the same draws and updates).

    Parameters
    ----------
    logits : torch.Tensor, (T, K, h, w)
        Per-frame segmenter outputs (fixed: the segmenter is not trained here).
    features : torch.Tensor, (T, C, h, w)
    labels : torch.Tensor, int (T, h, w)
        True class per pixel (negative: ignored).
    steps, lr, window : int, float, int
        Optimiser steps (Adam), learning rate, frames per truncated window (>= 2).

    Returns
    -------
    list of float
        Loss per step.
    """
    return fit_temporal_clips(
        module, [(logits, features, labels)], steps, lr, window, consistency_weight, seed
    )


def fit_temporal_clips(
    module,
    clips,
    steps: int = 60,
    lr: float = 0.02,
    window: int = 6,
    consistency_weight: float = 1.0,
    seed: int = 0,
    progress=None,
) -> list[float]:
    """Train a temporal module on several labelled clips (see :func:`fit_temporal`).

    Each step draws a clip (uniformly; no draw for a single clip), then a window of
    ``window`` consecutive frames inside it, so no window spans two clips (a cut).

    Parameters
    ----------
    module : GatedLogitSmoother or TemporalEventModule
    clips : sequence of (logits (T, K, h, w), features (T, C, h, w), labels int (T, h, w))
        Torch tensors on the module's device; ``T >= 2`` per clip (clips may differ in
        ``T``, ``h`` and ``w``).
    steps, lr, window, consistency_weight, seed
        As :func:`fit_temporal` (``window`` is clipped to the shortest clip).
    progress : callable or None
        Called with no argument after each step (e.g. a tqdm bar's ``update``).

    Returns
    -------
    list of float
        Loss per step.
    """
    clips = list(clips)
    if not clips:
        raise ValueError("fit_temporal_clips needs at least one (logits, features, labels) clip")
    for logits, features, labels in clips:
        if not (logits.shape[0] == features.shape[0] == labels.shape[0] >= 2):
            raise ValueError(
                "logits, features and labels need the same number of frames T >= 2, got "
                f"{logits.shape[0]}, {features.shape[0]}, {labels.shape[0]}"
            )
    window = max(2, min(int(window), min(clip[0].shape[0] for clip in clips)))
    generator = torch.Generator().manual_seed(seed)
    optimiser = torch.optim.Adam(module.parameters(), lr=lr)
    clips = [(lg.detach(), ft.detach(), lb.long()) for lg, ft, lb in clips]
    history = []
    for _ in range(int(steps)):
        index = 0
        if len(clips) > 1:
            index = int(torch.randint(0, len(clips), (1,), generator=generator))
        logits, features, labels = clips[index]
        start = int(torch.randint(0, logits.shape[0] - window + 1, (1,), generator=generator))
        chunk = slice(start, start + window)
        out, _ = smooth_sequence(module, logits[chunk], features[chunk])
        truth = labels[chunk]
        loss = F.nll_loss(out, truth, ignore_index=-1)
        probabilities = out.exp()
        still = (truth[1:] == truth[:-1]).unsqueeze(1).float()
        jitter = ((probabilities[1:] - probabilities[:-1]).abs() * still).sum(1).mean()
        loss = loss + consistency_weight * jitter
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        history.append(float(loss.detach()))
        if progress is not None:
            progress()
    return history


def label_flip_rate(predicted, truth) -> float:
    """Fraction of pixels whose predicted label changes between consecutive frames where the
    true label does not (0: perfectly stable).

    Parameters
    ----------
    predicted, truth : array_like, int (T, h, w), T >= 2
    """
    predicted, truth = np.asarray(predicted), np.asarray(truth)
    if predicted.shape != truth.shape or predicted.ndim != 3 or predicted.shape[0] < 2:
        raise ValueError(
            f"predicted and truth must both be (T >= 2, h, w), got {predicted.shape} and "
            f"{truth.shape}"
        )
    still = truth[1:] == truth[:-1]
    flips = (predicted[1:] != predicted[:-1]) & still
    return float(flips.sum() / max(int(still.sum()), 1))

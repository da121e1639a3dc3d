"""Fit a temporal module for a design bundle on labelled twin video (``hyplex temporal fit``).

The temporal modules (:class:`~hyplex.models.temporal.GatedLogitSmoother`,
:class:`~hyplex.models.temporal.TemporalEventModule`) are trained by truncated
back-propagation through time on clips with ground truth
(:func:`~hyplex.models.temporal.fit_temporal_clips`): cross-entropy of the smoothed output
plus the change of its probabilities where the truth is still. They smooth one segmenter's
logits, so a bundle's module is fitted on *that* segmenter's logits of twin clips seen through
*that* bundle's encoder::

    make_video (hyplex.simulation.video: moving sprites of the bundle's classes, occlusion,
                the light turning from the bundle's capture illuminant to A and falling x0.2
                over the clip, flicker 0.1)
      frame t: apparent reflectance R(x) shading(x) E_t(lambda) / E_capture(lambda)
               (the radiance over the capture light's E / pi: a dimmer or redder light
               reaches the encoder as such, as it reaches a camera normalised once by a
               white reference)
      --bundle.encoder() (filters, EMVA 1288 noise, white-reference normalisation)-->
               barcodes (T, F, H, W)        the module's features
      --bundle.segmenter-->  logits (T, K, H, W);  video.labels() -> truth (T, H, W)

One pixel of the twin frame is one metapixel (as in co-design training). The clips differ by
seed (``seed * 1000 + clip``); one further clip (``seed * 1000 + 999``) is held out and scored
(label flip rate, mIoU) for the segmenter alone, the untrained module and the fitted one.

The defaults follow the temporal block of ``benchmarks/learning_temporal_pretraining.py
--quick`` (16 frames of 48 x 64 metapixels, 4 objects at 0.3-1 px per frame, 60 steps,
windows of 6 frames), with the bundle's own segmenter instead of the benchmark's pixel
classifier and 4 clips instead of the first half of one.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass

import numpy as np
import torch

from hyplex.models.temporal import (
    build_temporal,
    fit_temporal_clips,
    label_flip_rate,
    mean_iou,
    smooth_sequence,
)

__all__ = ["TemporalClip", "TemporalFitSettings", "bundle_twin_clip", "fit_bundle_temporal"]


@dataclass
class TemporalFitSettings:
    """How a bundle's temporal module is fitted.

    Attributes
    ----------
    module : ``"tcl"`` or ``"gated"``.
    clips : labelled training clips (>= 1).
    frames : frames per clip (>= 2).
    shape : (H, W) of a clip, metapixels (one pixel = one barcode).
    steps, lr, window : optimiser steps (Adam), learning rate, frames per truncated window.
    n_objects : moving sprites per clip.
    speed_px : (low, high) sprite speed range, metapixels per frame.
    light_drop : illuminance at the clip's end over its start (the start is the bundle's
        capture light), in (0, 1].
    end_illuminant : illuminant name the light turns into over the clip (the start is the
        bundle's capture illuminant).
    seed : clips, sensor noise and training draws.
    heldout : score a held-out clip before and after fitting.
    """

    module: str = "tcl"
    clips: int = 4
    frames: int = 16
    shape: tuple = (48, 64)
    steps: int = 60
    lr: float = 0.02
    window: int = 6
    n_objects: int = 4
    speed_px: tuple = (0.3, 1.0)
    light_drop: float = 0.2
    end_illuminant: str = "A"
    seed: int = 0
    heldout: bool = True

    def __post_init__(self):
        if self.module not in ("tcl", "gated"):
            raise ValueError(f"module must be 'tcl' or 'gated', got {self.module!r}")
        for name, low in (("clips", 1), ("frames", 2), ("steps", 1), ("window", 2),
                          ("n_objects", 1)):  # fmt: skip
            value = getattr(self, name)
            if isinstance(value, bool) or int(value) != value or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        self.shape = tuple(int(v) for v in self.shape)
        if len(self.shape) != 2 or min(self.shape) < 8:
            raise ValueError(f"shape must be (H, W) with both >= 8 metapixels, got {self.shape}")
        if not 0.0 < self.light_drop <= 1.0:
            raise ValueError(f"light_drop must lie in (0, 1], got {self.light_drop}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")


@dataclass
class TemporalClip:
    """One labelled clip as a segmenter sees it.

    Attributes
    ----------
    logits : torch.Tensor, (T, K, H, W) float32, the segmenter's output per frame.
    features : torch.Tensor, (T, F, H, W) float32, the normalised barcodes.
    labels : torch.Tensor, int64 (T, H, W), the true class per pixel.
    """

    logits: torch.Tensor
    features: torch.Tensor
    labels: torch.Tensor


def _video_classes(class_names) -> tuple[tuple, tuple]:
    """``(classes, fake_classes)`` for :func:`make_video` that give ``class_names`` back."""
    from hyplex.simulation.scenes import class_names_for

    names = [str(c) for c in class_names]
    classes = tuple(n for n in names[1:] if not n.startswith("fake_"))
    fakes = tuple(n[len("fake_") :] for n in names if n.startswith("fake_"))
    if not names or names[0] != "background" or class_names_for(classes, fakes) != names:
        raise ValueError(
            f"the bundle's classes {names} are not ones the twin video draws (expected "
            "['background', materials..., 'fake_<material>'...], as hyplex design writes "
            "them); a temporal module cannot be fitted on twin clips for it"
        )
    return classes, fakes


def bundle_twin_clip(bundle, settings: TemporalFitSettings, seed: int, device="cpu"):
    """One labelled twin clip through ``bundle``'s encoder and segmenter (module doc).

    Parameters
    ----------
    bundle : a loaded :class:`~hyplex.models.bundle.DesignBundle`.
    settings : :class:`TemporalFitSettings` (frames, shape, objects, speeds, light).
    seed : int, the clip's scene and noise draws.
    device : where the segmenter runs and the tensors are returned.

    Returns
    -------
    TemporalClip
    """
    from hyplex.simulation.illuminants import get_illuminant
    from hyplex.simulation.video import make_video

    classes, fakes = _video_classes(bundle.class_names)
    fake_fraction = float(bundle.config.get("fake_fraction", 0.3)) if fakes else 0.0
    capture = bundle.capture
    grid = np.asarray(bundle.wavelengths_nm, np.float64)
    video = make_video(
        int(settings.frames),
        settings.shape,
        grid,
        n_objects=int(settings.n_objects),
        classes=classes,
        fake_classes=fakes,
        fake_fraction=fake_fraction,
        illuminants=(capture.illuminant, settings.end_illuminant),
        illuminance_lux=(
            capture.illuminance_lux,
            capture.illuminance_lux * float(settings.light_drop),
        ),
        speed_px=tuple(settings.speed_px),
        seed=int(seed),
    )
    if video.class_names != list(bundle.class_names):
        raise ValueError(f"twin video classes {video.class_names} != bundle {bundle.class_names}")
    reference = get_illuminant(
        capture.illuminant, grid, capture.illuminance_lux
    ).spectral_irradiance
    encoder = bundle.encoder().to(device)
    segmenter = copy.deepcopy(bundle.segmenter).to(device).eval()
    generator = torch.Generator(device=device).manual_seed(int(seed))
    features, logits = [], []
    with torch.no_grad():
        for t in range(video.n_frames):
            scene = video.frame(t)
            light = np.divide(
                scene.illuminant.spectral_irradiance,
                reference,
                out=np.zeros_like(reference),
                where=reference > 0,
            )
            cube = scene.reflectance * scene.shading[..., None] * light.astype(np.float32)
            cube = torch.from_numpy(np.ascontiguousarray(cube.transpose(2, 0, 1)))[None]
            barcodes = encoder(cube.float().to(device), generator=generator)
            barcodes = torch.nan_to_num(barcodes, nan=0.0, posinf=0.0, neginf=0.0)
            features.append(barcodes)
            logits.append(segmenter(barcodes).float())
    labels = torch.from_numpy(video.labels()["class_map"].astype(np.int64)).to(device)
    return TemporalClip(torch.cat(logits), torch.cat(features), labels)


def _score(module, clip: TemporalClip, n_classes: int) -> dict:
    """Flip rate and mIoU of ``module`` (None: the segmenter alone) on a clip, frames 1..T-1
    scored after the stream's first frame."""
    with torch.no_grad():
        if module is None:
            predicted = clip.logits.argmax(1)
        else:
            predicted = smooth_sequence(module, clip.logits, clip.features)[0].argmax(1)
    predicted, truth = predicted.cpu().numpy(), clip.labels.cpu().numpy()
    return {
        "flip_rate": round(label_flip_rate(predicted, truth), 5),
        "miou": round(float(mean_iou(predicted, truth, n_classes)), 5),
    }


def fit_bundle_temporal(bundle, settings: TemporalFitSettings, progress: bool = False):
    """Fit ``settings.module`` for ``bundle`` on twin clips (module doc); nothing is written.

    Parameters
    ----------
    bundle : a loaded :class:`~hyplex.models.bundle.DesignBundle`.
    settings : :class:`TemporalFitSettings`.
    progress : show tqdm bars (clips, steps).

    Returns
    -------
    (module, training, metrics)
        The fitted module (on the CPU, eval mode), the settings as a JSON-able dict with the
        loss at the first and last step and the seconds spent, and the held-out clip's
        ``{"segmenter"|"untrained"|"fitted": {"flip_rate", "miou"}}`` (empty without
        ``settings.heldout``).
    """
    import time

    from tqdm.auto import tqdm

    from hyplex.models.temporal.module_files import segmenter_sha256

    start = time.perf_counter()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    n_classes, n_filters = len(bundle.class_names), int(bundle.responses.shape[0])
    _video_classes(bundle.class_names)  # a clear error before any clip is drawn
    segmenter_hash = segmenter_sha256(bundle.segmenter)
    clips = []
    seeds = [int(settings.seed) * 1000 + k for k in range(int(settings.clips))]
    for seed in tqdm(seeds, desc="twin clips", unit="clip", disable=not progress):
        clips.append(bundle_twin_clip(bundle, settings, seed, device))
    torch.manual_seed(int(settings.seed))
    module = build_temporal(settings.module, n_classes, n_filters).to(device)
    untrained = copy.deepcopy(module).eval()
    bar = tqdm(total=int(settings.steps), desc=f"fit {settings.module}", unit="step",
               disable=not progress)  # fmt: skip
    with bar:
        losses = fit_temporal_clips(
            module,
            [(c.logits, c.features, c.labels) for c in clips],
            int(settings.steps),
            float(settings.lr),
            int(settings.window),
            seed=int(settings.seed),
            progress=bar.update,
        )
    module.eval()
    metrics = {}
    if settings.heldout:
        heldout = bundle_twin_clip(bundle, settings, int(settings.seed) * 1000 + 999, device)
        metrics = {
            "segmenter": _score(None, heldout, n_classes),
            "untrained": _score(untrained, heldout, n_classes),
            "fitted": _score(module, heldout, n_classes),
        }
    training = {
        **{k: list(v) if isinstance(v, tuple) else v for k, v in asdict(settings).items()},
        "loss_first": round(losses[0], 5),
        "loss_last": round(losses[-1], 5),
        "seconds": round(time.perf_counter() - start, 2),
        "clip_seeds": seeds,
        "segmenter_sha256": segmenter_hash,
        "n_filters": n_filters,
    }
    return module.to("cpu"), training, metrics

"""Models for the engine: loading them from files, and quick fits on the camera twin.

The engine takes any ``nn.Module`` with the forward ``(B, C, h, w) -> (B, out, h, w)``. They
come from

- a design bundle (``hyplex.models.bundle.load_bundle``, when that module is installed);
- decoder files: safetensors weights plus a JSON config naming a registered architecture
  (:func:`load_module`, format in :mod:`hyplex.pipeline.model_files`); pickles, TorchScript
  and ``torch.export`` archives are refused, since loading them can run code;
- :func:`twin_models`: no weights can be downloaded, so for the simulated camera a ridge
  linear decoder (barcode -> spectrum, closed form) and a per-metapixel classifier (a small
  1x1-convolution MLP, a few hundred Adam steps) are fitted on a few frames of the twin
  against the synthetic ground truth. Seconds on a CPU; enough for a live demo and tests.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from hyplex.pipeline.stages import Preprocessor, labels_at_metapixels, metapixel_centres_px
from hyplex.simulation.camera import scene_index


def load_module(path, role: str | None = None) -> nn.Module:
    """A decoder from ``NAME.safetensors`` + ``NAME.json``, on the CPU in eval mode.

    ``role`` (``"reconstructor"``, ``"segmenter"`` or None) is the option the file was given
    to. Any other format (``torch.save`` pickles, TorchScript, ``.pt2``) raises a
    :class:`~hyplex.pipeline.model_files.ModelFileError` (a ValueError) that names the accepted
    format and ``hyplex convert-weights``; see :func:`hyplex.pipeline.model_files.load_decoder`.
    """
    from hyplex.pipeline.model_files import load_decoder

    return load_decoder(path, role)


def load_bundle_models(path, profile: str | None = None) -> dict:
    """Reconstructor, segmenter and metadata of a design bundle (``hyplex.models.bundle``).

    ``profile`` (``"full"``, ``"realtime"`` or None: either) is the decoder profile the
    caller needs; a bundle of the other profile is a ``BundleError`` (a ValueError) naming both.

    Returns a dict with keys ``reconstructor``, ``segmenter`` (modules or None) and whatever of
    ``wavelengths_nm``, ``class_names``, ``input_scale_dn`` the bundle carries.
    """
    try:
        from hyplex.models.bundle import load_bundle
    except ImportError as error:
        raise ImportError(
            f"design bundles need hyplex.models.bundle, which is not available ({error}); "
            "give --reconstructor/--segmenter model files instead"
        ) from None
    bundle = load_bundle(path, profile=profile)

    def pick(*names):
        for name in names:
            value = bundle.get(name) if isinstance(bundle, dict) else getattr(bundle, name, None)
            if value is not None:
                return value
        return None

    return {
        "reconstructor": pick("reconstructor", "reconstruction", "decoder"),
        "segmenter": pick("segmenter", "segmentation"),
        "wavelengths_nm": pick("wavelengths_nm", "wavelengths"),
        "class_names": pick("class_names"),
        "input_scale_dn": pick("input_scale_dn"),
    }


class PixelClassifier(nn.Module):
    """Per-metapixel classifier ``C -> hidden -> hidden -> K`` (ReLU), applied at every pixel
    of (B, C, h, w) (1x1 convolutions written as linear layers over the channel axis).
    ``config`` holds the constructor's arguments (the ``pixel_classifier`` decoder file)."""

    def __init__(self, in_channels: int, n_classes: int, hidden: int = 32):
        super().__init__()
        for key, value in {"in_channels": in_channels, "n_classes": n_classes,
                           "hidden": hidden}.items():  # fmt: skip
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
                raise ValueError(f"{key} must be an integer >= 1, got {value!r}")
        in_channels, n_classes, hidden = int(in_channels), int(n_classes), int(hidden)
        self.config = {"in_channels": in_channels, "n_classes": n_classes, "hidden": hidden}
        self.layers = nn.Sequential(
            nn.Linear(in_channels, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, n_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def fit_linear_reconstructor(barcodes, spectra, input_scale_dn: float, ridge: float = 1e-3):
    """Ridge regression barcode -> spectrum as a 1x1 convolution (closed form).

    Parameters
    ----------
    barcodes : numpy.ndarray, (N, n_filters) DN
    spectra : numpy.ndarray, (N, L)
        Target spectra (any unit; the decoder outputs that unit).
    input_scale_dn : float
        The engine's input scale (the decoder sees barcodes / input_scale_dn).
    ridge : float
        Tikhonov weight relative to the mean diagonal of the normal matrix.
    """
    x = np.asarray(barcodes, np.float64) / input_scale_dn
    y = np.asarray(spectra, np.float64)
    keep = np.isfinite(x).all(1) & np.isfinite(y).all(1)
    x, y = x[keep], y[keep]
    if x.shape[0] < x.shape[1] + 1:
        raise ValueError(f"need at least {x.shape[1] + 1} finite samples, got {x.shape[0]}")
    design = np.hstack([x, np.ones((x.shape[0], 1))])
    normal = design.T @ design
    normal += ridge * np.trace(normal) / normal.shape[0] * np.eye(normal.shape[0])
    weights = np.linalg.solve(normal, design.T @ y)  # (n + 1, L)
    layer = nn.Conv2d(x.shape[1], y.shape[1], 1)
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(weights[:-1].T.astype(np.float32))[..., None, None])
        layer.bias.copy_(torch.from_numpy(weights[-1].astype(np.float32)))
    return layer.eval()


def fit_pixel_classifier(
    barcodes,
    labels,
    n_classes: int,
    input_scale_dn: float,
    steps: int = 200,
    hidden: int = 32,
    seed: int = 0,
) -> PixelClassifier:
    """Train a :class:`PixelClassifier` on barcodes (N, h, w, n) DN and labels (N, h, w)."""
    torch.manual_seed(seed)
    x = np.nan_to_num(np.asarray(barcodes, np.float32) / np.float32(input_scale_dn))
    x = torch.from_numpy(x).permute(0, 3, 1, 2)
    y = torch.from_numpy(np.asarray(labels, np.int64))
    model = PixelClassifier(x.shape[1], n_classes, hidden)
    optimiser = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(int(steps)):
        loss = nn.functional.cross_entropy(model(x), y)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return model.eval()


@dataclass
class TwinModels:
    """Models fitted on the twin, and what the engine needs to run them."""

    reconstructor: nn.Module
    segmenter: nn.Module
    input_scale_dn: float
    wavelengths_nm: np.ndarray
    class_names: list


def twin_training_set(camera, video, preprocessor: Preprocessor, frames) -> dict:
    """Barcodes, true spectra and labels at the metapixels for ``frames`` of ``video``.

    ``camera`` is a :class:`~hyplex.devices.sim_camera.SimulatedCamera` looking at ``video``
    (its ``render_raw(t)`` gives frame t); spectra are the scene radiance at each metapixel
    centre (W m^-2 sr^-1 nm^-1), labels the scene class there.
    """
    extractor = preprocessor.extractor
    centres = metapixel_centres_px(extractor).astype(int)
    height, width = extractor.sensor_shape
    barcodes, spectra, labels = [], [], []
    for t in frames:
        scene = video.frame(int(t) % video.n_frames)
        raw = camera.render_raw(int(t))
        barcodes.append(preprocessor(raw))
        rows = scene_index(height, scene.shape[0])[np.clip(centres[..., 0], 0, height - 1)]
        cols = scene_index(width, scene.shape[1])[np.clip(centres[..., 1], 0, width - 1)]
        spectra.append(scene.radiance[rows, cols])
        labels.append(labels_at_metapixels(scene.class_map, extractor))
    return {
        "barcodes": np.stack(barcodes),
        "spectra": np.stack(spectra),
        "labels": np.stack(labels),
    }


def twin_models(
    camera, video, preprocessor: Preprocessor, frames=(0, 1, 2, 3), steps: int = 200, seed: int = 0
) -> TwinModels:
    """Fit :func:`fit_linear_reconstructor` and :func:`fit_pixel_classifier` on the twin."""
    data = twin_training_set(camera, video, preprocessor, frames)
    finite = data["barcodes"][np.isfinite(data["barcodes"])]
    scale = float(np.median(finite)) if finite.size else 1.0
    scale = scale if scale > 0 else 1.0
    n = data["barcodes"].shape[-1]
    reconstructor = fit_linear_reconstructor(
        data["barcodes"].reshape(-1, n),
        data["spectra"].reshape(-1, data["spectra"].shape[-1]),
        scale,
    )
    segmenter = fit_pixel_classifier(
        data["barcodes"], data["labels"], len(video.class_names), scale, steps, seed=seed
    )
    return TwinModels(
        reconstructor, segmenter, scale, np.asarray(video.wavelengths_nm), list(video.class_names)
    )

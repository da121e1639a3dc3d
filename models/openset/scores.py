"""The open-set score interface, the two post-hoc baselines and the registry of methods.

Convention (pytorch-ood, K. Kirchheim et al., "PyTorch-OOD: A Library for Out-of-Distribution
Detection based on PyTorch", CVPR Workshops 2022): a detector is an object with ``fit`` and
``predict``, and its score is **larger for outliers**. Here every score is per pixel::

    score(model, barcodes (B, F, H, W)) -> (B, H, W) float32, higher = more unknown

Baselines on the segmenter's logits ``z (B, K, H, W)``:

* maximum softmax probability, MSP (D. Hendrycks, K. Gimpel, "A Baseline for Detecting
  Misclassified and Out-of-Distribution Examples in Neural Networks", ICLR 2017)::

      S_MSP(x) = -max_k softmax(z)_k                      in [-1, -1/K]

* energy (W. Liu, X. Wang, J. Owens, Y. Li, "Energy-based Out-of-distribution Detection",
  NeurIPS 2020, eq. (1) and (4): E(x; f) = -T log sum_k exp(f_k(x) / T))::

      S_energy(x) = E(x; f) = -T logsumexp(z / T)

  (pytorch-ood's ``EnergyBased`` returns the same sign: larger energy = more outlying).

A deployed head also carries the threshold at 95 % TPR on held-out in-distribution pixels
(:func:`hyplex.models.openset.metrics.threshold_at_tpr`) and a score scale, so that
:meth:`OpenSetDetector.unknown_probability` maps a score to ``sigmoid((s - t) / scale)``:
0.5 exactly at the threshold. That is a monotone squashing for maps and overlays, *not* a
calibrated posterior.

Registry: :data:`METHODS` maps each method's name to ``"module:Class"`` and is resolved lazily
by :func:`detector_class` (an immutable table, no import-time registration side effects).
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Mapping
from types import MappingProxyType

import torch
from torch import nn

__all__ = [
    "METHODS",
    "OpenSetDetector",
    "MaxSoftmaxDetector",
    "EnergyDetector",
    "as_barcode_batch",
    "msp_score",
    "energy_score",
    "score",
    "detector_class",
    "build_detector",
]

#: method name -> "module:Class" of its detector (resolved on first use).
METHODS: Mapping[str, str] = MappingProxyType(
    {
        "MSP": "hyplex.models.openset.scores:MaxSoftmaxDetector",
        "energy": "hyplex.models.openset.scores:EnergyDetector",
        "OE": "hyplex.models.openset.outlier_exposure:OutlierExposureDetector",
        "DOE": "hyplex.models.openset.implicit_outlier_transformation:"
        "ImplicitOutlierTransformationDetector",
        "DAL": "hyplex.models.openset.distribution_augmentation:DistributionAugmentationDetector",
        "ATOL": "hyplex.models.openset.unreliable_sources:UnreliableSourcesDetector",
        "Watermarking": "hyplex.models.openset.watermarking:WatermarkingDetector",
        "CEDL": "hyplex.models.openset.centre_discriminative:CentreDiscriminativeDetector",
        "NSReg": "hyplex.models.openset.normal_structure:NormalStructureDetector",
        "BCE": "hyplex.models.openset.centre_discriminative:BCEAnomalyDetector",
        "ACT": "hyplex.models.openset.contrastive_alignment:ContrastiveAlignmentDetector",
    }
)


def as_barcode_batch(barcodes, model: nn.Module | None = None) -> torch.Tensor:
    """Validate barcode maps ``(B, F, H, W)`` (a single ``(F, H, W)`` map gets ``B = 1``).

    Parameters
    ----------
    barcodes : torch.Tensor or array_like, (B, F, H, W) or (F, H, W)
        Normalised barcodes (unitless, O(1)).
    model : torch.nn.Module, optional
        The segmenter: with an ``in_channels`` attribute ``F`` must match it; the result is
        moved to the model's device and dtype.

    Returns
    -------
    torch.Tensor, (B, F, H, W)
    """
    x = torch.as_tensor(barcodes)
    if x.ndim == 3:
        x = x.unsqueeze(0)
    if x.ndim != 4 or not (x.is_floating_point() or x.dtype in (torch.int32, torch.int64)):
        raise ValueError(
            f"barcodes must be a real (B, F, H, W) array of barcode maps; got shape "
            f"{tuple(x.shape)} and dtype {x.dtype}"
        )
    if model is not None:
        channels = getattr(model, "in_channels", None)
        if channels is not None and x.shape[1] != int(channels):
            raise ValueError(
                f"barcodes have {x.shape[1]} channels but the segmenter reads {channels} "
                "(one per encoder filter): mismatched channel counts"
            )
        parameter = next(model.parameters(), None)
        if parameter is not None:
            x = x.to(device=parameter.device, dtype=parameter.dtype)
    return x


def _check_logits(logits: torch.Tensor) -> torch.Tensor:
    if not isinstance(logits, torch.Tensor) or logits.ndim != 4 or logits.shape[1] < 2:
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits)
        raise ValueError(f"logits must be a (B, K >= 2, H, W) tensor; got {shape}")
    return logits


def msp_score(logits: torch.Tensor) -> torch.Tensor:
    """Negative maximum softmax probability, ``(B, K, H, W) -> (B, H, W)`` in [-1, -1/K]."""
    return -torch.softmax(_check_logits(logits).float(), dim=1).amax(dim=1)


def energy_score(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Free energy ``-T logsumexp(z / T)`` over classes, ``(B, K, H, W) -> (B, H, W)``
    (Liu et al. 2020, eq. (4)); ``temperature`` ``T > 0`` is unitless."""
    if not (
        isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0
    ):
        raise ValueError(f"temperature must be a finite number > 0; got {temperature!r}")
    z = _check_logits(logits).float()
    return -temperature * torch.logsumexp(z / temperature, dim=1)


class OpenSetDetector:
    """Base of every open-set method (pytorch-ood convention: ``fit``, ``predict``).

    Parameters
    ----------
    model : torch.nn.Module
        A segmenter ``(B, F, H, W) -> logits (B, K, H, W)`` (a bundle's ``segmenter``). Methods
        that fine-tune it (:attr:`trains_segmenter`) change its weights in place.
    **options
        The method's hyper-parameters (JSON-able scalars), kept in :attr:`options`.

    Attributes
    ----------
    threshold : float or None
        Score at 95 % TPR on held-out ID pixels (set by :meth:`calibrate`).
    score_scale : float or None
        Spread (interquartile range / 1.349) of held-out ID scores, for
        :meth:`unknown_probability`.

    Subclasses set ``method`` (the registry key) and override :meth:`fit` and
    :meth:`scores_from` (or :meth:`segment`); modules of their own (heads, watermarks) are
    returned by :meth:`head_modules` so that they are saved and moved with the detector.
    """

    method = "base"
    trains_segmenter = False

    def __init__(self, model: nn.Module, **options):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module segmenter; got {type(model)}")
        self.model = model
        self.options = dict(options)
        self.threshold: float | None = None
        self.score_scale: float | None = None
        self.history: list[dict] = []

    # --- the two calls of the convention -------------------------------------------------
    def fit(self, data, *, seed: int = 0, progress: bool = False, **kwargs) -> OpenSetDetector:
        """Train the method on :class:`~hyplex.models.openset.auxiliary.OpenSetData`; post-hoc
        scores need no training. Returns ``self``."""
        return self

    @torch.no_grad()
    def predict(self, barcodes) -> torch.Tensor:
        """Unknown score per pixel, ``(B, F, H, W) -> (B, H, W)`` float32, higher = more
        unknown (the model is put in eval mode)."""
        return self.segment(barcodes)[1]

    # --- what subclasses customise ---------------------------------------------------------
    def segment(self, barcodes) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits (B, K, H, W), scores (B, H, W))`` in one pass (used by the pipeline)."""
        self.model.eval()
        x = as_barcode_batch(barcodes, self.model)
        logits = self.model(x)
        return logits, self.scores_from(logits, x)

    def scores_from(self, logits: torch.Tensor, barcodes: torch.Tensor) -> torch.Tensor:
        """The method's score from the segmenter's logits (and inputs); default MSP."""
        return msp_score(logits)

    def head_modules(self) -> dict[str, nn.Module]:
        """Modules the method owns besides the segmenter (saved as ``<name>.*`` tensors)."""
        return {}

    # --- deployment ---------------------------------------------------------------------------
    @torch.no_grad()
    def calibrate(self, heldout_barcodes, valid=None, tpr: float = 0.95) -> float:
        """Set :attr:`threshold` at ``tpr`` of held-out ID pixels and :attr:`score_scale`.

        Parameters
        ----------
        heldout_barcodes : (N, F, H, W) barcodes of held-out in-distribution scenes.
        valid : (N, H, W) bool, optional
            Pixels to use (default all; pass ``labels >= 0`` to drop unknown ones).
        tpr : fraction of ID pixels to accept (score <= threshold), in (0, 1).

        Returns
        -------
        float, the threshold.
        """
        from hyplex.models.openset.metrics import threshold_at_tpr

        scores = self.predict(heldout_barcodes).cpu()
        if valid is not None:
            valid = torch.as_tensor(valid, dtype=torch.bool).cpu()
            if valid.shape != scores.shape:
                raise ValueError(f"valid must have shape {tuple(scores.shape)}; got {valid.shape}")
            scores = scores[valid]
        values = scores.reshape(-1).double().numpy()
        self.threshold = threshold_at_tpr(values, tpr)
        q25, q75 = torch.quantile(
            torch.as_tensor(values), torch.tensor([0.25, 0.75], dtype=torch.float64)
        )
        self.score_scale = max(float(q75 - q25) / 1.349, 1e-6)
        return self.threshold

    def unknown_probability(self, scores: torch.Tensor) -> torch.Tensor:
        """``sigmoid((score - threshold) / score_scale)``, (B, H, W) in (0, 1); 0.5 at the
        95 %-TPR threshold (a monotone map of the score, not a calibrated posterior)."""
        if self.threshold is None or self.score_scale is None:
            raise ValueError(f"the {self.method} detector is not calibrated: call calibrate()")
        return torch.sigmoid((scores.float() - self.threshold) / self.score_scale)

    def to(self, device) -> OpenSetDetector:
        """Move the segmenter and the method's modules to ``device``; returns ``self``."""
        self.model.to(device)
        for module in self.head_modules().values():
            module.to(device)
        return self

    def config(self) -> dict:
        """JSON-able record: method, options, threshold, score scale."""
        return {
            "method": self.method,
            "options": dict(self.options),
            "threshold": self.threshold,
            "score_scale": self.score_scale,
            "trains_segmenter": self.trains_segmenter,
        }

    def tensors(self) -> dict[str, torch.Tensor]:
        """The detector's weights for safetensors: ``segmenter.*`` when it fine-tunes the
        segmenter, ``<head>.*`` for each of :meth:`head_modules`."""
        out = {}
        parts = dict(self.head_modules())
        if self.trains_segmenter:
            parts["segmenter"] = self.model
        for prefix, module in parts.items():
            for name, value in module.state_dict().items():
                out[f"{prefix}.{name}"] = value.detach().cpu().contiguous()
        return out

    def load_tensors(self, tensors: Mapping[str, torch.Tensor]) -> None:
        """Load what :meth:`tensors` wrote (strict: every key must be present and fit)."""
        parts = dict(self.head_modules())
        if self.trains_segmenter:
            parts["segmenter"] = self.model
        expected = {f"{p}." for p in parts}
        stray = [k for k in tensors if not any(k.startswith(e) for e in expected)]
        if stray:
            raise ValueError(f"unexpected tensors for the {self.method} head: {stray[:5]}")
        for prefix, module in parts.items():
            state = {
                k[len(prefix) + 1 :]: v for k, v in tensors.items() if k.startswith(prefix + ".")
            }
            module.load_state_dict(state)

    def restore(self, config: Mapping, tensors: Mapping[str, torch.Tensor]) -> OpenSetDetector:
        """Set threshold and scale from :meth:`config` and weights from :meth:`tensors`."""
        self.threshold = config.get("threshold")
        self.score_scale = config.get("score_scale")
        self.load_tensors(tensors)
        return self


class MaxSoftmaxDetector(OpenSetDetector):
    """MSP baseline (Hendrycks & Gimpel 2017): ``-max softmax``, no training."""

    method = "MSP"

    def scores_from(self, logits, barcodes):
        return msp_score(logits)


class EnergyDetector(OpenSetDetector):
    """Energy baseline (Liu et al. 2020, eq. (4)); option ``temperature`` (default 1)."""

    method = "energy"

    def scores_from(self, logits, barcodes):
        return energy_score(logits, float(self.options.get("temperature", 1.0)))


@torch.no_grad()
def score(model: nn.Module, barcodes, method: str = "MSP") -> torch.Tensor:
    """Post-hoc unknown score of a segmenter, ``(B, F, H, W) -> (B, H, W)``, higher = more
    unknown; ``method`` is ``"MSP"`` or ``"energy"`` (trained methods: :func:`build_detector`
    then ``fit``)."""
    if method not in ("MSP", "energy"):
        raise ValueError(f"score() computes the post-hoc 'MSP' or 'energy'; got {method!r}")
    return build_detector(method, model).predict(barcodes)


def detector_class(name: str) -> type[OpenSetDetector]:
    """The detector class registered under ``name`` (a key of :data:`METHODS`)."""
    if name not in METHODS:
        raise ValueError(f"unknown open-set method {name!r}; choose from {sorted(METHODS)}")
    module_name, _, attribute = METHODS[name].partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name != module_name:  # the module exists but something it imports does not
            raise
        raise ValueError(
            f"open-set method {name!r} is not available in this hyplex ({module_name}: {error})"
        ) from None
    return getattr(module, attribute)


def build_detector(name: str, model: nn.Module, **options) -> OpenSetDetector:
    """A detector of method ``name`` around segmenter ``model`` with ``options``."""
    return detector_class(name)(model, **options)

"""Pixel anomaly heads on barcodes, and the plain BCE head that CEDL and NSReg are measured
against.

An anomaly head reads one metapixel barcode (``C`` filter values, ``C = 9`` for Hyplex) and
returns a score that is larger for anomalies (pytorch-ood's convention). It is trained, apart
from the segmenter, on barcodes of the known materials (label 0) and of *seen* anomalies
(label 1: auxiliary outlier materials of the twin, GenIAS spectra); its test is on *unseen*
anomaly types. Every head shares one representation network::

    barcode x (C,) --shape: x / mean(x)--> standardise (mu, sd of the normal training set)
                   --MLP (C -> hidden -> hidden -> D)--> representation r (D,)
                   --head--> logit s(r);  p(anomaly) = sigmoid(s)

The division by the barcode's mean removes shading and exposure (a barcode is proportional
to the light on the surface), so a head decides from the spectral shape of the material.
:class:`BCEAnomalyHead` is the plain supervised baseline: a linear logit ``s = w . r + b``
trained with binary cross-entropy. Its decision region for "normal" is a half-space, so an
unseen anomaly type that falls on the normal side of the seen anomalies' hyperplane is
missed: that is the failure that CEDL (:mod:`.centre_discriminative`) and NSReg
(:mod:`.normal_structure`) address.

Heads take barcodes as points ``(N, C)`` or maps ``(B, C, H, W)`` (numpy or torch, any real
dtype) and score them as ``(N,)`` or ``(B, H, W)``. Training is deterministic for a seed on
a given device; it runs on CUDA when the head has been moved there.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hyplex.models.openset.scores import OpenSetDetector

__all__ = [
    "AnomalyHead",
    "AnomalyHeadDetector",
    "BCEAnomalyDetector",
    "head_features",
    "openset_anomaly_labels",
    "AnomalyHeadTraining",
    "BCEAnomalyHead",
    "as_points",
    "balanced_batches",
    "default_device",
    "fit_anomaly_head",
    "representation_network",
    "scene_points",
]


def default_device() -> torch.device:
    """CUDA when present, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def as_points(barcodes, in_channels: int, name: str = "barcodes") -> tuple[torch.Tensor, tuple]:
    """Barcodes as float32 points ``(N, C)`` plus the shape to restore scores to.

    Parameters
    ----------
    barcodes : array_like or torch.Tensor, (N, C) or (B, C, H, W)
        Metapixel barcodes (any positive unit: photo-electrons, digital numbers, normalised).
    in_channels : int
        Expected ``C``.
    name : str
        Argument name for error messages.

    Returns
    -------
    points : torch.Tensor, (N', C) float32
    score_shape : tuple
        ``(N,)`` or ``(B, H, W)``: the shape of the per-pixel scores.
    """
    x = barcodes if isinstance(barcodes, torch.Tensor) else torch.as_tensor(np.asarray(barcodes))
    if not (
        x.is_floating_point() or x.dtype in (torch.uint8, torch.int16, torch.int32, torch.int64)
    ):
        raise ValueError(f"{name} must be real numbers; got dtype {x.dtype}")
    if x.ndim == 2:
        if x.shape[1] != in_channels:
            raise ValueError(f"{name} must be (N, C={in_channels}); got {tuple(x.shape)}")
        return x.float(), (x.shape[0],)
    if x.ndim == 4:
        if x.shape[1] != in_channels:
            raise ValueError(
                f"{name} must be (B, C={in_channels}, H, W); got {tuple(x.shape)} "
                f"({x.shape[1]} channels)"
            )
        b, c, h, w = x.shape
        return x.float().permute(0, 2, 3, 1).reshape(-1, c), (b, h, w)
    raise ValueError(f"{name} must be (N, C) points or (B, C, H, W) maps; got {tuple(x.shape)}")


def scene_points(barcodes, anomaly_labels, in_channels: int):
    """Pixels of labelled scenes: barcodes ``(N, C)`` and labels ``(N,)`` (0, 1 or -1).

    ``barcodes`` (B, C, H, W) and ``anomaly_labels`` (B, H, W); see
    :meth:`AnomalyHead.fit_scenes`.
    """
    points, shape = as_points(barcodes, in_channels)
    if len(shape) != 3:
        raise ValueError("barcodes must be scene maps (B, C, H, W) here")
    labels = torch.as_tensor(np.asarray(anomaly_labels)).long()
    if tuple(labels.shape) != tuple(shape):
        raise ValueError(
            f"anomaly_labels must have shape (B, H, W) = {tuple(shape)}; got {tuple(labels.shape)}"
        )
    if not bool(torch.isin(labels, torch.tensor([-1, 0, 1])).all()):
        raise ValueError("anomaly_labels must hold 0 (normal), 1 (anomaly) or -1 (ignore)")
    return points, labels.reshape(-1)


def representation_network(in_channels: int, hidden: int, embedding_dim: int) -> nn.Sequential:
    """The per-barcode MLP ``C -> hidden -> hidden -> D`` (ReLU between layers)."""
    return nn.Sequential(
        nn.Linear(in_channels, hidden),
        nn.ReLU(),
        nn.Linear(hidden, hidden),
        nn.ReLU(),
        nn.Linear(hidden, embedding_dim),
    )


class AnomalyHead(nn.Module):
    """Base of the barcode anomaly heads: shape normalisation, standardisation, MLP.

    Subclasses define :meth:`logit` (``(N, D) -> (N,)``, larger = more anomalous) and may add
    a regulariser to :meth:`loss`.

    Parameters
    ----------
    in_channels : int
        Barcode length ``C`` (9 for Hyplex).
    hidden : int
        Width of the MLP's hidden layers.
    embedding_dim : int
        Dimension ``D`` of the representation.
    shape_normalise : bool
        Divide each input by its mean first (inputs are raw barcodes). False when the inputs
        are already features (:func:`head_features`): they are only standardised.
    """

    def __init__(
        self,
        in_channels: int,
        hidden: int = 64,
        embedding_dim: int = 16,
        shape_normalise: bool = True,
    ):
        super().__init__()
        for key, value in {
            "in_channels": in_channels,
            "hidden": hidden,
            "embedding_dim": embedding_dim,
        }.items():
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{key} must be a positive int; got {value!r}")
        self.in_channels, self.embedding_dim = int(in_channels), int(embedding_dim)
        self.shape_normalise = bool(shape_normalise)
        self.config = {
            "in_channels": int(in_channels),
            "hidden": int(hidden),
            "embedding_dim": int(embedding_dim),
            "shape_normalise": bool(shape_normalise),
        }
        self.register_buffer("input_mean", torch.zeros(in_channels))
        self.register_buffer("input_std", torch.ones(in_channels))
        self.network = representation_network(in_channels, hidden, embedding_dim)

    @staticmethod
    def spectral_shape(points: torch.Tensor) -> torch.Tensor:
        """``x / mean(x)`` per barcode (shading- and exposure-free), ``(N, C)``."""
        return points / points.mean(dim=1, keepdim=True).clamp_min(1e-6)

    def prepare(self, points: torch.Tensor) -> torch.Tensor:
        """The spectral shape of barcodes, or feature points unchanged (``shape_normalise``)."""
        return self.spectral_shape(points) if self.shape_normalise else points

    @torch.no_grad()
    def fit_normalisation(self, normal_points: torch.Tensor) -> None:
        """Set the standardisation from normal barcodes ``(N, C)``."""
        shape = self.prepare(normal_points.to(self.input_mean.device))
        self.input_mean.copy_(shape.mean(0))
        self.input_std.copy_(shape.std(0).clamp_min(1e-4))

    def represent(self, points: torch.Tensor) -> torch.Tensor:
        """Representations ``(N, D)`` of barcodes ``(N, C)``."""
        shape = self.prepare(points)
        return self.network((shape - self.input_mean) / self.input_std)

    def logit(self, representation: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        """Anomaly logits ``(N,)`` of barcodes ``(N, C)``."""
        return self.logit(self.represent(points))

    def loss(self, points: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Binary cross-entropy of the head's logits against anomaly labels.

        Parameters
        ----------
        points : torch.Tensor, (N, C)
            Barcodes (or head features), unitless.
        labels : torch.Tensor, (N,)
            1 = anomaly, 0 = normal (any dtype; cast to float).

        Returns
        -------
        torch.Tensor, a scalar: the mean BCE over the ``N`` points, nats.
        """
        return F.binary_cross_entropy_with_logits(self(points), labels.float())

    @torch.no_grad()
    def predict(self, barcodes, batch_size: int = 65536) -> torch.Tensor:
        """Anomaly scores (larger = more anomalous) of barcodes.

        Parameters
        ----------
        barcodes : array_like or torch.Tensor, (N, C) or (B, C, H, W)

        Returns
        -------
        torch.Tensor, (N,) or (B, H, W), float32, on CPU
            The logit ``s`` (``sigmoid(s)`` is the anomaly probability).
        """
        points, shape = as_points(barcodes, self.in_channels)
        device = self.input_mean.device
        was_training = self.training
        self.eval()
        scores = torch.cat(
            [self(chunk.to(device)).cpu() for chunk in points.split(batch_size)] or [torch.zeros(0)]
        )
        self.train(was_training)
        return scores.reshape(shape)

    def fit(self, normal, anomalies, training: AnomalyHeadTraining | None = None) -> list[float]:
        """Train on normal and seen-anomaly barcodes (see :func:`fit_anomaly_head`)."""
        return fit_anomaly_head(self, normal, anomalies, training)

    def fit_scenes(self, barcodes, anomaly_labels, training: AnomalyHeadTraining | None = None):
        """Train on labelled scenes.

        Parameters
        ----------
        barcodes : array_like, (B, C, H, W)
            Barcode maps of twin scenes.
        anomaly_labels : array_like of int, (B, H, W)
            0 = known material (normal), 1 = seen anomaly, -1 = ignore.
        training : AnomalyHeadTraining, optional

        Returns
        -------
        list of float
            The loss at every step.
        """
        points, labels = scene_points(barcodes, anomaly_labels, self.in_channels)
        return fit_anomaly_head(self, points[labels == 0], points[labels == 1], training)


class BCEAnomalyHead(AnomalyHead):
    """The plain supervised anomaly head: a linear logit ``s = w . r + b`` with BCE."""

    def __init__(
        self,
        in_channels: int,
        hidden: int = 64,
        embedding_dim: int = 16,
        shape_normalise: bool = True,
    ):
        super().__init__(in_channels, hidden, embedding_dim, shape_normalise)
        self.linear = nn.Linear(embedding_dim, 1)

    def logit(self, representation: torch.Tensor) -> torch.Tensor:
        return self.linear(representation).squeeze(-1)


@dataclass(frozen=True)
class AnomalyHeadTraining:
    """Optimisation settings of an anomaly head.

    Attributes
    ----------
    steps : int
        Adam steps.
    batch_size : int
        Barcodes per step, half normal and half anomalous (balanced batches).
    learning_rate : float
        Adam learning rate.
    weight_decay : float
        L2 weight decay of Adam.
    seed : int
        Seeds the parameter initialisation and the batch draws.
    progress : bool
        Show a tqdm bar.
    """

    steps: int = 400
    batch_size: int = 512
    learning_rate: float = 3e-3
    weight_decay: float = 0.0
    seed: int = 0
    progress: bool = False

    def __post_init__(self):
        if self.steps < 1 or self.batch_size < 2 or self.learning_rate <= 0:
            raise ValueError(
                "AnomalyHeadTraining needs steps >= 1, batch_size >= 2 and learning_rate > 0; "
                f"got steps={self.steps}, batch_size={self.batch_size}, "
                f"learning_rate={self.learning_rate}"
            )


def balanced_batches(n_normal: int, n_anomalous: int, batch_size: int, generator):
    """Indices of one balanced batch: ``batch_size // 2`` normal and the rest anomalous."""
    half = batch_size // 2
    normal = torch.randint(n_normal, (half,), generator=generator)
    anomalous = torch.randint(n_anomalous, (batch_size - half,), generator=generator)
    return normal, anomalous


def _reinitialise(module: nn.Module, seed: int) -> None:
    """Deterministic parameter initialisation of ``module`` from ``seed``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for layer in module.modules():
            if layer is not module and hasattr(layer, "reset_parameters"):
                layer.reset_parameters()


def fit_anomaly_head(
    head: AnomalyHead, normal, anomalies, training: AnomalyHeadTraining | None = None
) -> list[float]:
    """Train ``head`` with its :meth:`~AnomalyHead.loss` on balanced batches.

    Parameters
    ----------
    head : AnomalyHead
        Trained in place, on the device of its parameters.
    normal : array_like, (N, C) or (B, C, H, W)
        Barcodes of the known (normal) materials.
    anomalies : array_like, (M, C) or (B', C, H, W)
        Barcodes of seen anomalies.
    training : AnomalyHeadTraining, optional

    Returns
    -------
    list of float
        The loss at every step.
    """
    from tqdm.auto import tqdm

    training = training or AnomalyHeadTraining()
    normal_points, _ = as_points(normal, head.in_channels, "normal")
    anomaly_points, _ = as_points(anomalies, head.in_channels, "anomalies")
    if len(normal_points) < 2 or len(anomaly_points) < 1:
        raise ValueError(
            f"need >= 2 normal and >= 1 anomalous barcodes; got {len(normal_points)} and "
            f"{len(anomaly_points)}"
        )
    device = head.input_mean.device
    normal_points, anomaly_points = normal_points.to(device), anomaly_points.to(device)
    _reinitialise(head, training.seed)
    head.fit_normalisation(normal_points)
    if hasattr(head, "initialise_from"):
        head.initialise_from(normal_points)
    optimiser = torch.optim.Adam(
        head.parameters(), lr=training.learning_rate, weight_decay=training.weight_decay
    )
    generator = torch.Generator().manual_seed(training.seed)
    labels = torch.cat(
        [
            torch.zeros(training.batch_size // 2),
            torch.ones(training.batch_size - training.batch_size // 2),
        ]
    ).to(device)
    history = []
    head.train()
    for _ in tqdm(range(training.steps), disable=not training.progress, desc=type(head).__name__):
        i, j = balanced_batches(
            len(normal_points), len(anomaly_points), training.batch_size, generator
        )
        batch = torch.cat([normal_points[i.to(device)], anomaly_points[j.to(device)]])
        loss = head.loss(batch, labels)
        regulariser = getattr(head, "regularisation", None)
        if regulariser is not None:
            loss = loss + regulariser(generator)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        history.append(float(loss.detach()))
    head.eval()
    return history


def openset_anomaly_labels(labels: torch.Tensor) -> torch.Tensor:
    """Anomaly labels ``(N, H, W)`` from open-set class labels: 1 on :data:`~.auxiliary.
    UNKNOWN` (-1) pixels, 0 on known-class pixels."""
    from hyplex.models.openset.auxiliary import UNKNOWN

    return (torch.as_tensor(labels) == UNKNOWN).long()


def head_features(barcodes: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """What a deployed anomaly head reads per pixel: the barcode's shape and the segmenter's
    belief.

    ``[x / mean(x), log_softmax(z)]``: the barcode's spectral shape (``C``) and the
    segmenter's class log-probabilities (``K``), so the head sees the material's spectrum and
    what the segmenter (with its spatial context) made of it. The brightness ``mean(x)`` is
    left out: it is shading and exposure, not material (known materials appear at every
    brightness), and a head that reads it can tell the seen anomalies from the normals by how
    bright their objects happened to be, a rule that unseen types do not follow. On the
    benchmark's development seeds 10-12 (``benchmarks/openset.py --quick --first-seed 10``)
    reading it cost every head AUROC on the unseen types (mean of 3 seeds, with -> without):
    BCE 0.763 -> 0.780, CEDL 0.805 -> 0.813, NSReg 0.756 -> 0.789 (README, issue 15 part B).

    Parameters
    ----------
    barcodes : torch.Tensor, (B, C, H, W)
        Normalised barcodes (positive, O(1)).
    logits : torch.Tensor, (B, K, H, W)
        The segmenter's logits for them.

    Returns
    -------
    torch.Tensor, (B, C + K, H, W) float32
        Invariant to the barcode's scale: ``head_features(a * x, z) == head_features(x, z)``
        for any ``a > 0``.
    """
    if barcodes.ndim != 4 or logits.ndim != 4 or barcodes.shape[2:] != logits.shape[2:]:
        raise ValueError(
            f"barcodes (B, C, H, W) and logits (B, K, H, W) must share B, H, W; got "
            f"{tuple(barcodes.shape)} and {tuple(logits.shape)}"
        )
    x = barcodes.float().clamp_min(1e-4)
    log_probabilities = torch.log_softmax(logits.float().to(x.device), 1)
    return torch.cat([x / x.mean(1, keepdim=True), log_probabilities], 1)


class AnomalyHeadDetector(OpenSetDetector):
    """An anomaly head beside a frozen segmenter, in the open-set detector contract.

    The segmenter's labels are untouched (``trains_segmenter = False``: the ID mIoU cannot
    change). The head scores every pixel from :func:`head_features` (the barcode's shape and
    the segmenter's class log-probabilities; the segmenter runs once per frame
    for both, in :meth:`segment`). ``fit`` trains the head on ``data.train`` (normal) and
    ``data.auxiliary`` (its planted outliers = seen anomalies, the rest normal). Options
    (defaults): ``steps`` 400, ``batch_size`` 512, ``lr`` 3e-3, ``hidden`` 64,
    ``embedding_dim`` 16, plus those of :attr:`extra_defaults`.
    """

    method = "BCE"
    head_class: type[AnomalyHead] = None
    base_defaults = {
        "steps": 400,
        "batch_size": 512,
        "lr": 3e-3,
        "hidden": 64,
        "embedding_dim": 16,
    }
    extra_defaults: dict = {}
    #: every option with its default (what ``hyplex openset fit --steps`` looks up)
    defaults: dict = dict(base_defaults)

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls.defaults = {**cls.base_defaults, **cls.extra_defaults}

    def __init__(self, model: nn.Module, **options):
        defaults = self.defaults
        unknown = sorted(set(options) - set(defaults))
        if unknown:
            raise ValueError(
                f"unknown {self.method} options {unknown}; expected {sorted(defaults)}"
            )
        merged = {**defaults, **options}
        for key in ("steps", "batch_size", "hidden", "embedding_dim"):
            value = merged[key]
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"option {key} must be an integer >= 1; got {value!r}")
        if not (isinstance(merged["lr"], (int, float)) and merged["lr"] > 0):
            raise ValueError(f"option lr must be a number > 0; got {merged['lr']!r}")
        super().__init__(model, **merged)
        channels = getattr(model, "in_channels", None)
        classes = getattr(model, "n_classes", None)
        if channels is None or classes is None:
            raise ValueError(
                "the segmenter must have in_channels and n_classes attributes (barcode length "
                "and class count)"
            )
        self.in_channels = int(channels)
        extra = {key: merged[key] for key in self.extra_defaults}
        self.head = self.head_class(
            int(channels) + int(classes),
            merged["hidden"],
            merged["embedding_dim"],
            shape_normalise=False,
            **extra,
        )
        parameter = next(model.parameters(), None)
        if parameter is not None:
            self.head.to(parameter.device)

    def head_modules(self) -> dict[str, nn.Module]:
        return {"head": self.head}

    @torch.no_grad()
    def features(self, barcodes: torch.Tensor, batch_size: int = 16) -> torch.Tensor:
        """:func:`head_features` of barcode maps ``(N, C, H, W)`` (segmenter in eval mode)."""
        from hyplex.models.openset.scores import as_barcode_batch

        self.model.eval()
        x = as_barcode_batch(barcodes, self.model)
        return torch.cat(
            [head_features(chunk, self.model(chunk)).cpu() for chunk in x.split(batch_size)]
        )

    def training_scenes(self, data) -> tuple[torch.Tensor, torch.Tensor]:
        """Head features ``(N, C + K, H, W)`` and anomaly labels ``(N, H, W)`` of
        ``data.train`` + ``data.auxiliary``."""
        if data.n_channels != self.in_channels:
            raise ValueError(
                f"the data's barcodes have {data.n_channels} channels but the segmenter reads "
                f"{self.in_channels}: mismatched channel counts"
            )
        barcodes = torch.cat([data.train.barcodes, data.auxiliary.barcodes])
        labels = torch.cat(
            [
                torch.where(data.train.labels < 0, -1, 0),  # stray unknowns in ID scenes
                openset_anomaly_labels(data.auxiliary.labels),
            ]
        )
        return self.features(barcodes), labels

    def fit(self, data, *, seed: int = 0, progress: bool = False, **kwargs):
        """Train the head on ``data`` (see the class docstring); returns ``self``."""
        import time

        o = self.options
        training = AnomalyHeadTraining(
            o["steps"], o["batch_size"], o["lr"], seed=int(seed), progress=progress
        )
        features, labels = self.training_scenes(data)
        start = time.perf_counter()
        losses = self.head.fit_scenes(features, labels, training)
        elapsed = time.perf_counter() - start
        self.history = [{"step": i, "loss": v} for i, v in enumerate(losses)]
        self.history.append({"seconds": elapsed})
        return self

    def scores_from(self, logits: torch.Tensor, barcodes: torch.Tensor) -> torch.Tensor:
        return self.head.predict(head_features(barcodes, logits)).to(logits.device)


class BCEAnomalyDetector(AnomalyHeadDetector):
    """The plain BCE anomaly head (:class:`BCEAnomalyHead`) as an open-set detector."""

    method = "BCE"
    head_class = BCEAnomalyHead

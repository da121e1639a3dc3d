"""Outlier exposure (OE) and the one training loop of the outlier-exposure family.

D. Hendrycks, M. Mazeika, T. Dietterich, "Deep Anomaly Detection with Outlier Exposure",
ICLR 2019. Section 3, the OE objective (their eq. (1))::

    min_theta  E_{(x, y) ~ D_in} [ L(f(x), y) ]  +  lambda E_{x' ~ D_out^OE} [ L_OE(f(x')) ]

and, for a softmax classifier, ``L_OE`` is the cross-entropy from ``f(x')`` to the uniform
distribution over the ``K`` classes::

    L_OE(f(x')) = -(1 / K) sum_k log softmax(f(x'))_k          (lambda = 0.5 in the paper)

The detector then scores with the maximum softmax probability (the paper's baseline score,
:func:`~hyplex.models.openset.scores.msp_score`). Here ``x`` is a pixel of a twin scene of
known materials and ``x'`` a pixel of a planted auxiliary outlier (:mod:`.auxiliary`); the
segmenter's cross-entropy ignores the outliers (label -1) and OE is averaged over them.

:func:`train_with_outliers` is the shared entry point: each step draws a batch of ID scenes
and one of auxiliary-outlier scenes, runs them through the segmenter together (as the OE
reference code concatenates them, so BatchNorm sees both), and minimises the ID
cross-entropy plus ``outlier_weight`` times an :class:`OutlierObjective`'s regulariser. The
extensions change only the objective: DOE perturbs the weights before the loss
(:mod:`.implicit_outlier_transformation`), DAL perturbs the outliers' embeddings
(:mod:`.distribution_augmentation`), ATOL adds an auxiliary task from generated data
(:mod:`.unreliable_sources`). ``outlier_weight = 0`` (or ``objective=None``) is plain
cross-entropy training (:func:`train_segmenter`): the baseline each method must beat.
"""

from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F
from torch import nn

from hyplex.models.codesign_config import learning_rate_factor
from hyplex.models.openset.auxiliary import UNKNOWN, LabelledBarcodes, OpenSetData
from hyplex.models.openset.scores import OpenSetDetector, msp_score

__all__ = [
    "OutlierBatch",
    "OutlierObjective",
    "OutlierExposureObjective",
    "uniform_cross_entropy",
    "train_with_outliers",
    "train_segmenter",
    "OutlierExposureDetector",
    "check_positive_options",
    "features_and_logits",
    "frozen_batchnorm",
    "pixels",
    "LR_SCHEDULES",
]

#: learning-rate schedules of :func:`train_with_outliers`: ``"constant"``, or ``"cosine"``, the
#: cosine annealing from ``lr`` to 1e-6 over the run that the OE, DOE and DAL reference scripts
#: all fine-tune with (their ``cosine_annealing(step, total_steps, 1, 1e-6 / lr)``, stepped per
#: batch: ``lr_min + (lr - lr_min) (1 + cos(pi step / total)) / 2``, which is
#: :func:`hyplex.models.codesign_config.learning_rate_factor` with floor ``lr_min / lr``)
LR_SCHEDULES = ("constant", "cosine")


def uniform_cross_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Cross-entropy to the uniform distribution per pixel, ``(N, K) -> (N,)``:
    ``-(1/K) sum_k log softmax(z)_k`` (OE, Hendrycks et al. 2019, section 3)."""
    return -F.log_softmax(logits, dim=1).mean(dim=1)


class OutlierBatch:
    """One training step's inputs.

    Attributes
    ----------
    barcodes : (B_in + B_out, F, H, W) ID scenes then auxiliary-outlier scenes.
    labels : (B_in + B_out, H, W) int64, :data:`~.auxiliary.UNKNOWN` on outlier pixels.
    n_in : B_in, the number of ID scenes first in the batch.
    step, total_steps : the step number and the run's length.
    """

    def __init__(self, barcodes, labels, n_in: int, step: int, total_steps: int, generator):
        self.barcodes, self.labels, self.n_in = barcodes, labels, int(n_in)
        self.step, self.total_steps, self.generator = int(step), int(total_steps), generator

    @property
    def unknown(self) -> torch.Tensor:
        """(B, H, W) bool, the outlier pixels."""
        return self.labels == UNKNOWN


def pixels(maps: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``maps (B, C, H, W)`` at ``mask (B, H, W)`` -> ``(N, C)``."""
    return maps.permute(0, 2, 3, 1)[mask]


def features_and_logits(model: nn.Module, barcodes: torch.Tensor):
    """The segmenter's penultimate features and its logits in one pass.

    The features are the input of ``model.head`` (the 1x1 classifier convolution of both
    hyplex segmenters), captured with a forward hook and cropped to the logits' size.

    Returns
    -------
    features : (B, D, H, W), logits : (B, K, H, W)
    """
    head = getattr(model, "head", None)
    if not isinstance(head, nn.Conv2d) or head.kernel_size != (1, 1):
        raise ValueError(
            "the segmenter needs a 1x1 convolution 'head' (the classifier on per-pixel "
            f"features) for this method; {type(model).__name__} has {type(head).__name__}"
        )
    captured = {}
    handle = head.register_forward_hook(lambda module, args, out: captured.update(x=args[0]))
    try:
        logits = model(barcodes)
    finally:
        handle.remove()
    features = captured["x"][..., : logits.shape[-2], : logits.shape[-1]]
    return features, logits


class frozen_batchnorm:
    """Context manager: BatchNorm layers of ``model`` in eval mode (use and keep their running
    statistics) for a forward pass of off-distribution inputs, e.g. one-pixel generated
    barcodes, that must not pollute the statistics; gradients still flow."""

    def __init__(self, model: nn.Module):
        self.layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        self.modes: list[bool] = []

    def __enter__(self):
        self.modes = [m.training for m in self.layers]
        for m in self.layers:
            m.eval()
        return self

    def __exit__(self, *exc):
        for m, mode in zip(self.layers, self.modes, strict=True):
            m.train(mode)
        return False


class OutlierObjective:
    """The loss of one step: ID cross-entropy plus ``weight`` times :meth:`regulariser`.

    Subclasses override :meth:`regulariser` (on the logits of the outlier pixels) or
    :meth:`loss` as a whole, and :meth:`after_backward` to undo a weight perturbation before
    the optimiser steps (DOE).
    """

    name = "OE"

    def __init__(self, weight: float = 0.5):
        self.weight = float(weight)

    def cross_entropy(self, logits: torch.Tensor, batch: OutlierBatch) -> torch.Tensor:
        """ID cross-entropy over every known pixel of the batch (outliers ignored).

        Parameters
        ----------
        logits : (B, K, H, W) the segmenter's logits for ``batch.barcodes``.
        batch : :class:`OutlierBatch`; pixels labelled :data:`~.auxiliary.UNKNOWN` are skipped.

        Returns
        -------
        torch.Tensor, a scalar: the mean cross-entropy over the known pixels, nats.
        """
        return F.cross_entropy(logits, batch.labels, ignore_index=UNKNOWN)

    def regulariser(
        self, logits: torch.Tensor, batch: OutlierBatch, model: nn.Module
    ) -> torch.Tensor:
        """OE's ``L_OE`` averaged over the outlier pixels (0 when the batch has none)."""
        mask = batch.unknown
        if not mask.any():
            return logits.sum() * 0.0
        return uniform_cross_entropy(pixels(logits, mask)).mean()

    def loss(self, model: nn.Module, batch: OutlierBatch) -> tuple[torch.Tensor, dict]:
        """``(loss, stats)`` of the step (``stats``: python floats for the history)."""
        logits = model(batch.barcodes)
        ce = self.cross_entropy(logits, batch)
        if self.weight == 0:
            return ce, {"ce": ce.item()}
        reg = self.regulariser(logits, batch, model)
        return ce + self.weight * reg, {"ce": ce.item(), "outlier": reg.item()}

    def after_backward(self, model: nn.Module) -> None:
        """Called between ``backward`` and the optimiser step (default: nothing)."""

    def follow_up(self, model: nn.Module, batch: OutlierBatch) -> torch.Tensor | None:
        """A second loss on the same batch, minimised by an optimiser step of its own after the
        first (DOE's alternating schedule); default None: one step per batch."""
        return None


class OutlierExposureObjective(OutlierObjective):
    """OE (Hendrycks et al. 2019, eq. (1)): CE to uniform on the outlier pixels."""


def _draw(data: LabelledBarcodes, count: int, generator) -> torch.Tensor:
    return torch.randint(len(data), (int(count),), generator=generator)


def train_with_outliers(
    model: nn.Module,
    data: OpenSetData,
    objective: OutlierObjective | None = None,
    steps: int = 200,
    batch_size: int = 4,
    outlier_batch_size: int | None = None,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    seed: int = 0,
    device=None,
    progress: bool = False,
    parameters=None,
    lr_schedule: str = "constant",
) -> list[dict]:
    """Train ``model`` with an outlier objective (the family's one entry point).

    Parameters
    ----------
    model : segmenter ``(B, F, H, W) -> (B, K, H, W)``, trained in place.
    data : :class:`~.auxiliary.OpenSetData`; ``data.train`` gives the ID scenes and
        ``data.auxiliary`` the outlier scenes.
    objective : the method's :class:`OutlierObjective`; None = plain cross-entropy on the ID
        scenes alone (no outlier scenes drawn).
    steps, batch_size, outlier_batch_size : optimiser steps and scenes per step (outlier
        scenes default to ``batch_size``).
    lr, weight_decay : Adam's learning rate and decoupled weight decay (AdamW).
    seed : draws the batches (``torch.Generator``), so a run is reproducible.
    device : default the model's.
    parameters : what to optimise (default all of the model's parameters).
    lr_schedule : ``"constant"`` (``lr`` throughout) or ``"cosine"`` (from ``lr`` to 1e-6 by
        :func:`~hyplex.models.codesign_config.learning_rate_factor`, set once per batch, so
        DOE's two optimiser steps of a batch share one rate, as in its script).

    Returns
    -------
    list of dict, one per step: ``loss`` and the objective's terms, plus ``lr`` (the step's
    learning rate) and ``seconds``.
    """
    for name, value in {"steps": steps, "batch_size": batch_size}.items():
        if isinstance(value, bool) or int(value) != value or value < 1:
            raise ValueError(f"{name} must be an integer >= 1; got {value!r}")
    if not (math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a finite learning rate > 0; got {lr!r}")
    if lr_schedule not in LR_SCHEDULES:
        raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}; got {lr_schedule!r}")
    channels = getattr(model, "in_channels", None)
    if channels is not None and data.n_channels != int(channels):
        raise ValueError(
            f"the data's barcodes have {data.n_channels} channels but the segmenter reads "
            f"{channels}: mismatched channel counts (encode the scenes with the bundle's encoder)"
        )
    from tqdm.auto import tqdm

    device = device or next(model.parameters()).device
    generator = torch.Generator().manual_seed(int(seed))
    params = [
        p for p in (parameters if parameters is not None else model.parameters()) if p.requires_grad
    ]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    out_size = int(outlier_batch_size or batch_size)
    use_outliers = objective is not None and objective.weight != 0
    objective = objective or OutlierObjective(weight=0.0)
    history, start = [], time.perf_counter()
    model.train()
    for step in tqdm(
        range(int(steps)), desc=f"open-set training ({objective.name})", disable=not progress
    ):
        x, y = data.train.batch(_draw(data.train, batch_size, generator), device)
        n_in = len(x)
        if use_outliers:
            xo, yo = data.auxiliary.batch(_draw(data.auxiliary, out_size, generator), device)
            x, y = torch.cat([x, xo]), torch.cat([y, yo])
        batch = OutlierBatch(x, y, n_in, step, steps, generator)
        if lr_schedule == "cosine":
            for group in optimizer.param_groups:
                floor = min(1e-6, lr) / lr  # the reference scripts' lr_min, 1e-6
                group["lr"] = lr * learning_rate_factor(step, int(steps), "cosine", floor)
        optimizer.zero_grad(set_to_none=True)  # before the loss: an objective may backward
        loss, stats = objective.loss(model, batch)  # part of it there (DOE's clean-weight CE)
        loss.backward()
        objective.after_backward(model)
        optimizer.step()
        second = objective.follow_up(model, batch)
        if second is not None:  # its own step, on gradients of its own
            optimizer.zero_grad(set_to_none=True)
            second.backward()
            optimizer.step()
            stats = {**stats, "follow_up": second.item()}
        history.append(
            {
                "step": step,
                "loss": loss.item(),
                **stats,
                "lr": optimizer.param_groups[0]["lr"],
                "seconds": time.perf_counter() - start,
            }
        )
    model.eval()
    return history


def train_segmenter(
    model: nn.Module,
    data: OpenSetData,
    steps: int = 300,
    batch_size: int = 4,
    lr: float = 3e-3,
    seed: int = 0,
    device=None,
    progress: bool = False,
) -> list[dict]:
    """Plain cross-entropy training on the ID scenes (:func:`train_with_outliers` without an
    objective): the closed-set segmenter every open-set method starts from."""
    return train_with_outliers(
        model, data, None, steps, batch_size, lr=lr, seed=seed, device=device, progress=progress
    )


def check_positive_options(
    options: dict, integers=("steps", "batch_size"), non_negative=()
) -> None:
    """Every option named in ``integers`` must be an int >= 1 and every other numeric option
    a finite number > 0 (>= 0 for those in ``non_negative``)."""
    for key, value in options.items():
        if key in integers:
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"option {key} must be an integer >= 1; got {value!r}")
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            low_ok = value >= 0 if key in non_negative else value > 0
            if not (math.isfinite(value) and low_ok):
                bound = ">= 0" if key in non_negative else "> 0"
                raise ValueError(f"option {key} must be a finite number {bound}; got {value!r}")


class OutlierExposureDetector(OpenSetDetector):
    """OE: fine-tune the segmenter with :class:`OutlierExposureObjective`, score with MSP.

    Options (defaults): ``steps`` 200, ``batch_size`` 4, ``lr`` 1e-3, ``outlier_weight`` 0.5
    (the paper's lambda), ``lr_schedule`` ``"constant"`` (or ``"cosine"``, the reference
    scripts' annealing; see :func:`train_with_outliers`). Neither the cosine schedule nor a
    larger ``lr`` (3e-3) is the default of the family: on development seeds they did not help
    OE, DOE or DAL (the README's open-set part A gives the figures and commands).
    """

    method = "OE"
    trains_segmenter = True
    defaults = {
        "steps": 200,
        "batch_size": 4,
        "lr": 1e-3,
        "outlier_weight": 0.5,
        "lr_schedule": "constant",
    }
    non_negative = ("outlier_weight",)  # options that may be 0 (the rest must be > 0)

    def __init__(self, model: nn.Module, **options):
        unknown = sorted(set(options) - set(self.defaults))
        if unknown:
            raise ValueError(
                f"unknown {self.method} options {unknown}; expected {sorted(self.defaults)}"
            )
        merged = {**self.defaults, **options}
        check_positive_options(merged, non_negative=self.non_negative)
        if merged.get("lr_schedule", "constant") not in LR_SCHEDULES:
            value = merged["lr_schedule"]
            raise ValueError(f"option lr_schedule must be one of {LR_SCHEDULES}; got {value!r}")
        super().__init__(model, **merged)

    def objective(self) -> OutlierObjective:
        """The method's step objective (subclasses override)."""
        return OutlierExposureObjective(self.options["outlier_weight"])

    def fit(
        self, data: OpenSetData, *, seed: int = 0, progress: bool = False, device=None, **kwargs
    ):
        """Fine-tune the segmenter (and the detector's own head modules, if any) on
        ``data.train`` and ``data.auxiliary``; returns ``self``."""
        o = self.options
        parameters = list(self.model.parameters())
        for module in self.head_modules().values():
            module.to(device or next(self.model.parameters()).device)
            parameters += list(module.parameters())
        self.history = train_with_outliers(
            self.model,
            data,
            self.objective(),
            o["steps"],
            o["batch_size"],
            lr=o["lr"],
            seed=seed,
            device=device,
            progress=progress,
            parameters=parameters,
            lr_schedule=o.get("lr_schedule", "constant"),
        )
        return self

    def scores_from(self, logits, barcodes):
        return msp_score(logits)

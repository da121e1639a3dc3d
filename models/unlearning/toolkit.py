"""The unlearning interface: one entry point, a registry of methods by name, shared plumbing.

Contract (kept apart from evaluation, as open-unlearning does: a method is its loss and its
update rule; every metric comes from :mod:`hyplex.models.unlearning.evaluation`)::

    unlearn(model, forget, retain, method="wga", steps=100, lr=1e-3, ...) -> new model

* ``model`` is any ``torch.nn.Module`` mapping ``inputs -> logits``. Three logit layouts are
  understood, with integer ``targets`` of the logits' shape less the class axis:

  ==================  =================  ==========================================
  logits              targets            meaning
  ==================  =================  ==========================================
  ``(N, C)``          ``(N,)``           points / whole samples
  ``(B, C, H, W)``    ``(B, H, W)``      pixels (a segmenter; class axis 1)
  ``(B, T, V)``       ``(B, T)``         tokens (a language model; class axis -1;
                                         targets already aligned, i.e. shifted)
  ==================  =================  ==========================================

* ``forget`` and ``retain`` are re-iterable collections of batches (a list, a DataLoader);
  they are cycled for ``steps`` steps. A batch is a :class:`Batch`, a ``(inputs, targets)`` or
  ``(inputs, targets, mask)`` tuple, or a dict with those keys. ``mask`` (targets' shape,
  bool or float) selects/weights the elements that count (the forgotten class's pixels, the
  answer tokens); elements whose target is ``ignore_index`` (-100) never count.
* A method (:class:`UnlearningMethod`) defines ``objective(...) -> Objective(forget,
  retain)``, two scalar losses to *minimise*; the default update minimises
  ``forget + retain_weight * retain`` with the toolkit's Adam. A method may replace the update
  (GRU rectifies gradients) or the whole procedure (MOX extrapolates weights).
* The input model is never modified: ``unlearn`` works on a deep copy (the reference
  ``theta_ref`` is another, frozen copy, which NPO-type objectives and KL terms read).
  BatchNorm statistics are frozen (the copy runs in eval mode unless ``train_mode=True``): a
  forget-only batch must not rewrite the retain data's normalisation.

Registry: :data:`METHODS` maps a name to ``"module:Class"`` and is resolved lazily by
:func:`method_class` (an immutable table; no import-time side effects).
"""

from __future__ import annotations

import copy
import importlib
import itertools
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

import torch
from torch import nn

__all__ = [
    "IGNORE_INDEX",
    "METHODS",
    "Batch",
    "Objective",
    "UnlearningMethod",
    "Adam",
    "as_batch",
    "flat_logits",
    "element_log_probs",
    "upcast",
    "forward_elements",
    "cross_entropy",
    "cycle_pairs",
    "progress_bar",
    "weighted_mean",
    "method_class",
    "build_method",
    "unlearn",
    "flat_gradient",
    "trainable_parameters",
]

IGNORE_INDEX = -100

_U = "hyplex.models.unlearning."
#: method name -> "module:Class" (resolved on first use by :func:`method_class`).
METHODS: Mapping[str, str] = MappingProxyType(
    {
        "GA": _U + "gradient_effect:GradientAscent",
        "GD": _U + "gradient_effect:GradientDifference",
        "NPO": _U + "gradient_effect:NegativePreferenceOptimization",
        "WGA": _U + "gradient_effect:WeightedGradientAscent",
        "TNPO": _U + "gradient_effect:TokenwiseNPO",
        "WTNPO": _U + "gradient_effect:WeightedTokenwiseNPO",
        "GRU": _U + "gradient_rectification:GradientRectifiedUnlearning",
        "SatImp": _U + "saturation_importance:SaturationImportance",
        "MOX": _U + "memorize_to_forget:ModelExtrapolation",
        "EUA": _U + "distinguishable_deletion:EnergyUnlearningAlignment",
        "BS": _U + "belief_targets:BeliefSupervision",
    }
)


@dataclass(frozen=True)
class Batch:
    """One batch: ``inputs`` for the model, integer ``targets`` (logits' shape less the class
    axis), optional ``mask`` (targets' shape; bool or float weights; None = every element)."""

    inputs: object
    targets: torch.Tensor
    mask: torch.Tensor | None = None

    def to(self, device) -> Batch:
        move = lambda v: v.to(device) if isinstance(v, torch.Tensor) else v  # noqa: E731
        return Batch(move(self.inputs), move(self.targets), move(self.mask))


def as_batch(item) -> Batch:
    """A :class:`Batch` from a Batch, ``(inputs, targets[, mask])`` or a dict with keys
    ``inputs``, ``targets`` and optionally ``mask``."""
    if isinstance(item, Batch):
        return item
    if isinstance(item, Mapping):
        if "inputs" not in item or "targets" not in item:
            raise ValueError(f"a batch dict needs keys 'inputs' and 'targets'; got {sorted(item)}")
        return Batch(item["inputs"], torch.as_tensor(item["targets"]), item.get("mask"))
    if isinstance(item, tuple | list) and len(item) in (2, 3):
        mask = item[2] if len(item) == 3 else None
        return Batch(item[0], torch.as_tensor(item[1]), mask)
    raise ValueError(
        "a batch must be a Batch, a tuple (inputs, targets[, mask]) or a dict with 'inputs' and "
        f"'targets'; got {type(item).__name__}"
    )


def flat_logits(logits: torch.Tensor, targets: torch.Tensor, mask=None):
    """Flatten any supported layout to elements.

    Parameters
    ----------
    logits : (N, C), (B, C, H, W) or (B, T, V) float tensor.
    targets : (N,), (B, H, W) or (B, T) integer tensor; ``IGNORE_INDEX`` marks elements that
        never count.
    mask : None, or a bool/float tensor of ``targets``' shape (per-element weight).

    Returns
    -------
    logits (M, C), targets (M,) int64 (ignored ones set to 0), weights (M,) float32 (0 where
    ignored or masked out).
    """
    if not isinstance(logits, torch.Tensor) or logits.ndim not in (2, 3, 4):
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ValueError(f"logits must be (N, C), (B, C, H, W) or (B, T, V); got {shape}")
    targets = torch.as_tensor(targets, device=logits.device)
    if logits.ndim == 4:
        expected = (logits.shape[0], *logits.shape[2:])
        flat = logits.permute(0, 2, 3, 1).reshape(-1, logits.shape[1])
    else:
        expected = tuple(logits.shape[:-1])
        flat = logits.reshape(-1, logits.shape[-1])
    if tuple(targets.shape) != tuple(expected) or targets.is_floating_point():
        raise ValueError(
            f"targets must be integers of shape {tuple(expected)} for logits of shape "
            f"{tuple(logits.shape)}; got {tuple(targets.shape)} {targets.dtype}"
        )
    targets = targets.reshape(-1).long()
    valid = targets != IGNORE_INDEX
    if ((targets < 0) & valid).any() or (targets >= flat.shape[1]).any():
        raise ValueError(f"targets must lie in [0, {flat.shape[1]}) or be {IGNORE_INDEX}")
    weights = valid.to(flat.dtype)
    if mask is not None:
        mask = torch.as_tensor(mask, device=logits.device)
        if tuple(mask.shape) != tuple(expected):
            raise ValueError(f"mask must have the targets' shape {expected}; got {mask.shape}")
        weights = weights * mask.reshape(-1).to(flat.dtype)
    return flat, torch.where(valid, targets, torch.zeros_like(targets)), weights


def upcast(tensor: torch.Tensor) -> torch.Tensor:
    """float32 for half/bfloat16/float32 tensors; float64 stays float64."""
    return tensor if tensor.dtype == torch.float64 else tensor.float()


def element_log_probs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``log p(y | x)`` per element: ``(M, C), (M,) -> (M,)`` (flattened layout)."""
    return torch.log_softmax(upcast(logits), dim=-1).gather(1, targets[:, None])[:, 0]


def forward_elements(model: nn.Module, batch: Batch):
    """``model(batch.inputs)`` flattened by :func:`flat_logits`: ``(logits (M, C), targets
    (M,), weights (M,))``."""
    return flat_logits(model(batch.inputs), batch.targets, batch.mask)


def cross_entropy(model: nn.Module, batch: Batch) -> torch.Tensor:
    """Weighted mean negative log-likelihood of ``batch`` (the plain training risk)."""
    logits, targets, weights = forward_elements(model, batch)
    return weighted_mean(-element_log_probs(logits, targets), weights)


def weighted_mean(values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``sum(w v) / sum(w)``; 0 (with a graph) when no element counts."""
    total = weights.sum()
    return (values * weights).sum() / total.clamp_min(1e-12)


@dataclass
class Objective:
    """Scalar losses to minimise: ``forget`` (the unlearning term) and ``retain`` (None when
    the method has none); ``extras`` hold logged floats."""

    forget: torch.Tensor
    retain: torch.Tensor | None = None
    extras: dict | None = None


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def flat_gradient(loss: torch.Tensor, parameters, retain_graph: bool = False) -> torch.Tensor:
    """``d loss / d parameters`` as one flat vector ``(P,)`` (zeros for unused parameters)."""
    grads = torch.autograd.grad(loss, parameters, retain_graph=retain_graph, allow_unused=True)
    return torch.cat([
        (g if g is not None else torch.zeros_like(p)).reshape(-1)
        for g, p in zip(grads, parameters, strict=True)
    ])  # fmt: skip


class Adam:
    """Adam (Kingma & Ba, ICLR 2015, Algorithm 1) on explicit gradients. ``torch.optim``
    imports ``torch._dynamo`` on first use (5-10 s on a loaded 2-core machine); this one is
    plain tensor arithmetic and takes a flat gradient, as GRU's rectified update needs."""

    def __init__(self, parameters, lr: float, betas=(0.9, 0.999), eps: float = 1e-8):
        if not (isinstance(lr, int | float) and math.isfinite(lr) and lr > 0):
            raise ValueError(f"lr must be a finite number > 0; got {lr!r}")
        self.parameters = list(parameters)
        self.lr, self.betas, self.eps, self.count = float(lr), betas, eps, 0
        self.moments = [(torch.zeros_like(p), torch.zeros_like(p)) for p in self.parameters]

    def step_flat(self, gradient: torch.Tensor) -> None:
        """One step with the flat gradient ``(P,)`` of all parameters (in order)."""
        self.count += 1
        beta1, beta2 = self.betas
        offset = 0
        with torch.no_grad():
            for p, (m, v) in zip(self.parameters, self.moments, strict=True):
                g = gradient[offset : offset + p.numel()].view_as(p).to(p.dtype)
                offset += p.numel()
                m.mul_(beta1).add_(g, alpha=1 - beta1)
                v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
                m_hat = m / (1 - beta1**self.count)
                v_hat = v / (1 - beta2**self.count)
                p.sub_(self.lr * m_hat / (v_hat.sqrt() + self.eps))

    def step(self, loss: torch.Tensor) -> None:
        """Back-propagate ``loss`` and take one step."""
        self.step_flat(flat_gradient(loss, self.parameters))


class UnlearningMethod:
    """Base of every method: its objective and, by default, the plain update.

    Subclasses set ``name`` and ``paper`` and implement :meth:`objective`; options are
    keyword arguments of the constructor (JSON scalars). ``retain_weight`` scales the retain
    term (0 = forget data only)."""

    name = "base"
    paper = ""

    def __init__(self, retain_weight: float = 1.0):
        if not (math.isfinite(retain_weight) and retain_weight >= 0):
            raise ValueError(f"retain_weight must be a finite number >= 0; got {retain_weight}")
        self.retain_weight = float(retain_weight)

    # the method's loss ---------------------------------------------------------------------
    def objective(self, model, reference, forget: Batch, retain: Batch | None) -> Objective:
        raise NotImplementedError

    # its update rule -----------------------------------------------------------------------
    def prepare(self, model, reference, forget, retain, optimizer) -> None:
        """Called once before the first step (state such as EMAs lives on ``self``)."""

    def step(self, model, reference, forget: Batch, retain: Batch | None, optimizer) -> dict:
        """One update; returns logged floats. Default: minimise forget + w * retain."""
        parts = self.objective(model, reference, forget, retain)
        total = parts.forget
        if parts.retain is not None and self.retain_weight > 0:
            total = total + self.retain_weight * parts.retain
        optimizer.step(total)
        return _log(parts)

    def run(self, model, reference, forget, retain, steps, optimizer, progress) -> nn.Module:
        """The whole procedure (MOX overrides it). Returns the unlearned model."""
        self.prepare(model, reference, forget, retain, optimizer)
        pairs = cycle_pairs(forget, retain, device_of(model))
        bar = progress_bar(steps, self.name, progress)
        for _ in range(steps):
            f, r = next(pairs)
            logged = self.step(model, reference, f, r, optimizer)
            bar.update(1)
            bar.set_postfix({k: f"{v:.3g}" for k, v in logged.items()}, refresh=False)
        bar.close()
        return model


def _log(parts: Objective) -> dict:
    logged = {"forget_loss": float(parts.forget.detach())}
    if parts.retain is not None:
        logged["retain_loss"] = float(parts.retain.detach())
    logged.update(parts.extras or {})
    return logged


def progress_bar(steps: int, name: str, enabled: bool):
    """A tqdm bar of ``steps`` updates (disabled unless ``enabled``)."""
    from tqdm.auto import tqdm

    return tqdm(total=steps, desc=f"unlearn {name}", disable=not enabled, leave=False)


def device_of(model: nn.Module) -> torch.device:
    for tensor in itertools.chain(model.parameters(), model.buffers()):
        return tensor.device
    return torch.device("cpu")


def cycle_pairs(forget: Iterable, retain: Iterable | None, device=None):
    """Endless ``(forget Batch, retain Batch | None)`` pairs, each collection cycled and moved
    to ``device``."""

    def endless(collection):
        while True:
            empty = True
            for item in collection:
                empty = False
                batch = as_batch(item)
                yield batch if device is None else batch.to(device)
            if empty:
                raise ValueError("a forget/retain collection yielded no batch")

    f = endless(forget)
    r = endless(retain) if retain is not None else itertools.repeat(None)
    while True:
        yield next(f), next(r)


def method_class(name: str) -> type[UnlearningMethod]:
    """The class registered as ``name`` in :data:`METHODS`."""
    if name not in METHODS:
        raise ValueError(f"unknown unlearning method {name!r}; expected one of {sorted(METHODS)}")
    module, _, attribute = METHODS[name].partition(":")
    return getattr(importlib.import_module(module), attribute)


def build_method(method, **options) -> UnlearningMethod:
    """An :class:`UnlearningMethod` from a registry name (with options) or an instance."""
    if isinstance(method, UnlearningMethod):
        if options:
            raise ValueError("options are given with a method name, not with an instance")
        return method
    if not isinstance(method, str):
        raise ValueError(f"method must be a registry name or an UnlearningMethod; got {method!r}")
    return method_class(method)(**options)


def unlearn(
    model: nn.Module,
    forget: Iterable,
    retain: Iterable | None,
    method="WGA",
    steps: int = 100,
    *,
    lr: float = 1e-3,
    seed: int = 0,
    device=None,
    train_mode: bool = False,
    progress: bool = False,
    **options,
) -> nn.Module:
    """Unlearn ``forget`` from a copy of ``model`` while keeping ``retain``.

    Parameters
    ----------
    model : torch.nn.Module, inputs -> logits (see the module docstring for the layouts).
        Never modified.
    forget, retain : re-iterable collections of batches (``retain`` may be None for methods
        that do not need it).
    method : a name of :data:`METHODS` or an :class:`UnlearningMethod`.
    steps : number of updates (>= 1).
    lr : Adam learning rate (unitless).
    seed : seeds torch's generator for the procedure (methods draw from it only through
        torch; the caller's global RNG is restored afterwards).
    device : where to run (default: the model's device; "cuda" when asked).
    train_mode : run the copy in train mode (dropout, BatchNorm updates); default eval mode.
    progress : tqdm bar over the steps.
    **options : the method's constructor options (e.g. ``alpha=1.0`` for WGA).

    Returns
    -------
    torch.nn.Module
        The unlearned copy, in eval mode, on ``device``.
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module; got {type(model).__name__}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1; got {steps!r}")
    algorithm = build_method(method, **options)
    device = device_of(model) if device is None else torch.device(device)
    student = copy.deepcopy(model).to(device)
    reference = copy.deepcopy(model).to(device).eval()
    for p in reference.parameters():
        p.requires_grad_(False)
    student.train(train_mode)
    optimizer = Adam(trainable_parameters(student), lr)
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(int(seed))
        result = algorithm.run(student, reference, forget, retain, steps, optimizer, progress)
    finally:
        torch.random.set_rng_state(state)
    return result.eval()

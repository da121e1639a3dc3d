"""DOE: outlier exposure against implicitly transformed, worst-case surrogate outliers.

Q. Wang, J. Ye, F. Liu, Q. Dai, M. Kalander, T. Liu, J. Hao, B. Han, "Out-of-distribution
Detection with Implicit Outlier Transformation", ICLR 2023 (code: github.com/qizhouwang/doe).

OE (:mod:`.outlier_exposure`) fits the surrogate outliers it is shown; test unknowns lie
elsewhere. DOE solves the min-max problem (section 3 of the paper)::

    min_theta  L_CE(theta; D_in) + lambda max_{P in ball} L_OE(theta + P; D_out)

Its insight is that a perturbation ``P`` of the *weights* acts on the model like a
transformation of its *inputs*: evaluating OE at ``theta + P`` trains on implicitly
transformed outliers, with no explicit generator. Each step (Algorithm 1 / the reference code):

1. copy the model to a proxy, multiply its logits by a scalar ``s = 1`` and take the OE
   surrogate ``l_sur = -L_OE`` on the outliers; the perturbation objective is the squared
   gradient ``(d l_sur / d s)^2`` (a first-order measure of how far the outliers' uniform
   prediction is from being stationary), and one SGD step (learning rate 1) on the proxy
   gives the direction ``theta_proxy - theta``;
2. normalise it layer by layer to the layer's weight norm (AWP: D. Wu, S. Xia, Y. Wang,
   "Adversarial Weight Perturbation Helps Robust Generalization", NeurIPS 2020, eq. (9)),
   average it with the previous direction (``beta = 0.6``) and add it to the weights with a
   strength ``gamma`` drawn from {1e-1, 1e-2, 1e-3, 1e-4};
3. take ``lambda`` OE on the outlier pixels at the perturbed weights ``theta + P``, remove the
   perturbation and step the optimiser; then take the ID cross-entropy at the clean weights
   ``theta`` and step the optimiser again (``alternate``, the default: the public DOE training
   script's two steps per batch after its warm-up, ``loss = l_oe`` at ``theta + P`` and then
   ``loss = l_ce`` at ``theta``). ``alternate=False`` takes both terms in one step (the
   gradient of the ID cross-entropy at ``theta`` plus that of OE at ``theta + P``).

Schedule: the reference code first trains with plain OE (its ``--warmup`` 5 epochs of 9) and
only then applies the perturbation; the perturbation of a model that has not yet learnt the
outliers transforms nothing useful. ``warmup`` (default 0.5 of the steps) is that warm-up; on
development seeds 10-12 of the benchmark (never its seeds 0-2) it raised DOE's AUROC from
0.757 to 0.810 and cut its FPR95 from 0.889 to 0.831 (``benchmarks/openset.py --quick
--first-seed 10``, against the same with ``--options '{"DOE": {"warmup": 0}}'``); on the
reported seeds 0-2 it moved DOE from 0.815 to 0.804 AUROC and 0.779 to 0.776 FPR95 (README;
these FPR95 figures in the ID-positive convention, the benchmark's ``fpr95_id_positive``).

Step 2's perturbation is what makes it DOE: with ``gamma = 0`` it is OE.

The alternating steps were chosen on development seeds 10-15 (never the reported 0-2;
``benchmarks/openset.py --quick --first-seed 10 --seeds 6`` against the same with
``--options '{"DOE": {"alternate": false}}'``, the benchmark's data and segmenter, shared and
loaded 2-core machine): AUROC rose on all six seeds (0.855, 0.839, 0.736, 0.821, 0.841, 0.794
-> 0.860, 0.862, 0.749, 0.823, 0.852, 0.814) and FPR95 fell on five (0.291, 0.440, 0.576,
0.420, 0.471, 0.520 -> 0.306, 0.376, 0.555, 0.408, 0.456, 0.468), for one more optimiser step
per batch after the warm-up (about 1.5 times the training time).

BatchNorm statistics (``clean_statistics``, default True; a departure from the script). The
script runs the OE pass at ``theta + P`` in training mode, so BatchNorm's running statistics
(the ones the deployed model normalises with) average the activations of the perturbed
network with those of the clean one. In the min-max problem above the model that is trained
and deployed is ``theta``; ``P`` only transforms the outliers for the inner maximum. With
``clean_statistics`` the perturbed pass still normalises with its batch statistics (its
gradient is the script's) but leaves the running statistics as the clean passes set them
(:class:`kept_running_statistics`). On the segmenter here (width 8, where a perturbation of
up to 10 % of every layer's weight norm moves the later layers' activations noticeably) the
polluted statistics cost ID accuracy on some seeds: on development seeds 10-15 DOE's mIoU
change was -4.0, -7.7, -5.1, -4.7, +5.2, +1.9 points (a cost of 5.2 on seed 14) and became
-4.5, -5.8, -4.9, -10.3, +0.4, -1.9; FPR95 (pytorch-ood convention) went 0.306, 0.376, 0.555,
0.408, 0.456, 0.468 -> 0.325, 0.340, 0.551, 0.411, 0.435, 0.395 (mean 0.428 -> 0.410) at the
same mean AUROC (0.827 -> 0.827; ``benchmarks/openset.py --quick --first-seed 10 --seeds 6``
against the same with ``--options '{"DOE": {"clean_statistics": false}}'``; the benchmark's
data and segmenter, shared and heavily loaded 2-core machine, so the DOE train times there
mean nothing).

Scores: MSP by default. The public DOE training script scores with the negative maximum
logit (``-max(output)``, its softmax line commented out); ``score="max_logit"`` is that
score. On development seeds 10-12 it changed nothing that counts (AUROC 0.804 against MSP's
0.810, FPR95 0.442 against 0.436: ``benchmarks/openset.py --quick --first-seed 10
--options '{"DOE": {"score": "max_logit"}}'``; measured with the same data and segmenter on
the shared, loaded 2-core machine), and with the alternating steps neither (AUROC 0.821 /
0.833 against 0.824 / 0.830, FPR95 0.417 / 0.438 against 0.412 / 0.444 on seeds 10-12 /
13-15), so MSP stays the default. The script's OE weight
(``l_ce + l_oe``, lambda 1 instead of OE's 0.5) did not help either: 0.815 / 0.449 and 5
mIoU points less ID gain (``{"DOE": {"outlier_weight": 1.0}}``).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from hyplex.models.openset.outlier_exposure import (
    OutlierBatch,
    OutlierExposureDetector,
    OutlierObjective,
    pixels,
    uniform_cross_entropy,
)
from hyplex.models.openset.scores import msp_score

__all__ = ["ImplicitOutlierTransformation", "ImplicitOutlierTransformationDetector"]

GAMMAS = (1e-1, 1e-2, 1e-3, 1e-4)
#: the detector's scores: MSP (the OE paper's) or the negative maximum logit (DOE's script)
SCORES = ("msp", "max_logit")


class kept_running_statistics:
    """Context manager: BatchNorm layers of ``model`` normalise as usual (batch statistics in
    training mode, gradients flow) but their running statistics (``running_mean``,
    ``running_var``, ``num_batches_tracked``) are the same tensors, unchanged, on exit, so a
    forward pass at perturbed weights leaves the statistics the deployed model uses alone.

    The pass updates throw-away copies (the originals are swapped back on exit rather than
    overwritten, since the backward pass may still read the tensors the forward saw)."""

    def __init__(self, model: nn.Module):
        self.layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        self.saved: list[dict[str, torch.Tensor]] = []

    def __enter__(self):
        self.saved = []
        for m in self.layers:
            buffers = {k: v for k, v in m.named_buffers(recurse=False) if v is not None}
            self.saved.append(buffers)
            for k, v in buffers.items():
                setattr(m, k, v.clone())
        return self

    def __exit__(self, *exc):
        for m, buffers in zip(self.layers, self.saved, strict=True):
            for k, v in buffers.items():
                setattr(m, k, v)
        return False


def perturbable(model: nn.Module) -> dict[str, nn.Parameter]:
    """Weights AWP perturbs: every parameter with more than one dimension (not biases or
    normalisation scales)."""
    return {n: p for n, p in model.named_parameters() if p.requires_grad and p.ndim > 1}


class ImplicitOutlierTransformation(OutlierObjective):
    """DOE's step objective (see the module docstring).

    Parameters
    ----------
    weight : lambda, the OE weight.
    gammas : perturbation strengths to draw from (relative to each layer's weight norm).
    beta : weight of the previous direction in the running average.
    warmup : fraction of the run's steps (``OutlierBatch.step < warmup * total_steps``)
        trained with OE's plain objective before the min-max steps begin.
    alternate : after the warm-up, :meth:`loss` is ``lambda L_OE(theta + P)`` alone and
        :meth:`follow_up` the ID cross-entropy at ``theta``, stepped separately (the DOE
        script); False: both in one step.
    clean_statistics : the pass at ``theta + P`` leaves BatchNorm's running statistics alone
        (:class:`kept_running_statistics`); False: it updates them, as the script does.
    """

    name = "DOE"

    def __init__(
        self,
        weight: float = 0.5,
        gammas=GAMMAS,
        beta: float = 0.6,
        warmup: float = 0.0,
        alternate: bool = True,
        clean_statistics: bool = True,
    ):
        super().__init__(weight)
        self.alternate = bool(alternate)
        self.clean_statistics = bool(clean_statistics)
        self.pending_cross_entropy = False
        self.warmup = float(warmup)
        self.gammas = tuple(float(g) for g in gammas)
        self.beta = float(beta)
        self.direction: dict[str, torch.Tensor] | None = None
        self.applied: tuple[dict[str, torch.Tensor], float] | None = None

    def perturbation_direction(self, model: nn.Module, batch: OutlierBatch) -> dict:
        """Step 1-2: the layer-normalised weight direction that transforms the outliers."""
        proxy = copy.deepcopy(model)
        proxy.train()
        scale = torch.ones((), device=batch.barcodes.device, requires_grad=True)
        logits = proxy(batch.barcodes) * scale
        outliers = pixels(logits, batch.unknown)
        surrogate = -uniform_cross_entropy(outliers).mean()
        (grad,) = torch.autograd.grad(surrogate, [scale], create_graph=True)
        objective = (grad**2).sum()
        params = perturbable(proxy)
        grads = torch.autograd.grad(objective, list(params.values()), allow_unused=True)
        base = perturbable(model)
        direction = {}
        with torch.no_grad():
            for name, g in zip(params, grads, strict=True):
                if g is None:
                    continue
                diff = -g  # proxy after one SGD step (lr 1) minus the model
                norm = diff.norm()
                if norm > 0:
                    direction[name] = diff * (base[name].norm() / (norm + 1e-20))
        return direction

    def loss(self, model: nn.Module, batch: OutlierBatch):
        """One step's loss at the perturbed weights ``theta + gamma P`` (DOE's min-max step).

        Parameters
        ----------
        model : segmenter ``(B, F, H, W) -> (B, K, H, W)``; its perturbable weights are moved
            by ``gamma P`` in place and restored by :meth:`after_backward`.
        batch : :class:`~.outlier_exposure.OutlierBatch`, ID scenes then outlier scenes.

        Returns
        -------
        (loss, stats)
            ``loss`` a scalar tensor: ``lambda L_OE(theta + gamma P)`` (with ``alternate``; the
            ID cross-entropy follows in :meth:`follow_up`), else the same after the clean-weight
            cross-entropy's gradient was accumulated; during the warm-up, without outlier
            pixels or with ``weight == 0``, OE's plain loss. ``stats`` python floats ``ce``,
            ``outlier`` (mean ``L_OE`` over outlier pixels, nats) and ``gamma`` (the drawn
            strength, relative to each layer's weight norm).
        """
        warming = batch.step < self.warmup * batch.total_steps
        if not batch.unknown.any() or self.weight == 0 or warming:
            return super().loss(model, batch)
        new = self.perturbation_direction(model, batch)
        if self.direction is None:
            self.direction = new
        else:
            self.direction = {
                k: self.beta * self.direction[k] + (1 - self.beta) * v
                for k, v in new.items()
                if k in self.direction
            }
        index = int(torch.randint(len(self.gammas), (1,), generator=batch.generator))
        gamma = self.gammas[index]
        if self.alternate:  # the DOE script: this step OE at theta + P, the next CE at theta
            ce = torch.zeros(())
            self.pending_cross_entropy = True
        else:  # min over theta of the ID risk at theta: its gradient first, at the clean weights
            ce = self.cross_entropy(model(batch.barcodes), batch)
            ce.backward()
        params = perturbable(model)
        with torch.no_grad():
            for name, d in self.direction.items():
                params[name].add_(gamma * d)
        self.applied = (self.direction, gamma)
        # ... plus lambda times the OE risk of the implicitly transformed outliers (theta + P)
        if self.clean_statistics:  # the running statistics stay those of clean weights
            with kept_running_statistics(model):
                logits = model(batch.barcodes)
        else:
            logits = model(batch.barcodes)
        reg = self.regulariser(logits, batch, model)
        stats = {"ce": ce.item(), "outlier": reg.item(), "gamma": gamma}
        return self.weight * reg, stats

    def follow_up(self, model: nn.Module, batch: OutlierBatch):
        """With ``alternate``: the ID cross-entropy at the clean weights, stepped on its own
        after the OE step at ``theta + P`` (the DOE script's second optimiser step)."""
        if not self.pending_cross_entropy:
            return None
        self.pending_cross_entropy = False
        return self.cross_entropy(model(batch.barcodes), batch)

    def after_backward(self, model: nn.Module) -> None:
        """Remove the perturbation: the gradient was taken at ``theta + P``, the step is
        applied to ``theta`` (AWP's restore)."""
        if self.applied is None:
            return
        direction, gamma = self.applied
        params = perturbable(model)
        with torch.no_grad():
            for name, d in direction.items():
                params[name].sub_(gamma * d)
        self.applied = None


class ImplicitOutlierTransformationDetector(OutlierExposureDetector):
    """DOE: fine-tune with :class:`ImplicitOutlierTransformation`, score with MSP.

    Options (defaults): those of OE plus ``beta`` 0.6 (direction averaging),
    ``max_gamma`` 0.1 (the largest relative perturbation; the draw is from
    ``max_gamma * {1, 1e-1, 1e-2, 1e-3}``) and ``warmup`` 0.5 (the fraction of the steps
    trained with plain OE before the perturbation starts; the reference code warms up for 5
    of its 9 epochs). ``warmup=0`` perturbs from the first step. ``score`` ``"msp"``
    (default) or ``"max_logit"`` (the DOE script's ``-max logit``; see the module docstring).
    ``alternate`` True (default): after the warm-up, one optimiser step on OE at the perturbed
    weights and one on the ID cross-entropy at the clean weights per batch (the DOE script's
    schedule); False: one step on both. ``clean_statistics`` True (default): the pass at the
    perturbed weights leaves BatchNorm's running statistics to the clean-weight passes (module
    docstring); False: the script's training, where it updates them too.
    """

    method = "DOE"
    defaults = {
        **OutlierExposureDetector.defaults,
        "beta": 0.6,
        "max_gamma": 0.1,
        "warmup": 0.5,
        "score": "msp",
        "alternate": True,
        "clean_statistics": True,
    }
    non_negative = ("outlier_weight", "warmup")

    def __init__(self, model: nn.Module, **options):
        super().__init__(model, **options)
        for key in ("alternate", "clean_statistics"):
            if not isinstance(self.options[key], bool):
                value = self.options[key]
                raise ValueError(f"option {key} must be True or False; got {value!r}")
        if self.options["score"] not in SCORES:
            raise ValueError(f"option score must be one of {SCORES}; got {self.options['score']!r}")

    def scores_from(self, logits, barcodes):
        if self.options["score"] == "max_logit":
            return -logits.float().amax(dim=1)
        return msp_score(logits)

    def objective(self) -> OutlierObjective:
        top = float(self.options["max_gamma"])
        gammas = tuple(top * 10.0**-k for k in range(4))
        return ImplicitOutlierTransformation(
            self.options["outlier_weight"],
            gammas,
            float(self.options["beta"]),
            float(self.options["warmup"]),
            self.options["alternate"],
            self.options["clean_statistics"],
        )

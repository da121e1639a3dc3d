"""MAIL: PGD adversarial training reweighted by the probabilistic margin, in a physical budget.

Method: Q. Wang, F. Liu, B. Han, T. Liu, C. Gong, G. Niu, M. Zhou, M. Sugiyama,
"Probabilistic Margins for Instance Reweighting in Adversarial Training", NeurIPS 2021
(arXiv:2106.07904), section 3 (the three probabilistic margins) and section 4 (MAIL). Only
the abstract and introduction could be read through the search tool here, so the formulas
below follow the method as those and the authors' summaries state it, and no equation numbers
are cited::

    PM_adv(x, y) = p_y(x') - max_{j != y} p_j(x')           the margin of the adversarial
                                                              instance x' (PM of sec. 3)
    omega_i      = sigmoid(-gamma (PM_i - beta))              MAIL's weight: small margins
                                                              (vulnerable instances) weigh more
    omega_i     <- n omega_i / sum_j omega_j                  normalised to mean 1 in a batch
    L_MAIL-AT    = (1/n) sum_i omega_i CE(f(x'_i), y_i)       MAIL-AT (uniform weights during
                                                              the burn-in, as in the paper)

The schedule follows the authors' public code (github.com/QizhouWang/MAIL, ``train.py`` and
``mail_loss.py``): MAIL starts from the PGD-AT model of epoch 75 of 120 (60 of 100), i.e. a
burn-in of ~0.6 of training, and weighs with ``sigmoid((p_2nd - p_y + bias) slope)`` with
``bias = -1.5`` and ``slope = 1``, which is ``gamma = 1``, ``beta = -1.5`` above: a gentle
tilt (the weight at PM = -1 is 5x the weight at PM = 1). Their code scales the weights by a
constant 3 instead of normalising per batch; under Adam a constant factor does not change the
step, and the batch normalisation keeps the loss's scale equal to PGD-AT's.

The first version here switched the weights on after 0.3 of the steps with ``gamma = 10``,
``beta = 0`` (a weight ratio of e^20 between PM = -1 and 1, all the weight on the pixels the
attack turns). On development seeds 10-12 of ``benchmarks/learning_methods.py --quick``
(not the benchmark's seeds 0-2; U-Net base 8, 250 steps, eps = 3) clean / PGD mIoU were:
PGD-AT 0.239 / 0.151; MAIL with burn-in 0.3, gamma 10, beta 0: 0.227 / 0.141; burn-in 0.6, gamma 10:
0.228 / 0.141; burn-in 0.6, gamma 5, beta 0: 0.231 / 0.149; burn-in 0.6, gamma 3, beta -0.5:
0.228 / 0.139; burn-in 0.6, gamma 2, beta -1: 0.229 / 0.137; burn-in 0.3, gamma 1, beta -1.5:
0.221 / 0.135; the authors' schedule (burn-in 0.6, gamma 1, beta -1.5): 0.242 / 0.151, the
only one with PGD-AT's clean mIoU within a point.

Checked against the authors' code once more (2026-12-06 follow-up): their ``PM`` returns
``p_2nd - p_y`` (the negative of the paper's margin, so ``sigmoid((PM_code + bias) slope)`` is
``sigmoid(-gamma (PM - beta))`` above, as implemented); the margin comes from the same
train-mode logits of ``x'`` that the loss uses (as here); PGD runs in eval mode (as here). What
differed is the learning rate: their SGD drops it x0.1 at epoch 75 (the moment MAIL starts) and
x0.01 at 90 of 120, and ours was constant. ``MAILConfig.lr_schedule = "step"`` is their
schedule. On development seeds 10-12 (250 steps, eps = 3, PGD-AT and MAIL from the same start,
clean / PGD mIoU on 32 extra held-out scenes per seed, mean of the 3 seeds) it did not help
either method: constant PGD-AT 0.228 / 0.159, MAIL 0.233 / 0.165; step PGD-AT 0.204 / 0.154,
MAIL 0.201 / 0.153 (MAIL within 0.7 points of PGD-AT on every seed and figure: at a tenth of
the rate the reweighted phase hardly moves the weights); seed 11 froze in a poor state (clean
0.14) under the step decay for both methods, and a cosine decay did the same (seed 11:
0.12-0.13). The benchmark keeps the constant rate for every method. These development figures
came from a driver that trains each configuration with :func:`adversarial_train_segmenter`
exactly as ``benchmarks/learning_methods.py``'s ``robustness_seed`` does and scores it with
:func:`hyplex.models.robustness.evaluation.red_team_report` (clean and PGD only).

``x'`` is found by PGD (Madry et al., ICLR 2018): ``steps`` signed-gradient ascent steps on the
cross-entropy from a uniform random start, each projected back into the budget. An instance is
one barcode pixel (a segmenter's output is a class posterior per pixel), so the weights are per
pixel. A scene as the instance (its pixels' mean margin) would give 4 weights per batch and
average each scene's vulnerable boundary pixels with its safe interior; the pixel is the unit
on which the cross-entropy and the margin are defined.

The reconstructor
-----------------
MAIL is stated for classifiers; hyplex's reconstructor regresses a cube ``(B, L, H, W)`` from
the barcodes, so two pieces need a definition. Both are ours, not the paper's.

* **Its own attack.** Madry's min-max for a regressor maximises the regressor's own loss: PGD
  (the same :func:`pgd_attack`, budget and steps as the segmenter's) ascends the per-pixel L1
  ``e(x') = (1/L) sum_l |r_l(x') - c_l|`` of the reconstructor, and the reconstructor trains on
  those barcodes, while the segmenter keeps training on the barcodes aimed at its
  cross-entropy. A joint attack (cross-entropy + lambda L1 on one perturbation) was not chosen:
  the sign step of PGD follows whichever term dominates the gradient, so lambda would decide
  which decoder is attacked, and ``hyplex redteam`` measures each decoder's own worst case.
  The reconstructor's attack draws its random starts from its own generator, so the
  segmenter's training is bit-identical with or without a reconstructor.
* **Its probabilistic margin.** The paper's margin compares the true class's probability with
  the most confusing other class's, so it is positive where the instance is safe, negative
  where the attack has crossed the boundary, and bounded. A regressor has no class posterior;
  the segmenter's margin at the same pixel exists only on labelled pixels (the reconstructor
  needs no labels) and measures a different net's vulnerability. The reconstruction margin
  (:func:`reconstruction_margin`) keeps the three properties on every pixel::

      PM_rec(x') = (tau - e(x')) / (tau + e(x'))   in (-1, 1]

  with ``tau`` the batch's median adversarial L1 (detached): pixels the attack pushes beyond
  the typical error have negative margins and, through the same ``sigmoid(-gamma (PM - beta))``
  and batch normalisation (:func:`mail_weights`), larger weights. It is a margin of the
  adversarial instance, the analogue of the paper's ``PM_adv``. During the burn-in (and for
  ``pgd_at``/``standard``) every pixel of the reconstructor's L1 weighs 1, labelled or not.

The physical budget
-------------------
A perturbation an adversary could plant in a captured frame (a filter, a light source) should
be no larger than the camera's own noise would hide. The co-design camera
(:mod:`hyplex.models.encoder_capture`) forms barcode ``b_f = e_f / w_f`` from ``e_f``
photoelectrons through filter ``f``, where ``w_f`` is the electrons a white reflector gives
through it. Shot noise has ``std(e_f) = sqrt(e_f)`` (Poisson; EMVA 1288 eq. 5), so in barcode
units it is ``sqrt(e_f) / w_f = sqrt(b_f / w_f)``; read noise ``sigma_d`` (electrons) adds in
quadrature. The allowed perturbation of every barcode value is

    |delta_f(x)| <= epsilon sqrt(max(b_f(x), 0) w_f + sigma_d^2) / w_f

(:func:`shot_noise_budget`): ``epsilon`` is the attack's size in shot-noise standard deviations
(an L-infinity ball with a per-value radius). ``w_f`` comes from the encoder
(:func:`white_electrons_of`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hyplex.models.codesign_config import learning_rate_factor

__all__ = [
    "MAILConfig",
    "adversarial_train_segmenter",
    "learning_rate_at",
    "mail_weights",
    "pgd_attack",
    "probabilistic_margin",
    "reconstruction_margin",
    "shot_noise_budget",
    "white_electrons_of",
]

IGNORE_INDEX = -100
METHODS = ("standard", "pgd_at", "mail")
LR_SCHEDULES = ("constant", "cosine", "step")


def white_electrons_of(encoder) -> torch.Tensor:
    """Electrons ``w_f`` that a white reflector gives through each filter, ``(F,)`` float32.

    Parameters
    ----------
    encoder : :class:`hyplex.models.encoder.SpectralEncoder`
        The encoder that forms the barcodes (e.g. ``bundle.encoder()``).
    """
    capture = getattr(encoder, "capture", None)
    if capture is None or not hasattr(encoder, "responses"):
        raise ValueError(
            f"expected a hyplex SpectralEncoder (with .capture and .responses()); got "
            f"{type(encoder).__name__}"
        )
    with torch.no_grad():
        return capture.white_electrons(encoder.responses()).float().clamp_min(1.0)


def shot_noise_budget(
    barcodes: torch.Tensor, white_electrons, epsilon: float, read_noise_e: float = 0.0
) -> torch.Tensor:
    """Per-value perturbation bound in barcode units, ``epsilon`` shot-noise std deep.

    Parameters
    ----------
    barcodes : torch.Tensor, (B, F, H, W)
        Normalised barcodes (unitless; 1 = a white reflector).
    white_electrons : array_like, (F,)
        Electrons of a white reflector through each filter, ``w_f`` (> 0).
    epsilon : float
        Budget in standard deviations of the pixel's own shot noise (>= 0).
    read_noise_e : float
        Read (dark) noise in electrons rms, added in quadrature (>= 0).

    Returns
    -------
    torch.Tensor, (B, F, H, W)
        ``epsilon * sqrt(max(b, 0) w_f + read_noise_e**2) / w_f`` (see the module docstring).
    """
    if barcodes.ndim != 4:
        raise ValueError(f"barcodes must be (B, F, H, W); got {tuple(barcodes.shape)}")
    white = torch.as_tensor(white_electrons, dtype=barcodes.dtype, device=barcodes.device)
    if white.ndim != 1 or white.numel() != barcodes.shape[1]:
        raise ValueError(
            f"white_electrons must be (F={barcodes.shape[1]},) electrons per filter; got "
            f"shape {tuple(white.shape)}"
        )
    if not bool((white > 0).all()):
        raise ValueError("white_electrons must be > 0 electrons")
    if not (math.isfinite(epsilon) and epsilon >= 0):
        raise ValueError(f"epsilon must be >= 0 shot-noise standard deviations; got {epsilon}")
    if not (math.isfinite(read_noise_e) and read_noise_e >= 0):
        raise ValueError(f"read_noise_e must be >= 0 electrons; got {read_noise_e}")
    w = white[None, :, None, None]
    electrons = barcodes.detach().clamp_min(0.0) * w
    return epsilon * torch.sqrt(electrons + read_noise_e**2) / w


def pgd_attack(
    loss_fn: Callable[[torch.Tensor], torch.Tensor],
    barcodes: torch.Tensor,
    budget: torch.Tensor,
    steps: int = 5,
    step_fraction: float = 0.4,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """PGD in the per-value box ``|delta| <= budget``: maximise ``loss_fn(barcodes + delta)``.

    Parameters
    ----------
    loss_fn : callable
        ``(B, F, H, W) tensor -> scalar`` loss to increase (gradients must flow).
    barcodes : torch.Tensor, (B, F, H, W)
        Clean barcodes (not modified).
    budget : torch.Tensor, (B, F, H, W)
        Per-value radius (>= 0), e.g. :func:`shot_noise_budget`.
    steps : int
        Ascent steps (>= 1); ``step_fraction * budget`` each, after a uniform random start.
    generator : torch.Generator, optional
        Draws the random start (on the barcodes' device).

    Returns
    -------
    torch.Tensor, (B, F, H, W)
        Adversarial barcodes (detached), within the budget of ``barcodes``.
    """
    if budget.shape != barcodes.shape:
        raise ValueError(
            f"budget {tuple(budget.shape)} must match barcodes {tuple(barcodes.shape)}"
        )
    if int(steps) < 1:
        raise ValueError(f"steps must be >= 1; got {steps}")
    clean = barcodes.detach()
    start = torch.rand(clean.shape, generator=generator, device=clean.device, dtype=clean.dtype)
    delta = (2 * start - 1) * budget
    for _ in range(int(steps)):
        delta.requires_grad_(True)
        loss = loss_fn(clean + delta)
        (grad,) = torch.autograd.grad(loss, delta)
        with torch.no_grad():
            delta = delta + step_fraction * budget * grad.sign()
            delta = torch.maximum(torch.minimum(delta, budget), -budget)
    return (clean + delta).detach()


def probabilistic_margin(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``PM = p_y - max_{j != y} p_j`` from logits (MAIL sec. 3), in [-1, 1].

    Parameters
    ----------
    logits : torch.Tensor, (B, K, H, W) or (N, K)
    target : torch.Tensor, (B, H, W) or (N,), int64 class ids (``IGNORE_INDEX`` allowed)

    Returns
    -------
    torch.Tensor, (B, H, W) or (N,)
        The margin (0 where the target is ignored).
    """
    if logits.ndim not in (2, 4) or target.shape != (logits.shape[0], *logits.shape[2:]):
        raise ValueError(
            f"logits (B, K, H, W) / (N, K) and target (B, H, W) / (N,) must agree; got "
            f"{tuple(logits.shape)} and {tuple(target.shape)}"
        )
    probabilities = torch.softmax(logits, dim=1)
    valid = target != IGNORE_INDEX
    safe = torch.where(valid, target, torch.zeros_like(target))
    p_true = probabilities.gather(1, safe.unsqueeze(1)).squeeze(1)
    others = probabilities.scatter(1, safe.unsqueeze(1), -1.0)
    margin = p_true - others.max(dim=1).values
    return torch.where(valid, margin, torch.zeros_like(margin))


def mail_weights(
    margin: torch.Tensor, gamma: float = 1.0, beta: float = -1.5, valid=None
) -> torch.Tensor:
    """MAIL's instance weights ``n sigmoid(-gamma (PM - beta)) / sum sigmoid(...)``.

    Parameters
    ----------
    margin : torch.Tensor, any shape
        Probabilistic margins (:func:`probabilistic_margin`), in [-1, 1].
    gamma : float
        Slope (> 0): larger concentrates the weight on the smallest margins (default: the
        authors' code, ``slope = 1``).
    beta : float
        Margin at which the sigmoid is 1/2 (default: the authors' ``bias = -1.5``, below every
        margin, so all weights lie on the sigmoid's lower tail).
    valid : torch.Tensor of bool, same shape, optional
        Instances that count (others get weight 0 and are left out of ``n``).

    Returns
    -------
    torch.Tensor, same shape
        Non-negative weights with mean 1 over the valid instances (detached).
    """
    if not (math.isfinite(gamma) and gamma > 0):
        raise ValueError(f"gamma must be > 0; got {gamma}")
    raw = torch.sigmoid(-gamma * (margin.detach() - beta))
    if valid is not None:
        raw = raw * valid.to(raw.dtype)
        count = valid.sum().clamp_min(1).to(raw.dtype)
    else:
        count = torch.tensor(float(raw.numel()), dtype=raw.dtype, device=raw.device)
    return raw * count / raw.sum().clamp_min(1e-12)


def reconstruction_margin(error: torch.Tensor, tolerance=None) -> torch.Tensor:
    """A regressor's probabilistic margin ``(tau - e) / (tau + e)``, in (-1, 1].

    The reconstructor's stand-in for MAIL's ``PM_adv`` (see the module docstring): positive
    where the pixel's error under attack is below the tolerance, negative above it.

    Parameters
    ----------
    error : torch.Tensor, (B, H, W) or any shape
        Per-pixel reconstruction error under attack, band-mean L1 (apparent-reflectance units,
        >= 0).
    tolerance : float or torch.Tensor, optional
        ``tau`` in the same units (> 0); default: the median of ``error`` (detached).

    Returns
    -------
    torch.Tensor, same shape as ``error``
        The margin (detached); 0 where ``error == tau``, 1 at zero error, -> -1 as the error
        grows.
    """
    error = error.detach()
    if bool((error < 0).any()):
        raise ValueError("error must be >= 0 (a band-mean absolute error)")
    tau = error.median() if tolerance is None else torch.as_tensor(tolerance).to(error)
    if not bool(torch.isfinite(tau)) or float(tau) < 0:
        raise ValueError(f"tolerance must be a finite error >= 0; got {float(tau)}")
    tau = tau.clamp_min(1e-12)
    return (tau - error) / (tau + error)


@dataclass(frozen=True)
class MAILConfig:
    """Adversarial-training settings.

    Attributes
    ----------
    method : ``"standard"`` (clean CE), ``"pgd_at"`` (Madry: CE on PGD barcodes) or
        ``"mail"`` (MAIL-AT: PGD barcodes, CE weighted by :func:`mail_weights`).
    epsilon : budget in shot-noise standard deviations (:func:`shot_noise_budget`).
    read_noise_e : read noise, electrons rms.
    pgd_steps, step_fraction : the training attack (:func:`pgd_attack`).
    gamma, beta : MAIL's weight slope and offset (the authors' code: 1 and -1.5).
    burn_in : fraction of the steps trained as PGD-AT before the weights switch on (the
        paper's burn-in: the margins of an untrained net carry no information; the authors'
        code starts MAIL from the PGD-AT model of epoch 75 of 120, or 60 of 100: 0.6).
    steps, lr, batch_size : Adam steps, learning rate, scenes per batch.
    lr_schedule : ``"constant"`` (default), ``"cosine"`` (to 0 at the last step) or ``"step"``
        (the authors' code: x0.1 at 0.625 and x0.01 at 0.75 of training, epochs 75 and 90 of
        120, where their MAIL phase starts); see :func:`learning_rate_at` and the module
        docstring for why the benchmark keeps ``"constant"``.
    """

    method: str = "mail"
    epsilon: float = 3.0
    read_noise_e: float = 0.0
    pgd_steps: int = 3
    step_fraction: float = 0.5
    gamma: float = 1.0
    beta: float = -1.5
    burn_in: float = 0.6
    steps: int = 200
    lr: float = 3e-3
    batch_size: int = 4
    lr_schedule: str = "constant"

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}; got {self.method!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}; got {self.lr_schedule!r}")
        if not 0 <= self.burn_in < 1:
            raise ValueError(f"burn_in must be a fraction in [0, 1); got {self.burn_in}")
        for name in ("steps", "pgd_steps", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1; got {getattr(self, name)}")


def learning_rate_at(step: int, config: MAILConfig) -> float:
    """Learning rate of Adam step ``step`` (0-based, ``< config.steps``) under the schedule.

    Returns
    -------
    float
        ``config.lr`` times 1 (constant), ``(1 + cos(pi step / steps)) / 2`` (cosine), or
        ``0.1`` from ``0.625 steps`` and ``0.01`` from ``0.75 steps`` (step).
    """
    progress = step / config.steps
    if config.lr_schedule == "cosine":
        return config.lr * learning_rate_factor(step, config.steps, "cosine", 0.0)
    if config.lr_schedule == "step":  # the authors' 0.1 at epoch 75 and 0.01 at 90 of 120
        return config.lr * 0.1 ** ((progress >= 0.625) + (progress >= 0.75))
    return config.lr


def adversarial_train_segmenter(
    segmenter: nn.Module,
    barcodes: torch.Tensor,
    labels: torch.Tensor,
    white_electrons,
    config: MAILConfig = MAILConfig(),
    reconstructor: nn.Module | None = None,
    cubes: torch.Tensor | None = None,
    seed: int = 0,
    progress: bool = False,
) -> dict:
    """Train a segmenter (and optionally a reconstructor) by ``config.method``, in place.

    Parameters
    ----------
    segmenter : torch.nn.Module
        ``(B, F, H, W) -> logits (B, K, H, W)``.
    barcodes : torch.Tensor, (S, F, H, W)
        Training barcodes (normalised, unitless).
    labels : torch.Tensor, (S, H, W)
        Class ids (``IGNORE_INDEX`` = unlabelled).
    white_electrons : array_like, (F,)
        ``w_f`` of the encoder (:func:`white_electrons_of`).
    config : MAILConfig
    reconstructor : torch.nn.Module, optional
        ``(B, F, H, W) -> cube (B, L, H, W)``, trained with a per-pixel band-mean L1 on every
        pixel (labels are not needed): on clean barcodes (``standard``) or on PGD barcodes
        aimed at its own L1 in the same budget (``pgd_at``, ``mail``); under ``mail``, after
        the burn-in, weighted by :func:`mail_weights` of :func:`reconstruction_margin` (see
        the module docstring). The segmenter's training is the same with or without it.
    cubes : torch.Tensor, (S, L, H, W), optional
        Targets of the reconstructor (apparent reflectance).
    seed : int
        Batches and attack starts.
    progress : bool
        Show a tqdm bar.

    Returns
    -------
    dict
        ``loss`` (last total loss), ``mean_margin`` (last batch's mean adversarial margin),
        ``lr`` (the last step's learning rate); with a reconstructor also
        ``reconstruction_l1`` (last batch's mean L1 on its training barcodes).
    """
    if barcodes.ndim != 4 or labels.shape != (barcodes.shape[0], *barcodes.shape[2:]):
        raise ValueError(
            f"barcodes (S, F, H, W) and labels (S, H, W) must agree; got "
            f"{tuple(barcodes.shape)} and {tuple(labels.shape)}"
        )
    if (reconstructor is None) != (cubes is None):
        raise ValueError("give both reconstructor and cubes, or neither")
    if cubes is not None and (cubes.ndim != 4 or cubes.shape[0] != barcodes.shape[0]
                              or cubes.shape[2:] != barcodes.shape[2:]):  # fmt: skip
        raise ValueError(
            f"cubes must be (S={barcodes.shape[0]}, L, H={barcodes.shape[2]}, "
            f"W={barcodes.shape[3]}); got {tuple(cubes.shape)}"
        )
    device = next(segmenter.parameters()).device
    generator = torch.Generator(device=device).manual_seed(int(seed))
    order = np.random.default_rng(seed)
    parameters = list(segmenter.parameters())
    if reconstructor is not None:
        parameters += list(reconstructor.parameters())
        # its own attack starts: the segmenter's generator is drawn exactly as without it
        reconstructor_generator = torch.Generator(device=device).manual_seed(int(seed) + 1)
    optimizer = torch.optim.Adam(parameters, lr=config.lr)
    white = torch.as_tensor(white_electrons, dtype=torch.float32, device=device)
    burn_in_steps = int(config.burn_in * config.steps)
    iterator = range(config.steps)
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(iterator, desc=f"adversarial training ({config.method})", leave=False)
    last = {"loss": float("nan"), "mean_margin": float("nan"), "lr": config.lr}
    for step in iterator:
        for group in optimizer.param_groups:
            group["lr"] = learning_rate_at(step, config)
        rows = order.choice(len(barcodes), min(config.batch_size, len(barcodes)), replace=False)
        x = barcodes[rows].to(device)
        y = labels[rows].to(device)
        valid = y != IGNORE_INDEX
        if config.method == "standard":
            inputs = x
        else:
            budget = shot_noise_budget(x, white, config.epsilon, config.read_noise_e)
            segmenter.eval()  # the attack sees inference-mode BatchNorm

            def attack_loss(z, y=y):
                return F.cross_entropy(segmenter(z), y, ignore_index=IGNORE_INDEX)

            inputs = pgd_attack(
                attack_loss, x, budget, config.pgd_steps, config.step_fraction, generator
            )
            segmenter.train()
        segmenter.train()
        logits = segmenter(inputs)
        per_pixel = F.cross_entropy(logits, y, ignore_index=IGNORE_INDEX, reduction="none")
        margin = probabilistic_margin(logits.detach(), y)
        if config.method == "mail" and step >= burn_in_steps:
            weights = mail_weights(margin, config.gamma, config.beta, valid)
        else:
            weights = valid.to(per_pixel.dtype)
        count = valid.sum().clamp_min(1)
        loss = (weights * per_pixel).sum() / count
        if reconstructor is not None:
            target = cubes[rows].to(device)
            reconstructor_inputs = x
            if config.method != "standard":
                reconstructor.eval()  # as the segmenter's attack: inference-mode BatchNorm

                def reconstructor_attack_loss(z, target=target):
                    return (reconstructor(z) - target).abs().mean()

                reconstructor_inputs = pgd_attack(
                    reconstructor_attack_loss, x, budget, config.pgd_steps,
                    config.step_fraction, reconstructor_generator,
                )  # fmt: skip
            reconstructor.train()
            error = (reconstructor(reconstructor_inputs) - target).abs().mean(dim=1)
            if config.method == "mail" and step >= burn_in_steps:
                pixel_weights = mail_weights(
                    reconstruction_margin(error), config.gamma, config.beta
                )
            else:  # every pixel counts: the L1 needs no labels
                pixel_weights = torch.ones_like(error)
            loss = loss + (pixel_weights * error).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        last = {
            "loss": float(loss.detach()),
            "mean_margin": float(margin[valid].mean()),
            "lr": optimizer.param_groups[0]["lr"],
        }
        if reconstructor is not None:
            last["reconstruction_l1"] = float(error.detach().mean())
    segmenter.eval()
    if reconstructor is not None:
        reconstructor.eval()
    return last

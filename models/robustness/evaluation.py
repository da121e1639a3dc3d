"""The shared red-team evaluation: clean and attacked mIoU / PSNR, attack success rates.

Every robustness figure of hyplex (``hyplex redteam``, ``benchmarks/learning_methods.py``)
comes from :func:`red_team_report`, so methods are compared by one evaluator. Attacks:

* ``pgd``: white-box PGD on the segmenter's cross-entropy
  (:func:`~hyplex.models.robustness.probabilistic_margin.pgd_attack`);
* ``etf_<k>``: the black-box ETF attack from a surrogate trained on ``k`` labelled pixels per
  class (:mod:`hyplex.models.robustness.lightweight_blackbox`); the target is only evaluated;
* ``pgd_reconstructor``: white-box PGD on the reconstructor's own L1 to the true cube
  (:func:`reconstructor_psnr_under_attack`), only where a reconstructor and cubes are given.
  ``psnr_pgd`` and ``psnr_etf_<k>`` are the reconstructor's PSNR on the barcodes aimed at the
  segmenter (what one perturbation against the segmenter does to the cube);
  ``psnr_pgd_reconstructor`` is its PSNR under an attack aimed at it.

All perturbations lie in the same physical budget, ``epsilon`` shot-noise standard deviations
(:func:`~hyplex.models.robustness.probabilistic_margin.shot_noise_budget`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hyplex.models.label_metrics import mean_iou
from hyplex.models.metrics import psnr
from hyplex.models.robustness.lightweight_blackbox import (
    ETFConfig,
    attack_success_rate,
    etf_attack,
    train_surrogate,
)
from hyplex.models.robustness.probabilistic_margin import (
    IGNORE_INDEX,
    pgd_attack,
    shot_noise_budget,
)

__all__ = ["red_team_report", "reconstructor_psnr_under_attack"]


def _predict(model, barcodes, batch_size=4):
    with torch.no_grad():
        return torch.cat(
            [model(barcodes[i : i + batch_size]) for i in range(0, len(barcodes), batch_size)]
        )


def _batched_pgd(loss_for, barcodes, budget, steps, step_fraction, generator, batch_size):
    """:func:`pgd_attack` over the scenes ``batch_size`` at a time; ``loss_for(rows)`` is the
    loss of the scenes ``rows`` (a slice) as a function of their barcodes. (S, F, H, W)."""
    pieces = []
    for start in range(0, len(barcodes), batch_size):
        rows = slice(start, start + batch_size)
        pieces.append(
            pgd_attack(
                loss_for(rows), barcodes[rows], budget[rows], steps, step_fraction, generator
            )
        )
    return torch.cat(pieces)


def _attack_reconstructor(
    reconstructor, barcodes, cubes, budget, steps, step_fraction, generator, batch_size
):
    """PGD barcodes (S, F, H, W) that raise the reconstructor's mean L1 to ``cubes``."""

    def loss_for(rows):
        return lambda z: (reconstructor(z) - cubes[rows]).abs().mean()

    return _batched_pgd(loss_for, barcodes, budget, steps, step_fraction, generator, batch_size)


def reconstructor_psnr_under_attack(
    reconstructor,
    barcodes: torch.Tensor,
    cubes: torch.Tensor,
    white_electrons,
    epsilon: float = 3.0,
    pgd_steps: int = 10,
    step_fraction: float = 0.25,
    seed: int = 0,
    batch_size: int = 4,
) -> dict:
    """PSNR of a reconstructor, clean and under PGD on its own L1 in the shot-noise budget.

    The attack (:func:`~hyplex.models.robustness.probabilistic_margin.pgd_attack`) maximises
    the mean absolute error ``(1/L) sum_l |r_l(x') - c_l|`` to the true cube, each barcode
    value within ``epsilon`` shot-noise standard deviations of the clean one
    (:func:`~hyplex.models.robustness.probabilistic_margin.shot_noise_budget`).

    Parameters
    ----------
    reconstructor : torch.nn.Module
        ``(B, F, H, W) -> (B, L, H, W)``, in eval mode; not modified.
    barcodes : torch.Tensor, (S, F, H, W)
        Clean normalised barcodes (unitless), on the reconstructor's device.
    cubes : torch.Tensor, (S, L, H, W)
        True apparent reflectance (the PSNR's peak is 1).
    white_electrons : array_like, (F,)
        Electrons of a white reflector per filter (the budget's scale).
    epsilon : float
        Budget in shot-noise standard deviations (>= 0).
    pgd_steps : int
        Ascent steps (>= 1), each ``step_fraction`` of the budget, after a random start.
    seed : int
        The attack's random start.
    batch_size : int
        Scenes per forward pass.

    Returns
    -------
    dict
        ``psnr_clean`` and ``psnr_pgd_reconstructor`` (dB), ``epsilon``.
    """
    if (
        barcodes.ndim != 4
        or cubes.ndim != 4
        or cubes.shape[0] != barcodes.shape[0]
        or (cubes.shape[2:] != barcodes.shape[2:])
    ):
        raise ValueError(
            f"barcodes (S, F, H, W) and cubes (S, L, H, W) must agree; got "
            f"{tuple(barcodes.shape)} and {tuple(cubes.shape)}"
        )
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}")
    generator = torch.Generator(device=barcodes.device).manual_seed(int(seed))
    budget = shot_noise_budget(barcodes, white_electrons, epsilon)
    attacked = _attack_reconstructor(
        reconstructor, barcodes, cubes, budget, pgd_steps, step_fraction, generator, batch_size
    )
    return {
        "psnr_clean": psnr(_predict(reconstructor, barcodes, batch_size), cubes),
        "psnr_pgd_reconstructor": psnr(_predict(reconstructor, attacked, batch_size), cubes),
        "epsilon": float(epsilon),
    }


def red_team_report(
    segmenter,
    barcodes: torch.Tensor,
    labels: torch.Tensor,
    white_electrons,
    epsilon: float = 3.0,
    reconstructor=None,
    cubes: torch.Tensor | None = None,
    attacker_barcodes: torch.Tensor | None = None,
    attacker_labels: torch.Tensor | None = None,
    samples_per_class=(1, 10),
    pgd_steps: int = 10,
    etf: ETFConfig | None = None,
    seed: int = 0,
    batch_size: int = 4,
) -> dict:
    """Clean and attacked figures of a segmenter (and reconstructor) on labelled barcodes.

    Parameters
    ----------
    segmenter : torch.nn.Module, ``(B, F, H, W) -> (B, K, H, W)`` (eval mode).
    barcodes : torch.Tensor, (S, F, H, W)
        Evaluation barcodes (normalised), on the models' device (CPU or CUDA); ``labels``,
        ``cubes`` on the same device.
    labels : torch.Tensor, (S, H, W), int64
    white_electrons : array_like, (F,)
        Electrons of a white reflector per filter (the budget's scale).
    epsilon : float
        Budget in shot-noise standard deviations.
    reconstructor : torch.nn.Module, optional
        ``(B, F, H, W) -> (B, L, H, W)``; with ``cubes (S, L, H, W)`` gives PSNRs.
    attacker_barcodes, attacker_labels : optional
        The scenes the black-box attacker labels a few pixels of (default: the evaluation
        scenes; the benchmark passes other scenes).
    samples_per_class : sequence of int
        Surrogate sizes for ETF.
    pgd_steps : int
        White-box PGD steps.
    etf : ETFConfig, optional
        The ETF settings (default ``ETFConfig()``).
    seed : int
    batch_size : int
        Scenes per forward pass.

    Returns
    -------
    dict
        ``miou_clean``; per attack ``a`` in ``pgd``, ``etf_<k>``: ``miou_<a>``,
        ``success_<a>`` (share of right pixels turned wrong); with a reconstructor also
        ``psnr_clean`` and ``psnr_<a>`` (dB, under the attacks aimed at the segmenter) and
        ``psnr_pgd_reconstructor`` (dB, under PGD aimed at the reconstructor's own L1,
        :func:`reconstructor_psnr_under_attack`, ``pgd_steps`` steps, its own random start
        from ``seed + 1``); ``epsilon``.
    """
    if barcodes.ndim != 4 or labels.shape != (barcodes.shape[0], *barcodes.shape[2:]):
        raise ValueError(
            f"barcodes (S, F, H, W) and labels (S, H, W) must agree; got "
            f"{tuple(barcodes.shape)} and {tuple(labels.shape)}"
        )
    etf = ETFConfig() if etf is None else etf
    with torch.no_grad():
        n_classes = int(segmenter(barcodes[:1]).shape[1])
    generator = torch.Generator(device=barcodes.device).manual_seed(int(seed))
    budget = shot_noise_budget(barcodes, white_electrons, epsilon)
    clean_prediction = _predict(segmenter, barcodes, batch_size).argmax(1)
    report = {"epsilon": float(epsilon)}

    def miou(prediction):
        return mean_iou(
            prediction.cpu().numpy(), labels.cpu().numpy(), n_classes, ignore_index=IGNORE_INDEX
        )

    report["miou_clean"] = miou(clean_prediction)
    if reconstructor is not None and cubes is not None:
        report["psnr_clean"] = psnr(_predict(reconstructor, barcodes, batch_size), cubes)
    attacked = {}

    def segmenter_loss_for(rows):
        return lambda z: F.cross_entropy(segmenter(z), labels[rows], ignore_index=IGNORE_INDEX)

    attacked["pgd"] = _batched_pgd(
        segmenter_loss_for, barcodes, budget, pgd_steps, 0.25, generator, batch_size
    )
    source_x = barcodes if attacker_barcodes is None else attacker_barcodes
    source_y = labels if attacker_labels is None else attacker_labels
    for k in samples_per_class:
        surrogate = train_surrogate(source_x.cpu(), source_y.cpu(), n_classes, int(k), seed=seed)
        surrogate = surrogate.to(barcodes.device)
        attacked[f"etf_{int(k)}"] = etf_attack(surrogate, barcodes, budget, etf, generator)
    for name, adversarial in attacked.items():
        prediction = _predict(segmenter, adversarial, batch_size).argmax(1)
        report[f"miou_{name}"] = miou(prediction)
        report[f"success_{name}"] = attack_success_rate(clean_prediction, prediction, labels)
        if reconstructor is not None and cubes is not None:
            report[f"psnr_{name}"] = psnr(_predict(reconstructor, adversarial, batch_size), cubes)
    if reconstructor is not None and cubes is not None:  # its own attack, its own start
        own = torch.Generator(device=barcodes.device).manual_seed(int(seed) + 1)
        aimed = _attack_reconstructor(
            reconstructor, barcodes, cubes, budget, pgd_steps, 0.25, own, batch_size
        )
        report["psnr_pgd_reconstructor"] = psnr(_predict(reconstructor, aimed, batch_size), cubes)
    return report

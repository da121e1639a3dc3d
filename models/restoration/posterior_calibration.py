"""Calibrating the conditional flow's intervals on a held-out split, and measuring coverage.

A conditional flow fitted by maximum likelihood on training scenes learns the spread of the
*training* residuals; on new scenes the residuals are larger and its central intervals cover
less than their nominal level (0.81 for the 90 % interval in the first benchmark run).  Post-hoc
recalibration on held-out data [Kuleshov] fixes that without touching the point estimate.  The
flow decoder (:mod:`hyplex.models.restoration.conditional_flow`, eq. 1) writes every sample as
``x = mu + s_l r`` with ``r = G^{-1}(z; c)`` and a per-band scale ``s_l``, so the central
interval of the samples is ``[mu + s_l q_lo, mu + s_l q_hi]`` with ``q_lo, q_hi`` the sample
quantiles of ``r``.  A value ``x`` with residual ``e = x - mu`` is inside it exactly when
``s_l >= score``, where (for ``q_lo < 0 < q_hi``, the usual case)::

    score = e / q_hi   if e >= 0,       score = e / q_lo   if e < 0                   (1)

(``+inf`` when the interval lies on the wrong side of ``mu``).  Split conformal prediction
[Conformal] section 2.2 then takes, per band, the ``k = ceil((n + 1) level)``-th smallest of the
``n`` calibration scores as ``s_l``: at least a fraction ``level`` of exchangeable new values
fall inside their intervals, and on the calibration split itself the fraction is
``k / n``.  (Where ``q_lo > 0`` or ``q_hi < 0`` the interval also has an upper limit in ``s``;
eq. (1) ignores it, so coverage there can only be lower than the score says.)

References
----------
[Kuleshov] V. Kuleshov, N. Fenner, S. Ermon, "Accurate Uncertainties for Deep Learning Using
    Calibrated Regression", ICML 2018, section 3.
[Conformal] J. Lei, M. G'Sell, A. Rinaldo, R. Tibshirani, L. Wasserman, "Distribution-Free
    Predictive Inference for Regression", JASA 2018, section 2.2 (split conformal).
"""

from __future__ import annotations

import math

import torch

__all__ = ["calibrate_band_scale", "interval_coverage", "interval_scores"]


def _check_level(level) -> float:
    if not isinstance(level, (int, float)) or isinstance(level, bool) or not 0.0 < level < 1.0:
        raise ValueError(f"level must be a float in (0, 1); got {level!r}")
    return float(level)


def interval_scores(residual, lower, upper) -> torch.Tensor:
    """Eq. (1): the smallest scale at which ``[scale * lower, scale * upper]`` holds ``residual``.

    Parameters
    ----------
    residual : torch.Tensor
        ``x - mu``, any shape, in the cube's unit.
    lower, upper : torch.Tensor
        Interval limits of the unscaled residual samples, the same shape.

    Returns
    -------
    torch.Tensor
        Scores (unitless, >= 0, ``+inf`` where no positive scale reaches the value).
    """
    if not residual.shape == lower.shape == upper.shape:
        raise ValueError(
            "residual, lower and upper must have one shape; got "
            f"{tuple(residual.shape)}, {tuple(lower.shape)}, {tuple(upper.shape)}"
        )
    inf = torch.full_like(residual, math.inf)
    above = torch.where(upper > 0, residual / upper.clamp(min=1e-30), inf)
    below = torch.where(lower < 0, residual / lower.clamp(max=-1e-30), inf)
    # a value the interval already holds at any scale (lower <= 0 <= upper, residual 0) scores 0
    return torch.where(residual >= 0, above, below).clamp(min=0.0)


@torch.no_grad()
def calibrate_band_scale(
    model,
    barcodes: torch.Tensor,
    cubes: torch.Tensor,
    level: float = 0.9,
    n_samples: int = 32,
    generator: torch.Generator | None = None,
    batch_size: int = 4,
) -> torch.Tensor:
    """Fit ``model.band_scale`` so that the central ``level`` interval covers a fraction
    ``level`` of the calibration values in every band (split conformal, module docstring).

    Parameters
    ----------
    model : hyplex.models.restoration.conditional_flow.ConditionalFlowDecoder
        Trained; its ``band_scale`` is replaced (in place).
    barcodes : torch.Tensor, (N, F, H, W)
        Barcode maps (or noisy cubes) of the calibration scenes: never the test scenes.
    cubes : torch.Tensor, (N, L, H, W)
        Their true cubes.
    level : float
        Nominal coverage of the interval, in (0, 1) (0.9: the 5-95 % interval of
        ``model.posterior``).
    n_samples : int
        Posterior samples per value for the interval limits (>= 2; use what ``posterior`` uses).
    generator : torch.Generator, optional
        Draws the latents.
    batch_size : int
        Scenes per forward pass.

    Returns
    -------
    torch.Tensor, (L,)
        The fitted scale (also stored in ``model.band_scale``).
    """
    level = _check_level(level)
    if not isinstance(n_samples, int) or n_samples < 2:
        raise ValueError(f"n_samples must be an int >= 2; got {n_samples!r}")
    if barcodes.ndim != 4 or cubes.ndim != 4 or barcodes.shape[0] != cubes.shape[0]:
        raise ValueError(
            "barcodes (N, F, H, W) and cubes (N, L, H, W) must be 4-D with the same N; got "
            f"{tuple(barcodes.shape)} and {tuple(cubes.shape)}"
        )
    was_training = model.training
    model.eval()
    device = model.band_scale.device
    tails = torch.tensor([(1.0 - level) / 2.0, (1.0 + level) / 2.0], device=device)
    scores = []
    for start in range(0, barcodes.shape[0], int(batch_size)):
        condition = model.condition(barcodes[start : start + batch_size].to(device))
        shape = model.estimate(condition).shape
        cube = cubes[start : start + batch_size].to(device, condition.dtype)
        if cube.shape != shape:
            raise ValueError(
                f"cubes must be (N, L, H, W) with L = {shape[1]}; got {tuple(cubes.shape)}"
            )
        draws = torch.stack([
            model.residual_from_latent(
                torch.randn(shape, generator=generator, dtype=condition.dtype, device=device),
                condition,
            )
            for _ in range(n_samples)
        ]).float()  # fmt: skip
        lower, upper = torch.quantile(draws, tails, dim=0)
        residual = (cube - model.estimate(condition)).float()
        scores.append(interval_scores(residual, lower, upper).transpose(0, 1).flatten(1))
    scores = torch.cat(scores, dim=1)  # (L, values per band)
    count = scores.shape[1]
    rank = min(count, math.ceil((count + 1) * level))
    scale = scores.kthvalue(rank, dim=1).values
    if not torch.isfinite(scale).all():
        bad = torch.nonzero(~torch.isfinite(scale)).flatten().tolist()
        raise ValueError(
            f"bands {bad[:5]} cannot reach coverage {level} by scaling: their sampled intervals "
            "lie on one side of the estimate for too many calibration values"
        )
    model.band_scale.copy_(scale.clamp(min=1e-6).to(model.band_scale.dtype))
    model.train(was_training)
    return model.band_scale.detach().clone()


def interval_coverage(cubes, lower, upper) -> dict:
    """Empirical coverage of the intervals ``[lower, upper]``.

    Parameters
    ----------
    cubes, lower, upper : torch.Tensor, (B, L, h, w)
        True cubes and the interval limits (e.g. ``model.posterior(...).lower / .upper``).

    Returns
    -------
    dict
        ``mean`` (over all values), ``per_band`` (list of L floats) and ``worst_band``.
    """
    if not cubes.shape == lower.shape == upper.shape or cubes.ndim != 4:
        raise ValueError(
            "cubes, lower and upper must be (B, L, h, w) of one shape; got "
            f"{tuple(cubes.shape)}, {tuple(lower.shape)}, {tuple(upper.shape)}"
        )
    inside = ((cubes >= lower) & (cubes <= upper)).float()
    per_band = inside.mean(dim=(0, 2, 3))
    return {
        "mean": float(inside.mean()),
        "per_band": [float(v) for v in per_band],
        "worst_band": float(per_band.min()),
    }

"""EUA / D^2: energy-boundary unlearning and an energy-based refusal at inference.

P. Yang, J. Yu, Q. Wang, P. Torr, B. Han, X. Chen, "Distinguishable Deletion: Unifying
Knowledge Erasure and Refusal for Large Language Model Unlearning", ICML 2026
(arXiv:2605.16776).

Distinguishable Deletion asks for two things at once: the forget knowledge is *erased* (its
responses carry no confident knowledge) and it is *distinguishable* from retained knowledge,
so that a refusal can be triggered at inference. Both are read from the energy index of the
output distribution (free energy, Liu et al. NeurIPS 2020, eq. (1))::

    E(x) = -T logsumexp(z(x) / T)          (low energy = confident knowledge)

Energy-based Unlearning Alignment (EUA) trains with an energy boundary: forget elements are
pushed *above* a margin ``m_u``, retain elements kept *below* ``m_r < m_u`` (squared hinges, as
in energy-bounded training), plus the retain cross-entropy::

    L = mean_u max(0, m_u - E(x_u))^2 + lam_r [ CE(D_r) + mean_r max(0, E(x_r) - m_r)^2 ]

The margins are set from the original model on the first retain batch: ``m_r`` its
``quantile`` retain energy, ``m_u = m_r + gap``. At inference (:func:`energy_refusal`), an
element whose energy exceeds a threshold is refused; for a segmenter, refusal is the
``unknown`` label (-1, :data:`hyplex.models.openset.auxiliary.UNKNOWN`). The threshold is
calibrated at 95 % TPR on held-out retain elements (:func:`refusal_threshold`), as the
open-set heads are. Not reproduced: the paper's latent-representation analysis and its
LLM refusal template; the energy here is that of the segmenter's class logits.
"""

from __future__ import annotations

import math

import torch

from hyplex.models.unlearning.toolkit import (
    Objective,
    UnlearningMethod,
    flat_logits,
    forward_elements,
    upcast,
    weighted_mean,
)

__all__ = [
    "UNKNOWN_LABEL",
    "element_energy",
    "energy_refusal",
    "refusal_threshold",
    "EnergyUnlearningAlignment",
]

UNKNOWN_LABEL = -1


def element_energy(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Free energy ``-T logsumexp(z / T)`` over the class axis of flat logits ``(M, C) ->
    (M,)``."""
    return -temperature * torch.logsumexp(upcast(logits) / temperature, dim=-1)


def energy_refusal(logits: torch.Tensor, threshold: float, temperature: float = 1.0):
    """Labels with refusal: ``argmax`` where ``E <= threshold``, :data:`UNKNOWN_LABEL` above.

    Parameters
    ----------
    logits : (N, C), (B, C, H, W) or (B, T, V).
    threshold : energy threshold (logit units), e.g. from :func:`refusal_threshold`.

    Returns
    -------
    torch.Tensor, int64, the logits' shape less the class axis.
    """
    axis = 1 if logits.ndim == 4 else -1
    energy = element_energy(logits.movedim(axis, -1), temperature)
    labels = logits.argmax(dim=axis)
    return torch.where(energy > threshold, torch.full_like(labels, UNKNOWN_LABEL), labels)


def refusal_threshold(model, batches, tpr: float = 0.95, temperature: float = 1.0) -> float:
    """Energy below which a fraction ``tpr`` of the (held-out retain) elements of ``batches``
    fall: those are kept, the rest refused."""
    from hyplex.models.unlearning.toolkit import as_batch

    if not 0 < tpr < 1:
        raise ValueError(f"tpr must be in (0, 1); got {tpr!r}")
    energies = []
    with torch.no_grad():
        for item in batches:
            batch = as_batch(item)
            logits, _, weights = flat_logits(model(batch.inputs), batch.targets, batch.mask)
            energies.append(element_energy(logits, temperature)[weights > 0])
    values = torch.cat(energies)
    if values.numel() == 0:
        raise ValueError("no element counts in the batches given for the refusal threshold")
    return float(torch.quantile(values, tpr))


class EnergyUnlearningAlignment(UnlearningMethod):
    """EUA. ``gap`` (logit units) separates the retain margin from the forget margin;
    ``quantile`` sets the retain margin from the original's retain energies."""

    name = "EUA"
    paper = "Distinguishable Deletion: Unifying Knowledge Erasure and Refusal (ICML 2026)"

    def __init__(self, gap: float = 4.0, quantile: float = 0.9, temperature: float = 1.0,
                 retain_weight: float = 1.0):  # fmt: skip
        super().__init__(retain_weight)
        for name, value in (("gap", gap), ("temperature", temperature)):
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number > 0; got {value!r}")
        if not 0 < quantile < 1:
            raise ValueError(f"quantile must be in (0, 1); got {quantile!r}")
        self.gap, self.quantile, self.temperature = float(gap), float(quantile), float(temperature)
        self.retain_margin = self.forget_margin = None

    def prepare(self, model, reference, forget, retain, optimizer) -> None:
        self.retain_margin = self.forget_margin = None

    def _margins(self, reference, retain, forget) -> None:
        batch = retain if retain is not None else forget
        with torch.no_grad():
            logits, _, weights = forward_elements(reference, batch)
            energy = element_energy(logits, self.temperature)[weights > 0]
        if retain is None:  # no retain data: the forget data's own energies set the scale
            energy = energy.max().reshape(1)
        self.retain_margin = float(torch.quantile(energy, self.quantile))
        self.forget_margin = self.retain_margin + self.gap

    def objective(self, model, reference, forget, retain):
        if self.retain_margin is None:
            self._margins(reference, retain, forget)
        logits, _, weights = forward_elements(model, forget)
        energy = element_energy(logits, self.temperature)
        loss = weighted_mean(torch.relu(self.forget_margin - energy).square(), weights)
        keep = None
        if retain is not None and self.retain_weight > 0:
            r_logits, r_targets, r_weights = forward_elements(model, retain)
            r_energy = element_energy(r_logits, self.temperature)
            hinge = weighted_mean(torch.relu(r_energy - self.retain_margin).square(), r_weights)
            log_p = torch.log_softmax(upcast(r_logits), dim=-1).gather(1, r_targets[:, None])
            keep = weighted_mean(-log_p[:, 0], r_weights) + hinge
        extras = {"forget_energy": float(weighted_mean(energy.detach(), weights))}
        return Objective(loss, keep, extras)

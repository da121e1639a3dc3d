"""AEGIS-style concept erasure from hyplex's generator GenIAS: a material no longer generated.

F. Li, K. Li, Q. Wang, B. Han, J. Zhou, "AEGIS: Adversarial Target-Guided
Retention-Data-Free Robust Concept Erasure from Diffusion Models", ICLR 2026
(arXiv:2602.06771).

AEGIS fine-tunes a generator so that a concept is not produced, with two parts:

* **Adversarial Erasure Target (AET)**: erasing the single prompt that names the concept
  leaves class-level remnants that related prompts reactivate. AEGIS instead erases an
  *adversarial* input that is moved, at every step, towards the concept's semantic centre
  (where the concept is produced most strongly), and maps it to a safe output (its erasure
  loss ``L_e``).
* **Gradient Regularisation Projection (GRP)**, retention-data-free: a retention loss
  ``L_r`` that needs no retained data keeps the generator's outputs where the original put
  them, and the erasure gradient is projected off the retention gradient when they conflict
  (the closed form of :func:`hyplex.models.unlearning.gradient_rectification.rectify`).

Here the generator is GenIAS (:class:`hyplex.models.openset.anomaly_generator.GenIAS`), a VAE
over reflectance spectra; the "prompt" is its latent code ``z`` and a concept is a material
class (e.g. ``paint``). With ``E`` the frozen encoder, ``D`` the decoder (fine-tuned),
``D_0`` the original decoder and ``p_c`` a differentiable concept probe (a nearest-centroid
classifier of shape-normalised spectra, :class:`ConceptProbe`)::

    z_c      = E_mu(x_c)                           latents of the concept's spectra
    z_adv    = argmax_{||z - z_c||_inf <= eps} log p_c(D(z))     (PGD, AET; re-found each step)
    s        = D_0(0)                              the safe target: the prior mean's output
    L_e      = mean ||D(z_adv) - s||^2 + mean ||D(z_c) - s||^2
    L_r      = mean_{z ~ N(0, sigma_p^2)} ||D(z) - D_0(z)||^2     (no retained spectra)
    update   = rectify(grad L_e, grad L_r) + lam grad L_r

Not reproduced from the diffusion setting, plainly: there is no text encoder, no
cross-attention and no denoising schedule; the adversarial *prompt* search over token
embeddings becomes a PGD search over the VAE latent; the erasure target of AEGIS (a noise
prediction for a safe prompt) becomes the decoded prior mean; the paper's attack benchmarks
(UnlearnDiffAtk, P4D, Ring-A-Bell) and image metrics (FID, CLIP) are replaced by the probe's
concept rate under a stronger latent PGD attack and the reconstruction error of the other
materials.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from hyplex.models.unlearning.gradient_rectification import rectify
from hyplex.models.unlearning.toolkit import Adam, flat_gradient, progress_bar

__all__ = ["ConceptProbe", "AEGISSettings", "adversarial_latents", "erase_concept",
           "concept_rate"]  # fmt: skip


def _shape(spectra: torch.Tensor) -> torch.Tensor:
    """Spectra ``(N, L)`` scaled to unit mean (brightness removed; the shape is the material)."""
    return spectra / spectra.mean(dim=1, keepdim=True).abs().clamp_min(1e-3)


class ConceptProbe(nn.Module):
    """Nearest-centroid material classifier of shape-normalised spectra, differentiable.

    ``log p(class | x) = log_softmax(-||shape(x) - centroid_k||^2 / temperature)``.

    Parameters
    ----------
    spectra : (N, L) reflectance (unitless).
    labels : N class names.
    temperature : softmax temperature (squared shape units).
    """

    def __init__(self, spectra, labels, temperature: float = 0.05):
        super().__init__()
        x = _shape(torch.as_tensor(np.asarray(spectra), dtype=torch.float32))
        self.classes = sorted(set(labels))
        index = torch.tensor([self.classes.index(label) for label in labels])
        centroids = torch.stack([x[index == k].mean(0) for k in range(len(self.classes))])
        self.register_buffer("centroids", centroids)
        self.temperature = float(temperature)

    def log_probabilities(self, spectra: torch.Tensor) -> torch.Tensor:
        """``(N, L) -> (N, K)``."""
        distance = torch.cdist(_shape(spectra), self.centroids).square()
        return torch.log_softmax(-distance / self.temperature, dim=1)

    def predict(self, spectra: torch.Tensor) -> torch.Tensor:
        return self.log_probabilities(spectra).argmax(1)


@dataclass
class AEGISSettings:
    """Erasure settings: ``steps`` Adam steps at ``lr``; AET search radius ``epsilon`` (latent
    units, L-inf), ``attack_steps`` PGD steps of size ``epsilon / 4``; ``prior_samples``
    latents per step for ``L_r``, drawn from the generator's own prior ``N(0, prior_std^2)``
    (GenIAS's default prior is 0.5: a property of the model, not retained data);
    ``retain_weight`` (lam); ``seed``."""

    steps: int = 200
    lr: float = 2e-3
    epsilon: float = 0.5
    attack_steps: int = 5
    prior_samples: int = 64
    retain_weight: float = 1.0
    prior_std: float = 0.5
    seed: int = 0
    progress: bool = False

    def __post_init__(self):
        for name in ("steps", "attack_steps", "prior_samples"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an integer >= 0; got {value!r}")
        for name in ("lr", "epsilon", "prior_std"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number > 0; got {value!r}")


def adversarial_latents(decoder, probe, concept: int, start: torch.Tensor, epsilon: float,
                        steps: int) -> torch.Tensor:  # fmt: skip
    """PGD (sign steps of ``epsilon / 4``) from ``start (N, d)`` within an L-inf ball of
    ``epsilon``, maximising ``log p_concept(decoder(z))``. Returns ``(N, d)`` detached."""
    z = start.detach().clone()
    for _ in range(int(steps)):
        z.requires_grad_(True)
        score = probe.log_probabilities(decoder(z))[:, concept].sum()
        (gradient,) = torch.autograd.grad(score, [z])
        with torch.no_grad():
            z = z + 0.25 * epsilon * gradient.sign()
            z = start + (z - start).clamp(-epsilon, epsilon)
    return z.detach()


def concept_rate(decoder, probe, concept: int, latents: torch.Tensor) -> float:
    """Share of ``decoder(latents)`` the probe calls ``concept``, in [0, 1]."""
    with torch.no_grad():
        return float((probe.predict(decoder(latents)) == concept).float().mean())


def erase_concept(genias, probe: ConceptProbe, concept_spectra, concept: str,
                  settings: AEGISSettings | None = None, adversarial: bool = True,
                  projection: bool = True):  # fmt: skip
    """A copy of ``genias`` whose decoder no longer generates ``concept``.

    Parameters
    ----------
    genias : a fitted :class:`~hyplex.models.openset.anomaly_generator.GenIAS` (not modified).
    probe : the concept probe; ``concept`` must be one of ``probe.classes``.
    concept_spectra : (N, L) spectra of the concept (the only data used: retention-data-free).
    adversarial, projection : AEGIS's AET and GRP (False: the plain baselines, fixed
        erasure inputs ``z_c`` / the plain sum of the gradients), for ablations.

    Returns
    -------
    (erased GenIAS copy in eval mode, dict of logged floats)
    """
    settings = settings or AEGISSettings()
    if concept not in probe.classes:
        raise ValueError(f"concept {concept!r} is not a probe class; expected {probe.classes}")
    c = probe.classes.index(concept)
    model = copy.deepcopy(genias).eval()
    original = copy.deepcopy(genias.decoder).eval()
    for p in [*model.parameters(), *original.parameters()]:
        p.requires_grad_(False)
    decoder = model.decoder
    parameters = list(decoder.parameters())
    for p in parameters:
        p.requires_grad_(True)
    device = parameters[0].device
    x = torch.as_tensor(np.asarray(concept_spectra), dtype=torch.float32, device=device)
    with torch.no_grad():
        z_c, _, _ = model.encode(x)
        safe = original(torch.zeros(1, model.latent_dim, device=device))
    prior_std = settings.prior_std
    generator = torch.Generator().manual_seed(int(settings.seed))
    optimizer = Adam(parameters, settings.lr)
    bar = progress_bar(settings.steps, "AEGIS", settings.progress)
    conflicts = 0
    for _ in range(settings.steps):
        erase_inputs = [z_c]
        if adversarial:
            erase_inputs.append(
                adversarial_latents(decoder, probe, c, z_c, settings.epsilon, settings.attack_steps)
            )
        erase = sum(((decoder(z) - safe) ** 2).mean() for z in erase_inputs)
        prior = prior_std * torch.randn(settings.prior_samples, model.latent_dim,
                                        generator=generator).to(device)  # fmt: skip
        with torch.no_grad():
            kept = original(prior)
        retain = ((decoder(prior) - kept) ** 2).mean()
        g_e = flat_gradient(erase, parameters)
        g_r = flat_gradient(retain, parameters)
        conflicts += bool(torch.dot(g_e, g_r) < 0)
        g = rectify(g_e, g_r) if projection else g_e
        optimizer.step_flat(g + settings.retain_weight * g_r)
        bar.update(1)
    bar.close()
    for p in parameters:
        p.requires_grad_(False)
    return model.eval(), {"conflicting_steps": conflicts, "steps": settings.steps}

"""Shared check of the conditional-flow tests: the exact log-determinant by autograd."""

import torch


def autograd_slogdet(model, cube: torch.Tensor, condition: torch.Tensor):
    """(sign, log|det|) of the Jacobian of ``model.to_latent`` at ``cube`` (1, L, H, W),
    computed by ``torch.autograd.functional.jacobian`` and ``slogdet`` (float64 for 1e-8)."""

    def latent(flat):
        return model.to_latent(flat.reshape(cube.shape), condition)[0].flatten()

    jacobian = torch.autograd.functional.jacobian(latent, cube.flatten())
    return torch.linalg.slogdet(jacobian)

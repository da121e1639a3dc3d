"""Eigen-decomposition with a backward pass that is safe at degenerate eigenvalues.

``torch.linalg.eig`` differentiates through ``1 / (lambda_j - lambda_i)``, which is infinite
where two eigenvalues coincide: exactly what a mirror- or C4-symmetric unit cell at normal
incidence produces. For a loss that does not depend on how the eigenvectors of a degenerate
subspace are chosen (every RCWA observable), the numerator of that term vanishes too, and the
limit is finite. Following fmmax (``fmmax/utils.py``, ``eig``) and Boeddeker et al.,
arXiv:1701.00392, we replace ``1/E`` by the Lorentzian-broadened ``E* / (|E|^2 + eps)`` with a
broadening relative to the spread of the spectrum, ``eps = 1e-12 max|E|^2`` (MEEP.md notes
that torcwa's absolute 1e-10 gave NaN gradients).

The gradient itself is the standard one for a non-Hermitian eigen-decomposition with
unit-norm eigenvectors (the convention of LAPACK and torch), e.g. torch's
``linalg_eig_backward``::

    A_bar = V^{-H} (diag(L_bar) + F o (V^H V_bar - V^H V Re diag(V^H V_bar))) V^H,
    F_ij = 1 / conj(L_j - L_i)   (i != j),      F_ii = 0.
"""

from __future__ import annotations

import torch

from .parallel import map_batch

__all__ = ["eig"]

RELATIVE_BROADENING = 1e-12


class _BroadenedEig(torch.autograd.Function):
    @staticmethod
    def forward(ctx, matrix: torch.Tensor):
        eigenvalues, eigenvectors = map_batch(torch.linalg.eig, matrix)
        ctx.save_for_backward(eigenvalues, eigenvectors)
        return eigenvalues, eigenvectors

    @staticmethod
    def backward(ctx, grad_eigenvalues, grad_eigenvectors):
        eigenvalues, eigenvectors = ctx.saved_tensors
        v, vh = eigenvectors, eigenvectors.mH
        n = eigenvalues.shape[-1]
        eye = torch.eye(n, dtype=torch.bool, device=v.device)
        inner = torch.zeros_like(v)
        if grad_eigenvectors is not None:
            vh_gv = vh @ grad_eigenvectors
            inner = vh_gv - (vh @ v) * vh_gv.diagonal(dim1=-2, dim2=-1).real.unsqueeze(-2)
            # E_ij = L_j - L_i; broadened 1/conj(E) = E / (|E|^2 + eps).
            gap = eigenvalues.unsqueeze(-2) - eigenvalues.unsqueeze(-1)
            gap_sq = gap.real.square() + gap.imag.square()
            eps = RELATIVE_BROADENING * gap_sq.amax(dim=(-2, -1), keepdim=True).clamp_min(1e-300)
            inner = (inner * gap / (gap_sq + eps)).masked_fill(eye, 0)
        if grad_eigenvalues is not None:
            inner = inner + torch.diag_embed(grad_eigenvalues)
        # A_bar = V^{-H} inner V^H: solve V^H X = inner V^H.
        rhs = inner @ vh
        both = torch.stack(torch.broadcast_tensors(vh, rhs), -3)
        return map_batch(lambda b: torch.linalg.solve(b[:, 0], b[:, 1]), both, core_dims=3)


def eig(matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenvalues ``(..., n)`` and unit-norm eigenvectors ``(..., n, n)`` of ``(..., n, n)``.

    Same forward as :func:`torch.linalg.eig`; the backward is broadened at degeneracies (see
    the module docstring). The input must be complex.
    """
    if not matrix.is_complex():
        raise TypeError(f"eig expects a complex matrix, got dtype {matrix.dtype}")
    return _BroadenedEig.apply(matrix)

"""Eigenmodes of a patterned layer: in-plane permittivity operator, P, Q and the eigenproblem.

The conventions are those of :mod:`hyplex.optics.rcwa` (normalised ``z' = k0 z``,
``H~ = i Z0 H``, ``exp(-i w t)``)::

    d/dz' [Ex, Ey] = P [H~x, H~y],  P = [[Kx Ez^-1 Ky, I - Kx Ez^-1 Kx],
                                         [Ky Ez^-1 Ky - I, -Ky Ez^-1 Kx]]
    d/dz' [H~x, H~y] = Q [Ex, Ey],  Q = [[Kx Ky + Eyx, Eyy - Kx^2],
                                         [Ky^2 - Exx, -Ky Kx - Exy]]

Derivation of ``Q`` (normalised units, ``d/dx' -> i Kx``, ``d/dy' -> i Ky``): ``curl E = H~``
gives ``H~z = i (Kx Ey - Ky Ex)``; ``curl H~ = D~`` (``D~ = eps E`` with the factorised
in-plane operator ``D~x = Exx Ex + Exy Ey``, ``D~y = Eyx Ex + Eyy Ey``) gives
``d/dz' H~x = D~y + i Kx H~z = (Kx Ky + Eyx) Ex + (Eyy - Kx^2) Ey`` and
``d/dz' H~y = i Ky H~z - D~x = (Ky^2 - Exx) Ex - (Ky Kx + Exy) Ey``. With ``Exy = Eyx = 0``
this is the familiar form (Rumpf, PIER B 35, 241 (2011)); in a uniform medium ``Exy = Eyx = 0``
exactly, because the vector rule's correction ``Delta = [[eps]] - [[1/eps]]^-1`` vanishes.
``P`` is unchanged: ``D_z`` pairs ``eps`` with the continuous ``E_z`` of vertical sidewalls,
Laurent's rule. The modes solve ``P Q W = W diag(-kz^2)``, ``lam = -i kz`` with ``Im kz > 0``,
and ``V = -Q W lam^-1``.
"""

from __future__ import annotations

import torch

from .eig import eig
from .factorization import normal_projector, projector_matrices, vector_permittivity
from .fourier import (
    Harmonics,
    inverse_rule_matrices,
    laurent_matrix,
    pixel_fourier_coefficients_2d,
)
from .scattering import Modes, kz_branch
from .vector_field import doubled_angle_field

__all__ = ["in_plane_permittivity", "patterned_modes"]


def in_plane_permittivity(
    eps_laurent: torch.Tensor,
    inverse_grid: torch.Tensor,
    field_source: torch.Tensor,
    harmonics: Harmonics,
    factorization: str,
    period: tuple[float, float],
    smoothing: float,
):
    """The factorised in-plane permittivity ``(Exx, Exy, Eyx, Eyy)``.

    Parameters
    ----------
    eps_laurent : ``(..., L, n_h, n_h)``, ``[[eps]]``.
    inverse_grid : complex ``(..., L, Nx, Ny)``, ``1/eps`` on the pixel grid.
    field_source : ``(..., C, Nx, Ny)``, what the normal field is computed from (the fill
        fraction, ``C = 1``, or the permittivity grid, ``C = L``).
    harmonics, factorization, period, smoothing : see :func:`hyplex.optics.rcwa.solve`
        (``period`` in nm).

    Returns
    -------
    Exx, Exy, Eyx, Eyy : ``(..., L, n_h, n_h)``; ``Exy`` and ``Eyx`` are None for ``"li"`` and
    ``"laurent"``, whose in-plane operator is diagonal in x/y.
    """
    M, N = harmonics.M, harmonics.N
    if factorization == "li":
        eps_xx, eps_yy = inverse_rule_matrices(inverse_grid, harmonics)
        return eps_xx, None, None, eps_yy
    if factorization == "laurent":
        return eps_laurent, None, None, eps_laurent
    # The normal field depends on the pattern only: one per design, shared by wavelengths.
    precision = eps_laurent.dtype
    if not field_source.is_complex():
        precision = torch.float64 if precision == torch.complex128 else torch.float32
    z = doubled_angle_field(field_source.to(precision), period, harmonics, smoothing)
    projector = projector_matrices(normal_projector(z, factorization), harmonics)
    inverse_laurent = laurent_matrix(pixel_fourier_coefficients_2d(inverse_grid, M, N), harmonics)
    return vector_permittivity(
        eps_laurent, inverse_laurent, tuple(p.unsqueeze(-3) for p in projector)
    )


def patterned_modes(
    eps_coeffs: torch.Tensor,
    inverse_grid: torch.Tensor,
    field_source: torch.Tensor,
    kx: torch.Tensor,
    ky: torch.Tensor,
    harmonics: Harmonics,
    factorization: str,
    period: tuple[float, float],
    smoothing: float,
) -> Modes:
    """Modes ``(lam, W, V)`` of a patterned layer.

    Parameters
    ----------
    eps_coeffs : ``(..., L, 4M+1, 4N+1)``, Fourier coefficients of ``eps``.
    inverse_grid, field_source : see :func:`in_plane_permittivity`.
    kx, ky : ``(..., L, n_h)``, in-plane wavevectors of the orders normalised by ``k0``.
    harmonics, factorization, period, smoothing : see :func:`hyplex.optics.rcwa.solve`.

    Returns
    -------
    :class:`~hyplex.optics.scattering.Modes` with ``lam`` ``(..., L, 2 n_h)`` and ``W``, ``V``
    ``(..., L, 2 n_h, 2 n_h)``.
    """
    complex_dtype = eps_coeffs.dtype
    eps_laurent = laurent_matrix(eps_coeffs, harmonics)
    eps_xx, eps_xy, eps_yx, eps_yy = in_plane_permittivity(
        eps_laurent, inverse_grid, field_source, harmonics, factorization, period, smoothing
    )
    n = harmonics.count
    eye = torch.eye(n, dtype=complex_dtype, device=eps_coeffs.device)
    # Ez^-1 Kx and Ez^-1 Ky: right multiplication by a diagonal scales columns.
    ez_inv = torch.linalg.inv(eps_laurent)
    ez_inv_kx, ez_inv_ky = ez_inv * kx.unsqueeze(-2), ez_inv * ky.unsqueeze(-2)
    kxk = kx.unsqueeze(-1)  # left multiplication by Kx scales rows
    kyk = ky.unsqueeze(-1)
    P = torch.cat(
        [
            torch.cat([kxk * ez_inv_ky, eye - kxk * ez_inv_kx], -1),
            torch.cat([kyk * ez_inv_ky - eye, -kyk * ez_inv_kx], -1),
        ],
        -2,
    )
    kxky = torch.diag_embed(kx * ky)
    q_xx, q_yy = kxky.expand_as(eps_yy), -kxky.expand_as(eps_xx)
    if eps_xy is not None:
        q_xx, q_yy = q_xx + eps_yx, q_yy - eps_xy
    Q = torch.cat(
        [
            torch.cat([q_xx, eps_yy - torch.diag_embed(kx * kx)], -1),
            torch.cat([torch.diag_embed(ky * ky) - eps_xx, q_yy], -1),
        ],
        -2,
    )
    omega_sq, W = eig(P @ Q)  # eigenvalues are -kz^2
    lam = -1j * kz_branch(-omega_sq)
    V = -(Q @ W) / lam.unsqueeze(-2)
    return Modes(lam=lam, W=W, V=V)

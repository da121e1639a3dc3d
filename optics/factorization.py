"""Vector Fourier factorisation of the in-plane permittivity (normal-vector and Jones rules).

In a patterned layer ``D = eps E`` must be written between truncated Fourier series. Where the
field has a normal component that jumps across an interface, Laurent's rule ``[[eps]]`` is
wrong and the inverse rule ``[[1/eps]]^-1`` is right (Li, JOSA A 13, 1870 (1996)); for the
tangential component it is the other way round. With a projector ``P_n(x, y)`` on the local
normal direction, ``E = (I - P_n) E + P_n E`` and (Schuster et al., JOSA A 24, 2880 (2007),
the normal-vector method; Liu & Fan, CPC 183, 2233 (2012), eqs. 46-51)::

    [D_x]   [ [[eps]] - Delta [[P_xx]]      - Delta [[P_xy]]  ] [E_x]
    [D_y] = [     - Delta [[P_yx]]      [[eps]] - Delta [[P_yy]] ] [E_y],

    Delta = [[eps]] - [[1/eps]]^-1,

where ``[[f]]`` is the Toeplitz matrix of ``f``. (Liu & Fan's eq. 50 swaps x and y in the
diagonal blocks; fmmax's ``fmm_matrices._tangent_terms`` notes the erratum; the form above is
the one derived from ``D = [[eps]] E_t + [[1/eps]]^-1 E_n``.) On a straight edge along y,
``P_n = diag(1, 0)`` and the rule reduces to Li's: ``eps_xx = [[1/eps]]^-1``,
``eps_yy = [[eps]]``. In real space the operator is ``eps_t P_t + eps_n P_n`` with the arithmetic
mean in the tangential and the harmonic mean in the normal direction: the anisotropic
sub-pixel average of Farjadpour et al., Opt. Lett. 31, 2972 (2006) and Kottke, Farjadpour &
Johnson, PRE 77, 036611 (2008). Grey edge pixels are therefore mixed linearly in ``eps`` for
``[[eps]]`` and linearly in ``1/eps`` for ``[[1/eps]]``, whatever the edge's orientation.

The projector comes from the doubled-angle field ``z = |z| exp(2 i theta)`` of
:mod:`hyplex.optics.vector_field`. With ``psi = arg z`` and a weight ``c in [0, 1]``::

    P_n = 1/2 [ I + c [[cos psi, sin psi], [sin psi, -cos psi]] - i s [[0, 1], [-1, 0]] ].

``c = 1, s = 0`` is the projector ``n n^T`` on the unit normal ``n = (cos theta, sin theta)``
(the normal-vector method). Liu & Fan's Jones vectors (S4; fmmax ``vector.normalize_jones``)
are ``J = exp(i theta) (u cos phi + i u_perp sin phi)`` with ``phi = pi/8 (1 + cos(pi m))``:
linear (``phi = 0``) where the field magnitude ``m`` is 1, circular where it is 0, which
removes the vortices of the normal field. Built from the normal ``u = n`` with ``m = |z|``,
``J J^H`` is the expression above with ``c = cos 2 phi`` and ``s = sin 2 phi`` (Liu & Fan
build ``J`` from the tangent and take ``P_n = I - J J^H``, which flips the sign of ``s``). Its
real part blends the normal projector with ``I/2``; its imaginary antisymmetric part is a
fictitious gyrotropy that breaks mirror symmetry (a transposed pattern no longer swaps TE and
TM exactly). ``"jones"`` keeps it; ``"vector"`` drops it (``s = 0``, ``c = cos 2 phi``): the
same blend, real and mirror-symmetric.
"""

from __future__ import annotations

import torch

from .fourier import Harmonics, laurent_matrix, pixel_fourier_coefficients_2d

__all__ = ["VECTOR_FACTORIZATIONS", "normal_projector", "projector_matrices", "vector_permittivity"]

VECTOR_FACTORIZATIONS = ("vector", "jones", "normal")


def normal_projector(z: torch.Tensor, factorization: str) -> tuple[torch.Tensor, ...]:
    """Pixel values of the normal projector ``P_n`` from a doubled-angle field.

    Parameters
    ----------
    z : complex tensor ``(..., Nx, Ny)``, the doubled-angle field of
        :func:`hyplex.optics.vector_field.doubled_angle_field`.
    factorization : ``"vector"``, ``"jones"`` or ``"normal"`` (see the module docstring).

    Returns
    -------
    P_xx, P_xy, P_yx, P_yy : complex tensors ``(..., Nx, Ny)``.
    """
    if factorization not in VECTOR_FACTORIZATIONS:
        raise ValueError(
            f"factorization must be one of {VECTOR_FACTORIZATIONS} here, got {factorization!r}"
        )
    magnitude_sq = z.real.square() + z.imag.square()
    vortex = magnitude_sq <= 1e-30
    # Double where: |z| is evaluated on a safe input, then the vortex points are masked.
    magnitude = torch.where(vortex, 1.0, magnitude_sq).sqrt()
    direction = torch.where(vortex, torch.zeros_like(z), z / magnitude)  # exp(i psi) or 0
    if factorization == "normal":
        c = torch.where(vortex, 0.0, 1.0).to(magnitude.dtype)
        s = torch.zeros_like(c)
    else:
        # Liu & Fan's profile, phi = pi/8 (1 + cos(pi m)), m = |z| clamped to 1; flat at m = 0
        # and m = 1, so the clamp leaves the weights continuously differentiable.
        m = torch.where(vortex, 0.0, magnitude).clamp(max=1.0)
        two_phi = torch.pi / 4 * (1 + torch.cos(torch.pi * m))
        c, s = torch.cos(two_phi), torch.sin(two_phi)
        if factorization == "vector":
            s = torch.zeros_like(s)
    cos_psi, sin_psi = c * direction.real, c * direction.imag
    half = 0.5
    p_xx = (half * (1 + cos_psi)).to(z.dtype)
    p_yy = (half * (1 - cos_psi)).to(z.dtype)
    p_xy = half * (sin_psi - 1j * s)
    p_yx = half * (sin_psi + 1j * s)
    return p_xx, p_xy.to(z.dtype), p_yx.to(z.dtype), p_yy


def projector_matrices(projector: tuple[torch.Tensor, ...], harmonics: Harmonics):
    """Toeplitz matrices ``[[P_ab]]`` ``(..., n_h, n_h)`` of the projector's pixel values."""
    return tuple(
        laurent_matrix(pixel_fourier_coefficients_2d(p, harmonics.M, harmonics.N), harmonics)
        for p in projector
    )


def vector_permittivity(
    eps_laurent: torch.Tensor,
    inverse_laurent: torch.Tensor,
    projector: tuple[torch.Tensor, ...],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The in-plane permittivity blocks of the vector factorisation.

    Parameters
    ----------
    eps_laurent : ``(..., n_h, n_h)``, ``[[eps]]``.
    inverse_laurent : ``(..., n_h, n_h)``, ``[[1/eps]]``.
    projector : the four ``[[P_ab]]`` ``(..., n_h, n_h)`` from :func:`projector_matrices`,
        broadcast against the permittivity (one per pattern, shared by the wavelengths).

    Returns
    -------
    eps_xx, eps_xy, eps_yx, eps_yy : ``(..., n_h, n_h)``, with ``D_x = eps_xx E_x + eps_xy E_y``
    and ``D_y = eps_yx E_x + eps_yy E_y`` (module docstring).
    """
    delta = eps_laurent - torch.linalg.inv(inverse_laurent)
    p_xx, p_xy, p_yx, p_yy = projector
    # Delta [P_xx | P_xy] and Delta [P_yx | P_yy] as two products of n x 2n.
    top = delta @ torch.cat(torch.broadcast_tensors(p_xx, p_xy), -1)
    bottom = delta @ torch.cat(torch.broadcast_tensors(p_yx, p_yy), -1)
    n = eps_laurent.shape[-1]
    left = torch.cat(torch.broadcast_tensors(p_xx, p_yx), -2) @ delta  # [P_xx; P_yx] Delta
    right = torch.cat(torch.broadcast_tensors(p_xy, p_yy), -2) @ delta
    top = 0.5 * (top + torch.cat([left[..., :n, :], right[..., :n, :]], -1))
    bottom = 0.5 * (bottom + torch.cat([left[..., n:, :], right[..., n:, :]], -1))
    return (
        eps_laurent - top[..., :n],
        -top[..., n:],
        -bottom[..., :n],
        eps_laurent - bottom[..., n:],
    )

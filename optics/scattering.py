"""Modes of homogeneous layers, the scattering-matrix recursion and the Poynting flux.

The pieces of :mod:`hyplex.optics.rcwa` that do not depend on how a layer is described:
a layer is reduced to its modes ``(W, V, lam)`` (see that module's docstring for the
conventions), and the stack to the amplitudes of the transmitted and reflected waves.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["Modes", "kz_branch", "uniform_modes", "scatter", "poynting_z"]

# Below this |kz| (normalised) a mode is treated as grazing (Wood anomaly) and nudged off zero.
_WOOD_GUARD = 1e-6


@dataclass
class Modes:
    """Modes of one layer; ``lam`` ``(..., L, 2n)``.

    Patterned layers carry full ``W, V`` ``(..., L, 2n, 2n)``. Uniform layers have ``W = I``
    and a ``V`` made of four diagonal blocks, kept as ``v_blocks = (vxx, vxy, vyx, vyy)``
    ``(..., L, n)`` so that products and solves with it cost O(n^2), not O(n^3).
    """

    lam: torch.Tensor
    W: torch.Tensor | None = None
    V: torch.Tensor | None = None
    v_blocks: tuple[torch.Tensor, ...] | None = None

    def _blocks_apply(self, blocks, rhs: torch.Tensor) -> torch.Tensor:
        a, b, c, d = (x.unsqueeze(-1) for x in blocks)
        n = a.shape[-2]
        top, bottom = rhs[..., :n, :], rhs[..., n:, :]
        return torch.cat([a * top + b * bottom, c * top + d * bottom], -2)

    def v_matmul(self, rhs: torch.Tensor) -> torch.Tensor:
        """``V @ rhs``."""
        if self.V is not None:
            return self.V @ rhs
        return self._blocks_apply(self.v_blocks, rhs)

    def v_solve(self, rhs: torch.Tensor) -> torch.Tensor:
        """``V^-1 @ rhs`` (2x2 block inverse per harmonic for a uniform layer)."""
        if self.V is not None:
            return torch.linalg.solve(self.V, rhs)
        a, b, c, d = self.v_blocks
        det = a * d - b * c
        return self._blocks_apply((d / det, -b / det, -c / det, a / det), rhs)

    def v_full(self) -> torch.Tensor:
        if self.V is not None:
            return self.V
        a, b, c, d = (torch.diag_embed(x) for x in self.v_blocks)
        return torch.cat([torch.cat([a, b], -1), torch.cat([c, d], -1)], -2)


def kz_branch(kz_squared: torch.Tensor) -> torch.Tensor:
    """sqrt with Im kz > 0, or Re kz > 0 where Im kz ~ 0; nudged off 0 at Wood anomalies.

    The double ``where`` keeps the backward pass finite at ``kz = 0`` (MEEP.md notes on torcwa).
    """
    grazing = kz_squared.abs() < _WOOD_GUARD**2
    safe = torch.where(grazing, torch.full_like(kz_squared, 1j * _WOOD_GUARD**2), kz_squared)
    kz = torch.sqrt(safe)
    flip = (kz.imag < 0) | ((kz.imag.abs() <= 1e-14 * kz.abs()) & (kz.real < 0))
    return torch.where(flip, -kz, kz)


def uniform_modes(eps: torch.Tensor, kx: torch.Tensor, ky: torch.Tensor) -> Modes:
    """Analytic plane-wave modes of a homogeneous layer (W = I).

    eps ``(..., L)``; kx, ky ``(..., L, n)`` normalised by k0.
    """
    kz = kz_branch(eps.unsqueeze(-1) - kx * kx - ky * ky)
    lam = -1j * kz
    # V = -Q lam^-1 with Q's blocks diagonal: [[kx ky, eps - kx^2], [ky^2 - eps, -ky kx]].
    # eps - kx^2 is written as kz^2 + ky^2 so that a Wood-guarded kz stays consistent with V
    # (otherwise V is singular exactly at a Wood anomaly).
    kz_sq = kz * kz
    vxx, vxy = -kx * ky / lam, -(kz_sq + ky * ky) / lam
    vyx, vyy = (kz_sq + kx * kx) / lam, kx * ky / lam
    return Modes(lam=torch.cat([lam, lam], -1), v_blocks=(vxx, vxy, vyx, vyy))


def interface(here: Modes, there: Modes) -> tuple[torch.Tensor, torch.Tensor]:
    """``I11, I12 = (X +- Y) / 2`` with ``X = W_here^-1 W_there``, ``Y = V_here^-1 V_there``."""
    if here.W is None:
        X = there.W
    else:
        rhs = (
            there.W
            if there.W is not None
            else torch.eye(here.W.shape[-1], dtype=here.W.dtype, device=here.W.device)
        )
        X = torch.linalg.solve(here.W, rhs)
    Y = here.v_solve(there.v_full())
    if X is None:  # uniform to uniform
        X = torch.eye(Y.shape[-1], dtype=Y.dtype, device=Y.device)
    return 0.5 * (X + Y), 0.5 * (X - Y)


def scatter(modes: list[Modes], phases: list[torch.Tensor], incident: torch.Tensor):
    """Transmitted and reflected amplitudes of the whole stack for ``incident`` ``(2n, k)``.

    The S-matrix recursion of Whittaker & Culshaw, PRB 60, 2610 (1999): with ``a`` the forward
    amplitudes at the top of a layer and ``b`` the backward ones at its bottom,
    ``a_l = S11 a_0 + S12 b_l``
    and ``b_0 = S21 a_0 + S22 b_l``; crossing into layer ``l+1`` (``phi = exp(-lam d)``)::

        M    = I11 - phi_l S12 I12
        S11' = M^-1 phi_l S11,          S12' = M^-1 (phi_l S12 I11 - I12) phi_{l+1}
        S21' = S21 + S22 I12 S11',      S22' = S22 I12 S12' + S22 I11 phi_{l+1}

    Only ``S11 a_0`` and ``S21 a_0`` are needed, so they are carried as ``k`` columns instead of
    full matrices, ``S12``/``S22`` start as 0/I without being formed, and the last step skips
    them. Returns ``(S11 a_0, S21 a_0)``, each ``(..., L, 2n, k)``.
    """
    k = incident.shape[-1]
    s11a, s21a = incident, torch.zeros_like(incident)
    s12 = s22 = None  # 0 and I
    steps = len(modes) - 1
    for step in range(steps):
        here, there = modes[step], modes[step + 1]
        phase, phase_next = phases[step], phases[step + 1]
        last = step == steps - 1
        I11, I12 = interface(here, there)
        rhs = phase.unsqueeze(-1) * s11a
        if s12 is None:
            M = I11
            rhs_s12 = -I12
        else:
            phase_s12 = phase.unsqueeze(-1) * s12
            M = I11 - phase_s12 @ I12
            rhs_s12 = phase_s12 @ I11 - I12
        if last:
            s11a_new = torch.linalg.solve(M, rhs.expand(*M.shape[:-1], k))
        else:
            rhs_s12 = rhs_s12 * phase_next.unsqueeze(-2)
            rhs, rhs_s12 = rhs.expand(*rhs_s12.shape[:-1], k), rhs_s12.expand(*M.shape)
            sol = torch.linalg.solve(M, torch.cat([rhs, rhs_s12], -1))
            s11a_new, s12_new = sol[..., :k], sol[..., k:]
        s22_i12 = I12 if s22 is None else s22 @ I12
        s21a = s21a + s22_i12 @ s11a_new
        if not last:
            s22_i11 = I11 if s22 is None else s22 @ I11
            s22 = s22_i12 @ s12_new + s22_i11 * phase_next.unsqueeze(-2)
            s12 = s12_new
        s11a = s11a_new
    return s11a, s21a


def poynting_z(e: torch.Tensor, h: torch.Tensor, n: int) -> torch.Tensor:
    """z-flux of each harmonic, ``Re(i (Ex H~y* - Ey H~x*))`` (proportional to <S_z>).

    With ``H~ = i Z0 H``, ``<S_z> = Re(Ex Hy* - Ey Hx*) / 2 = Re(i (Ex H~y* - Ey H~x*)) / (2 Z0)``.
    ``e, h``: ``(..., 2n, k)`` tangential fields of ``k`` excitations; returns ``(..., k, n)``.
    """
    ex, ey, hx, hy = e[..., :n, :], e[..., n:, :], h[..., :n, :], h[..., n:, :]
    flux = (1j * (ex * hy.conj() - ey * hx.conj())).real
    return flux.transpose(-1, -2)

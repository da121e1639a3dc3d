"""Differentiable rigorous coupled-wave analysis (RCWA, Fourier modal method) for 2-D gratings.

Geometry (light comes from the top, ``z`` grows downwards)::

        superstrate (semi-infinite, lossless)        incident wave, reflected orders
    ----------------------------------------- z = 0
        layer 1   (uniform, or patterned over one unit cell Lx x Ly)
    -----------------------------------------
        ...
    -----------------------------------------
        layer K
    ----------------------------------------- z = sum of thicknesses
        substrate (semi-infinite)                    transmitted orders

Formulation, with ``exp(-i w t)`` time dependence, ``k0 = 2 pi / lambda`` and normalised
``z' = k0 z`` and ``H~ = i sqrt(mu0/eps0) H`` (Rumpf, PIER B 35, 241 (2011), Sec. 2;
Moharam et al., JOSA A 12, 1068 (1995)): in every layer

    d/dz' [Ex, Ey] = P [H~x, H~y],  P = [[Kx Ez^-1 Ky, I - Kx Ez^-1 Kx],
                                         [Ky Ez^-1 Ky - I, -Ky Ez^-1 Kx]]
    d/dz' [H~x, H~y] = Q [Ex, Ey],  Q = [[Kx Ky + Eyx, Eyy - Kx^2],
                                         [Ky^2 - Exx, -Ky Kx - Exy]]

with ``Ez^-1 = [[eps]]^-1`` (Laurent) and the in-plane permittivity
``D = [[Exx, Exy], [Eyx, Eyy]] E`` from a factorisation rule (the derivation of ``Q`` is in
:mod:`hyplex.optics.patterned`). The rules:

- ``"vector"`` (default), ``"jones"``, ``"normal"``: the normal-vector factorisation
  (:mod:`hyplex.optics.factorization`, field from :mod:`hyplex.optics.vector_field`); the
  right rule for curved and free-form edges, and equal to Li's rule for a lamellar grating;
- ``"li"``: Li's inverse rule for edges along x and y (:mod:`hyplex.optics.fourier`), exact
  for a binary staircase, so the best choice for boxes, crosses and other axis-aligned cells;
- ``"laurent"``: the plain rule (``Exx = Eyy = [[eps]]``), as in torcwa; slow for TM.

The modes solve ``P Q W = W diag(-kz^2)``. Writing
``lam = -i kz``, a forward mode is ``E = W exp(-lam z')`` with ``H~ = V exp(-lam z')`` and
``V = -Q W lam^-1``; a backward mode has the same ``E`` and ``-V``. The branch is ``Im kz > 0``
(or ``Re kz > 0`` when propagating), so that ``|exp(-lam z')| <= 1`` in every layer.

Layers are joined by the scattering-matrix recursion of Whittaker & Culshaw, PRB 60, 2610
(1999), Sec. II (also Liu & Fan, S4, CPC 183, 2233 (2012)), which only ever multiplies
by decaying exponentials and so is stable for thick and lossy layers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch

from .factorization import VECTOR_FACTORIZATIONS
from .fourier import Harmonics, pixel_fourier_coefficients_2d
from .geometry import Shape
from .materials import get_material
from .parallel import use_safe_threading
from .patterned import patterned_modes
from .scattering import Modes, kz_branch, poynting_z, scatter, uniform_modes
from .vector_field import DEFAULT_SMOOTHING

__all__ = ["FACTORIZATIONS", "Layer", "RCWAResult", "solve"]

FACTORIZATIONS = ("li", "laurent", *VECTOR_FACTORIZATIONS)


@dataclass
class Layer:
    """One layer of the stack.

    Attributes
    ----------
    thickness_nm : float or tensor ``(...)``
        Thickness in nm, >= 0; a tensor batches designs.
    material : material name, Material, refractive index number, or complex tensor ``(..., L)``
        The layer's material (uniform layer) or the fill material where ``pattern`` is 1.
        A tensor is read as the complex *refractive index* at the solver's wavelengths.
    pattern : real tensor ``(..., Nx, Ny)`` in [0, 1], or a :class:`~hyplex.optics.geometry.Shape`
        Fill fraction of ``material`` on a pixel grid over the unit cell; axis -2 is x.
        A Shape is rendered on a 128 x 128 grid (anti-aliased edges).
        Grey values mix linearly in ``eps`` (for ``E_z`` and the tangential in-plane field)
        and in ``1/eps`` (for the normal in-plane field). With the vector factorisations the
        normal follows the edge, so this is the anisotropic sub-pixel average of Kottke et
        al. (PRE 77, 036611 (2008)) for edges of any orientation; Li's rule treats every grey
        pixel as if its edge ran along x and along y, which is right only for axis-aligned
        edges.
    background : like ``material``
        The material where ``pattern`` is 0 (default air).
    permittivity : complex tensor ``(..., L, Nx, Ny)``, optional
        A raw permittivity grid per wavelength; overrides ``material``/``pattern``.
    """

    thickness_nm: float | torch.Tensor
    material: object = "air"
    pattern: torch.Tensor | Shape | None = None
    background: object = "air"
    permittivity: torch.Tensor | None = None

    @property
    def is_uniform(self) -> bool:
        return self.pattern is None and self.permittivity is None


@dataclass
class RCWAResult:
    """Diffraction of a plane wave by a periodic stack. Polarisation axis: 0 = TE (s), 1 = TM (p).

    Attributes
    ----------
    wavelengths_nm : tensor ``(L,)``
    orders : int tensor ``(n_h, 2)``, diffraction orders ``(m, n)``
    transmission_orders, reflection_orders : tensors ``(..., L, 2, n_h)``
        Power efficiency of each order (evanescent orders carry 0).
    T, R : tensors ``(..., L, 2)``
        Total transmittance into the substrate and reflectance (sum over orders).
    T0, R0 : tensors ``(..., L, 2)``
        Zeroth-order efficiencies.
    t, r : complex tensors ``(..., L, 2, 2)``
        Zeroth-order Jones matrices ``[out, in]`` in the (s, p) basis: ratios of complex field
        amplitudes, referenced at the top of the stack (incidence, reflection) and at the top of
        the substrate (transmission). Phase conventions follow Byrnes, arXiv:1603.02720.
    """

    wavelengths_nm: torch.Tensor
    orders: torch.Tensor
    transmission_orders: torch.Tensor
    reflection_orders: torch.Tensor
    t: torch.Tensor
    r: torch.Tensor

    @property
    def T(self) -> torch.Tensor:  # noqa: N802 - physics notation
        return self.transmission_orders.sum(-1)

    @property
    def R(self) -> torch.Tensor:  # noqa: N802
        return self.reflection_orders.sum(-1)

    @property
    def T0(self) -> torch.Tensor:  # noqa: N802
        return self.transmission_orders[..., self._zeroth]

    @property
    def R0(self) -> torch.Tensor:  # noqa: N802
        return self.reflection_orders[..., self._zeroth]

    @property
    def _zeroth(self) -> int:
        return int(((self.orders[:, 0] == 0) & (self.orders[:, 1] == 0)).nonzero()[0, 0])

    def unpolarized(self, quantity: str = "T") -> torch.Tensor:
        """Average of TE and TM for ``"T"``, ``"R"``, ``"T0"`` or ``"R0"``: ``(..., L)``."""
        return getattr(self, quantity).mean(-1)


# --------------------------------------------------------------------------- validation


def _check_finite(name: str, value: torch.Tensor) -> None:
    if not torch.isfinite(value).all():
        raise ValueError(f"{name} contains NaN or inf; expected finite values")


def _as_real(value, name: str, dtype, device) -> torch.Tensor:
    tensor = torch.as_tensor(value, device=device)
    if tensor.is_complex():
        raise ValueError(f"{name} must be real, got a complex tensor")
    tensor = tensor.to(dtype)
    _check_finite(name, tensor)
    return tensor


def _permittivity(material, wavelengths: torch.Tensor, complex_dtype) -> torch.Tensor:
    """Permittivity ``(..., L)`` of a material-like at the wavelengths (nm)."""
    if isinstance(material, torch.Tensor):
        index = material.to(device=wavelengths.device, dtype=complex_dtype)
        _check_finite("refractive index tensor", index)
        return index * index
    eps = get_material(material).permittivity(wavelengths)
    return eps.to(complex_dtype)


# --------------------------------------------------------------------------- patterned modes


def _patterned_modes(
    layer: Layer,
    wavelengths: torch.Tensor,
    kx: torch.Tensor,
    ky: torch.Tensor,
    harmonics: Harmonics,
    factorization: str,
    complex_dtype,
    period: tuple[float, float],
    smoothing: float,
) -> Modes:
    M, N = harmonics.M, harmonics.N
    if layer.permittivity is not None:
        grid = layer.permittivity.to(device=wavelengths.device, dtype=complex_dtype)
        if grid.ndim < 3 or grid.shape[-3] not in (1, wavelengths.numel()):
            raise ValueError(
                "permittivity grid must have shape (..., L, Nx, Ny) with L = number of "
                f"wavelengths ({wavelengths.numel()}), got {tuple(grid.shape)}"
            )
        _check_finite("permittivity grid", grid)
        eps_coeffs = pixel_fourier_coefficients_2d(grid, M, N)
        inverse_grid = 1.0 / grid
        field_source = grid  # (..., L, Nx, Ny): one channel per wavelength
    else:
        pattern = layer.pattern.to(device=wavelengths.device)
        eps_fill = _permittivity(layer.material, wavelengths, complex_dtype)[..., None, None]
        eps_back = _permittivity(layer.background, wavelengths, complex_dtype)[..., None, None]
        rho = pattern.to(complex_dtype).unsqueeze(-3)  # (..., 1, Nx, Ny)
        # eps = eps_b + (eps_f - eps_b) rho; the transform is linear, so take it of rho once.
        rho_coeffs = pixel_fourier_coefficients_2d(rho, M, N)
        zeroth = torch.zeros(rho_coeffs.shape[-2:], dtype=complex_dtype, device=rho.device)
        zeroth[2 * M, 2 * N] = 1.0  # the Fourier coefficients of a constant
        eps_coeffs = eps_back * zeroth + (eps_fill - eps_back) * rho_coeffs
        inverse_grid = 1.0 / eps_back + (1.0 / eps_fill - 1.0 / eps_back) * rho
        field_source = pattern.unsqueeze(-3)  # (..., 1, Nx, Ny): independent of wavelength

    return patterned_modes(
        eps_coeffs, inverse_grid, field_source, kx, ky, harmonics, factorization, period, smoothing
    )


# --------------------------------------------------------------------------- driver


def solve(
    layers: Sequence[Layer],
    wavelengths_nm,
    period_nm: float | tuple[float, float],
    harmonics: int | tuple[int, int] = (4, 4),
    superstrate="air",
    substrate="SiO2",
    angle_deg: float | torch.Tensor = 0.0,
    azimuth_deg: float | torch.Tensor = 0.0,
    factorization: str = "vector",
    dtype: torch.dtype = torch.complex128,
    device: torch.device | str | None = None,
    smoothing: float = DEFAULT_SMOOTHING,
) -> RCWAResult:
    """Scatter a plane wave off a stack of uniform and patterned periodic layers.

    Parameters
    ----------
    layers : sequence of :class:`Layer`, top (incidence side) to bottom.
    wavelengths_nm : float or tensor ``(L,)``, vacuum wavelengths in nm.
    period_nm : float or ``(Lx, Ly)``, the unit cell in nm.
    harmonics : int or ``(M, N)``; orders ``-M..M`` along x and ``-N..N`` along y are kept.
    superstrate, substrate : material-like (see :class:`Layer`); the superstrate must be
        lossless.
    angle_deg, azimuth_deg : polar angle of incidence in the superstrate (0 <= angle < 90) and
        azimuth of the plane of incidence from the x axis, in degrees.
    factorization : ``"vector"`` (default), ``"jones"``, ``"normal"``, ``"li"`` or ``"laurent"``.
        How ``D = eps E`` is factorised in patterned layers (module docstring).
        ``"vector"``: the normal-vector rule with a smooth doubled-angle normal field blended
        towards ``I/2`` where the field is weak; best measured on curved and free-form cells
        (a Si disk reaches 0.005 of the converged T0 at 169 harmonics, see
        ``benchmarks/rcwa_convergence.py``), conserves energy in lossless layers and keeps
        mirror symmetry. ``"jones"``: Liu & Fan's complex Jones field from the same normal
        field (a fictitious gyrotropy; a transposed cell swaps TE and TM only approximately).
        ``"normal"``: unit normals, discontinuous at field vortices. ``"li"``: Li's staircase
        rule (1997), exact for binary cells with edges along x and y and the fastest there
        (crosses, rectangles), slow on curved edges. ``"laurent"``: the plain rule, for
        comparison (torcwa's).
    smoothing : float > 0
        Smoothing of the normal field for the vector rules: ``ell (M + 1)`` with ``ell`` the
        smoothing length in units of ``sqrt(Lx Ly)`` (see :mod:`hyplex.optics.vector_field`).
    dtype : ``torch.complex128`` (default) or ``torch.complex64``.
    device : where to compute; default: the device of the first tensor input, else CPU.

    Returns
    -------
    RCWAResult with batch shape ``(..., L)``, where ``...`` broadcasts the batch dimensions of
    all layer thicknesses, patterns and material tensors.
    """
    use_safe_threading()
    if dtype not in (torch.complex64, torch.complex128):
        raise ValueError(f"dtype must be torch.complex64 or torch.complex128, got {dtype}")
    if not (isinstance(smoothing, (int, float)) and smoothing > 0):
        raise ValueError(f"smoothing must be a number > 0, got {smoothing!r}")
    if factorization not in FACTORIZATIONS:
        raise ValueError(f"factorization must be one of {FACTORIZATIONS}, got {factorization!r}")
    if len(layers) == 0:
        raise ValueError("layers is empty; give at least one Layer between the half-spaces")
    layers = list(layers)  # Shapes are rendered in place below, not in the caller's list
    real_dtype = torch.float64 if dtype == torch.complex128 else torch.float32
    if device is None:
        device = next(
            (t.device for t in _tensors_of(layers, wavelengths_nm) if isinstance(t, torch.Tensor)),
            torch.device("cpu"),
        )
    if isinstance(harmonics, int):
        harmonics = (harmonics, harmonics)
    basis = Harmonics(*harmonics)
    n = basis.count

    wavelengths = _as_real(wavelengths_nm, "wavelengths_nm", real_dtype, device).reshape(-1)
    if (wavelengths <= 0).any():
        raise ValueError("wavelengths_nm must be positive (nm)")
    period = torch.as_tensor(period_nm, dtype=torch.float64).reshape(-1)
    if period.numel() == 1:
        period = period.repeat(2)
    if period.numel() != 2 or not torch.isfinite(period).all() or (period <= 0).any():
        raise ValueError(f"period_nm must be a positive number or (Lx, Ly) in nm, got {period_nm}")
    angle = _as_real(angle_deg, "angle_deg", real_dtype, device)
    azimuth = _as_real(azimuth_deg, "azimuth_deg", real_dtype, device)
    if angle.ndim or azimuth.ndim:
        raise ValueError("angle_deg and azimuth_deg must be scalars (one incidence per call)")
    if angle < 0 or angle >= 90:
        raise ValueError(f"angle_deg must lie in [0, 90) degrees, got {angle_deg}")
    thicknesses = []
    for i, layer in enumerate(layers):
        if not isinstance(layer, Layer):
            raise TypeError(f"layers[{i}] must be a hyplex.optics.rcwa.Layer, got {type(layer)}")
        d = _as_real(layer.thickness_nm, f"layers[{i}].thickness_nm", real_dtype, device)
        if (d < 0).any():
            raise ValueError(f"layers[{i}].thickness_nm must be >= 0 nm, got {layer.thickness_nm}")
        if isinstance(layer.pattern, Shape):
            layer = layers[i] = replace(layer, pattern=layer.pattern.render(period.tolist()))
        if layer.pattern is not None and layer.permittivity is None:
            pattern = torch.as_tensor(layer.pattern)
            if pattern.ndim < 2 or min(pattern.shape[-2:]) < 1:
                raise ValueError(
                    f"layers[{i}].pattern must have shape (..., Nx, Ny) over one unit cell, "
                    f"got {tuple(pattern.shape)}"
                )
            if pattern.is_complex():
                raise ValueError(f"layers[{i}].pattern must be real fill fractions in [0, 1]")
            _check_finite(f"layers[{i}].pattern", pattern)
            if (pattern < 0).any() or (pattern > 1).any():
                raise ValueError(f"layers[{i}].pattern must lie in [0, 1] (fill fraction)")
        thicknesses.append(d)

    eps_sup = _permittivity(superstrate, wavelengths, dtype)
    if (eps_sup.imag.abs() > 1e-12 * eps_sup.abs()).any() or (eps_sup.real <= 0).any():
        raise ValueError(
            "the superstrate must be lossless (real index > 0): it carries the incidence"
        )
    n_sup = eps_sup.real.sqrt()
    theta, phi = torch.deg2rad(angle), torch.deg2rad(azimuth)
    # In-plane wavevectors of every order, normalised by k0 (grating equation, Moharam 1995):
    # kx_m = kx0 + m lambda / Lx, ky_n = ky0 + n lambda / Ly.
    kx0 = (n_sup * torch.sin(theta) * torch.cos(phi)).unsqueeze(-1)
    ky0 = (n_sup * torch.sin(theta) * torch.sin(phi)).unsqueeze(-1)
    orders = basis.orders(device)
    lam_col = wavelengths.unsqueeze(-1)
    kx = (kx0 + orders[:, 0].to(real_dtype) * lam_col / float(period[0])).to(dtype)
    ky = (ky0 + orders[:, 1].to(real_dtype) * lam_col / float(period[1])).to(dtype)
    k0 = 2 * torch.pi / wavelengths
    cell = (float(period[0]), float(period[1]))

    modes = [uniform_modes(eps_sup, kx, ky)]
    phases = [torch.ones_like(modes[0].lam)]
    for layer, d in zip(layers, thicknesses, strict=True):
        if layer.is_uniform:
            m = uniform_modes(_permittivity(layer.material, wavelengths, dtype), kx, ky)
        else:
            m = _patterned_modes(
                layer, wavelengths, kx, ky, basis, factorization, dtype, cell, smoothing
            )
        modes.append(m)
        phases.append(torch.exp(-m.lam * (k0 * d.unsqueeze(-1)).unsqueeze(-1)))
    eps_sub = _permittivity(substrate, wavelengths, dtype)
    modes.append(uniform_modes(eps_sub, kx, ky))
    phases.append(torch.ones_like(modes[-1].lam))

    # Incident TE/TM plane waves in the (0, 0) order: s = (-sin phi, cos phi, 0) and
    # p = s x k_hat, whose tangential part is cos(theta) (cos phi, sin phi).
    zero = basis.zeroth_index()
    s_dir = torch.stack([-torch.sin(phi), torch.cos(phi)], -1).to(dtype)  # (..., 2)
    p_dir = torch.stack([torch.cos(phi), torch.sin(phi)], -1).to(dtype)
    cos_i = torch.cos(theta).to(dtype)
    incident = torch.zeros(2 * n, 2, dtype=dtype, device=device)  # columns: TE, TM
    incident[zero, 0], incident[n + zero, 0] = s_dir[0], s_dir[1]
    incident[zero, 1], incident[n + zero, 1] = cos_i * p_dir[0], cos_i * p_dir[1]
    transmitted, reflected = scatter(modes, phases, incident)

    flux_in = poynting_z(incident, modes[0].v_matmul(incident), n).sum(-1, keepdim=True)
    T_orders = poynting_z(transmitted, modes[-1].v_matmul(transmitted), n) / flux_in
    R_orders = -poynting_z(reflected, -modes[0].v_matmul(reflected), n) / flux_in

    # Zeroth-order Jones matrices in the (s, p) basis (Byrnes' conventions for r_p).
    kz_sub = kz_branch(eps_sub - kx0.to(dtype).squeeze(-1) ** 2 - ky0.to(dtype).squeeze(-1) ** 2)
    cos_t = kz_sub / torch.sqrt(eps_sub)
    t = _jones(transmitted, zero, n, s_dir, p_dir, cos_t, sign=1)
    r = _jones(reflected, zero, n, s_dir, p_dir, cos_i, sign=-1)  # reflected angle = incident
    return RCWAResult(
        wavelengths_nm=wavelengths,
        orders=orders,
        transmission_orders=T_orders,
        reflection_orders=R_orders,
        t=t,
        r=r,
    )


def _jones(fields, zero, n, s_dir, p_dir, cos_out, sign) -> torch.Tensor:
    """Zeroth-order Jones matrix ``(..., L, 2, 2)`` [out, in] from tangential fields."""
    ex, ey = fields[..., zero, :], fields[..., n + zero, :]  # (..., L, 2 inputs)
    out_s = ex * s_dir[0] + ey * s_dir[1]
    out_p = sign * (ex * p_dir[0] + ey * p_dir[1]) / cos_out.unsqueeze(-1)
    # Incident s and p amplitudes are 1 by construction.
    return torch.stack([out_s, out_p], -2)  # (..., L, out, in)


def _tensors_of(layers, wavelengths_nm):
    yield wavelengths_nm
    for layer in layers:
        yield layer.thickness_nm
        yield layer.pattern
        yield layer.permittivity
        yield layer.material

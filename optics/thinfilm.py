"""Transfer-matrix method (TMM) for unpatterned multilayer stacks, in torch.

The analytic reference for the RCWA solver: coherent reflection and transmission of a plane
wave by a stack of homogeneous, isotropic layers, batched over wavelengths and stacks and
differentiable with respect to thicknesses, indices, wavelengths and angle.

Geometry (light comes from layer 0; z points into the stack)::

        layer 0: incidence medium, semi-infinite, lossless (real n_0)
            \\ theta_0    ^ r
    ---------\\----------/---------------------------------  z = 0
        layer 1: film, n_1, thickness d_1 (nm)
    -----------------------------------------------------
        ...
    -----------------------------------------------------
        layer N-1: exit medium (substrate), semi-infinite, may be lossy
                 \\ t

Conventions follow S. J. Byrnes, "Multilayer optical calculations", arXiv:1603.02720 (the
`tmm` package): time dependence exp(-i omega t), complex index n + ik with k >= 0 absorbing,
r and t are ratios of complex E-field amplitudes. For p polarization the field reference
directions are Byrnes' (as in `tmm.interface_r`): the reflected wave's reference E is chosen
so that the incident and reflected magnetic fields are parallel. Hence r_p = -r_s at normal
incidence, and the ratio of tangential (in-plane) E fields of the reflected and incident p
waves is -r_p.

Instead of multiplying 2x2 transfer matrices (whose entries grow like exp(Im delta) in thick
absorbing films and overflow), the stack is folded from the exit side with the Rouard/Airy
recursion of the effective reflection coefficient, which is the 2x2 S-matrix recursion for
one mode. Every propagation factor is exp(+i delta) with Im(delta) >= 0, so |.| <= 1: thick
absorbing or evanescent layers underflow harmlessly to zero instead of overflowing.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

_POLARIZATIONS = {"s": "s", "te": "s", "p": "p", "tm": "p", "unpolarized": "unpolarized"}


@dataclass
class ThinFilmResult:
    """Response of a multilayer stack; every field has the batch shape ``(..., L)``.

    Attributes
    ----------
    R : torch.Tensor
        Reflectance: reflected power / incident power (real).
    T : torch.Tensor
        Transmittance: Poynting flux normal to the stack carried into the exit medium /
        incident flux (real).
    A : torch.Tensor
        Absorptance of the films, ``1 - R - T`` (real).
    r : torch.Tensor
        Complex reflection amplitude (reflected / incident E field, Byrnes' sign convention).
    t : torch.Tensor
        Complex transmission amplitude (E field in the exit medium at the last interface /
        incident E field).
    """

    R: torch.Tensor
    T: torch.Tensor
    A: torch.Tensor
    r: torch.Tensor
    t: torch.Tensor


def _is_tensor_like(x) -> bool:
    return isinstance(x, (torch.Tensor, np.ndarray))


def _to_tensor(x, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Convert numbers, lists, numpy arrays or tensors to ``dtype`` on ``device``.

    Non-tensor input goes through numpy first so Python floats stay float64.
    """
    if not isinstance(x, torch.Tensor):
        x = torch.from_numpy(np.asarray(x))
    if not dtype.is_complex and x.is_complex():
        raise ValueError(f"expected real values, got a complex {x.dtype} array")
    return x.to(device=device, dtype=dtype)


def _normal_wavevector(n: torch.Tensor, kx: torch.Tensor) -> torch.Tensor:
    """Forward branch of ``n cos(theta) = sqrt(n^2 - kx^2)`` (units of k_0).

    Byrnes appendix D ("forward angle"): the forward wave is the one that decays,
    Im(n cos theta) > 0; where the imaginary part vanishes (lossless, propagating) it is the
    one carrying power forward, Re(n cos theta) > 0. "Vanishes" means below 100 machine
    epsilon relative to |n cos theta|, so the choice is deterministic (no signed-zero
    dependence).
    """
    q = torch.sqrt(n * n - kx * kx)
    tolerance = 100 * torch.finfo(q.real.dtype).eps * q.abs().clamp_min(1.0)
    lossless = q.imag.abs() <= tolerance
    backward = torch.where(lossless, q.real < 0, q.imag < 0)
    return torch.where(backward, -q, q)


def _stack_indices(indices, wavelengths: torch.Tensor, dtype: torch.dtype, device):
    """Return the index tensor ``(..., L or 1, n_layers)`` from any accepted form."""
    if _is_tensor_like(indices):
        n = _to_tensor(indices, dtype, device)
        if n.ndim < 1:
            raise ValueError("indices must have shape (..., L, n_layers), got a scalar")
        return n
    if not isinstance(indices, Sequence) or isinstance(indices, str):
        raise ValueError(
            "indices must be a complex array/tensor of shape (..., L, n_layers) or a list of "
            f"per-layer items, got {type(indices).__name__}"
        )
    layers = []
    for item in indices:
        if isinstance(item, numbers.Number) or _is_tensor_like(item):
            layers.append(_to_tensor(item, dtype, device))
            continue
        if not hasattr(item, "refractive_index"):
            # Lazy import: materials sit beside this module and are optional here.
            from hyplex.optics.materials import get_material

            item = get_material(item)
        layers.append(_to_tensor(item.refractive_index(wavelengths), dtype, device))
    try:
        layers = torch.broadcast_tensors(*layers)
    except RuntimeError as error:
        shapes = [tuple(x.shape) for x in layers]
        raise ValueError(
            f"per-layer indices must broadcast to a common shape (..., L); got {shapes}"
        ) from error
    return torch.stack(layers, dim=-1)


def _check(condition: torch.Tensor, message: str) -> None:
    if not bool(condition.all()):
        raise ValueError(message)


def stack_response(
    indices,
    thicknesses_nm,
    wavelengths_nm,
    angle_deg=0.0,
    polarization: str = "s",
) -> ThinFilmResult:
    """Coherent reflection and transmission of a planar multilayer stack.

    Parameters
    ----------
    indices : array_like or list
        Complex refractive indices n + ik (k >= 0 absorbing). Either a tensor/array of shape
        ``(..., L, n_layers)`` (the wavelength axis may be 1 to broadcast) or a list of
        ``n_layers`` per-layer items, each a number, a tensor of shape ``(..., L)`` or a
        material (name or object) resolved with
        ``hyplex.optics.materials.get_material(x).refractive_index(wavelengths_nm)``.
        Lists are always per-layer; pass a full array as a tensor/ndarray. Layer 0 is the
        incidence medium and must be lossless; the last layer is the exit medium.
        ``n_layers >= 2``.
    thicknesses_nm : array_like
        Film thicknesses in nm, shape ``(..., n_layers - 2)``, >= 0; the leading dims
        broadcast against the batch dims of ``indices``. May be empty/None for one interface.
    wavelengths_nm : array_like
        Vacuum wavelengths in nm, shape ``(L,)``, > 0.
    angle_deg : float or array_like
        Angle of incidence in layer 0 in degrees, in [0, 90); broadcastable to ``(..., L)``.
    polarization : {"s", "TE", "p", "TM", "unpolarized"}
        For "unpolarized", R, T and A are the averages of s and p, while r and t are
        the s-polarization amplitudes.

    Returns
    -------
    ThinFilmResult
        R, T, A (real) and r, t (complex), each of the broadcast batch shape ``(..., L)``.
        Precision follows ``indices``: complex64/float32 indices compute in single
        precision, anything else in float64/complex128. Runs on the device of the inputs.

    Raises
    ------
    ValueError
        On a bad polarization, shape mismatch, NaN/negative thickness, NaN index, lossy
        incidence medium, non-positive wavelength or an angle outside [0, 90).
    """
    mode = _POLARIZATIONS.get(polarization.lower()) if isinstance(polarization, str) else None
    if mode is None:
        raise ValueError(
            f"polarization must be 's'/'TE', 'p'/'TM' or 'unpolarized', got {polarization!r}"
        )
    # Working precision and device come from the tensor inputs.
    inputs = [indices, thicknesses_nm, wavelengths_nm, angle_deg]
    if isinstance(indices, Sequence) and not isinstance(indices, str):
        inputs += list(indices)
    device = next((x.device for x in inputs if isinstance(x, torch.Tensor)), torch.device("cpu"))
    index_dtypes = [x.dtype for x in inputs[:1] + inputs[4:] if _is_tensor_like(x)]
    single = {torch.complex64, torch.float32, np.dtype("complex64"), np.dtype("float32")}
    is_single = bool(index_dtypes) and all(d in single for d in index_dtypes)
    complex_dtype = torch.complex64 if is_single else torch.complex128
    real_dtype = torch.float32 if is_single else torch.float64

    wavelengths = _to_tensor(wavelengths_nm, real_dtype, device)
    if wavelengths.ndim != 1 or wavelengths.numel() == 0:
        raise ValueError(f"wavelengths_nm must have shape (L,), got {tuple(wavelengths.shape)}")
    _check(wavelengths > 0, "wavelengths_nm must be positive and not NaN (nm)")

    n = _stack_indices(indices, wavelengths, complex_dtype, device)
    n_layers = n.shape[-1]
    if n_layers < 2:
        raise ValueError(f"need at least 2 layers (incidence and exit media), got {n_layers}")
    _check(~torch.isnan(n).any(dim=-1), "indices contain NaN")
    n0 = n[..., 0]
    _check(
        n0.imag.abs() <= 1e-12 * n0.abs().clamp_min(1.0),
        "the incidence medium (layer 0) must be lossless: its index must be real",
    )
    _check(n0.real > 0, "the incidence medium (layer 0) must have a positive real index")

    if thicknesses_nm is None:
        thicknesses_nm = torch.zeros(0, dtype=real_dtype)
    d = _to_tensor(thicknesses_nm, real_dtype, device)
    if d.ndim == 0 or d.shape[-1] != n_layers - 2:
        raise ValueError(
            f"thicknesses_nm must have shape (..., {n_layers - 2}) for {n_layers} layers, "
            f"got {tuple(d.shape)}"
        )
    _check(torch.isfinite(d) & (d >= 0), "thicknesses_nm must be finite and >= 0 (nm)")

    angle = _to_tensor(angle_deg, real_dtype, device)
    _check((angle >= 0) & (angle < 90), "angle_deg must lie in [0, 90) degrees and not be NaN")

    try:
        batch = torch.broadcast_shapes(
            n.shape[:-1], d.shape[:-1] + (1,), angle.shape, wavelengths.shape
        )
    except RuntimeError as error:
        raise ValueError(
            f"shapes do not broadcast to a batch (..., L={wavelengths.numel()}): indices "
            f"{tuple(n.shape)} as (..., L, n_layers), thicknesses_nm {tuple(d.shape)} as "
            f"(..., n_layers - 2), angle_deg {tuple(angle.shape)} as (..., L)"
        ) from error
    n = n.expand(batch + (n_layers,))
    d = d.unsqueeze(-2).expand(batch + (n_layers - 2,))
    theta = torch.deg2rad(angle).expand(batch)

    # Tangential wavevector kx / k_0 = n_0 sin(theta_0) is conserved (Snell's law). All normal
    # wavevectors q_j = n_j cos(theta_j) are in units of k_0 = 2 pi / lambda.
    # Layer 0 is lossless (checked above); keep only its real part so that kx is real.
    n0 = n[..., 0].real
    n = torch.cat([n0.to(complex_dtype).unsqueeze(-1), n[..., 1:]], dim=-1)
    kx = (n0 * torch.sin(theta)).to(complex_dtype)
    q0 = (n0 * torch.cos(theta)).to(complex_dtype)
    q = torch.cat([q0.unsqueeze(-1), _normal_wavevector(n[..., 1:], kx.unsqueeze(-1))], dim=-1)
    # Phase across film j: delta_j = 2 pi q_j d_j / lambda (Byrnes' delta), Im(delta_j) >= 0.
    delta = (2 * math.pi) * q[..., 1:-1] * d / wavelengths.unsqueeze(-1)
    phase = torch.exp(1j * delta)

    results = {}
    for pol in ("s", "p") if mode == "unpolarized" else (mode,):
        results[pol] = _solve(pol, n, q, phase)
    R = sum(x[0] for x in results.values()) / len(results)
    T = sum(x[1] for x in results.values()) / len(results)
    first = results["s" if mode == "unpolarized" else mode]
    return ThinFilmResult(R=R, T=T, A=1 - R - T, r=first[2], t=first[3])


def _solve(pol: str, n: torch.Tensor, q: torch.Tensor, phase: torch.Tensor):
    """Fold the stack from the exit side; return (R, T, r, t) of shape (...,)."""
    n_i, n_f = n[..., :-1], n[..., 1:]
    q_i, q_f = q[..., :-1], q[..., 1:]
    # Fresnel amplitudes of each interface i -> i+1 (Byrnes' forms, as tmm.interface_r/_t):
    #   s: r = (n_i cos th_i - n_f cos th_f) / (n_i cos th_i + n_f cos th_f),
    #      t = 2 n_i cos th_i / (n_i cos th_i + n_f cos th_f)
    #   p: r = (n_f cos th_i - n_i cos th_f) / (n_f cos th_i + n_i cos th_f),
    #      t = 2 n_i cos th_i / (n_f cos th_i + n_i cos th_f)
    # Written with q = n cos th (p: numerator and denominator times n_i n_f) so no division
    # by n is needed.
    if pol == "s":
        denominator = q_i + q_f
        r_interface = (q_i - q_f) / denominator
        t_interface = 2 * q_i / denominator
    else:
        denominator = n_f * n_f * q_i + n_i * n_i * q_f
        r_interface = (n_f * n_f * q_i - n_i * n_i * q_f) / denominator
        t_interface = 2 * n_i * n_f * q_i / denominator

    # Rouard/Airy recursion, equivalent to Byrnes' transfer-matrix product
    #   M_j = (1 / t_{j,j+1}) [[e^{-i delta_j}, 0], [0, e^{i delta_j}]] [[1, r_{j,j+1}],
    #   [r_{j,j+1}, 1]],  r = M~_10 / M~_00,  t = 1 / M~_00,
    # but using only e^{+i delta} (|.| <= 1), never e^{-i delta}. With Gamma the effective
    # reflection at the right edge of film j seen from inside it,
    #   rho = Gamma e^{2 i delta_j},  Gamma' = (r_{j-1,j} + rho) / (1 + r_{j-1,j} rho),
    #   t' = t * t_{j-1,j} e^{i delta_j} / (1 + r_{j-1,j} rho)
    # (uses r_{j,j-1} = -r_{j-1,j} and t_{j-1,j} t_{j,j-1} = 1 - r_{j-1,j}^2, both
    # polarizations).
    gamma = r_interface[..., -1]
    t = t_interface[..., -1]
    for j in range(phase.shape[-1] - 1, -1, -1):
        e = phase[..., j]
        rho = gamma * e * e
        denominator = 1 + r_interface[..., j] * rho
        gamma = (r_interface[..., j] + rho) / denominator
        t = t * t_interface[..., j] * e / denominator
    r = gamma

    # Power (Byrnes' formulas, as tmm.T_from_t): R = |r|^2 (lossless incidence medium) and
    #   s: T = |t|^2 Re(n_f cos th_f) / Re(n_0 cos th_0)
    #   p: T = |t|^2 Re(n_f conj(cos th_f)) / Re(n_0 conj(cos th_0))
    q0, qf, nf = q[..., 0], q[..., -1], n[..., -1]
    if pol == "s":
        flux_ratio = qf.real / q0.real
    else:
        # n_f conj(cos th_f) = n_f conj(q_f / n_f); n_0 and cos th_0 are real.
        flux_ratio = (nf * torch.conj(qf / nf)).real / q0.real
    R = r.real**2 + r.imag**2
    T = (t.real**2 + t.imag**2) * flux_ratio
    return R, T, r, t

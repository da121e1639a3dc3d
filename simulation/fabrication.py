"""Fabrication error: what a made metasurface filter transmits, given what was designed.

A fabricated filter never matches its design. Lithography and etch bias change the pillar
sizes, which moves Mie/guided-mode resonances (a spectral shift); sidewall roughness, size
spread over the filter area and the finite numerical aperture broaden them; absorption in
amorphous or polycrystalline silicon and stitching errors scale the whole response. Hyplex
(Makarenko et al., CVPR 2022, Sec. 5 and Fig. 6) measured exactly this gap between designed
and fabricated responses and recovered from it by calibration and a decoder refit.

This module applies those three errors, drawn per filter from a seeded generator::

    T_fab(lambda) = clip(scale_f * (G_sigma_f * T_design)(lambda - shift_f), 0, 1)

where ``G_sigma`` is a Gaussian kernel (standard deviation ``sigma_f`` in nm, applied on a
fine uniform grid so that a non-uniform band grid is handled) and the shift moves features
to longer wavelengths when positive (a larger pillar red-shifts its resonances).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from hyplex.simulation.grids import check_wavelengths


@dataclass(frozen=True)
class FabricationError:
    """Spread of the per-filter errors (each drawn as a zero-mean normal, except scale).

    Attributes
    ----------
    shift_nm : float
        Standard deviation of the resonance shift, nm (>= 0).
    broadening_nm : float
        Mean Gaussian broadening (standard deviation of the kernel), nm (>= 0); each filter
        draws ``broadening_nm * U(0.5, 1.5)``.
    scale : float
        Standard deviation of the relative transmission scale error (>= 0, < 0.5); the
        scale is ``1 + scale * N(0, 1)`` clipped to [0.5, 1.5].
    """

    # Defaults: typical, not measured. A +-10 nm critical-dimension error of e-beam lithography
    # moves the Mie and guided-mode resonances of 100-300 nm silicon pillars by ~10 nm, and
    # measured metasurface filter amplitudes commonly differ from simulation by tens of percent.
    shift_nm: float = 10.0
    broadening_nm: float = 8.0
    scale: float = 0.2

    def __post_init__(self):
        if self.shift_nm < 0 or self.broadening_nm < 0 or not 0 <= self.scale < 0.5:
            raise ValueError(
                "FabricationError needs shift_nm >= 0, broadening_nm >= 0 and 0 <= scale < "
                f"0.5; got {asdict(self)}"
            )


@dataclass(frozen=True)
class FabricatedResponses:
    """Result of :func:`fabricate`.

    Attributes
    ----------
    responses : numpy.ndarray, (n_filters, L)
        Fabricated power transmission on the input grid, in [0, 1].
    shift_nm, broadening_nm, scale : numpy.ndarray, (n_filters,)
        The errors drawn for each filter.
    """

    responses: np.ndarray
    shift_nm: np.ndarray
    broadening_nm: np.ndarray
    scale: np.ndarray


def _gaussian_blur(values: np.ndarray, sigma_samples: float) -> np.ndarray:
    """Gaussian convolution along the last axis with edge padding (sigma in samples)."""
    if sigma_samples < 1e-6:
        return values
    half = int(np.ceil(4 * sigma_samples))
    offsets = np.arange(-half, half + 1)
    kernel = np.exp(-0.5 * (offsets / sigma_samples) ** 2)
    kernel /= kernel.sum()
    padded = np.pad(values, [(0, 0)] * (values.ndim - 1) + [(half, half)], mode="edge")
    return np.apply_along_axis(lambda row: np.convolve(row, kernel, mode="valid"), -1, padded)


def fabricate(
    responses,
    wavelengths_nm,
    error: FabricationError | None = None,
    seed=0,
    step_nm: float = 0.5,
) -> FabricatedResponses:
    """Draw fabrication errors for each filter and apply them to the designed responses.

    Parameters
    ----------
    responses : array_like, (n_filters, L)
        Designed power transmission T_f(lambda), unitless, in [0, 1].
    wavelengths_nm : array_like, (L,)
        Band centres, nm (increasing).
    error : FabricationError, optional
        Spread of the errors (default: 10 nm shift, 8 nm broadening, 20 % scale).
    seed : int or numpy.random.Generator
    step_nm : float
        Spacing of the fine uniform grid on which shift and blur are applied, nm.

    Returns
    -------
    FabricatedResponses
        ``responses`` (n_filters, L) on the same grid; outside the designed range the
        shifted response continues flat (edge values), as a measurement would see.
    """
    grid = check_wavelengths(wavelengths_nm)
    designed = np.asarray(responses, dtype=np.float64)
    if designed.ndim != 2 or designed.shape[1] != grid.size:
        raise ValueError(
            f"responses must have shape (n_filters, L={grid.size}), got {designed.shape}"
        )
    if not np.all(np.isfinite(designed)) or designed.min() < 0:
        raise ValueError("responses must be finite and >= 0 (power transmission)")
    if step_nm <= 0:
        raise ValueError(f"step_nm must be > 0, got {step_nm}")
    error = error or FabricationError()
    rng = np.random.default_rng(seed)
    count = designed.shape[0]
    shift = rng.normal(0.0, error.shift_nm, count)
    broadening = error.broadening_nm * rng.uniform(0.5, 1.5, count)
    scale = np.clip(1.0 + error.scale * rng.normal(size=count), 0.5, 1.5)
    # a fine uniform grid, so a shift is an interpolation and a blur a discrete convolution
    fine = np.arange(grid[0], grid[-1] + step_nm / 2, step_nm)
    on_fine = np.stack([np.interp(fine, grid, row) for row in designed])
    made = np.empty_like(designed)
    for index in range(count):
        blurred = _gaussian_blur(on_fine[index : index + 1], broadening[index] / step_nm)[0]
        shifted = np.interp(grid - shift[index], fine, blurred)  # T(lambda - shift)
        made[index] = shifted
    made = np.clip(made * scale[:, None], 0.0, 1.0)
    return FabricatedResponses(made, shift, broadening, scale)


def fabricated_encoder(encoder, error: FabricationError | None = None, seed=0):
    """The same :class:`~hyplex.simulation.encoder.Encoder` (layout, unpatterned glass) with
    fabricated responses; returns ``(encoder, FabricatedResponses)``."""
    from hyplex.simulation.encoder import Encoder

    made = fabricate(encoder.responses, encoder.wavelengths_nm, error, seed)
    fabricated = Encoder(
        encoder.wavelengths_nm,
        made.responses,
        encoder.layout,
        encoder.unpatterned,
        f"{encoder.name} (fabricated)",
    )
    return fabricated, made


__all__ = ["FabricationError", "FabricatedResponses", "fabricate", "fabricated_encoder"]

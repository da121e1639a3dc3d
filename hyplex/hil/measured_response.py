"""From a calibration's measured spectral response to the filter transmissions a decoder needs,
and the twin camera that carries a design's filters (as designed or as fabricated).

A monochromator sweep (:mod:`hyplex.calibration.spectral_response`) measures, per filter
channel ``f``, the signal per watt of reference power at each wavelength::

    R_f(lambda) = K x c x T_f(lambda) x w(lambda)          DN s^-1 per W (per nm of line)

where ``K`` is the system gain, ``c`` the bench's radiance per reference watt (a constant),
and ``w(lambda)`` the photoelectrons per second per unit spectral radiance per nm of a
unit-transmission filter on this sensor (QE x lambda / hc x pixel area x lens etendue x lens
transmission; ``hyplex.simulation.radiometry.photoelectron_weights``). Dividing by ``w``
leaves ``T_f`` up to one constant common to all filters; that constant is fixed by least
squares against the designed transmissions (it sets only the simulated SNR: barcodes are
white-normalised). The relative throughput of the filters, which an uncalibrated camera gets
wrong, is kept. A QE-model error cancels: the training camera multiplies the same ``w`` back.
"""

from __future__ import annotations

import numpy as np

__all__ = ["unit_filter_weights", "measured_transmissions", "check_channel_order", "design_twin"]

#: a reordering of the channels must raise the mean shape correlation by this much to count
CHANNEL_ORDER_MARGIN = 0.05


def unit_filter_weights(capture) -> np.ndarray:
    """Photoelectrons per second per nm of unit spectral radiance through a unit-transmission
    filter, ``(L,)`` in e- s^-1 per (W m^-2 sr^-1 nm^-1) per nm, on the capture's grid.

    ``CameraCapture.white_weights`` are electrons per second per band of a white reflector,
    ``(E(lambda) / pi) x w(lambda) x q`` with ``q`` the band widths
    (:func:`hyplex.simulation.grids.quadrature_weights`); this undoes both factors.
    """
    from hyplex.simulation.grids import quadrature_weights
    from hyplex.simulation.illuminants import get_illuminant

    settings = capture.settings
    grid = np.asarray(capture.wavelengths_nm, dtype=np.float64)
    irradiance = get_illuminant(settings.illuminant, grid, settings.illuminance_lux)
    radiance = irradiance.spectral_irradiance / np.pi
    white = capture.white_weights.detach().cpu().double().numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        per_band = np.where(radiance > 0, white / radiance, 0.0)
    return per_band / quadrature_weights(grid)


def measured_transmissions(response, response_wavelengths_nm, capture, designed=None):
    """Filter transmissions ``(F, L)`` in [0, 1] on the capture's grid from a measured
    spectral response (see the module docstring).

    Parameters
    ----------
    response : array_like, (F, Lc)
        Measured response of each filter channel, proportional to DN per unit spectral power
        (e.g. ``/spectral/response`` of a calibration file, DN s^-1 per W).
    response_wavelengths_nm : array_like, (Lc,)
        Its wavelengths, nm; must cover the capture's grid. Band-averaged onto the grid
        (:func:`hyplex.simulation.grids.resample`) when the grids differ.
    capture : CameraCapture
        The bundle's training camera (grid, QE, lens, illuminant).
    designed : array_like, (F, L), optional
        Designed transmissions: the one common scale is fitted to them by least squares.
        Without them the largest transmission is set to 1.

    Returns
    -------
    numpy.ndarray, (F, L)
        Transmissions, unitless, clipped to [0, 1]; rows in the calibration's channel order
        (filter index ``sub_row * grid_cols + sub_col`` of the registered layout).
    """
    from hyplex.simulation.grids import resample

    grid = np.asarray(capture.wavelengths_nm, dtype=np.float64)
    measured = np.asarray(response, dtype=np.float64)
    source = np.asarray(response_wavelengths_nm, dtype=np.float64).reshape(-1)
    if measured.ndim != 2 or measured.shape[1] != source.size:
        raise ValueError(
            f"response must have shape (F, Lc={source.size}) on its wavelengths, got "
            f"{measured.shape}"
        )
    if not np.all(np.isfinite(measured)):
        raise ValueError("the measured response holds NaN or inf")
    if grid[0] < source.min() - 1e-6 or grid[-1] > source.max() + 1e-6:
        raise ValueError(
            f"the calibration covers {source.min():g}-{source.max():g} nm but the design "
            f"needs {grid[0]:g}-{grid[-1]:g} nm; sweep the whole design range"
        )
    order = np.argsort(source)
    source, measured = source[order], measured[:, order]
    if source.shape == grid.shape and np.allclose(source, grid, rtol=0, atol=1e-6):
        on_grid = measured
    else:
        on_grid = resample(source, measured, grid, extrapolation="constant")
    weights = unit_filter_weights(capture)
    with np.errstate(divide="ignore", invalid="ignore"):
        shape = np.clip(np.where(weights > 0, on_grid / weights, 0.0), 0.0, None)
    if not shape.max() > 0:
        raise ValueError("the measured response is zero everywhere: was the shutter open?")
    if designed is not None:
        designed = np.asarray(designed, dtype=np.float64)
        if designed.shape != shape.shape:
            raise ValueError(
                f"designed responses {designed.shape} do not match the measured {shape.shape}"
            )
        scale = np.sum(shape * designed) / np.sum(shape * shape)
    else:
        scale = 1.0 / shape.max()
    return np.clip(shape * scale, 0.0, 1.0)


def check_channel_order(measured, designed, margin: float = CHANNEL_ORDER_MARGIN):
    """Check that measured channel ``f`` is designed filter ``f``; raise if another order fits.

    The registered layout numbers the channels by their place in the mosaic; a mosaic seen
    from another corner, or a design bundle of another encoder, numbers them differently, and
    a refit would then warm-start the decoders on scrambled inputs. Each measured row is
    compared with each designed row by the Pearson correlation of the shapes over wavelength;
    the best one-to-one assignment (Hungarian method, :func:`scipy.optimize.
    linear_sum_assignment`) must not beat the identity by more than ``margin`` in mean
    correlation (fabrication shifts and broadens, but keeps each filter nearest its design).

    Parameters
    ----------
    measured, designed : array_like, (F, L)
        Transmissions on one wavelength grid (unitless).

    Returns
    -------
    float
        Mean correlation of the identity assignment, in [-1, 1].

    Raises
    ------
    ValueError
        If a reordering fits better by more than ``margin``; the message gives the order.
    """
    from scipy.optimize import linear_sum_assignment

    measured = np.asarray(measured, dtype=np.float64)
    designed = np.asarray(designed, dtype=np.float64)
    if measured.shape != designed.shape or measured.ndim != 2:
        raise ValueError(
            f"measured {measured.shape} and designed {designed.shape} must both be (F, L)"
        )

    def standardised(rows):
        centred = rows - rows.mean(axis=1, keepdims=True)
        norm = np.linalg.norm(centred, axis=1, keepdims=True)
        return np.divide(centred, norm, out=np.zeros_like(centred), where=norm > 0)

    correlation = standardised(measured) @ standardised(designed).T  # (F measured, F designed)
    rows, columns = linear_sum_assignment(-correlation)
    identity = float(np.mean(np.diag(correlation)))
    best = float(correlation[rows, columns].mean())
    if best > identity + margin and not np.array_equal(columns, rows):
        pairs = zip(rows, columns, strict=True)
        moved = ", ".join(f"channel {r} looks like design filter {c}" for r, c in pairs if r != c)
        raise ValueError(
            f"the calibration's channels are not in the design's order ({moved}; mean shape "
            f"correlation {identity:.2f} as numbered, {best:.2f} reordered): was the mosaic "
            "registered from another corner, or is this the calibration of another encoder?"
        )
    return identity


def design_twin(bundle, sensor_shape=(240, 256), pitch_px: float = 5.3, rotation_deg=1.0,
                fabrication=None, seed: int = 0):  # fmt: skip
    """A camera twin carrying a bundle's filters, as designed or as fabricated.

    Parameters
    ----------
    bundle : DesignBundle
    sensor_shape : (rows, cols) pixels; pitch_px, rotation_deg : the mosaic on it.
    fabrication : FabricationError or None
        None: the designed responses; otherwise errors drawn with ``seed``
        (:func:`hyplex.simulation.fabrication.fabricate`).

    Returns
    -------
    (CameraTwin, numpy.ndarray (F, L))
        The twin (its sensor, lens and QE models are the bundle's capture settings) and the
        transmissions it really has.
    """
    from dataclasses import replace

    from hyplex.simulation.camera import CameraTwin
    from hyplex.simulation.encoder import Encoder
    from hyplex.simulation.fabrication import fabricate
    from hyplex.simulation.layout import MosaicLayout
    from hyplex.simulation.radiometry import LensModel

    responses = np.asarray(bundle.responses, dtype=np.float64)
    if fabrication is not None:
        responses = fabricate(responses, bundle.wavelengths_nm, fabrication, seed).responses
    grid = bundle.layout.grid
    if grid[0] * grid[1] != responses.shape[0]:
        raise ValueError(f"the bundle's layout grid {grid} does not hold {len(responses)} filters")
    layout = MosaicLayout.fit(sensor_shape, grid=grid, pitch_px=pitch_px, rotation_deg=rotation_deg)
    capture = bundle.capture
    sensor = replace(capture.sensor, shape=tuple(int(v) for v in sensor_shape))
    lens = LensModel(capture.f_number, capture.lens_transmission)
    name = "fabricated" if fabrication is not None else "design"
    encoder = Encoder(bundle.wavelengths_nm, responses, layout, name=name)
    return CameraTwin(encoder, sensor, lens), responses

"""The measurements of each calibration step, over the Camera protocol and the drivers.

:func:`hyplex.calibration.pipeline.calibrate` runs them in order and writes what they return
(one section of the calibration file each)::

    measure_darks      master darks at several exposures, the dark-current line   -> dark
    measure_flat       auto-exposed flat of the white reference, mosaic registration
                       (registration.register_mosaic), flat field, hot/dead pixels -> flat,
                                                                     defects, registration
    measure_emva       EMVA 1288 R4.0 exposure series and DSNU/PRNU stacks at one
                       wavelength, photons per pixel from the reference meter     -> emva
    measure_sweep      the monochromator sweep (spectral_response.run_sweep), every point's
                       reference power checked before it is stored               -> sweep
    measure_basis_fit  N broadband samples placed by the operator, the Hyplex NNLS basis
                       fit (basis_fit.fit_response_basis)                        -> basis_fit

Errors here name the step and what was expected: :class:`MosaicNotFound`,
:class:`ReferencePowerError` (no light, or the meter saturated: SCPI reports overrange as
9.9E37, SCPI-99 vol. 1 sec. 7.2.1.5), :class:`CalibrationError` (e.g. a dark that is not dark).
"""

from __future__ import annotations

from dataclasses import asdict

import numpy as np

from hyplex.calibration import darkflat, emva
from hyplex.calibration.basis_fit import fit_response_basis
from hyplex.calibration.operator import INSTRUCTIONS
from hyplex.calibration.registration import register_mosaic
from hyplex.calibration.spectral_response import (
    SweepRecord,
    SweepSettings,
    auto_expose,
    channel_means,
    run_sweep,
)

SCPI_OVERLOAD = 9.0e37  # SCPI instruments report overrange as 9.9E37 (+INF) or 9.91E37 (NaN)


class CalibrationError(RuntimeError):
    """A calibration could not be made; the message names the step and what was expected."""


class MosaicNotFound(CalibrationError):
    """The flat of the white reference shows no filter mosaic of the expected grid."""


class ReferencePowerError(CalibrationError):
    """The reference power meter read no light, or was saturated (overrange)."""


def snaps(camera, n: int) -> list[np.ndarray]:
    """``n`` frames from ``camera`` as arrays (H, W), DN."""
    return [np.asarray(camera.snap().data) for _ in range(n)]


def check_reference_power(power_W: float, dark_W: float, settings, where: str) -> float:
    """The net reference power (open - closed), W; ReferencePowerError if the meter read no
    light (< ``min_reference_power_W``) or was saturated (SCPI overload, not finite, or above
    ``max_reference_power_W``)."""
    limit = settings.max_reference_power_W
    if not (np.isfinite(power_W) and np.isfinite(dark_W)) or max(power_W, dark_W) >= SCPI_OVERLOAD:
        raise ReferencePowerError(
            f"power meter saturated {where}: read {power_W:g} W (shutter closed {dark_W:g} W; "
            "SCPI reports overrange as 9.9E37); expected a reading within the head's range: "
            "narrow the slit or add a neutral-density filter"
        )
    if limit is not None and power_W > limit:
        raise ReferencePowerError(
            f"power meter saturated {where}: read {power_W:g} W, above the head's range "
            f"{limit:g} W; expected less: narrow the slit or add a neutral-density filter"
        )
    net = power_W - dark_W
    if net < settings.min_reference_power_W:
        raise ReferencePowerError(
            f"power meter reads no light {where}: {power_W:g} W with the shutter open, "
            f"{dark_W:g} W closed; expected more than {settings.min_reference_power_W:g} W: "
            "is the head in the sphere port, the lamp on, the shutter working?"
        )
    return net


def measure_darks(camera, settings, report) -> dict:
    """Master darks at ``settings.dark_exposures_us`` (lens covered) and their dark-current
    line; the ``dark`` section: exposures_us (n,), master_darks_dn (n, H, W) DN,
    temporal_variance_dn2 (n,), dark_offset_dn / dark_slope_dn_per_s (H, W) DN and DN/s.
    CalibrationError if the longest dark is brighter than half of full scale (lens not
    covered). ``report(step, done, total)`` is called per exposure."""
    masters = []
    exposures = settings.dark_exposures_us
    for index, exposure in enumerate(exposures):
        camera.exposure_us = exposure
        applied = float(camera.exposure_us)
        masters.append(darkflat.master_dark(snaps(camera, settings.dark_frames), applied))
        report("dark", index + 1, len(exposures))
    full_scale = 2**camera.bit_depth - 1
    longest = max(masters, key=lambda m: m.exposure_us)
    if float(np.median(longest.mean_dn)) > 0.5 * full_scale:
        raise CalibrationError(
            f"darks: the {longest.exposure_us:g} us dark has a median of "
            f"{float(np.median(longest.mean_dn)):.0f} DN of {full_scale}; expected a dark "
            "frame: is the lens covered?"
        )
    current = darkflat.DarkLibrary(masters).dark_current(0.0)
    return {
        "exposures_us": np.array([m.exposure_us for m in masters]),
        "master_darks_dn": np.array([m.mean_dn for m in masters]),
        "temporal_variance_dn2": np.array([m.temporal_variance_dn2 for m in masters]),
        "n_frames": settings.dark_frames,
        "dark_offset_dn": current.offset_dn,
        "dark_slope_dn_per_s": current.slope_dn_per_s,
        "mean_dark_slope_dn_per_s": current.mean_slope_dn_per_s,
    }


def dark_library(section: dict) -> darkflat.DarkLibrary:
    """The :class:`~hyplex.calibration.darkflat.DarkLibrary` of a ``dark`` section (just
    measured, or read back from a partial file)."""
    """The master darks of a ``dark`` section (just measured, or read from a partial file)."""
    variances = section.get("temporal_variance_dn2")
    n_frames = int(section.get("n_frames", 1))
    masters = [
        darkflat.MasterDark(
            float(exposure),
            0.0,
            np.asarray(mean, np.float32),
            float("nan") if variances is None else float(variances[index]),
            n_frames,
        )
        for index, (exposure, mean) in enumerate(
            zip(section["exposures_us"], section["master_darks_dn"], strict=True)
        )
    ]
    return darkflat.DarkLibrary(masters)


def measure_flat(camera, library, layout_grid, settings, report):
    """Auto-exposed flat of the white reference (45-60 % fill), registered for a mosaic of
    ``layout_grid`` (rows, cols) sub-filters; returns (MosaicLayout, sections ``flat``
    (gain (H, W), channel_level_dn, exposure_us, mean_dn (H, W) DN), ``defects`` (hot, dead
    (H, W) bool) and ``registration`` (pitches px, rotations deg)). MosaicNotFound when the
    flat shows no such mosaic."""
    shape = tuple(int(v) for v in camera.roi.shape)
    everything = np.zeros(shape, np.int32)
    dark_level = float(np.median(library.dark_for(min(settings.dark_exposures_us))))
    flat_exposure, _ = auto_expose(
        camera,
        everything,
        SweepSettings((1.0, 2.0, 3.0), target_fill=(0.45, 0.6)),
        dark_level,
        1000.0,
    )
    flat_raw = snaps(camera, settings.flat_frames)
    report("flat", 1, 1)
    flat_dark = library.dark_for(flat_exposure)
    flat_signal = np.mean(flat_raw, 0) - flat_dark
    grid_text = f"{layout_grid[0]}x{layout_grid[1]}"
    try:
        registration = register_mosaic(flat_signal, layout_grid, settings.pitch_range_px)
    except ValueError as error:
        level = float(np.median(flat_signal))
        raise MosaicNotFound(
            f"no {grid_text} filter mosaic found in the flat of the white reference "
            f"({error}; median signal {level:.1f} DN at {flat_exposure:g} us); expected a flat "
            f"that shows the mosaic: check --layout-grid, --pitch-px, that the white reference "
            "fills the view and is lit"
        ) from None
    layout = registration.layout
    report("registration", 1, 1)
    codes = layout.filter_maps(shape)[0]
    flat = darkflat.flat_field(flat_raw, flat_dark, codes, layout.n_filters)
    longest = max(library.masters.values(), key=lambda m: m.exposure_us)
    defects = darkflat.defect_pixels(longest.mean_dn, flat)
    sections = {
        "flat": {
            "gain": flat.gain,
            "channel_level_dn": flat.channel_level_dn,
            "exposure_us": flat_exposure,
            "mean_dn": np.mean(flat_raw, 0).astype(np.float32),
        },
        "defects": {"hot": defects.hot, "dead": defects.dead},
        "registration": {
            "pitch_u_px": registration.pitch_u_px,
            "pitch_v_px": registration.pitch_v_px,
            "rotation_u_deg": registration.rotation_u_deg,
            "rotation_v_deg": registration.rotation_v_deg,
        },
    }
    return layout, sections


def reference_power(power_meter, monochromator, settings, where: str, readings: int = 2) -> float:
    """Net reference power (shutter open minus closed, ``readings`` averaged), W, checked by
    :func:`check_reference_power`; leaves the shutter open."""
    monochromator.open_shutter()
    power = float(np.mean([power_meter.power_W() for _ in range(readings)]))
    monochromator.close_shutter()
    dark = float(power_meter.power_W())
    monochromator.open_shutter()
    return check_reference_power(power, dark, settings, where)


def measure_emva(camera, mono, meter, channels, settings, report) -> dict:
    """The ``emva`` section: EMVA 1288 photon transfer over an exposure series from 2 % to
    150 % of the exposure at 70 % fill (so it runs past saturation) and DSNU/PRNU from stacks
    at 50 %, per channel of ``channels`` (H, W) int (-1 left out), at
    ``settings.emva_wavelength_nm``; photons per pixel from the reference power (W) when the
    bench's irradiance per meter watt and the pixel area are given."""
    wavelength = settings.emva_wavelength_nm
    mono.go_to(wavelength)
    meter.set_wavelength_nm(float(np.clip(wavelength, 400.0, 1100.0)))
    net_W = reference_power(meter, mono, settings, f"at {wavelength:g} nm (EMVA series)", 4)
    mono.close_shutter()
    dark_level = float(np.median(np.asarray(camera.snap().data)[channels >= 0]))
    mono.open_shutter()
    target = SweepSettings((1.0, 2.0, 3.0), target_fill=(0.65, 0.75))
    t70, _ = auto_expose(camera, channels, target, dark_level, 1000.0)
    exposures = np.unique(np.round(np.linspace(0.02, 1.5, settings.emva_exposures) * t70))
    photons = None
    if settings.sensor_irradiance_per_meter_W and settings.pixel_area_m2:
        irradiance = net_W * settings.sensor_irradiance_per_meter_W
        area_um2 = settings.pixel_area_m2 * 1e12
        photons = emva.photons_per_pixel(irradiance, area_um2, exposures, wavelength)
    bright, dark = [], []
    for index, exposure in enumerate(exposures):
        camera.exposure_us = exposure
        mono.open_shutter()
        bright.append(snaps(camera, 2))
        mono.close_shutter()
        dark.append(snaps(camera, 2))
        report("emva", index + 1, len(exposures))
    area_um2 = settings.pixel_area_m2 * 1e12 if settings.pixel_area_m2 else None
    transfer = emva.photon_transfer(
        bright, dark, exposures, channels, photons, pixel_area_um2=area_um2
    )
    camera.exposure_us = t70 * 0.5 / 0.7
    mono.open_shutter()
    bright_stack = snaps(camera, settings.emva_stack_frames)
    mono.close_shutter()
    dark_stack = snaps(camera, settings.emva_stack_frames)
    mono.open_shutter()
    uniformity = emva.spatial_nonuniformity(
        dark_stack, bright_stack, channels, transfer.system_gain_pooled_dn_per_e
    )
    return {
        **asdict(transfer),
        **asdict(uniformity),
        "wavelength_nm": wavelength,
        "reference_power_W": net_W,
    }


def measure_sweep(
    camera, mono, meter, channels, sweep_settings, settings, clock, sections, save, report
):
    """Run or continue (``sections["sweep"]``) the monochromator sweep of ``sweep_settings``;
    after every wavelength the point's reference power is checked (ReferencePowerError,
    the point is not stored) and ``sections["sweep"]`` is updated and ``save()`` called.
    Returns the complete :class:`~hyplex.calibration.spectral_response.SweepRecord`."""
    record = (
        SweepRecord.from_dict(sections["sweep"])
        if "sweep" in sections
        else SweepRecord(sweep_settings)
    )
    if record.complete:
        return record
    grid = sweep_settings.wavelengths_nm

    def checkpoint(record: SweepRecord) -> None:
        point = record.points[-1]
        try:
            check_reference_power(
                point.reference_power_W,
                point.reference_dark_W,
                settings,
                f"at {point.wavelength_nm:g} nm (sweep)",
            )
        except ReferencePowerError:
            record.points.pop()  # not stored: a resumed run measures it again
            raise
        sections["sweep"] = record.to_dict()
        save()

    def on_point(point) -> None:
        report("sweep", grid.index(point.wavelength_nm) + 1, len(grid))

    return run_sweep(
        camera,
        mono,
        meter,
        channels,
        sweep_settings,
        clock,
        resume=record,
        checkpoint=checkpoint,
        progress=on_point,
    )


def measure_basis_fit(
    camera, operator, channels, grid, samples, exposure_us, dark_dn, report
) -> dict:
    """The ``basis_fit`` section: the operator places each of the N samples (radiance (N, L)
    on ``grid`` nm, W m^-2 sr^-1 nm^-1), two frames each at ``exposure_us``; readings (N, C)
    DN/s minus the dark ``dark_dn`` (H, W); the Hyplex NNLS basis fit of the responses."""
    n_channels = int(channels.max()) + 1
    dark = channel_means(dark_dn, channels, n_channels)
    camera.exposure_us = exposure_us
    readings = []
    for index in range(len(samples)):
        instruction = INSTRUCTIONS["sample"].format(number=index + 1, total=len(samples))
        operator.prompt("sample", instruction, index=index)
        means = np.mean([channel_means(camera.snap(), channels, n_channels) for _ in range(2)], 0)
        readings.append((means - dark) / (exposure_us * 1e-6))
        report("samples", index + 1, len(samples))
    fit = fit_response_basis(samples, grid, np.array(readings))
    return {
        "spectra": samples,
        "readings": np.array(readings),
        "response": fit.response,
        "coefficients": fit.coefficients,
        "r_squared": fit.r_squared,
        "exposure_us": exposure_us,
        "units": "DN s^-1 per (W m^-2 sr^-1 nm^-1) per nm",
    }

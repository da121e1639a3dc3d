"""The calibration pipeline on the simulated bench: dark -> flat -> registration -> EMVA ->
spectral sweep (-> Hyplex basis fit), written to one calibration file and a PNG report.

::

    SimulatedBench (lamp, monochromator, power meter on a VirtualClock)
        |-- SimulatedCamera(bench)          darks (shutter closed), EMVA, sweep
        `-- SimulatedCamera(WhiteReference) flat / white reference, 48 broadband samples

Every step goes through the instrument drivers (``sim://`` serial) and the ``Camera``
protocol, as it would on hardware. The sweep checkpoints a *partial* file after every
wavelength; ``resume=True`` continues such a file.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from hyplex.calibration import darkflat, emva
from hyplex.calibration.basis_fit import fit_response_basis, sample_spectra
from hyplex.calibration.bench import WhiteReference
from hyplex.calibration.registration import register_mosaic
from hyplex.calibration.spectral_response import (
    SweepRecord,
    SweepSettings,
    auto_expose,
    channel_means,
    run_sweep,
    spectral_response,
)
from hyplex.calibration.store import Calibration, Provenance, load_calibration, save_calibration
from hyplex.devices.sim_bench import SimulatedBench


@dataclass(frozen=True)
class PipelineSettings:
    """Settings of :func:`calibrate_simulated`.

    Attributes
    ----------
    dark_exposures_us : exposures of the master darks (the longest finds hot pixels)
    dark_frames : frames per master dark
    flat_frames : frames averaged for the flat
    emva_wavelength_nm : monochromatic light of the photon-transfer series
    emva_exposures : points of the exposure series (up to ~1.5 x the saturation exposure)
    emva_stack_frames : frames per stack for DSNU / PRNU
    sweep_frames : bright and dark frames per sweep wavelength
    slit_um : monochromator slit (bandwidth = slit x 6.6 nm/mm)
    n_samples : broadband samples of the Hyplex basis fit (0 skips it)
    """

    dark_exposures_us: tuple[float, ...] = (100.0, 10_000.0, 100_000.0, 500_000.0)
    dark_frames: int = 8
    flat_frames: int = 8
    emva_wavelength_nm: float = 550.0
    emva_exposures: int = 16
    emva_stack_frames: int = 8
    sweep_frames: int = 4
    slit_um: float = 500.0
    n_samples: int = 48


def _snaps(camera, n: int) -> list[np.ndarray]:
    return [np.asarray(camera.snap().data) for _ in range(n)]


def calibrate_simulated(
    twin,
    out,
    settings: PipelineSettings | None = None,
    bench: SimulatedBench | None = None,
    resume: bool = False,
    progress: Callable[[str, int, int], None] | None = None,
    sweep_hook: Callable | None = None,
) -> Calibration:
    """Run the whole calibration of ``twin`` on a simulated bench and write ``out``.

    Parameters
    ----------
    twin : CameraTwin
        The camera to calibrate (its layout is *not* given to the pipeline: it is registered).
    out : path
        Calibration file (HDF5); partial while the sweep runs.
    settings : PipelineSettings, optional
    bench : SimulatedBench, optional
        Default: a fresh one on a VirtualClock.
    resume : bool
        Continue the sweep of a partial ``out``.
    progress : callable(step, done, total), optional
    sweep_hook : callable(point), optional
        Called after each sweep point (tests inject faults here).
    """
    from hyplex.devices import Monochromator, PowerMeter, SimulatedCamera

    settings = settings or PipelineSettings()
    bench = bench or SimulatedBench()
    clock = bench.clock
    report = progress or (lambda step, done, total: None)
    camera = SimulatedCamera(bench, twin, clock=clock)
    white = SimulatedCamera(WhiteReference(), twin, clock=clock)
    sensor = twin.sensor
    grid = twin.wavelengths_nm
    n_filters = twin.encoder.n_filters
    sections: dict[str, dict] = {}
    with (
        camera,
        white,
        Monochromator(bench.urls["monochromator"], clock=clock) as mono,
        PowerMeter(bench.urls["powermeter"]) as meter,
    ):
        devices = {
            "monochromator": mono.identify(),
            "power_meter": meter.identify(),
            "camera": camera.capabilities().model,
        }
        mono.set_slit_um(settings.slit_um)
        # 1. darks ------------------------------------------------------------------------
        mono.close_shutter()
        library = darkflat.DarkLibrary()
        for index, exposure in enumerate(settings.dark_exposures_us):
            camera.exposure_us = exposure
            library.add(darkflat.master_dark(_snaps(camera, settings.dark_frames), exposure))
            report("dark", index + 1, len(settings.dark_exposures_us))
        current = library.dark_current(0.0)
        # 2. flat (white reference) and registration --------------------------------------
        everything = np.zeros(sensor.shape, np.int32)
        flat_exposure, _ = auto_expose(
            white,
            everything,
            SweepSettings((1.0, 2.0, 3.0), target_fill=(0.45, 0.6)),
            float(np.median(library.dark_for(settings.dark_exposures_us[0]))),
            1000.0,
        )
        flat_raw = _snaps(white, settings.flat_frames)
        camera.exposure_us = flat_exposure
        flat_dark = darkflat.master_dark(_snaps(camera, settings.flat_frames), flat_exposure)
        library.add(flat_dark)
        flat_signal = np.mean(flat_raw, 0) - flat_dark.mean_dn
        registration = register_mosaic(flat_signal, twin.encoder.layout.grid)
        layout = registration.layout
        report("registration", 1, 1)
        codes = layout.filter_maps(sensor.shape)[0]
        flat = darkflat.flat_field(flat_raw, flat_dark.mean_dn, codes, n_filters)
        longest = max(library.masters.values(), key=lambda m: m.exposure_us)
        defects = darkflat.defect_pixels(longest.mean_dn, flat)
        channels = emva.channel_map(layout.slot_map(sensor.shape, 0.15), n_filters)
        channels[defects.any] = -1
        sections["dark"] = {
            "exposures_us": np.array([m.exposure_us for m in library.masters.values()]),
            "master_darks_dn": np.array([m.mean_dn for m in library.masters.values()]),
            "dark_offset_dn": current.offset_dn,
            "dark_slope_dn_per_s": current.slope_dn_per_s,
            "mean_dark_slope_dn_per_s": current.mean_slope_dn_per_s,
        }
        sections["flat"] = {
            "gain": flat.gain,
            "channel_level_dn": flat.channel_level_dn,
            "exposure_us": flat_exposure,
        }
        sections["defects"] = {"hot": defects.hot, "dead": defects.dead}
        sections["registration"] = {
            "pitch_u_px": registration.pitch_u_px,
            "pitch_v_px": registration.pitch_v_px,
            "rotation_u_deg": registration.rotation_u_deg,
            "rotation_v_deg": registration.rotation_v_deg,
        }
        # 3. EMVA 1288 at one wavelength ----------------------------------------------------
        sections["emva"] = _emva(camera, mono, bench, twin, channels, settings, report)
        # 4. spectral sweep -----------------------------------------------------------------
        sweep_settings = SweepSettings(
            tuple(grid),
            n_frames=settings.sweep_frames,
            bandwidth_nm=settings.slit_um * 1e-3 * bench.monochromator.dispersion_nm_per_mm,
        )
        provenance = Provenance(
            camera_id=f"sim:{sensor.fixed_pattern_seed}:{twin.encoder.name}",
            camera_model=devices["camera"],
            sensor_shape=sensor.shape,
            devices=devices,
            settings={"pipeline": asdict(settings), "sweep": asdict(sweep_settings)},
        )
        previous = None
        if resume and Path(out).exists():
            partial = load_calibration(out, provenance.camera_id, layout, allow_partial=True)
            if "sweep" in partial.sections:
                previous = SweepRecord.from_dict(partial.sections["sweep"])

        def checkpoint(record: SweepRecord) -> None:
            save_calibration(
                out,
                Calibration(
                    provenance,
                    layout,
                    {**sections, "sweep": record.to_dict()},
                    "complete" if record.complete else "partial",
                ),
            )

        def on_point(point) -> None:
            done = sweep_settings.wavelengths_nm.index(point.wavelength_nm) + 1
            report("sweep", done, len(grid))
            if sweep_hook is not None:
                sweep_hook(point)

        record = previous or SweepRecord(sweep_settings)
        record = run_sweep(
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
        response = spectral_response(record)
        sections["sweep"] = record.to_dict()
        sections["spectral"] = {
            "wavelengths_nm": response.wavelengths_nm,
            "response": response.response,
            "uncertainty": response.uncertainty,
            "measured": response.measured,
            "units": "DN s^-1 per W of reference power",
        }
        # 5. Hyplex basis fit from broadband samples ---------------------------------------
        if settings.n_samples:
            sections["basis_fit"] = _basis_fit(
                white, camera, mono, channels, grid, settings, flat_exposure, library
            )
            report("basis_fit", 1, 1)
    calibration = Calibration(provenance, layout, sections, "complete")
    save_calibration(out, calibration)
    return calibration


def _emva(camera, mono, bench, twin, channels, settings, report) -> dict:
    from hyplex.simulation.radiometry import photoelectron_weights

    grid = twin.wavelengths_nm
    mono.go_to(settings.emva_wavelength_nm)
    mono.open_shutter()
    dark_level = float(np.median(np.asarray(camera.snap().data)))
    target = SweepSettings((1.0, 2.0, 3.0), target_fill=(0.65, 0.75))
    t70, _ = auto_expose(camera, channels, target, dark_level, 1000.0)
    exposures = np.unique(np.round(np.linspace(0.02, 1.5, settings.emva_exposures) * t70))
    radiance = bench.spectral_radiance(grid)
    photons_per_us = float(
        photoelectron_weights(
            np.ones((1, grid.size)),
            grid,
            np.ones(grid.size),
            twin.sensor.pixel_area_m2,
            1.0,
            twin.lens,
        )[0]
        @ radiance
    )
    bright, dark = [], []
    for index, exposure in enumerate(exposures):
        camera.exposure_us = exposure
        mono.open_shutter()
        bright.append(_snaps(camera, 2))
        mono.close_shutter()
        dark.append(_snaps(camera, 2))
        report("emva", index + 1, len(exposures))
    transfer = emva.photon_transfer(bright, dark, exposures, channels, photons_per_us * exposures)
    camera.exposure_us = t70 * 0.5 / 0.7
    mono.open_shutter()
    bright_stack = _snaps(camera, settings.emva_stack_frames)
    mono.close_shutter()
    dark_stack = _snaps(camera, settings.emva_stack_frames)
    uniformity = emva.spatial_nonuniformity(
        dark_stack, bright_stack, channels, transfer.system_gain_pooled_dn_per_e
    )
    return {**asdict(transfer), **asdict(uniformity), "wavelength_nm": settings.emva_wavelength_nm}


def _basis_fit(white, camera, mono, channels, grid, settings, exposure_us, library) -> dict:
    spectra = sample_spectra(grid, settings.n_samples)
    reference = white.source
    n_channels = int(channels.max()) + 1
    dark = channel_means(library.dark_for(exposure_us), channels, n_channels)
    readings = []
    white.exposure_us = exposure_us
    for index, spectrum in enumerate(spectra):
        white.source = WhiteReference(lambda g, s=spectrum: s, reference.level, f"sample {index}")
        means = np.mean([channel_means(white.snap(), channels, n_channels) for _ in range(2)], 0)
        readings.append((means - dark) / (exposure_us * 1e-6))
    white.source = reference
    fit = fit_response_basis(spectra * reference.level, grid, np.array(readings))
    return {
        "spectra": spectra,
        "readings": np.array(readings),
        "response": fit.response,
        "coefficients": fit.coefficients,
        "r_squared": fit.r_squared,
        "units": "DN s^-1 per (W m^-2 sr^-1 nm^-1) per nm",
    }

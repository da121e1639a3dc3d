"""One calibration runner over protocols: dark -> flat -> registration -> EMVA 1288 ->
spectral sweep (-> Hyplex basis fit), written to one calibration file.

::

    operator.prompt("darks")          camera --master darks at dark_exposures_us--> dark
    operator.prompt("white")          camera --auto-exposed flat--> flat, defects, registration
    operator.prompt("monochromator")  monochromator + power meter + camera
                                          --exposure series at one wavelength--> emva
                                          --sweep over wavelengths_nm--> sweep, spectral
    operator.prompt("sample", i)      camera x N broadband samples --NNLS--> basis_fit

The steps' measurements are in :mod:`hyplex.calibration.measurement_steps`; this module
orders them, asks the operator, writes the partial files and resumes. :func:`calibrate` sees
only the :class:`~hyplex.devices.camera.Camera` protocol, the
instrument drivers (``Monochromator``, ``PowerMeter``, optionally ``FilterWheel``; any
transport: a serial port, a pty, ``sim://``) and an :class:`~hyplex.calibration.operator.
Operator` for the steps that need hands. Nothing in it knows about the camera twin: the
simulated bench (``calibration.sim_bench_config``) is one configuration of these arguments,
a lab's GenICam camera on RS-232 instruments another.

Resumable: after every step (and after every sweep wavelength) a *partial* calibration file
is written atomically (``store.save_calibration``), so Ctrl-C, a camera that disconnects or an
instrument that stops answering leave a valid file; ``resume=True`` loads it, checks it was
made by the same camera with the same settings, skips the steps it holds and continues the
sweep where it stopped. An existing ``out`` is never replaced by a run without ``resume``,
and a resumed run only ever writes files holding more steps than it read.

Photon-domain EMVA figures (quantum efficiency) need the photons per pixel: the bench's
``sensor_irradiance_per_meter_W`` (irradiance at the sensor plane per watt on the reference
meter, at the EMVA wavelength: calibrated once with a photodiode at the sensor plane) and the
pixel area; mu_p = E A t lambda / (h c) (EMVA 1288 R4.0 sec. 2.1; ``emva.photons_per_pixel``).
Without them K, the noise figures and the non-uniformities are still measured.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from hyplex.calibration import emva
from hyplex.calibration.measurement_steps import (
    SCPI_OVERLOAD,
    CalibrationError,
    MosaicNotFound,
    ReferencePowerError,
    check_reference_power,
    dark_library,
    measure_basis_fit,
    measure_darks,
    measure_emva,
    measure_flat,
    measure_sweep,
)
from hyplex.calibration.operator import INSTRUCTIONS
from hyplex.calibration.spectral_response import (
    SweepInterrupted,
    SweepRecord,
    SweepSettings,
    spectral_response,
)
from hyplex.calibration.store import Calibration, Provenance, load_calibration, save_calibration
from hyplex.devices.clock import MonotonicClock
from hyplex.devices.errors import CameraError, InstrumentError, SettingUnavailable
from hyplex.devices.monochromator import WAVELENGTH_RANGE_NM

__all__ = [
    "SCPI_OVERLOAD",
    "CalibrationError",
    "CalibrationInterrupted",
    "CalibrationSetupError",
    "MosaicNotFound",
    "PipelineSettings",
    "ReferencePowerError",
    "calibrate",
    "check_reference_power",
]


class CalibrationSetupError(CalibrationError, ValueError):
    """Wrong input found before anything was measured (the output file is untouched)."""


class CalibrationInterrupted(CalibrationError):
    """A device failed mid-run. ``out`` holds the steps done so far when ``resumable``."""

    def __init__(self, message: str, out: Path, step: str, resumable: bool):
        super().__init__(message)
        self.out, self.step, self.resumable = out, step, resumable


@dataclass(frozen=True)
class PipelineSettings:
    """Settings of :func:`calibrate`.

    Attributes
    ----------
    dark_exposures_us : exposures of the master darks, us (the longest finds hot pixels)
    dark_frames : frames per master dark
    flat_frames : frames averaged for the flat
    emva_wavelength_nm : monochromatic light of the photon-transfer series, nm
    emva_exposures : points of the exposure series (to ~1.5 x the exposure at 70 % fill)
    emva_stack_frames : frames per stack for DSNU / PRNU
    sweep_frames : bright and dark frames per sweep wavelength
    slit_um : monochromator slit, um (bandwidth = slit x ``dispersion_nm_per_mm``)
    n_samples : broadband samples of the Hyplex basis fit a simulated bench shows (0: none)
    dispersion_nm_per_mm : reciprocal linear dispersion of the grating, nm/mm (6.6: the
        Cornerstone 130 with its 1200 l/mm grating)
    settle_s : wait after each grating move, s
    pitch_range_px : (min, max or None) sub-filter pitch searched by the registration, px
    filter_position : filter-wheel position during the monochromator steps (with a wheel)
    sensor_irradiance_per_meter_W : W m^-2 at the sensor per W on the meter (None: no mu_p)
    pixel_area_m2 : light-sensitive pixel area, m^2 (None: no mu_p)
    min_reference_power_W : less light than this on the meter (shutter open minus closed) is
        "no light", W
    max_reference_power_W : the meter head's range, W (None: only SCPI's overload value)
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
    dispersion_nm_per_mm: float = 6.6
    settle_s: float = 0.2
    pitch_range_px: tuple[float, float | None] = (2.5, None)
    filter_position: int = 1
    sensor_irradiance_per_meter_W: float | None = None
    pixel_area_m2: float | None = None
    min_reference_power_W: float = 1e-9
    max_reference_power_W: float | None = None

    def __post_init__(self):
        if len(self.dark_exposures_us) < 2 or min(self.dark_exposures_us) <= 0:
            raise ValueError(
                f"dark_exposures_us must hold >= 2 exposures > 0 us, got {self.dark_exposures_us}"
            )
        for name in ("dark_frames", "flat_frames", "emva_stack_frames", "sweep_frames"):
            if int(getattr(self, name)) < 2:
                raise ValueError(f"{name} must be >= 2, got {getattr(self, name)}")
        if int(self.emva_exposures) < 3:
            raise ValueError(f"emva_exposures must be >= 3, got {self.emva_exposures}")


def _check_inputs(camera, grid, layout_grid, operator, settings, out, resume):
    """Everything wrong before a single frame: CalibrationSetupError naming it."""
    wavelengths = grid
    grid = np.asarray(wavelengths, dtype=np.float64)
    if (
        grid.ndim != 1
        or grid.size < 3
        or not np.all(np.isfinite(grid))
        or np.any(np.diff(grid) <= 0)
    ):
        raise CalibrationSetupError(
            "wavelengths_nm must be >= 3 finite, strictly increasing values (nm), got "
            f"{wavelengths}"
        )
    low, high = WAVELENGTH_RANGE_NM
    checked = (("wavelengths_nm", grid), ("emva_wavelength_nm", [settings.emva_wavelength_nm]))
    for name, values in checked:
        outside = [float(v) for v in values if not low <= v <= high]
        if outside:
            raise CalibrationSetupError(
                f"{name} {outside[0]:g} nm is outside the monochromator's range; expected "
                f"{low:g}-{high:g} nm"
            )
    try:
        rows, cols = (int(v) for v in layout_grid)
    except (TypeError, ValueError):
        raise CalibrationSetupError(
            f"layout_grid must be (rows, cols) of sub-filters, got {layout_grid!r}"
        ) from None
    if rows < 1 or cols < 1 or rows * cols < 2:
        raise CalibrationSetupError(f"layout_grid must hold >= 2 sub-filters, got {layout_grid!r}")
    if not callable(getattr(operator, "prompt", None)):
        raise CalibrationSetupError(
            f"operator {operator!r} has no prompt(step, instruction) method; expected an "
            "Operator (hyplex.calibration.operator)"
        )
    out = Path(out)
    if out.is_dir():
        raise CalibrationSetupError(f"{out} is a directory; expected a calibration file path")
    if out.exists() and not resume:
        raise CalibrationSetupError(
            f"{out} exists; expected a new path, or resume=True (--resume) to continue it "
            "(a calibration file is never overwritten)"
        )
    capabilities = camera.capabilities()
    if capabilities.exposure_us is None:
        notes = "; ".join(capabilities.notes) or "no exposure range"
        raise CalibrationSetupError(
            f"camera {capabilities.model!r} cannot set its exposure ({notes}); expected a camera "
            "with a settable exposure time (darks, auto-exposure and the EMVA 1288 series need it)"
        )
    try:
        camera.exposure_us = float(min(settings.dark_exposures_us))
    except (SettingUnavailable, ValueError) as error:
        raise CalibrationSetupError(
            f"camera {capabilities.model!r} refused exposure_us = "
            f"{min(settings.dark_exposures_us):g} us ({error}); expected a settable exposure "
            f"within {capabilities.exposure_us} us (see PipelineSettings.dark_exposures_us)"
        ) from None
    return grid, (rows, cols), out, capabilities


def _normalised(value):
    return json.loads(json.dumps(value, default=float))


def calibrate(
    camera,
    monochromator,
    power_meter,
    *,
    layout_grid=(3, 3),
    wavelengths_nm,
    operator,
    settings: PipelineSettings | None = None,
    out,
    resume: bool = False,
    progress: Callable[[str, int, int], None] | None = None,
    clock=None,
    camera_id: str | None = None,
    samples=None,
    filter_wheel=None,
) -> Calibration:
    """Calibrate ``camera`` on a bench and write ``out`` (see the module doc).

    Parameters
    ----------
    camera : Camera
        Open, not streaming, with a settable exposure.
    monochromator, power_meter : drivers
        ``hyplex.devices.Monochromator`` and ``PowerMeter`` (open), or anything with their
        methods.
    layout_grid : (int, int)
        Sub-filters per metapixel (rows, cols), known from the design; the rest of the mosaic
        geometry is registered from the flat.
    wavelengths_nm : array_like (L,)
        Sweep grid, nm, strictly increasing, within the monochromator's range.
    operator : Operator
        Answers the steps that need a person (``calibration.operator``).
    settings : PipelineSettings, optional
    out : path
        Calibration file (HDF5), partial until the end.
    resume : bool
        Continue a partial ``out`` of the same camera and settings.
    progress : callable(step, done, total), optional
        Called as each step advances (steps: dark, flat, registration, emva, sweep, samples).
    clock : Clock, optional
        Waits for the grating to settle (default: the host's monotonic clock).
    camera_id : str, optional
        Stable id of the camera (default: backend and model).
    samples : array_like (N, L), optional
        Radiance of N broadband samples on ``wavelengths_nm``, W m^-2 sr^-1 nm^-1, as a
        reference spectrometer measured them; the operator places each in turn and the
        channel responses are fitted by the Hyplex NNLS basis fit (``basis_fit``).
    filter_wheel : FilterWheel, optional
        Moved to ``settings.filter_position`` before the monochromator steps.

    Returns
    -------
    Calibration
        The complete calibration (also in ``out``).

    Raises
    ------
    CalibrationSetupError
        Wrong input, before anything is measured or written.
    MosaicNotFound, ReferencePowerError
        The flat shows no mosaic; the meter reads no light or is saturated.
    CalibrationInterrupted
        A camera or instrument failed mid-run; ``out`` stays a valid, resumable file.
    """
    settings = settings or PipelineSettings()
    grid, layout_grid, out, capabilities = _check_inputs(
        camera, wavelengths_nm, layout_grid, operator, settings, out, resume
    )
    if samples is not None:
        samples = np.asarray(samples, dtype=np.float64)
        if samples.ndim != 2 or samples.shape[1] != grid.size or not np.all(np.isfinite(samples)):
            raise CalibrationSetupError(
                f"samples must be finite radiance spectra of shape (N, {grid.size}), got "
                f"{samples.shape}"
            )
    report = progress or (lambda step, done, total: None)
    clock = clock or MonotonicClock()
    shape = tuple(int(v) for v in camera.roi.shape)
    sweep_settings = SweepSettings(
        tuple(grid),
        n_frames=settings.sweep_frames,
        settle_s=settings.settle_s,
        bandwidth_nm=settings.slit_um * 1e-3 * settings.dispersion_nm_per_mm,
    )
    run_settings = _normalised(
        {
            "pipeline": asdict(settings),
            "sweep": asdict(sweep_settings),
            "layout_grid": list(layout_grid),
            "n_samples": 0 if samples is None else len(samples),
        }
    )
    state = _RunState(out, None, {})
    step = "setup"
    try:
        devices = {
            "monochromator": monochromator.identify(),
            "power_meter": power_meter.identify(),
            "camera": capabilities.model,
        }
        if filter_wheel is not None:
            devices["filter_wheel"] = filter_wheel.identify()
        provenance = Provenance(
            camera_id=camera_id or f"{capabilities.backend}:{capabilities.model}",
            camera_model=capabilities.model,
            sensor_shape=shape,
            devices=devices,
            settings=run_settings,
        )
        state.provenance = provenance
        if resume and out.exists():
            previous = _previous(out, provenance, run_settings)
            if previous.status == "complete":
                return previous
            state.layout, state.sections = previous.layout, dict(previous.sections)
        sections = state.sections
        # 1. darks (lens covered) --------------------------------------------------------
        step = "darks"
        if "dark" not in sections:
            operator.prompt("darks", INSTRUCTIONS["darks"])
            sections["dark"] = measure_darks(camera, settings, report)
            state.save()
        library = dark_library(sections["dark"])
        # 2. flat of the white reference, registration, defects ------------------------------
        step = "flat"
        if "flat" not in sections:
            operator.prompt("white", INSTRUCTIONS["white"])
            state.layout, flat_sections = measure_flat(
                camera, library, layout_grid, settings, report
            )
            sections.update(flat_sections)
            state.save()
        layout = state.layout
        flat_exposure = float(sections["flat"]["exposure_us"])
        defects = np.asarray(sections["defects"]["hot"]) | np.asarray(sections["defects"]["dead"])
        channels = emva.channel_map(layout.slot_map(shape, 0.15), layout.n_filters)
        channels[defects] = -1
        # 3. EMVA 1288 at one wavelength (camera at the sphere port) -----------------------------
        sweep_done = "sweep" in sections and SweepRecord.from_dict(sections["sweep"]).complete
        if "emva" not in sections or not sweep_done:
            step = "monochromator"
            operator.prompt("monochromator", INSTRUCTIONS["monochromator"])
            monochromator.set_slit_um(settings.slit_um)
            if filter_wheel is not None:
                filter_wheel.move_to(settings.filter_position)
        step = "emva"
        if "emva" not in sections:
            sections["emva"] = measure_emva(
                camera, monochromator, power_meter, channels, settings, report
            )
            state.save()
        # 4. spectral sweep --------------------------------------------------------------------
        step = "sweep"
        record = measure_sweep(
            camera, monochromator, power_meter, channels, sweep_settings, settings, clock,
            sections, state.save, report,
        )  # fmt: skip
        response = spectral_response(record)
        sections["spectral"] = {
            "wavelengths_nm": response.wavelengths_nm,
            "response": response.response,
            "uncertainty": response.uncertainty,
            "measured": response.measured,
            "units": "DN s^-1 per W of reference power",
        }
        # 5. Hyplex basis fit from broadband samples ----------------------------------------
        step = "samples"
        if samples is not None and len(samples) and "basis_fit" not in sections:
            dark = library.dark_for(flat_exposure)
            sections["basis_fit"] = measure_basis_fit(
                camera, operator, channels, grid, samples, flat_exposure, dark, report
            )
    except SweepInterrupted as error:
        raise state.interrupted(error, "sweep") from error
    except (CameraError, InstrumentError) as error:
        raise state.interrupted(error, step) from error
    calibration = Calibration(state.provenance, state.layout, state.sections, "complete")
    save_calibration(out, calibration)
    return calibration


class _RunState:
    """What a run has so far, and how to write it as a partial file."""

    def __init__(self, out: Path, layout, sections: dict):
        self.out, self.layout, self.sections = out, layout, sections
        self.provenance: Provenance | None = None
        self.saved = False

    def save(self) -> None:
        save_calibration(
            self.out, Calibration(self.provenance, self.layout, self.sections, "partial")
        )
        self.saved = True

    def interrupted(self, error, step: str) -> CalibrationInterrupted:
        resumable = self.out.exists() and (self.saved or bool(self.sections))
        kept = sorted(self.sections)
        if "sweep" in self.sections:
            record = SweepRecord.from_dict(self.sections["sweep"])
            done, total = len(record.points), len(record.settings.wavelengths_nm)
            kept[kept.index("sweep")] = f"sweep ({done} of {total} wavelengths)"
        where = (
            f"{self.out} holds {', '.join(kept)}: continue with --resume (resume=True)"
            if resumable
            else "nothing was written"
        )
        cause = error.__cause__ if isinstance(error, SweepInterrupted) else error
        return CalibrationInterrupted(
            f"calibration stopped in the {step} step: {type(cause or error).__name__}: "
            f"{error}; {where}",
            self.out,
            step,
            resumable,
        )


def _previous(out: Path, provenance: Provenance, run_settings: dict) -> Calibration:
    """The partial file to resume, checked to be this camera's with these settings."""
    try:
        previous = load_calibration(out, camera_id=provenance.camera_id, allow_partial=True)
    except ValueError as error:  # includes CalibrationMismatch
        raise CalibrationSetupError(
            f"{out} cannot be resumed: {error}; expected a partial calibration of this camera"
        ) from None
    stored = previous.provenance.settings
    if stored != run_settings:
        changed = sorted(
            f"{group}.{key}" if key else group
            for group, values in run_settings.items()
            for key in (values if isinstance(values, dict) else [None])
            if (
                stored.get(group) != values
                if key is None
                else (stored.get(group) or {}).get(key) != values[key]
            )
        )
        raise CalibrationSetupError(
            f"{out} was started with other settings ({', '.join(changed)}); "
            "expected the same settings to resume it (or a new --out)"
        )
    if tuple(previous.provenance.sensor_shape) != provenance.sensor_shape:
        raise CalibrationSetupError(
            f"{out} was made on a {previous.provenance.sensor_shape} sensor region, the camera "
            f"gives {provenance.sensor_shape}; expected the same ROI to resume"
        )
    return previous

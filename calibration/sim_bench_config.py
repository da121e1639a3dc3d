"""The simulated bench as one configuration of the calibration runner.

:func:`hyplex.calibration.pipeline.calibrate` takes a camera, two instrument drivers and an
operator. On the simulated bench they are::

    camera      SimulatedCamera(twin) looking at what the operator put in front of it
    instruments Monochromator / PowerMeter drivers on the bench's ``sim://`` ports (one
                process, VirtualClock), or on ptys of ``hyplex sim-device`` processes
                (``LinkedBench``: the light follows their published state)
    operator    SimulatedOperator: "cover the lens" -> no source; "white reference" ->
                WhiteReference; "monochromator" -> the bench; "sample i" -> sample i's spectrum

and the settings the twin knows (pixel area; irradiance at the sensor per watt on the meter,
computed from the bench's sphere and the twin's lens). Nothing here measures: every figure
of the calibration is made by the runner, through the drivers and the Camera protocol.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from hyplex.calibration.basis_fit import sample_spectra
from hyplex.calibration.bench import WhiteReference
from hyplex.calibration.emva import photons_per_pixel
from hyplex.calibration.operator import ScriptedOperator, check_step
from hyplex.calibration.pipeline import PipelineSettings, calibrate
from hyplex.devices.clock import VirtualClock
from hyplex.devices.sim_bench import SimulatedBench


class SimulatedOperator:
    """Answers the runner's steps by changing what ``camera`` looks at.

    Parameters
    ----------
    camera : SimulatedCamera
    bench : SimulatedBench or LinkedBench
        The sphere port (``monochromator`` step).
    white : WhiteReference
        The broadband white reference (``white`` step).
    samples : numpy.ndarray (N, L), optional
        Radiance of the broadband samples on ``wavelengths_nm``, W m^-2 sr^-1 nm^-1.
    wavelengths_nm : numpy.ndarray (L,), optional
    """

    def __init__(self, camera, bench, white: WhiteReference, samples=None, wavelengths_nm=None):
        self.camera, self.bench, self.white = camera, bench, white
        self.samples, self.wavelengths_nm = samples, wavelengths_nm
        self.log = ScriptedOperator().log

    def prompt(self, step: str, instruction: str, index: int | None = None) -> None:
        check_step(step)
        self.log.append((step, index))
        if step == "darks":
            self.camera.source = None  # lens cap on
        elif step == "white":
            self.camera.source = self.white
        elif step == "monochromator":
            self.camera.source = self.bench
        else:
            if self.samples is None or index is None or not 0 <= index < len(self.samples):
                raise ValueError(f"the simulated bench holds no sample {index}")
            spectrum = self.samples[index] / self.white.level
            grid = self.wavelengths_nm
            self.camera.source = WhiteReference(
                lambda g, s=spectrum: np.interp(g, grid, s), self.white.level, f"sample {index}"
            )


def sensor_irradiance_per_meter_W(twin, bench, wavelength_nm: float, slit_um: float) -> float:
    """Irradiance on the twin's sensor per watt read on the bench's meter, W m^-2 W^-1.

    What a lab measures once with a photodiode at the sensor plane; here from the light model
    of a scratch bench with the same optics (``bench``'s lamp, sphere and meter coupling) and
    the twin's lens: the photons per pixel per us of the line at ``wavelength_nm`` (twin
    radiometry, QE = 1, no filter), as irradiance E = mu_p h c / (lambda A t), over the
    meter's watts.
    """
    from hyplex.simulation.radiometry import photoelectron_weights

    scratch = SimulatedBench(
        VirtualClock(),
        peak_power_W_per_nm=bench.peak_power_W_per_nm,
        lamp_temperature_k=bench.lamp_temperature_k,
        radiance_per_watt=bench.radiance_per_watt,
        meter_fraction=bench.meter_fraction,
    )
    from hyplex.devices import Monochromator

    with Monochromator(scratch.urls["monochromator"], clock=scratch.clock) as monochromator:
        monochromator.set_slit_um(slit_um)
        monochromator.go_to(wavelength_nm)
        monochromator.open_shutter()
    grid = twin.wavelengths_nm
    area = twin.sensor.pixel_area_m2
    weights = photoelectron_weights(
        np.ones((1, grid.size)), grid, np.ones(grid.size), area, 1.0, twin.lens
    )[0]
    photons_per_us = float(weights @ scratch.spectral_radiance(grid))
    # mu_p is linear in E: the irradiance giving photons_per_us in 1 us
    irradiance = photons_per_us / photons_per_pixel(1.0, area * 1e12, 1.0, wavelength_nm)
    return float(irradiance) / scratch.power_on_meter_W()


@dataclass
class SimulatedConfiguration:
    """The runner's arguments for the simulated bench (see the module doc).

    Attributes
    ----------
    camera : SimulatedCamera
    operator : SimulatedOperator
    settings : PipelineSettings
        With the twin's pixel area and the bench's irradiance per meter watt filled in.
    camera_id : str
    samples : numpy.ndarray (N, L) or None
        Radiance of the broadband samples on ``wavelengths_nm``.
    wavelengths_nm : numpy.ndarray (L,)
    layout_grid : (int, int)
    """

    camera: object
    operator: SimulatedOperator
    settings: PipelineSettings
    camera_id: str
    samples: np.ndarray | None
    wavelengths_nm: np.ndarray
    layout_grid: tuple[int, int]


def simulated_configuration(
    twin,
    bench,
    settings: PipelineSettings | None = None,
    wavelengths_nm=None,
    camera_clock=None,
    white: WhiteReference | None = None,
    seed: int = 0,
) -> SimulatedConfiguration:
    """Build the simulated camera, operator and settings for ``twin`` on ``bench``.

    Parameters
    ----------
    twin : CameraTwin
    bench : SimulatedBench or LinkedBench
    settings : PipelineSettings, optional
    wavelengths_nm : array_like (L,), optional
        Sweep grid, nm (default: the twin's grid).
    camera_clock : Clock, optional
        The camera's clock (default: the bench's).
    white : WhiteReference, optional
    seed : int
        Of the camera's temporal noise and of the broadband samples.
    """
    from hyplex.devices.sim_camera import SimulatedCamera

    settings = settings or PipelineSettings()
    grid = np.asarray(twin.wavelengths_nm if wavelengths_nm is None else wavelengths_nm, float)
    settings = replace(
        settings,
        pixel_area_m2=twin.sensor.pixel_area_m2,
        sensor_irradiance_per_meter_W=sensor_irradiance_per_meter_W(
            twin, bench, settings.emva_wavelength_nm, settings.slit_um
        ),
    )
    white = white or WhiteReference()
    samples = None
    if settings.n_samples:
        samples = sample_spectra(grid, settings.n_samples, seed=seed) * white.level
    camera = SimulatedCamera(None, twin, clock=camera_clock or bench.clock, seed=seed)
    operator = SimulatedOperator(camera, bench, white, samples, grid)
    sensor = twin.sensor
    return SimulatedConfiguration(
        camera=camera,
        operator=operator,
        settings=settings,
        camera_id=f"sim:{sensor.fixed_pattern_seed}:{twin.encoder.name}",
        samples=samples,
        wavelengths_nm=grid,
        layout_grid=tuple(twin.encoder.layout.grid),
    )


def calibrate_simulated(twin, out, settings=None, bench=None, resume=False, progress=None):
    """:func:`~hyplex.calibration.pipeline.calibrate` of ``twin`` on an in-process simulated
    bench (``sim://`` drivers on a VirtualClock; default: a fresh ``SimulatedBench``)."""
    from hyplex.devices import Monochromator, PowerMeter

    bench = bench or SimulatedBench()
    config = simulated_configuration(twin, bench, settings)
    with (
        config.camera,
        Monochromator(bench.urls["monochromator"], clock=bench.clock) as monochromator,
        PowerMeter(bench.urls["powermeter"]) as power_meter,
    ):
        return calibrate(
            config.camera, monochromator, power_meter, layout_grid=config.layout_grid,
            wavelengths_nm=config.wavelengths_nm, operator=config.operator,
            settings=config.settings, out=out, resume=resume, progress=progress,
            clock=bench.clock, camera_id=config.camera_id, samples=config.samples,
        )  # fmt: skip

"""Calibration benchmark on the simulated bench: the pipeline against the twin's truth.

Every calibration runs through the protocol runner (``runner: "protocols"``,
:func:`hyplex.calibration.pipeline.calibrate`) with the monochromator and the power meter as
``hyplex sim-device --pty`` processes (``instrument_transport: "pty"``): pyserial on a
pseudo-terminal, the instruments' line protocol and real-time moves; the simulated camera sees
their light through the bench-state folder (``hyplex.devices.bench_link``).

Prints one JSON line:
- ``response_rms_error``: ||R_measured - R_true||_F / ||R_true||_F of the monochromator sweep
  (deconvolved) against the twin's true channel responses;
- ``gain_K_rel_error``: |K_EMVA - K_true| / K_true (photon transfer, pooled over channels);
- ``hyplex_nnls_response_rms_error`` and ``hyplex_nnls_min_r2``: the peer method (Hyplex,
  CVPR 2022: NNLS on 48 broadband samples), scaled to the truth by one least-squares factor;
- ``psnr_before_refit`` / ``psnr_after_refit`` (dB, held-out synthetic scenes): the loop
  closed on the twin. A co-designed bundle (``--bundle DIR``, or a ``hyplex design --quick``
  run made here) is given fabricated filters (``hyplex.simulation.fabrication`` defaults:
  10 nm shift, 8 nm broadening, 20 % scale, seed 0); the camera is calibrated on the bench;
  the decoders are refitted to the measured responses (``hyplex.hil.refit``). "Before" is the
  design's decoders on the uncalibrated camera, "after" the refitted decoders on the
  calibrated one; ``refit`` holds every figure set (design, flat_only, linear_*).

- ``import_loo_rmse`` / ``import_ridge_loo_rmse`` / ``import_r2_min`` and
  ``snr_max_db_error``: measured-data import and EMVA SNR_max (:func:`import_and_emva`).

Run: ``OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/calibration.py [--quick]
[--bundle DIR] [--fabrication SHIFT_NM,BROADENING_NM,SCALE] [--no-refit]``.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


class PtyBench:
    """``hyplex sim-device monochromator|powermeter --pty --bench-state FOLDER`` processes;
    ``ports`` maps each kind to its pseudo-terminal."""

    KINDS = ("monochromator", "powermeter")

    def __init__(self, folder: Path):
        self.folder, self.processes, self.ports = Path(folder), [], {}

    def __enter__(self) -> PtyBench:
        import select
        import subprocess

        for kind in self.KINDS:
            command = [sys.executable, "-m", "hyplex", "sim-device", kind, "--pty"]
            process = subprocess.Popen(
                [*command, "--bench-state", str(self.folder)], stdout=subprocess.PIPE, text=True
            )
            self.processes.append(process)
            ready, _, _ = select.select([process.stdout], [], [], 60.0)
            line = process.stdout.readline() if ready else ""
            if " on " not in line:
                self.__exit__()
                raise RuntimeError(f"hyplex sim-device {kind} did not start: {line!r}")
            self.ports[kind] = line.split(" on ")[1].split()[0]
        return self

    def __exit__(self, *exc) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)
            process.stdout.close()


def calibrate_on_ptys(twin, out: Path, settings):
    """The protocol runner on ``twin`` with pty instruments; (calibration, bench) where
    ``bench`` is the LinkedBench the camera saw (its optics give the truth)."""
    from hyplex.calibration.pipeline import calibrate
    from hyplex.calibration.sim_bench_config import simulated_configuration
    from hyplex.devices.bench_link import LinkedBench
    from hyplex.devices.clock import MonotonicClock, VirtualClock
    from hyplex.devices.instruments import open_instrument

    with tempfile.TemporaryDirectory() as folder, PtyBench(Path(folder)) as instruments:
        bench = LinkedBench(folder)
        config = simulated_configuration(twin, bench, settings, camera_clock=VirtualClock())
        clock = MonotonicClock()  # the instruments run in real time
        ports = instruments.ports
        with (
            config.camera,
            open_instrument("monochromator", ports["monochromator"], clock=clock) as mono,
            open_instrument("power_meter", ports["powermeter"], clock=clock) as meter,
        ):
            calibration = calibrate(
                config.camera, mono, meter, layout_grid=config.layout_grid,
                wavelengths_nm=config.wavelengths_nm, operator=config.operator,
                settings=config.settings, out=out, clock=clock, camera_id=config.camera_id,
                samples=config.samples,
            )  # fmt: skip
    return calibration, bench


def main(quick: bool = False) -> dict:
    from hyplex.calibration.bench import true_response
    from hyplex.calibration.pipeline import PipelineSettings
    from hyplex.simulation.camera import default_camera
    from hyplex.simulation.grids import prototype_grid

    shape = (120, 128) if quick else (240, 256)
    twin = default_camera(prototype_grid(), shape, pitch_px=5.3, rotation_deg=1.0)
    settings = PipelineSettings(sweep_frames=3 if quick else 4)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        calibration, bench = calibrate_on_ptys(twin, Path(folder) / "cal.h5", settings)
    seconds = time.perf_counter() - start
    truth = true_response(twin, bench)
    measured = calibration.sections["spectral"]["response"]
    fit = calibration.sections["basis_fit"]["response"]
    scale = np.sum(fit * truth) / np.sum(fit * fit)
    gain = float(calibration.sections["emva"]["system_gain_pooled_dn_per_e"])
    k_true = twin.sensor.system_gain_dn_per_e
    layout, found = twin.encoder.layout, calibration.layout
    return {
        "benchmark": "calibration",
        "runner": "protocols",
        "instrument_transport": "pty",
        "sensor_shape": list(shape),
        "response_rms_error": float(np.linalg.norm(measured - truth) / np.linalg.norm(truth)),
        "gain_K_rel_error": abs(gain - k_true) / k_true,
        "hyplex_nnls_response_rms_error": float(
            np.linalg.norm(scale * fit - truth) / np.linalg.norm(truth)
        ),
        "hyplex_nnls_min_r2": float(np.min(calibration.sections["basis_fit"]["r_squared"])),
        "registration_pitch_error_px": abs(found.pitch_px - layout.pitch_px),
        "registration_offset_error_px": float(
            np.max(np.abs(np.subtract(found.offset_px, layout.offset_px)))
        ),
        # EMVA SNR_max of the runner's own series (to 1.5x t70, through the ptys), brightest
        # channel, against the twin's sqrt(full well)
        "snr_max_db_error_runner": float(
            abs(
                np.nanmax(calibration.sections["emva"]["snr_max_db"])
                - 20.0 * np.log10(np.sqrt(twin.sensor.full_well_e))
            )
        ),
        "peer": "Hyplex NNLS basis fit on 48 broadband samples (CVPR 2022)",
        "seconds": round(seconds, 1),
    }


def import_and_emva(quick: bool = False, seed: int = 0) -> dict:
    """The measured-data import and EMVA SNR_max figures (``hyplex.calibration.
    measured_import``, ``hyplex.calibration.emva``) on the twin.

    Import: 48 broadband samples (``basis_fit.sample_spectra``) read through the twin's true
    channel responses (``bench.true_response``) with the noise of a real bench: the reference
    spectrometer 1 % per band plus 0.2 % of full scale, the readings 0.5 % plus a 0.5 % lamp
    drift common to one sample. ``import_loo_rmse``: leave-one-out RMSE of the held-out
    spectra reconstructed through hyplex's prior fit (Wiener estimate with the covariance
    prior tuned by inner leave-one-out; ``import_basis_loo_rmse`` through the Hyplex basis
    fit),
    ``import_ridge_loo_rmse``: the plain ridge readings -> spectra regression tuned by inner
    leave-one-out, both relative to the spectra's RMS; ``import_r2_min``: the smallest
    per-channel leave-one-out R^2 of the response fit (``import_weak_channel`` names it).

    SNR_max: an exposure series at 550 nm to 1.5x the full-well exposure of the brightest
    channel (past saturation, as the calibration runner's own series runs), 2 bright and 2
    dark frames per point; ``snr_max_db_error`` = |SNR_max (EMVA, brightest channel) -
    20 log10 sqrt(full well)| in dB; ``snr_max_measured_db_error`` is the same for the
    largest measured SNR (the figure the module used to report);
    ``snr_max_db_error_worst_saturated_channel`` the largest error over every channel the
    series saturated (a channel saturated late in a coarse series sits up to one step below).
    """
    from hyplex.calibration.basis_fit import sample_spectra
    from hyplex.calibration.bench import true_response
    from hyplex.calibration.emva import channel_map, photon_transfer
    from hyplex.calibration.measured_import import MeasuredSamples, import_samples
    from hyplex.devices.sim_bench import SimulatedBench
    from hyplex.simulation.camera import default_camera
    from hyplex.simulation.grids import prototype_grid, quadrature_weights

    grid = prototype_grid()
    shape = (120, 128) if quick else (240, 256)
    twin = default_camera(grid, shape, pitch_px=5.3, rotation_deg=1.0)
    rng = np.random.default_rng(seed)
    truth = true_response(twin, SimulatedBench())
    spectra = sample_spectra(grid, 48, seed=seed + 1)
    readings = (spectra * quadrature_weights(grid)) @ truth.T
    readings *= 1 + 0.005 * rng.standard_normal(readings.shape)
    readings *= 1 + 0.005 * rng.standard_normal((len(spectra), 1))
    measured = spectra * (1 + 0.01 * rng.standard_normal(spectra.shape))
    measured = np.clip(measured + 0.002 * rng.standard_normal(spectra.shape), 0, None)
    result = import_samples(MeasuredSamples(grid, measured, readings, source="twin bench"))

    line = np.zeros(grid.size)
    line[int(np.argmin(np.abs(grid - 550.0)))] = 1.0
    per_us = twin.expected_electrons(line[None, None], grid, 1.0)
    channels = channel_map(twin.encoder.layout.slot_map(twin.sensor.shape, 0.15),
                           twin.encoder.n_filters)  # fmt: skip
    brightest = max(per_us[channels == c].mean() for c in range(twin.encoder.n_filters))
    full_well = twin.sensor.full_well_e
    exposures = np.linspace(0.02, 1.5, 16 if quick else 24) * full_well / brightest
    bright, dark = [], []
    for i, t in enumerate(exposures):
        frames = [twin.capture(per_us * t * (k < 2), t, seed=seed, frame_index=4 * i + k)
                  for k in range(4)]  # fmt: skip
        bright.append(frames[:2])
        dark.append(frames[2:])
    transfer = photon_transfer(bright, dark, exposures, channels)
    top = int(np.nanargmax(transfer.snr_max_db))
    true_db = 20.0 * np.log10(np.sqrt(full_well))
    return {
        "import_loo_rmse": result.loo_rmse / result.spectra_rms,
        "import_ridge_loo_rmse": result.ridge_loo_rmse / result.spectra_rms,
        "import_basis_loo_rmse": result.basis_loo_rmse / result.spectra_rms,
        "import_r2_min": float(np.min(result.r_squared_loo)),
        "import_weak_channel": result.weak_channel_name,
        "import_response_rms_error": float(
            np.linalg.norm(result.response - truth) / np.linalg.norm(truth)
        ),
        "snr_max_db_error": float(abs(transfer.snr_max_db[top] - true_db)),
        "snr_max_db_error_worst_saturated_channel": float(
            np.nanmax(np.abs(transfer.snr_max_db - true_db))
        ),
        "snr_max_measured_db_error": float(abs(transfer.snr_max_measured_db[top] - true_db)),
        "snr_max_true_db": float(true_db),
    }


def quick_bundle(folder: Path) -> Path:
    """A ``hyplex design --quick`` run (library encoder on the quick RCWA library)."""
    import torch

    from hyplex.models.bundle import save_bundle
    from hyplex.models.codesign import train_codesign
    from hyplex.models.codesign_config import quick_config
    from hyplex.models.codesign_library import quick_library

    torch.set_num_threads(2)
    library = quick_library(folder / "quick_library.h5")
    result = train_codesign(quick_config(), folder / "design", library=library, progress=False)
    return save_bundle(folder / "bundle", result, overwrite=True)


def refit_loop(bundle_path, quick: bool, folder: Path, error=None) -> dict:
    """Fabricate (``error``: a FabricationError, default its defaults), calibrate and refit a
    bundle on the twin; the refit figures."""
    from hyplex.calibration.pipeline import PipelineSettings
    from hyplex.hil.measured_response import design_twin, measured_transmissions
    from hyplex.hil.refit import RefitSettings, refit
    from hyplex.models.bundle import load_bundle
    from hyplex.models.encoder_capture import CameraCapture
    from hyplex.simulation.fabrication import FabricationError

    bundle = load_bundle(bundle_path)
    shape = (120, 128) if quick else (240, 256)
    error = error or FabricationError()
    twin, truth = design_twin(bundle, shape, 5.3, 1.0, error, seed=0)
    settings = PipelineSettings(sweep_frames=3, n_samples=0)
    calibration, _ = calibrate_on_ptys(twin, folder / "fabricated.h5", settings)
    spectral = calibration.sections["spectral"]
    capture = CameraCapture(bundle.wavelengths_nm, bundle.capture)
    measured = measured_transmissions(
        spectral["response"], spectral["wavelengths_nm"], capture, bundle.responses
    )
    result = refit(bundle, measured, RefitSettings(steps=60 if quick else 150),
                   camera_responses=truth, progress=False)  # fmt: skip
    figures = {
        phase: {k: round(float(v), 4) for k, v in values.items()}
        for phase, values in result.metrics.items()
        if isinstance(values, dict)
    }
    return {
        "psnr_before_refit": figures["before"]["psnr"],
        "psnr_after_refit": figures["after"]["psnr"],
        "psnr_design": figures["design"]["psnr"],
        "refit": figures,
        "fabrication_error": {
            "shift_nm": error.shift_nm,
            "broadening_nm": error.broadening_nm,
            "scale": error.scale,
        },
        "refit_seconds": round(result.seconds, 1),
    }


if __name__ == "__main__":
    quick = "--quick" in sys.argv
    figures = main(quick=quick)
    figures.update(import_and_emva(quick=quick))
    if "--no-refit" not in sys.argv:
        with tempfile.TemporaryDirectory() as folder:
            given = sys.argv[sys.argv.index("--bundle") + 1] if "--bundle" in sys.argv else None
            bundle = Path(given) if given else quick_bundle(Path(folder))
            error = None
            if "--fabrication" in sys.argv:  # shift_nm,broadening_nm,scale
                from hyplex.simulation.fabrication import FabricationError

                values = sys.argv[sys.argv.index("--fabrication") + 1].split(",")
                error = FabricationError(*(float(v) for v in values))
            figures.update(refit_loop(bundle, quick, Path(folder), error))
    print(json.dumps(figures))

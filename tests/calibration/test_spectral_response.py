"""Monochromator sweep on the simulated bench: accuracy, deconvolution, faults, resume; and
the Hyplex NNLS basis fit."""

import numpy as np
import pytest

from hyplex.calibration.basis_fit import basis_functions, fit_response_basis, sample_spectra
from hyplex.calibration.bench import true_response
from hyplex.calibration.emva import channel_map
from hyplex.calibration.spectral_response import (
    SweepInterrupted,
    SweepRecord,
    SweepSettings,
    bandpass_matrix,
    run_sweep,
    spectral_response,
)
from hyplex.devices import Monochromator, PowerMeter, SimulatedCamera
from hyplex.devices.sim_bench import SimulatedBench

from .conftest import make_twin

GRID = np.linspace(400, 720, 17)


@pytest.fixture(scope="module")
def twin():
    return make_twin(shape=(72, 80), pitch_px=3.9, grid=GRID)


def _sweep(twin, bench, settings, **options):
    channels = channel_map(twin.encoder.layout.slot_map(twin.sensor.shape, 0.15), 9)
    camera = SimulatedCamera(bench, twin, clock=bench.clock)
    with (
        camera,
        Monochromator(bench.urls["monochromator"], clock=bench.clock) as mono,
        PowerMeter(bench.urls["powermeter"]) as meter,
    ):
        return run_sweep(camera, mono, meter, channels, settings, bench.clock, **options)


def _rms(estimate, truth):
    return np.linalg.norm(estimate - truth) / np.linalg.norm(truth)


def test_sweep_recovers_true_responses_and_saturation_lowers_exposure(twin):
    bench = SimulatedBench(peak_power_W_per_nm=1e-3)
    settings = SweepSettings(tuple(GRID), n_frames=3, initial_exposure_us=1_000_000.0)
    record = _sweep(twin, bench, settings)
    assert record.points[0].saturated_attempts >= 1  # the first frame saturated
    result = spectral_response(record, n_bootstrap=50)
    assert _rms(result.response, true_response(twin, bench)) <= 0.02
    assert np.all(result.uncertainty > 0)
    assert np.median(result.uncertainty / result.response) < 0.02


def test_wide_bandpass_is_deconvolved(twin):
    bench = SimulatedBench()
    bench.monochromator.slit_um = 6060.6  # 40 nm FWHM on a 20 nm grid
    settings = SweepSettings(tuple(GRID), n_frames=3, bandwidth_nm=40.0)
    result = spectral_response(_sweep(twin, bench, settings), n_bootstrap=20)
    truth = true_response(twin, bench)
    assert _rms(result.response, truth) <= 0.02
    assert _rms(result.measured, truth) > 2 * _rms(result.response, truth)


def test_timeout_mid_sweep_leaves_a_resumable_partial_record(twin, tmp_path):
    from hyplex.calibration.store import Calibration, Provenance, load_calibration, save_calibration

    bench = SimulatedBench()
    settings = SweepSettings(tuple(GRID), n_frames=2)
    path = tmp_path / "partial.h5"
    provenance = Provenance("cam-1", "twin", (72, 80))

    def checkpoint(record):
        save_calibration(
            path,
            Calibration(
                provenance,
                None,
                {"sweep": record.to_dict()},
                "complete" if record.complete else "partial",
            ),
        )

    def fault(point):
        if point.wavelength_nm == GRID[5]:
            bench.monochromator.faults.silent = 100  # the monochromator stops answering

    with pytest.raises(SweepInterrupted, match="after 6 of 17") as error:
        _sweep(twin, bench, settings, checkpoint=checkpoint, progress=fault)
    assert len(error.value.record.points) == 6
    with pytest.raises(ValueError, match="partial"):
        load_calibration(path)
    partial = load_calibration(path, allow_partial=True)
    record = SweepRecord.from_dict(partial.sections["sweep"])
    assert len(record.points) == 6 and not record.complete
    bench.monochromator.faults.silent = 0
    record = _sweep(twin, bench, settings, resume=record, checkpoint=checkpoint)
    assert record.complete
    assert [p.wavelength_nm for p in record.points] == list(GRID)
    assert load_calibration(path).status == "complete"
    result = spectral_response(record, n_bootstrap=10)
    assert _rms(result.response, true_response(twin, bench)) <= 0.02


def test_bandpass_rows_sum_to_one_inside_the_grid():
    matrix = bandpass_matrix(GRID, 40.0)
    assert np.allclose(matrix[3:-3].sum(1), 1.0, atol=1e-9)
    assert np.all(matrix[0].sum() < 1.0)
    with pytest.raises(ValueError, match="strictly increasing"):
        SweepSettings((500.0, 400.0, 600.0))


@pytest.mark.parametrize("kind", ["gaussian", "lorentzian"])
def test_hyplex_nnls_basis_fit_on_48_samples(twin, kind):
    spectra = sample_spectra(GRID, 48, seed=1)
    truth = twin.encoder.responses
    readings = twin.encoder.encode(spectra, GRID)
    readings *= 1 + 0.002 * np.random.default_rng(0).standard_normal(readings.shape)
    fit = fit_response_basis(spectra, GRID, readings, n_basis=10, kind=kind)
    assert fit.response.shape == truth.shape and np.all(fit.coefficients >= 0)
    assert np.all(fit.r_squared > 0.99)
    assert _rms(fit.response, truth) < 0.25  # 48 broadband samples: a coarse estimate
    with pytest.raises(ValueError, match="kind"):
        basis_functions(GRID, 5, kind="box")

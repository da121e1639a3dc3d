"""Measured-data import: sample files, the two response fits, leave-one-out figures and the
calibration file they become."""

import pickle

import h5py
import numpy as np
import pytest

from hyplex.calibration.basis_fit import sample_spectra
from hyplex.calibration.measured_import import (
    MeasuredSamples,
    SampleFileError,
    calibration_from_import,
    fit_response_prior,
    import_samples,
    read_samples,
    write_samples_csv,
)
from hyplex.calibration.store import load_calibration, save_calibration
from hyplex.simulation.grids import prototype_grid, quadrature_weights

from .conftest import gaussian_responses

EXAMPLE = "tests/data/measured_samples.csv"


def bench_samples(n_samples=48, seed=0, responses=None):
    """Twin samples with the noise of a real bench: a reference spectrometer with 1 % noise
    per band plus a 0.2 % of full scale floor, readings with 0.5 % noise and a 0.5 % lamp
    drift common to the channels of one sample. Returns (samples, true responses)."""
    grid = prototype_grid()
    truth = gaussian_responses(grid) * 50.0 if responses is None else responses
    rng = np.random.default_rng(seed)
    spectra = sample_spectra(grid, n_samples, seed=seed + 1)
    readings = (spectra * quadrature_weights(grid)) @ truth.T
    readings *= 1 + 0.005 * rng.standard_normal(readings.shape)
    readings *= 1 + 0.005 * rng.standard_normal((n_samples, 1))
    measured = spectra * (1 + 0.01 * rng.standard_normal(spectra.shape))
    measured = np.clip(measured + 0.002 * rng.standard_normal(spectra.shape), 0, None)
    return MeasuredSamples(grid, measured, readings, source="twin bench"), truth


@pytest.fixture(scope="module")
def imported():
    samples, truth = bench_samples()
    return import_samples(samples), truth


def test_the_example_file_reads_and_imports():
    samples = read_samples(EXAMPLE)
    assert samples.channel_names == ("ch0", "ch1", "ch2")
    assert samples.wavelengths_nm.tolist() == [450, 500, 550, 600, 650, 700]
    assert samples.spectra.shape == (4, 6) and samples.readings.shape == (4, 3)
    result = import_samples(samples, n_basis=4)
    assert result.response.shape == (3, 6) and np.all(result.response >= 0)


def test_every_format_gives_the_same_samples(tmp_path):
    samples = read_samples(EXAMPLE)
    table = np.vstack([
        np.concatenate([np.full(3, np.nan), samples.wavelengths_nm]),
        np.hstack([samples.readings, samples.spectra]),
    ])  # fmt: skip
    np.save(tmp_path / "s.npy", table)
    np.savez(tmp_path / "s.npz", wavelengths_nm=samples.wavelengths_nm,
             spectra=samples.spectra, readings=samples.readings)  # fmt: skip
    with h5py.File(tmp_path / "s.h5", "w") as file:
        for key in ("wavelengths_nm", "spectra", "readings"):
            file[key] = getattr(samples, key)
    write_samples_csv(tmp_path / "s.csv", samples)
    for name in ("s.npy", "s.npz", "s.h5", "s.csv"):
        other = read_samples(tmp_path / name)
        assert np.allclose(other.spectra, samples.spectra), name
        assert np.allclose(other.readings, samples.readings), name
        assert np.allclose(other.wavelengths_nm, samples.wavelengths_nm), name


def test_a_pickled_npy_is_refused_not_unpickled(tmp_path):
    objects = np.empty(2, dtype=object)
    objects[:] = [{"spectra": 1}, None]
    np.save(tmp_path / "objects.npy", objects, allow_pickle=True)
    with pytest.raises(SampleFileError, match="pickled.*never unpickles"):
        read_samples(tmp_path / "objects.npy")
    (tmp_path / "raw.npy").write_bytes(pickle.dumps({"spectra": [1, 2]}))
    with pytest.raises(SampleFileError, match="pickled|not a readable"):
        read_samples(tmp_path / "raw.npy")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda lines: lines[:2] + [lines[2].replace("0.40", "nan", 1)] + lines[3:],
         r"spectra\[1, 2\] is nan"),
        (lambda lines: lines[:3] + [lines[3].rsplit(",", 1)[0]] + lines[4:], "mismatched"),
        (lambda lines: lines[:1] + [lines[1].replace("0.45", "-0.45", 1)] + lines[2:],
         r"spectra\[0, 1\] is negative"),
        (lambda lines: [lines[0].replace("500", "440")] + lines[1:], "strictly increasing"),
        (lambda lines: [lines[0].replace("ch2", "red")] + lines[1:], "named 'red'"),
    ],
)  # fmt: skip
def test_bad_sample_files_name_the_item(tmp_path, edit, message):
    lines = open(EXAMPLE).read().splitlines()
    path = tmp_path / "bad.csv"
    path.write_text("\n".join(edit(lines)) + "\n")
    with pytest.raises(SampleFileError, match=message):
        read_samples(path)


def test_mismatched_array_lengths_are_refused():
    grid = np.array([400.0, 500.0, 600.0])
    with pytest.raises(SampleFileError, match="mismatched lengths"):
        MeasuredSamples(grid, np.ones((6, 3)), np.ones((5, 2)))
    with pytest.raises(SampleFileError, match="L=3"):
        MeasuredSamples(grid, np.ones((6, 4)), np.ones((6, 2)))


def test_the_smoothness_prior_is_what_recovers_the_responses(imported):
    """The defining step: the penalty chosen by leave-one-out. Without it (alpha ~ 0, plain
    non-negative least squares) the broadband samples leave the responses undetermined."""
    result, truth = imported
    samples = result.samples
    error = np.linalg.norm(result.response - truth) / np.linalg.norm(truth)
    plain, _ = fit_response_prior(samples.spectra, samples.wavelengths_nm, samples.readings,
                                  alphas=np.full(9, 1e-9))  # fmt: skip
    plain_error = np.linalg.norm(plain - truth) / np.linalg.norm(truth)
    assert error < 0.1
    assert error < 0.5 * plain_error


def test_leave_one_out_figures(imported):
    result, _ = imported
    assert np.all(result.r_squared_loo > 0.99)
    assert result.weak_channel == int(np.argmin(result.r_squared_loo))
    assert result.weak_channel_name in result.summary() and "weakest" in result.summary()
    # the physical model + spectral prior reconstructs held-out spectra better than a plain
    # ridge regression from readings to spectra tuned by inner leave-one-out (by a few %;
    # benchmarks/calibration.py import_loo_rmse)
    assert result.loo_rmse < result.ridge_loo_rmse
    assert np.all(result.uncertainty >= 0) and result.uncertainty.max() > 0


def test_the_inner_leave_one_out_of_the_prior_is_exact():
    """The vectorised rank-one downdates equal refitting the prior without each sample."""
    from hyplex.calibration.measured_import import (
        _inner_loo_errors,
        smooth_prior_covariance,
        wiener_reconstruction,
    )

    rng = np.random.default_rng(0)
    grid = np.linspace(400.0, 700.0, 12)
    spectra, responses = rng.random((9, 12)), rng.random((3, 12))
    readings = (spectra * quadrature_weights(grid)) @ responses.T
    noise = np.array([1e-3, 2e-3, 3e-3])
    forward = responses * quadrature_weights(grid)
    for weight, length in ((0.0, 15.0), (0.3, 30.0)):
        fast = _inner_loo_errors(forward, spectra, readings, noise, grid, weight, length)
        for j in range(9):
            keep = np.arange(9) != j
            covariance = smooth_prior_covariance(spectra[keep], grid, weight, length)
            estimate = wiener_reconstruction(
                responses, grid, readings[j : j + 1], spectra[keep], noise, covariance
            )
            assert fast[j] == pytest.approx(np.sum((estimate[0] - spectra[j]) ** 2), rel=1e-8)


def test_the_calibration_file_round_trips_without_registration(imported, tmp_path):
    result, _ = imported
    path = save_calibration(tmp_path / "cal.h5", calibration_from_import(result, "lab-cam"))
    calibration = load_calibration(path)
    assert calibration.layout is None and calibration.provenance.camera_id == "lab-cam"
    assert np.allclose(calibration.sections["spectral"]["response"], result.response)
    assert not calibration.sections["measured_import"]["has_registration"]
    assert {"dark", "flat", "registration"}.isdisjoint(calibration.sections)


@pytest.fixture(scope="module")
def twin_samples():
    """48 samples through the default twin camera's true responses, bench noise (as
    benchmarks/calibration.py import_and_emva, seed 0)."""
    from hyplex.calibration.bench import true_response
    from hyplex.devices.sim_bench import SimulatedBench
    from hyplex.simulation.camera import default_camera

    grid = prototype_grid()
    twin = default_camera(grid, (60, 64), pitch_px=5.3, rotation_deg=1.0)
    samples, _ = bench_samples(responses=true_response(twin, SimulatedBench()))
    return samples


def test_the_smooth_covariance_prior_is_what_beats_ridge(twin_samples, monkeypatch):
    """With the tuned shrinkage of the spectra's covariance the reconstruction through the
    fitted responses beats the plain ridge baseline; without it (weight 0: the bare sample
    covariance of 47 spectra) it does not."""
    import hyplex.calibration.measured_import as measured_import

    tuned = import_samples(twin_samples)
    assert tuned.loo_rmse < tuned.ridge_loo_rmse
    monkeypatch.setattr(measured_import, "PRIOR_WEIGHTS", (0.0,))
    bare = import_samples(twin_samples)
    assert bare.ridge_loo_rmse == pytest.approx(tuned.ridge_loo_rmse)
    assert bare.loo_rmse > tuned.loo_rmse
    assert bare.loo_rmse > bare.ridge_loo_rmse

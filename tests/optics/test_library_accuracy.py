"""Libraries of known accuracy: solver settings, the order probe, the stored accuracy estimate,
old-format files and the CLI (issue 21, item 3)."""

from __future__ import annotations

import json
from dataclasses import replace

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from hyplex.cli.library import library_app
from hyplex.optics import library_accuracy
from hyplex.optics.library import (
    FORMAT_VERSION,
    PRECISIONS,
    LibraryError,
    SolverSettings,
    read_library,
    read_metadata,
    read_records,
)
from hyplex.optics.library_accuracy import estimate_accuracy, read_accuracy
from hyplex.optics.library_build import build_library
from hyplex.optics.library_probe import ConvergenceError, probe_convergence, rms
from hyplex.optics.library_spec import LibrarySpec, sample_designs, solve_designs
from hyplex.optics.rcwa import FACTORIZATIONS

# A tiny, cheap stack: thin c-Si rectangles, two wavelengths, a 20 px grid (the reference too);
# the library in single precision, so the probe solves its candidates apart from the ladder.
REFERENCE = SolverSettings(harmonics=(1, 1), factorization="vector", grid=(20, 20))
SPEC = LibrarySpec(
    family="rectangle",
    count=16,
    wavelengths_nm=(550.0, 750.0),
    thickness_range_nm=(60.0, 120.0),
    solver=SolverSettings(harmonics=(1, 1), grid=(20, 20), precision="complex64"),
    seed=1,
)
PROBE = {"designs": 2, "reference": REFERENCE, "tolerance": 0.005, "start_order": 1}


@pytest.fixture(scope="module")
def probe():
    return probe_convergence(SPEC, max_order=5, target=0.006, **PROBE)


# ----------------------------------------------------------------- solver settings


@pytest.mark.parametrize("factorization", FACTORIZATIONS)
@pytest.mark.parametrize("precision", PRECISIONS)
def test_solver_settings_round_trip_every_factorization(factorization, precision):
    settings = SolverSettings(
        harmonics=(5, 4), factorization=factorization, grid=(96, 80), precision=precision
    )
    assert SolverSettings.from_json(settings.to_json()) == settings
    assert SolverSettings.from_json(settings.to_dict()) == settings
    assert settings.dtype == getattr(__import__("torch"), precision)


def test_solver_settings_defaults_and_old_json():
    assert SolverSettings().factorization == "vector"
    old = '{"angle_deg": 0.0, "azimuth_deg": 0.0, "factorization": "li", "grid": [64, 64], '
    old += '"harmonics": [2, 2], "name": "hyplex.optics.rcwa"}'  # a version 1 file's record
    settings = SolverSettings.from_json(old)
    assert settings.factorization == "li" and settings.precision == "complex128"
    with pytest.raises(ValueError, match="factorization must be one of"):
        SolverSettings(factorization="staircase")
    with pytest.raises(ValueError, match="precision must be one of"):
        SolverSettings(precision="float16")
    with pytest.raises(ValueError, match="unknown solver settings"):
        SolverSettings.from_json('{"harmonics": [1, 1], "smoothing": 2}')


# ----------------------------------------------------------------- the order probe


def test_probe_converges_and_picks_the_smallest_order_meeting_the_target(probe):
    changes = [r["change_to_next"] for r in probe.ladder if r["change_to_next"] is not None]
    # M_c is the order reached by the first step within the tolerance, the ladder's last rung
    first = next(i for i, c in enumerate(changes) if c <= PROBE["tolerance"])
    assert probe.converged_order == probe.ladder[first + 1]["M"] == probe.ladder[-1]["M"]
    assert all(c > PROBE["tolerance"] for c in changes[:first])
    assert probe.reference.harmonics == (probe.converged_order,) * 2
    # the choice is the smallest candidate within the target, every smaller one misses it
    errors = {c["M"]: c["rms"] for c in probe.candidates}
    assert probe.chosen_order == min(m for m, e in errors.items() if e <= probe.target)
    assert all(errors[m] > probe.target for m in errors if m < probe.chosen_order)
    assert errors[1] > probe.target  # M = 1 is far off: the test is not trivial
    # the stored figures are what the solver gives when asked again
    params, thickness = sample_designs(SPEC)
    pick = probe.indices
    truth, _ = solve_designs(SPEC, params[pick], thickness[pick], solver=probe.reference)
    np.testing.assert_allclose(probe.reference_T, truth, atol=1e-12)
    chosen, _ = solve_designs(SPEC, params[pick], thickness[pick], solver=probe.library_solver)
    assert probe.library_solver == replace(SPEC.solver, harmonics=(probe.chosen_order,) * 2)
    assert rms(chosen, truth) == pytest.approx(errors[probe.chosen_order], abs=1e-12)


def test_probe_fails_clearly():
    with pytest.raises(ConvergenceError, match="did not converge.*by M=2"):
        probe_convergence(SPEC, max_order=2, **PROBE)
    # Li's rule on grey edge pixels is biased whatever the order: no order reaches 0.01
    li = replace(SPEC, solver=replace(SPEC.solver, factorization="li"))
    with pytest.raises(ConvergenceError, match=r"no order up to M=5 .*reaches rms 0.01") as info:
        probe_convergence(li, max_order=5, target=0.01, **PROBE)
    assert "candidates (li" in str(info.value)  # the table comes with the error
    with pytest.raises(ValueError, match="no smaller than the tolerance"):
        probe_convergence(SPEC, max_order=7, target=0.001, **PROBE)


# ----------------------------------------------------------------- the accuracy estimate


@pytest.fixture(scope="module")
def built(tmp_path_factory, probe):
    path = tmp_path_factory.mktemp("acc") / "lib.h5"
    spec = replace(SPEC, solver=probe.library_solver)
    build_library(
        path, spec, serial=True, progress=False, records={"convergence_probe": probe.to_record()}
    )
    return path


def test_stored_estimate_is_recomputed_and_matches(built, probe, tmp_path):
    # on a copy: the module's library keeps no record, whatever order the tests run in
    original, built = built, tmp_path / "estimated.h5"
    built.write_bytes(original.read_bytes())
    estimate = estimate_accuracy(built, fraction=0.2, minimum=3, seed=4, reference=REFERENCE)
    assert estimate.indices.size == 4  # ceil(0.2 * 16)
    assert estimate.reference == probe.reference  # the file's probe gave the order
    library = read_library(built)
    # an independent recomputation: re-solve the stored sample at the stored reference
    truth, _ = solve_designs(
        SPEC,
        library.params_nm[estimate.indices],
        library.thickness_nm[estimate.indices],
        solver=estimate.reference,
    )
    np.testing.assert_allclose(estimate.T_reference, truth, atol=1e-12)
    assert estimate.rms == pytest.approx(rms(library.T[estimate.indices], truth), abs=1e-12)
    assert estimate.rms > 0
    stored = read_accuracy(built)
    assert stored.summary() == estimate.summary()
    assert read_metadata(built)["accuracy"]["rms"] == pytest.approx(estimate.rms)
    assert read_metadata(built)["format_version"] == FORMAT_VERSION
    # the library's designs are untouched by adding the record
    np.testing.assert_array_equal(read_library(built).T, library.T)
    # an order given instead of probed (another library's probe) gives the same reference
    copy = tmp_path / "given.h5"
    copy.write_bytes(built.read_bytes())
    order = estimate.reference.harmonics[0]
    given = estimate_accuracy(copy, fraction=0.2, minimum=3, seed=4, reference=REFERENCE,
                              reference_order=order)  # fmt: skip
    np.testing.assert_array_equal(given.T_reference, estimate.T_reference)
    assert given.summary()["reference_order_source"] == "given"


def _killed_on_call(n: int, solve):
    """``solve`` that raises KeyboardInterrupt (a Ctrl-C) on its ``n``-th call."""
    calls = []

    def solve_or_die(*args, **kwargs):
        calls.append(1)
        if len(calls) == n:
            raise KeyboardInterrupt
        return solve(*args, **kwargs)

    return solve_or_die


def test_a_killed_estimate_resumes_and_leaves_the_file_alone(built, tmp_path, monkeypatch):
    path = tmp_path / "copy.h5"
    path.write_bytes(built.read_bytes())
    assert read_records(path)["accuracy"] is None  # the module's library has no record...
    estimate_accuracy(path, fraction=0.2, minimum=3, seed=4, reference=REFERENCE)
    before = read_records(path)["accuracy"]  # ...this copy has one, which a kill must keep
    assert before is not None
    real = library_accuracy.solve_designs
    dies_on_the_second = _killed_on_call(2, real)
    monkeypatch.setattr(library_accuracy, "solve_designs", dies_on_the_second)
    options = {"fraction": 0.5, "minimum": 3, "seed": 9, "reference": REFERENCE}
    with pytest.raises(KeyboardInterrupt):
        estimate_accuracy(path, **options)
    sidecar = path.with_name(path.name + ".accuracy-partial.npz")
    assert sidecar.exists()
    after = read_records(path)["accuracy"]  # the old record, untouched
    assert after.summary == before.summary
    monkeypatch.setattr(library_accuracy, "solve_designs", real)
    resumed = estimate_accuracy(path, **options)
    assert not sidecar.exists()
    clean_path = tmp_path / "clean.h5"
    clean_path.write_bytes(built.read_bytes())
    clean = estimate_accuracy(clean_path, **options)
    np.testing.assert_array_equal(resumed.T_reference, clean.T_reference)
    assert resumed.rms == clean.rms


def test_old_format_library_reads_as_accuracy_unknown(built, tmp_path):
    old = tmp_path / "v1.h5"
    old.write_bytes(built.read_bytes())
    with h5py.File(old, "r+") as handle:  # what hyplex wrote before the accuracy record
        for name in ("accuracy", "convergence_probe"):
            if name in handle:
                del handle[name]
        handle.attrs["format_version"] = 1
        solver = json.loads(handle.attrs["solver"])
        solver.pop("precision")
        handle.attrs["solver"] = json.dumps(solver | {"factorization": "li"})
    meta = read_metadata(old)
    assert meta["format_version"] == 1 and meta["accuracy"] is None
    assert meta["solver"].factorization == "li"  # its recorded settings, not the new default
    assert read_accuracy(old) is None and read_library(old).done.all()
    result = CliRunner().invoke(library_app, ["info", str(old)])
    assert result.exit_code == 0 and "accuracy unknown" in result.output
    summary = json.loads(CliRunner().invoke(library_app, ["info", str(old), "--json"]).output)
    assert summary["accuracy"] is None and summary["format_version"] == 1
    with h5py.File(old, "r+") as handle:
        handle.attrs["format_version"] = 99
    with pytest.raises(LibraryError, match="format_version 99; this hyplex reads versions 1, 2"):
        read_metadata(old)


def test_cli_accuracy_and_info(built, tmp_path):
    path = tmp_path / "cli.h5"
    path.write_bytes(built.read_bytes())
    command = ["accuracy", str(path), "--fraction", "0.1", "--minimum", "2", "--json"]
    result = CliRunner().invoke(library_app, [*command, "--reference-grid", "20"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output.strip().splitlines()[-1])
    assert summary["designs"] == 2 and summary["reference"]["grid"] == [20, 20]
    info = CliRunner().invoke(library_app, ["info", str(path)])
    assert "accuracy           rms" in info.output and "chosen for target rms 0.006" in info.output
    bad = CliRunner().invoke(library_app, ["accuracy", str(path), "--fraction", "0"])
    assert bad.exit_code == 2 and "--fraction must be in (0, 1]" in bad.output


def test_cli_accuracy_warns_when_a_library_misses_the_goal(tmp_path):
    """Li's rule at M = 1 on grey-edged rectangles is far from converged spectra: the accuracy
    step says so, with the option that fixes it; a library within 0.01 gets no warning."""
    li = replace(SPEC, count=8, solver=replace(SPEC.solver, factorization="li"))
    path = tmp_path / "li.h5"
    build_library(path, li, serial=True, progress=False)
    options = ["--fraction", "0.5", "--minimum", "2", "--reference-order", "3",
               "--reference-grid", "20"]  # fmt: skip
    result = CliRunner().invoke(library_app, ["accuracy", str(path), *options])
    assert result.exit_code == 0, result.output
    rms_value = read_accuracy(path).rms
    assert rms_value > 0.01
    assert f"off by rms {rms_value:.3f} from converged spectra" in result.output
    assert "--target-accuracy 0.01" in result.output
    # the reference's settings and order in single precision: off, but within 0.01, no warning
    close = replace(
        SPEC, count=8, solver=replace(REFERENCE, harmonics=(3, 3), precision="complex64")
    )
    path = tmp_path / "close.h5"
    build_library(path, close, serial=True, progress=False)
    result = CliRunner().invoke(library_app, ["accuracy", str(path), *options])
    assert result.exit_code == 0 and 0 < read_accuracy(path).rms <= 0.01, result.output
    assert "warning" not in result.output


def test_cli_build_reuses_a_stored_probe_only_for_its_own_settings(tmp_path):
    """`library build --target-accuracy` on an existing file takes the order from the file's
    probe, but only if the options ask for the settings that probe answered; other settings
    are an error naming both, not a silent swap to the stored ones."""
    out = tmp_path / "lib.h5"
    options = ["build", "--out", str(out), "--count", "8", "--wavelengths", "2",
               "--wavelength-start-nm", "550", "--wavelength-stop-nm", "750",
               "--thickness-min-nm", "60", "--thickness-max-nm", "120", "--grid", "20",
               "--reference-grid", "20", "--target-accuracy", "0.05", "--probe-designs", "2",
               "--max-order", "12", "--serial", "--no-progress", "--no-accuracy"]  # fmt: skip
    first = CliRunner().invoke(library_app, [*options, "--precision", "complex64"])
    assert first.exit_code == 0, first.output
    again = CliRunner().invoke(library_app, [*options, "--precision", "complex64"])
    assert again.exit_code == 0 and "from the probe stored in" in again.output, again.output
    other = CliRunner().invoke(library_app, [*options, "--precision", "complex128"])
    assert other.exit_code == 1
    assert "whose order was probed for" in other.output and "complex128" in other.output


def test_a_partial_estimate_is_not_lent_to_another_library_at_the_same_path(
    built, tmp_path, monkeypatch
):
    """A killed estimate leaves PATH.accuracy-partial.npz; if PATH is then rebuilt with other
    designs (another seed, same count), their estimate must not reuse those spectra."""
    path = tmp_path / "lib.h5"
    path.write_bytes(built.read_bytes())
    real = library_accuracy.solve_designs
    dies_on_the_second = _killed_on_call(2, real)
    options = {"fraction": 0.5, "minimum": 3, "seed": 9, "reference": REFERENCE,
               "reference_order": 2}  # fmt: skip
    monkeypatch.setattr(library_accuracy, "solve_designs", dies_on_the_second)
    with pytest.raises(KeyboardInterrupt):
        estimate_accuracy(path, **options)
    monkeypatch.setattr(library_accuracy, "solve_designs", real)
    assert path.with_name(path.name + ".accuracy-partial.npz").exists()
    path.unlink()
    other = replace(SPEC, seed=2, solver=read_metadata(built)["solver"])
    build_library(path, other, serial=True, progress=False)
    clean = tmp_path / "clean.h5"
    build_library(clean, other, serial=True, progress=False)
    np.testing.assert_array_equal(
        estimate_accuracy(path, **options).T_reference,
        estimate_accuracy(clean, **options).T_reference,
    )

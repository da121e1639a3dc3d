"""Tests of response libraries: exact HDF5 round trip, resumable builds, Dask, errors, CLI."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from hyplex.cli.library import library_app
from hyplex.optics.library import (
    LibraryError,
    ResponseLibrary,
    SolverSettings,
    read_library,
    read_metadata,
    write_library,
)
from hyplex.optics.library_build import build_library
from hyplex.optics.library_spec import LibrarySpec, sample_designs, solve_designs, spec_to_dict

SPEC = LibrarySpec(
    family="rectangle",
    count=24,
    wavelengths_nm=(500.0, 600.0, 700.0, 800.0),
    solver=SolverSettings(harmonics=(1, 1), grid=(16, 16)),
    store_jones=True,
    seed=3,
)
ARRAYS = ("params_nm", "thickness_nm", "T", "done", "t", "density")


def assert_same_library(a: ResponseLibrary, b: ResponseLibrary) -> None:
    """Every field identical, arrays bit for bit (provenance excluded)."""
    for item in dataclasses.fields(ResponseLibrary):
        if item.name == "provenance":
            continue
        x, y = getattr(a, item.name), getattr(b, item.name)
        if isinstance(x, np.ndarray) or isinstance(y, np.ndarray):
            assert x.dtype == y.dtype and np.array_equal(x, y, equal_nan=True), item.name
        else:
            assert x == y, item.name


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    """A clean serial build of SPEC."""
    path = tmp_path_factory.mktemp("clean") / "clean.h5"
    build_library(path, SPEC, chunk_size=4, serial=True, progress=False)
    return read_library(path)


# ----------------------------------------------------------------- format


def test_round_trip_is_exact(tmp_path):
    rng = np.random.default_rng(0)
    n, wl = 7, np.linspace(410.0, 990.0, 13)
    library = ResponseLibrary(
        wavelengths_nm=wl,
        family="freeform",
        parameter_names=("a_nm", "b_nm"),
        params_nm=rng.random((n, 2)) * 100,
        thickness_nm=rng.random(n) * 300,
        period_nm=350.5,
        material="aSi",
        substrate="BK7",
        superstrate="air",
        solver=SolverSettings(harmonics=(3, 2), factorization="laurent", grid=(20, 24)),
        T=rng.random((n, wl.size, 2)),
        done=rng.random(n) > 0.3,
        t=rng.random((n, wl.size, 2, 2)) + 1j * rng.random((n, wl.size, 2, 2)),
        density=rng.random((n, 20, 24)).astype(np.float32),
        generation={"seed": 5, "note": "by hand"},
    )
    path = write_library(tmp_path / "lib.h5", library)
    back = read_library(path)
    assert_same_library(library, back)
    assert back.provenance["hyplex_version"] and back.provenance["torch_version"]
    with h5py.File(path) as handle:  # self-describing for other tools
        assert handle.attrs["format"] == "hyplex-response-library"
        assert handle["wavelengths_nm"].attrs["units"] == "nm"
    assert_same_library(back.subset([1, 3]), read_library(write_library(path, back.subset([1, 3]))))


def test_built_library_round_trips_and_matches_solver(clean, tmp_path):
    assert clean.done.all() and np.isfinite(clean.T).all()
    assert ((clean.T >= 0) & (clean.T <= 1 + 1e-9)).all()
    assert not np.allclose(clean.T[..., 0], clean.T[..., 1])  # rectangles: TE != TM
    T, t = solve_designs(SPEC, clean.params_nm[5:7], clean.thickness_nm[5:7])
    np.testing.assert_allclose(clean.T[5:7], T, atol=1e-12)
    np.testing.assert_allclose(clean.t[5:7], t, atol=1e-12)
    assert_same_library(clean, read_library(write_library(tmp_path / "copy.h5", clean)))
    assert LibrarySpec.from_library(clean) == SPEC


def test_design_list_is_seeded_in_bounds_and_prefix_stable():
    params, thickness = sample_designs(SPEC)
    low, high = SPEC.parameter_bounds()
    assert params.shape == (24, 2) and ((params >= low) & (params <= high)).all()
    assert ((thickness >= 100) & (thickness <= 400)).all()
    more, more_t = sample_designs(SPEC, count=40)
    assert np.array_equal(more[:24], params) and np.array_equal(more_t[:24], thickness)
    other, _ = sample_designs(dataclasses.replace(SPEC, seed=4))
    assert not np.array_equal(other, params)


# ----------------------------------------------------------------- resume


KILLED_BUILD = """
import json, sys, time
from hyplex.optics.library_build import build_library
from hyplex.optics.library_spec import LibrarySpec

SPEC = LibrarySpec(**json.loads(sys.argv[2]))

def on_commit(index, done):
    print("committed", done, flush=True)
    time.sleep(0.4)

build_library(sys.argv[1], SPEC, chunk_size=4, serial=True, progress=False, on_commit=on_commit)
"""


def test_killed_build_resumes_to_the_clean_result(tmp_path, clean):
    path = tmp_path / "killed.h5"
    process = subprocess.Popen(
        [sys.executable, "-c", KILLED_BUILD, str(path), json.dumps(spec_to_dict(SPEC))],
        stdout=subprocess.PIPE,
        text=True,
        env=dict(os.environ, OPENBLAS_NUM_THREADS="1"),
    )
    try:
        for _ in range(2):
            assert process.stdout.readline().startswith("committed")
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL
    partial = read_library(path)  # readable after a kill
    assert 8 <= partial.done.sum() < 24 and partial.done.sum() % 4 == 0
    assert np.isnan(partial.T[~partial.done]).all()
    report = build_library(path, SPEC, chunk_size=4, serial=True, progress=False)
    assert report.skipped == partial.done.sum() and report.computed == 24 - report.skipped
    assert_same_library(clean, read_library(path))


def test_commit_writes_only_preallocated_raw_data(tmp_path):
    """The crash-safety claim: a commit never rewrites HDF5 metadata, only dataset bytes."""
    path = tmp_path / "lib.h5"
    small = dataclasses.replace(SPEC, count=8)
    with pytest.raises(KeyboardInterrupt):
        build_library(path, small, chunk_size=4, serial=True, progress=False, on_commit=_stop)
    with h5py.File(path) as handle:
        spans = [(handle[k].id.get_offset(), handle[k].id.get_storage_size()) for k in handle]
    before = np.frombuffer(path.read_bytes(), np.uint8)
    build_library(path, small, serial=True, progress=False)  # resumes: commits chunk 1
    after = np.frombuffer(path.read_bytes(), np.uint8)
    assert before.size == after.size
    changed = np.flatnonzero(before != after)
    inside = np.zeros(before.size, dtype=bool)
    for offset, size in spans:
        inside[offset : offset + size] = True
    assert changed.size > 0 and inside[changed].all()


def _stop(index, done):
    raise KeyboardInterrupt


def test_interrupted_build_resumes_and_grows(tmp_path, clean):
    path = tmp_path / "interrupted.h5"

    def stop_after_two(index, done):
        if index == 1:
            raise KeyboardInterrupt

    small = dataclasses.replace(SPEC, count=16)
    with pytest.raises(KeyboardInterrupt):
        build_library(
            path, small, chunk_size=4, serial=True, progress=False, on_commit=stop_after_two
        )
    assert read_metadata(path)["done"] == 8
    build_library(path, small, chunk_size=4, serial=True, progress=False)
    report = build_library(path, SPEC, chunk_size=4, serial=True, progress=False)  # 16 -> 24
    assert (report.skipped, report.computed) == (16, 8)
    assert_same_library(clean, read_library(path))


def test_dask_scheduler_build_equals_serial(tmp_path, clean):
    """The ``--scheduler tcp://...`` path, against an in-process cluster (fast to start)."""
    distributed = pytest.importorskip("distributed")
    cluster = distributed.LocalCluster(
        n_workers=1, threads_per_worker=1, processes=False, protocol="tcp", dashboard_address=":0"
    )
    with cluster:
        assert cluster.scheduler_address.startswith("tcp://")
        report = build_library(
            tmp_path / "dask.h5", SPEC, chunk_size=6, scheduler=cluster.scheduler_address
        )
    assert report.computed == 24 and report.workers == 1
    built = read_library(tmp_path / "dask.h5")
    np.testing.assert_allclose(built.T, clean.T, atol=1e-12)
    np.testing.assert_allclose(built.t, clean.t, atol=1e-12)


# ----------------------------------------------------------------- bad input


def test_foreign_corrupt_and_missing_files_are_clear_errors(tmp_path, clean):
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as handle:
        handle["cube"] = np.zeros(3)
    with pytest.raises(LibraryError, match="not a hyplex response library"):
        read_library(foreign)
    garbage = tmp_path / "garbage.h5"
    garbage.write_bytes(b"not hdf5 at all" * 10)
    with pytest.raises(LibraryError, match="not a readable HDF5 file"):
        read_library(garbage)
    good = write_library(tmp_path / "good.h5", clean)
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(good.read_bytes()[:1000])
    with pytest.raises(LibraryError, match="HDF5"):
        read_library(truncated)
    with pytest.raises(LibraryError, match="no such library file"):
        read_library(tmp_path / "absent.h5")
    with h5py.File(good, "r+") as handle:
        handle.attrs["format_version"] = 99
    with pytest.raises(LibraryError, match="format_version 99"):
        read_library(good)
    with h5py.File(good, "r+") as handle:
        handle.attrs["format_version"] = 1
        del handle["done"]
    with pytest.raises(LibraryError, match="missing the dataset /done"):
        read_library(good)


def test_resume_with_other_settings_is_refused(tmp_path):
    path = tmp_path / "lib.h5"
    small = dataclasses.replace(SPEC, count=4, store_jones=False)
    build_library(path, small, chunk_size=4, serial=True, progress=False)
    other_grid = dataclasses.replace(small, wavelengths_nm=(500.0, 650.0, 800.0))
    with pytest.raises(LibraryError, match="mismatched wavelength grids.*4 wavelengths"):
        build_library(path, other_grid, serial=True, progress=False)
    with pytest.raises(LibraryError, match="seed: file 3, asked 9"):
        build_library(path, dataclasses.replace(small, seed=9), serial=True, progress=False)
    with pytest.raises(LibraryError, match="would drop"):
        build_library(path, dataclasses.replace(small, count=2), serial=True, progress=False)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"family": "hexagon"}, "unknown shape family"),
        ({"wavelengths_nm": (600.0, 500.0)}, "strictly increasing"),
        ({"thickness_range_nm": (300.0, 100.0)}, "thickness_range_nm"),
        ({"min_feature_nm": 300.0}, "infeasible"),
        ({"material": "unobtainium"}, "unobtainium"),
    ],
)
def test_bad_spec_is_a_clear_error(change, message):
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(SPEC, **change)


def test_mismatched_array_shapes_are_refused(clean):
    with pytest.raises(LibraryError, match=r"T has shape \(24, 3, 2\), expected \(24, 4, 2\)"):
        dataclasses.replace(clean, T=clean.T[:, :3])


# ----------------------------------------------------------------- CLI


def test_cli_build_info_plot(tmp_path):
    runner = CliRunner()
    path = tmp_path / "cli.h5"
    common = ["--count", "6", "--wavelengths", "3", "--harmonics", "1", "--grid", "12"]
    result = runner.invoke(
        library_app,
        ["build", "--out", str(path), *common, "--serial", "--no-progress", "--no-accuracy"],
    )
    assert result.exit_code == 0, result.output
    assert "6 designs solved" in result.output
    result = runner.invoke(library_app, ["info", str(path), "--json"])
    summary = json.loads(result.output)
    assert summary["done"] == 6 and summary["solver"]["harmonics"] == [1, 1]
    result = runner.invoke(library_app, ["plot", str(path), "--out", str(tmp_path / "p.png")])
    assert result.exit_code == 0 and (tmp_path / "p.png").stat().st_size > 1000
    (tmp_path / "foreign.h5").write_bytes(b"\x89HDF junk")
    result = runner.invoke(library_app, ["info", str(tmp_path / "foreign.h5")])
    assert result.exit_code == 1 and "not a readable HDF5 file" in result.output
    result = runner.invoke(library_app, ["build", "--out", str(path), "--family", "blob"])
    assert result.exit_code == 2 and "unknown shape family" in result.output

"""Library readers flag finished designs holding NaN or inf (a build never commits those):
read_metadata lists them, read_library warns, refuses or drops them, and ``hyplex library
info/plot`` say so."""

from __future__ import annotations

import json
import re
import warnings

import numpy as np
import pytest
from typer.testing import CliRunner

from hyplex.cli.library import library_app
from hyplex.optics.library import (
    LibraryError,
    LibraryWarning,
    ResponseLibrary,
    SolverSettings,
    nonfinite_designs,
    read_library,
    read_metadata,
    write_library,
)

N, BAD, UNFINISHED = 12, [2, 7, 9], [10, 11]


def _library(jones: bool = False) -> ResponseLibrary:
    """Designs 2 (NaN T), 7 (inf T) and 9 (NaN Jones t, or NaN thickness) are corrupt;
    10 and 11 are not done yet (NaN by design, not flagged)."""
    rng = np.random.default_rng(0)
    wl = np.linspace(450.0, 950.0, 6)
    T = rng.random((N, wl.size, 2))  # noqa: N806
    T[2, 3, 0] = np.nan
    T[7, 0, 1] = np.inf
    t = rng.random((N, wl.size, 2, 2)) + 0j if jones else None
    thickness = rng.random(N) * 300 + 50
    if jones:
        t[9, 1, 0, 0] = np.nan
    else:
        thickness[9] = np.nan
    done = np.ones(N, bool)
    done[UNFINISHED] = False
    T[UNFINISHED] = np.nan
    if jones:
        t[UNFINISHED] = np.nan
    return ResponseLibrary(
        wavelengths_nm=wl,
        family="disk",
        parameter_names=("radius_nm",),
        params_nm=rng.random((N, 1)) * 100 + 50,
        thickness_nm=thickness,
        period_nm=400.0,
        material="cSi",
        substrate="SiO2",
        superstrate="air",
        solver=SolverSettings(),
        T=T,
        done=done,
        t=t,
    )


@pytest.fixture(params=[False, True], ids=["T-and-thickness", "T-and-jones"])
def path(request, tmp_path):
    return write_library(tmp_path / "nan.h5", _library(jones=request.param))


def test_readers_find_the_corrupt_finished_designs(path):
    assert read_metadata(path)["nonfinite"].tolist() == BAD
    with pytest.warns(LibraryWarning, match=r"3 finished designs hold NaN or inf: 2, 7, 9"):
        library = read_library(path)
    assert nonfinite_designs(library).tolist() == BAD
    assert library.done.sum() == N - len(UNFINISHED)  # "warn" loads them as they are


def test_read_library_refuses_drops_or_keeps_them(path):
    with pytest.raises(LibraryError, match=r"3 finished designs hold NaN or inf: 2, 7, 9"):
        read_library(path, nonfinite="raise")
    dropped = read_library(path, nonfinite="drop")
    assert not dropped.done[BAD].any() and dropped.done.sum() == N - 3 - len(UNFINISHED)
    assert len(dropped) == N  # kept in place: indices still match the file
    finished = dropped.completed()
    assert np.isfinite(finished.T).all() and nonfinite_designs(finished).size == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "keep" is silent
        kept = read_library(path, nonfinite="keep")
    assert kept.done.sum() == N - len(UNFINISHED)
    with pytest.raises(ValueError, match="nonfinite must be one of"):
        read_library(path, nonfinite="ignore")


def test_a_clean_library_has_none(tmp_path):
    library = _library()
    library.T[BAD] = 0.5
    library.thickness_nm[9] = 100.0
    clean = write_library(tmp_path / "clean.h5", library)
    assert read_metadata(clean)["nonfinite"].size == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert nonfinite_designs(read_library(clean)).size == 0


def _flat(text: str) -> str:
    return " ".join(text.split())


def test_info_and_plot_flag_them(path, tmp_path):
    runner = CliRunner()
    info = runner.invoke(library_app, ["info", str(path)])
    assert info.exit_code == 0, info.output
    assert "warning: 3 of 10 finished designs hold NaN or inf (designs 2, 7, 9)" in _flat(
        info.output
    )
    assert re.search(r"nonfinite_designs\s+3 \(2, 7, 9\)", info.output)
    as_json = runner.invoke(library_app, ["info", str(path), "--json"])
    summary = json.loads(as_json.stdout.strip().splitlines()[-1])
    assert summary["nonfinite_designs"] == BAD
    png = tmp_path / "nan.png"
    plot = runner.invoke(library_app, ["plot", str(path), "--out", str(png)])
    assert plot.exit_code == 0, plot.output
    assert "3 of 10 finished designs hold NaN or inf; marked" in _flat(plot.output)
    assert png.stat().st_size > 1000

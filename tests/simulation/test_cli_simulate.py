"""``hyplex simulate scene|video`` writes HDF5 files and PNG previews."""

import h5py
import numpy as np
import typer
from typer.testing import CliRunner

from hyplex.cli_simulate import simulate_app

app = typer.Typer()
app.add_typer(simulate_app, name="simulate")


@app.callback()
def _root() -> None:
    """Test harness standing in for ``hyplex.cli.app``."""


def test_simulate_scene_writes_h5_and_png(tmp_path):
    out = tmp_path / "scene.h5"
    result = CliRunner().invoke(
        app,
        [
            "simulate",
            "scene",
            "--out",
            str(out),
            "--height",
            "32",
            "--width",
            "40",
            "--grid",
            "prototype",
            "--objects",
            "3",
            "--upsample",
            "2",
            "--pitch-px",
            "5",
        ],
    )
    assert result.exit_code == 0, result.output
    with h5py.File(out) as file:
        assert file["reflectance"].shape == (32, 40, 34)
        assert file["raw"].shape == (64, 80) and file["raw"].dtype == np.uint16
        assert file["raw"][()].max() > file["raw"].attrs["black_level_dn"]
    assert out.with_suffix(".png").stat().st_size > 10_000


def test_simulate_video_writes_every_frame(tmp_path):
    out = tmp_path / "clip.h5"
    result = CliRunner().invoke(
        app,
        [
            "simulate",
            "video",
            "--out",
            str(out),
            "--frames",
            "3",
            "--height",
            "24",
            "--width",
            "32",
            "--objects",
            "2",
            "--upsample",
            "2",
            "--pitch-px",
            "4",
        ],
    )
    assert result.exit_code == 0, result.output
    with h5py.File(out) as file:
        assert file["radiance"].shape == (3, 24, 32, 34) and file["raw"].shape == (3, 48, 64)
        assert file["class_map"].shape == (3, 24, 32)
    assert out.with_suffix(".png").is_file()


def test_bad_input_is_reported_not_a_traceback(tmp_path):
    result = CliRunner().invoke(
        app, ["simulate", "scene", "--out", str(tmp_path / "x.h5"), "--grid", "nope"]
    )
    assert result.exit_code != 0 and "grid must be one of" in result.output
    result = CliRunner().invoke(
        app,
        [
            "simulate",
            "scene",
            "--out",
            str(tmp_path / "x.h5"),
            "--height",
            "16",
            "--width",
            "16",
            "--upsample",
            "1",
            "--pitch-px",
            "9",
        ],
    )
    assert result.exit_code != 0 and "metapixel" in result.output

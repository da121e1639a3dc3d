"""``hyplex simulate scene|video`` writes HDF5 files and PNG previews."""

import h5py
import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from hyplex.cli.simulate import simulate_app

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


def test_missing_earthlib_is_a_clear_message_not_a_traceback(tmp_path, monkeypatch):
    import hyplex.simulation.scenes as scenes
    import hyplex.simulation.video as video

    def missing(*args, **kwargs):
        raise ModuleNotFoundError("earthlib is not installed: `pip install earthlib`")

    monkeypatch.setattr(scenes, "make_scene", missing)
    monkeypatch.setattr(video, "make_video", missing)
    for command in ("scene", "video"):
        result = CliRunner().invoke(
            app, ["simulate", command, "--out", str(tmp_path / "x.h5")], catch_exceptions=False
        )
        assert result.exit_code == 1
        assert "cannot simulate: earthlib is not installed" in result.output
        assert "Traceback" not in result.output


def test_video_exposure_is_set_on_the_most_lit_frame(tmp_path):
    from hyplex.cli.simulate import _camera
    from hyplex.simulation.grids import prototype_grid
    from hyplex.simulation.video import make_video

    out = tmp_path / "ramp.h5"
    options = ["--frames", "3", "--height", "24", "--width", "32", "--objects", "2"]
    options += ["--upsample", "2", "--pitch-px", "4", "--start-lux", "2000", "--end-lux", "9000"]
    result = CliRunner().invoke(app, ["simulate", "video", "--out", str(out), *options])
    assert result.exit_code == 0, result.output
    grid = prototype_grid()
    clip = make_video(
        3, (24, 32), grid, 2, fake_fraction=0.3, illuminants=("D65", "A"),
        illuminance_lux=(2000.0, 9000.0), seed=0,
    )  # fmt: skip
    camera = _camera((24, 32), grid, 2, 4.0)
    last, first = (camera.auto_exposure_us(clip.frame(t).radiance, grid) for t in (2, 0))
    with h5py.File(out) as file:
        assert file["raw"].attrs["exposure_us"] == pytest.approx(last, rel=1e-6)
    assert last < 0.5 * first  # frame 0 would overexpose the end of the ramp

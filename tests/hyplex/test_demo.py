"""The demo job runs end to end and writes a plot and a CSV that make sense."""

import numpy as np
from typer.testing import CliRunner

from hyplex.cli import app


def test_optics_spectrum_command_writes_png_and_csv(tmp_path):
    out = tmp_path / "spec.png"
    result = CliRunner().invoke(
        app, ["optics", "spectrum", "--harmonics", "2", "--points", "5", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert out.stat().st_size > 10_000
    table = np.loadtxt(out.with_suffix(".csv"), delimiter=",")
    assert table.shape == (5, 7)
    T, R = table[:, 1:3], table[:, 3:5]
    assert np.all((T >= 0) & (T <= 1)) and np.all(T + R <= 1 + 1e-6)


def test_bad_parameter_is_reported_not_a_traceback(tmp_path):
    result = CliRunner().invoke(
        app, ["optics", "spectrum", "--radius-nm", "500", "--out", str(tmp_path / "x.png")]
    )
    assert result.exit_code != 0
    assert "radius_nm" in result.output

"""The demo job runs end to end and writes a plot and a CSV that make sense."""

import numpy as np
import pytest
import typer
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


# ------------------------------------------------------------ the co-design comparison table

TINY_DESIGN = """
[codesign]
bands = 12
wavelength_range_nm = [420.0, 700.0]
scene_size = 24
n_train_scenes = 2
n_val_scenes = 4
n_objects = 3
patch_size = 16
batch_size = 2
steps = 3
finetune_steps = 1
checkpoint_every = 3
device = "cpu"
[codesign.reconstructor_config]
width = 8
n_blocks = 1
n_stages = 1
[codesign.segmenter_config]
base_channels = 4
depth = 1
"""


def _table(codesign_miou=0.52, rgb_miou=0.37, codesign_psnr=39.5, linear_psnr=33.9):
    row = {"sam": 3.0, "mrae": 0.1, "real_fake_accuracy": 0.8}
    return {
        "rgb": row | {"psnr": 35.0, "miou": rgb_miou},
        "pca_linear": row | {"psnr": linear_psnr, "miou": 0.45},
        "codesign": row | {"psnr": codesign_psnr, "miou": codesign_miou},
    }


def test_compare_rows_passes_only_clear_wins():
    from hyplex.models.comparison import MIOU_MARGIN, PSNR_MARGIN_DB, compare_rows

    assert compare_rows(_table()) == []
    # segmentation: a co-design that does not beat RGB by the margin fails, naming the claim
    close = compare_rows(_table(codesign_miou=0.37 + MIOU_MARGIN - 0.01))
    assert len(close) == 1 and close[0].startswith("segmentation") and "RGB" in close[0]
    worse = compare_rows(_table(codesign_miou=0.13))
    assert len(worse) == 1 and "0.130" in worse[0]
    # reconstruction: within the margin of the linear baseline fails
    psnr = compare_rows(_table(codesign_psnr=33.9 + PSNR_MARGIN_DB - 0.1))
    assert len(psnr) == 1 and psnr[0].startswith("reconstruction") and "Hyplex" in psnr[0]
    both = compare_rows(_table(codesign_miou=0.1, codesign_psnr=20.0))
    assert [f.split(":")[0] for f in both] == ["segmentation", "reconstruction"]
    # a missing row or a NaN cannot pass
    partial = {k: v for k, v in _table().items() if k != "rgb"}
    assert compare_rows(partial) == ["segmentation: the table has no row rgb"]
    assert "not a number" in compare_rows(_table(codesign_miou=float("nan")))[0]


def test_demo_table_on_a_tiny_design(tmp_path):
    import json

    from hyplex.cli.demo_table import register as register_demo_table
    from hyplex.cli.design import register as register_design
    from hyplex.models.codesign_library import quick_library
    from hyplex.models.comparison import COLUMNS, ROWS

    torch = __import__("torch")
    torch.set_num_threads(1)
    application = typer.Typer()
    register_design(application)
    register_demo_table(application)
    library = tmp_path / "lib.h5"
    quick_library(library, count=24, harmonics=1, grid=16)  # coarse and fast: a test library
    config = tmp_path / "tiny.toml"
    config.write_text(TINY_DESIGN)
    design = tmp_path / "design"
    result = CliRunner().invoke(application, ["design", "--config", str(config), "--library",
                                              str(library), "--out", str(design)])  # fmt: skip
    assert result.exit_code == 0, result.output
    out = tmp_path / "demo"
    command = ["demo-table", "--design", str(design / "bundle"), "--out", str(out)]
    command += ["--workers", "1"]
    result = CliRunner().invoke(application, [*command, "--no-check"])
    assert result.exit_code == 0, result.output
    record = json.loads((out / "table.json").read_text())
    assert list(record["rows"]) == list(ROWS)  # RGB, Hyplex PCA + linear, co-designed
    for row in record["rows"].values():
        assert all(isinstance(row[name], float) for name in COLUMNS)
    assert [record["rows"][k]["channels"] for k in ROWS] == [3, 9, 9]
    for label in ROWS.values():  # the printed table has every row
        assert label in result.output
    assert "PSNR dB / SAM deg" in result.output and "mIoU" in result.output
    # the co-designed row is the bundle scored exactly as training scored it
    bundle = json.loads((design / "bundle" / "bundle.json").read_text())
    for name in ("psnr", "miou"):
        assert record["rows"]["codesign"][name] == pytest.approx(bundle["metrics"]["final"][name])
    assert (out / "overlay.png").stat().st_size > 10_000
    # 3 steps cannot beat anything: the failures are reported and --check makes it exit 1
    assert record["failures"]
    checked = CliRunner().invoke(application, command)
    assert checked.exit_code == 1 and "NOT MET" in checked.output
    # the baselines trained in two worker processes give the same figures as inline
    parallel = [*command[:-1], "2", "--out", str(tmp_path / "parallel"), "--no-check"]
    assert CliRunner().invoke(application, parallel).exit_code == 0
    again = json.loads((tmp_path / "parallel" / "table.json").read_text())["rows"]
    for key, row in record["rows"].items():
        assert {k: row[k] for k in COLUMNS} == {k: again[key][k] for k in COLUMNS}
    # another library than the design's is refused
    other = tmp_path / "other.h5"
    quick_library(other, count=24, harmonics=1, grid=16, seed=5)
    refused = CliRunner().invoke(application, [*command, "--library", str(other)])
    assert refused.exit_code != 0 and "not the one" in refused.output

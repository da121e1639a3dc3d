"""``hyplex design`` (hyplex.cli.design), registered on a fresh typer app."""

import re
import time

import pytest
import torch
import typer
from typer.testing import CliRunner

from hyplex.cli.design import register, resolve_config

torch.set_num_threads(1)

TINY = """
[codesign]
bands = 8
wavelength_range_nm = [420.0, 700.0]
scene_size = 24
n_train_scenes = 2
n_val_scenes = 1
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


@pytest.fixture(scope="module")
def app():
    application = typer.Typer()
    register(application)

    @application.command()
    def version():  # a second command keeps "design" a subcommand
        """Unused."""

    return application


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    from hyplex.models.codesign_library import quick_library

    path = tmp_path_factory.mktemp("lib") / "lib.h5"
    quick_library(path, count=24)
    return path


def test_design_writes_a_bundle_and_resumes(app, library, tmp_path):
    from hyplex.models.bundle import load_bundle

    config = tmp_path / "tiny.toml"
    config.write_text(TINY)
    out = tmp_path / "run"
    arguments = ["design", "--config", str(config), "--library", str(library), "--out", str(out)]
    result = CliRunner().invoke(app, arguments)
    assert result.exit_code == 0, result.output
    assert "chosen library designs" in result.output and "wrote" in result.output
    bundle = load_bundle(out / "bundle")
    assert bundle.responses.shape == (9, 8) and bundle.design["library_indices"].shape == (9,)
    assert (out / "bundle" / "report.png").stat().st_size > 10_000
    step = torch.load(out / "checkpoint.pt", weights_only=True)["step"]
    assert step == 3
    resumed = CliRunner().invoke(app, [*arguments, "--resume"])
    assert resumed.exit_code == 0, resumed.output
    # The resumed run hardens, fine-tunes and evaluates the restored model again: its final
    # figures must match (the "initial" ones are restored from the checkpoint, equal anyway).
    first = [line.split("final:")[1] for line in result.output.splitlines() if "final:" in line]
    again = [line.split("final:")[1] for line in resumed.output.splitlines() if "final:" in line]
    assert len(first) == len(again) == 1 and first == again


@pytest.mark.parametrize("rank", [0, 1])
def test_quick_library_is_solved_by_rank_zero_alone(rank, tmp_path, monkeypatch):
    """Under torchrun only rank 0 writes OUT/quick_library.h5; every rank meets at a barrier,
    and the others read the file only after it (no concurrent HDF5 writes of one file)."""
    from hyplex.cli.design import shared_quick_library
    from hyplex.models import codesign_library, distributed
    from hyplex.models.distributed import DistributedContext
    from hyplex.optics import library as library_io

    calls = []
    monkeypatch.setattr(codesign_library, "quick_library", lambda p: calls.append(("build", p)))
    monkeypatch.setattr(library_io, "read_library", lambda p: calls.append(("read", p)))
    monkeypatch.setattr(distributed, "barrier", lambda context: calls.append(("barrier", None)))
    path = tmp_path / "quick_library.h5"
    shared_quick_library(path, DistributedContext(rank=rank, world_size=2, backend="gloo"))
    if rank == 0:
        assert calls == [("build", path), ("barrier", None)]
    else:
        assert calls == [("barrier", None), ("read", path)]


def test_design_joins_the_process_group_before_solving_the_library(app, tmp_path, monkeypatch):
    """``hyplex design`` without a library knows its rank before the library is solved."""
    import hyplex.cli.design as cli_design
    from hyplex.models import distributed

    calls = []

    def init_distributed(device=None):
        calls.append("init")
        raise ValueError("stop here")

    monkeypatch.setattr(distributed, "init_distributed", init_distributed)
    monkeypatch.setattr(cli_design, "shared_quick_library", lambda *a: calls.append("library"))
    config = tmp_path / "tiny.toml"
    config.write_text(TINY)
    result = CliRunner().invoke(app, ["design", "--config", str(config), "--out", str(tmp_path)])
    assert result.exit_code == 2 and "stop here" in _text(result.output)
    assert calls == ["init"]


def _text(output: str) -> str:
    """The CLI's output without the error box drawing and line wrapping."""
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", output).split())


def test_design_reports_bad_input(app, tmp_path):
    result = CliRunner().invoke(app, ["design", "--config", str(tmp_path / "nope.toml")])
    assert result.exit_code == 2 and "does not exist" in _text(result.output)
    bad = tmp_path / "bad.toml"
    bad.write_text("stepz = 3\n")
    result = CliRunner().invoke(app, ["design", "--config", str(bad), "--out", str(tmp_path)])
    assert result.exit_code == 2 and "unknown co-design settings" in _text(result.output)


def test_resolve_config_layers_quick_file_and_options(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text("steps = 7\n")
    settings = resolve_config(config, quick=True, device="cpu")
    assert settings.steps == 7 and settings.bands == 34 and settings.patch_size == 16
    assert settings.device == "cpu" and resolve_config(None, True, steps=5).steps == 5


@pytest.mark.slow
def test_quick_design_runs_end_to_end(app, tmp_path):
    """``hyplex design --quick``: quick RCWA library, 34 bands, 400 steps; a few minutes."""
    began = time.perf_counter()
    result = CliRunner().invoke(app, ["design", "--quick", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "bundle" / "bundle.json").is_file()
    assert time.perf_counter() - began < 600

"""``hyplex segment --scheduler``: an existing Dask cluster (a scheduler and two workers started
as separate processes by the ``dask scheduler`` / ``dask worker`` commands on 127.0.0.1)
decodes a folder of recordings, with the results of a local run."""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import typer
from typer.testing import CliRunner

from hyplex.cli.video import register
from hyplex.devices.frame import Frame, PixelFormat
from hyplex.devices.recorder import Recorder, StreamSpec
from hyplex.models.reconstruction import LinearDecoder
from hyplex.pipeline.model_files import save_decoder
from hyplex.pipeline.models import PixelClassifier
from hyplex.pipeline.outputs import read_decoded

SHAPE = (96, 128)
PITCH = 3.0
pytestmark = pytest.mark.timeout(240)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture()
def app():
    app = typer.Typer()
    register(app)

    @app.command("noop")
    def noop() -> None:  # a second command keeps typer from collapsing the app
        pass

    return app


@pytest.fixture()
def folder(tmp_path):
    torch.manual_seed(0)
    save_decoder(LinearDecoder(9, 34), tmp_path / "rec")
    save_decoder(PixelClassifier(9, 6, hidden=8), tmp_path / "seg.json")
    rng = np.random.default_rng(0)
    clips = tmp_path / "clips"
    clips.mkdir()
    for k in range(4):
        with Recorder(clips / f"clip{k}.h5", StreamSpec(SHAPE, PixelFormat.MONO12)) as recorder:
            for i in range(3):
                data = rng.integers(0, 4095, SHAPE).astype(np.uint16)
                recorder.write(Frame(data, frame_id=i, seq=i, host_timestamp_ns=i))
    return tmp_path


@pytest.fixture()
def cluster(tmp_path):
    """A scheduler and two single-threaded workers, each its own process (the dask CLI)."""
    dask = Path(sys.executable).parent / "dask"
    if not dask.exists():
        found = shutil.which("dask")
        if found is None:
            pytest.skip("the dask command is not installed")
        dask = Path(found)
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
           "MKL_NUM_THREADS": "1", "HYPLEX_THREADS": "1"}  # fmt: skip
    log = open(tmp_path / "cluster.log", "w")  # noqa: SIM115 (closed below)
    commands = [
        [str(dask), "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
        *[
            [
                str(dask),
                "worker",
                address,
                "--nthreads",
                "1",
                "--nworkers",
                "1",
                "--no-dashboard",
                "--name",
                f"w{k}",
                "--local-directory",
                str(tmp_path / f"w{k}"),
            ]
            for k in range(2)
        ],  # fmt: skip
    ]
    processes = []
    try:
        for command in commands:
            processes.append(subprocess.Popen(command, env=env, stdout=log, stderr=log))
            if len(processes) == 1:
                time.sleep(1.0)
        from distributed import Client

        deadline = time.monotonic() + 120
        with Client(address, timeout=60) as client:
            while len(client.scheduler_info()["workers"]) < 2:
                if time.monotonic() > deadline:
                    raise RuntimeError((tmp_path / "cluster.log").read_text()[-3000:])
                time.sleep(0.5)
            workers = set(client.scheduler_info()["workers"])
        yield address, workers
    finally:
        for process in reversed(processes):
            process.terminate()
        for process in reversed(processes):
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:  # a worker still saying goodbye: our own process
                process.kill()
                process.wait(timeout=10)
        log.close()


def test_existing_cluster_decodes_a_folder_like_a_local_run(app, folder, cluster):
    address, workers = cluster
    inputs = sorted(str(p) for p in (folder / "clips").glob("*.h5"))
    common = ["--reconstructor", str(folder / "rec.safetensors"), "--segmenter"]
    common += [str(folder / "seg.json"), "--pitch-px", str(PITCH), "--no-video"]
    common += ["--input-scale-dn", "1000"]
    runs = {}
    for name, extra in (("local", []), ("cluster", ["--scheduler", address])):
        out = folder / name
        result = CliRunner().invoke(app, ["segment", *inputs, "--out", str(out), *common, *extra])
        assert result.exit_code == 0, result.output
        runs[name] = out
    summary = json.loads((runs["cluster"] / "segment_summary.json").read_text())
    assert [r["input"] for r in summary] == inputs  # in input order
    used = {r["worker"] for r in summary}
    assert used <= workers and len(used) == 2, (used, workers)  # both workers took files
    for path in inputs:
        stem = Path(path).stem
        local = read_decoded(runs["local"] / f"{stem}.labels.h5")
        remote = read_decoded(runs["cluster"] / f"{stem}.labels.h5")
        for key, value in local.items():
            if isinstance(value, np.ndarray):
                np.testing.assert_allclose(remote[key], value, rtol=1e-5, atol=1e-5)


def test_scheduler_address_is_checked(app, folder):
    clip = str(folder / "clips" / "clip0.h5")
    model = ["--reconstructor", str(folder / "rec.safetensors"), "--pitch-px", str(PITCH)]
    result = CliRunner().invoke(app, ["segment", clip, *model, "--scheduler", "localhost:1"])
    assert result.exit_code != 0 and "tcp://host:8786" in result.output
    port = _free_port()  # nothing listens there
    result = CliRunner().invoke(
        app, ["segment", clip, *model, "--scheduler", f"tcp://127.0.0.1:{port}"]
    )
    assert result.exit_code != 0 and "no Dask scheduler answers" in result.output

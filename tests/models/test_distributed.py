"""Data-parallel co-design (hyplex.models.distributed): 2 gloo processes stay in sync."""

import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from hyplex.models.distributed import DistributedContext, choose_device, init_distributed

SCRIPT = textwrap.dedent(
    """
    import hashlib, json, os, sys
    import torch
    torch.set_num_threads(1)
    from hyplex.models import distributed
    from hyplex.models.codesign import train_codesign
    from hyplex.models.codesign_config import CodesignConfig

    out = sys.argv[1]
    config = CodesignConfig(
        bands=8, wavelength_range_nm=(420.0, 700.0), scene_size=24, n_train_scenes=2,
        n_val_scenes=1, n_objects=3, patch_size=16, batch_size=4, steps=4, finetune_steps=2,
        evaluate_initial=False, library_path=os.path.join(out, "lib.h5"),
        reconstructor="linear", reconstructor_config={},
        segmenter_config={"base_channels": 4, "depth": 1}, device="cpu",
    )
    result = train_codesign(config, None, progress=False, scene_cache=os.path.join(out, "scenes"))
    context = distributed.init_distributed("cpu")
    state = result.model.state_dict()
    digest = {k: hashlib.sha256(v.detach().cpu().numpy().tobytes()).hexdigest()
              for k, v in state.items()}
    record = {"world_size": context.world_size, "backend": context.backend,
              "digest": digest, "loss": result.history["loss"],
              "indices": result.design["library_indices"].tolist()}
    with open(os.path.join(out, f"rank{context.rank}.json"), "w") as handle:
        json.dump(record, handle)
    distributed.shutdown(context)
    """
)


# two torch.distributed processes: a hang fails here, with stacks
pytestmark = pytest.mark.timeout(300)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_two_gloo_processes_keep_replicas_identical(tmp_path):
    """Two processes launched as torchrun does (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR,
    MASTER_PORT; without its agent process, to stay fast) train 4 DDP steps and 2 fine-tuning
    steps on different data: their weights (and BatchNorm statistics) end bitwise equal."""
    from hyplex.models.codesign_library import quick_library
    from hyplex.models.data import generate_scenes

    quick_library(tmp_path / "lib.h5", count=24)
    # Rank 0 reads these scenes from the run's cache; rank 1 (cache_dir=None, so that only one
    # process writes the cache) generates the same scenes from the same seeds.
    for seed, count in ((0, 2), (1, 1)):
        generate_scenes(np.linspace(420.0, 700.0, 8), count, seed, (24, 24), n_objects=3,
                        fake_fraction=0.4, cache_dir=tmp_path / "scenes")  # fmt: skip
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    base = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "WORLD_SIZE": "2"}
    base.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()))
    processes = [
        subprocess.Popen(
            [sys.executable, str(script), str(tmp_path)],
            env={**base, "RANK": str(rank), "LOCAL_RANK": str(rank)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for rank in (0, 1)
    ]
    outputs = [process.communicate(timeout=180) for process in processes]
    for process, (_, stderr) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2] and ranks[0]["backend"] == "gloo"
    assert ranks[0]["digest"] == ranks[1]["digest"], "replicas diverged"
    assert ranks[0]["indices"] == ranks[1]["indices"]
    assert ranks[0]["loss"] != ranks[1]["loss"], "each rank trains on its own slice of data"


def test_single_process_context(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    context = init_distributed("cpu")
    assert context == DistributedContext() and context.is_main and not context.distributed
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "5")
    with pytest.raises(ValueError, match="RANK=5 must lie in 0..WORLD_SIZE-1"):
        init_distributed("cpu")


def test_device_choice_gives_each_rank_its_local_gpu():
    """Under torchrun (WORLD_SIZE > 1) on CUDA every rank takes cuda:LOCAL_RANK, whatever index
    was asked for; alone, the device asked for ("cuda" = cuda:0). Pure: no GPU needed."""
    cuda = {"cuda_available": True, "cuda_device_count": 2}
    assert choose_device("cuda:1", 2, 0, **cuda) == torch.device("cuda", 0)
    assert choose_device("cuda:1", 2, 1, **cuda) == torch.device("cuda", 1)
    assert choose_device("cuda", 2, 1, **cuda) == torch.device("cuda", 1)
    assert choose_device(None, 2, 1, **cuda) == torch.device("cuda", 1)
    assert choose_device("cuda:1", 1, 0, **cuda) == torch.device("cuda", 1)
    assert choose_device("cuda", 1, 0, **cuda) == torch.device("cuda", 0)
    assert choose_device("cpu", 2, 1, **cuda) == torch.device("cpu")
    assert choose_device(None, 2, 1) == torch.device("cpu")
    with pytest.raises(ValueError, match="LOCAL_RANK=2 needs cuda:2.*2 CUDA device"):
        choose_device("cuda", 4, 2, **cuda)
    with pytest.raises(ValueError, match="'cuda:3' asked for, but this machine has 2 CUDA"):
        choose_device("cuda:3", 1, 0, **cuda)
    with pytest.raises(ValueError, match="CUDA is not available"):
        choose_device("cuda", 1, 0)

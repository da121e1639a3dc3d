"""End-to-end co-design (hyplex.models.codesign): learning, hardening, checkpoints, config."""

from pathlib import Path

import numpy as np
import pytest
import torch

from hyplex.models.codesign import CHECKPOINT_NAME, train_codesign
from hyplex.models.codesign_config import CodesignConfig

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    from hyplex.models.codesign_library import quick_library

    return quick_library(tmp_path_factory.mktemp("lib") / "lib.h5", count=32)


@pytest.fixture(scope="module")
def scene_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("scenes")


def tiny(**changes) -> CodesignConfig:
    settings = {
        "bands": 8,
        "wavelength_range_nm": (420.0, 700.0),
        "scene_size": 24,
        "n_train_scenes": 3,
        "n_val_scenes": 2,
        "n_objects": 3,
        "patch_size": 16,
        "batch_size": 4,
        "steps": 40,
        "finetune_steps": 5,
        "checkpoint_every": 10,
        "learning_rate": 1e-2,
        "reconstructor": "linear",  # the MST decoder runs in the CLI test and benchmarks
        "reconstructor_config": {},
        "segmenter_config": {"base_channels": 4, "depth": 1},
        "device": "cpu",
    }
    return CodesignConfig(**{**settings, **changes})


def test_codesign_improves_and_hardening_keeps_performance(library, scene_cache, tmp_path):
    """Stated tolerance: hardening at tau_end = 0.03 changes held-out PSNR by < 0.5 dB."""
    result = train_codesign(tiny(), tmp_path, library=library, progress=False,
                            scene_cache=scene_cache)  # fmt: skip
    loss = np.asarray(result.history["loss"])
    assert loss[-8:].mean() < 0.8 * loss[:8].mean(), "the training loss decreases"
    metrics = result.metrics
    assert metrics["final"]["psnr"] > metrics["initial"]["psnr"] + 3.0
    assert metrics["final"]["sam"] < metrics["initial"]["sam"]
    assert abs(metrics["hardened"]["psnr"] - metrics["relaxed"]["psnr"]) < 0.5
    design = result.design
    assert design["library_indices"].shape == (9,)
    assert design["params_nm"].shape == (9, 2) and design["responses"].shape == (9, 8)
    assert (tmp_path / CHECKPOINT_NAME).is_file()
    assert not list(tmp_path.glob("*.partial"))


def _state(result):
    return {k: v.clone() for k, v in result.model.state_dict().items()}


def test_resume_equals_an_uninterrupted_run(library, scene_cache, tmp_path):
    """Determinism claim: on CPU a run stopped at a checkpoint and resumed ends with bitwise
    equal weights and the same loss history as the uninterrupted run."""
    config = tiny(steps=12, checkpoint_every=4, finetune_steps=2, evaluate_initial=False)
    options = {"library": library, "progress": False, "scene_cache": scene_cache}
    whole = train_codesign(config, tmp_path / "whole", **options)
    stopped = train_codesign(config, tmp_path / "split", stop_after=8, **options)
    assert len(stopped.history["loss"]) == 8 and stopped.design == {}
    checkpoint = torch.load(tmp_path / "split" / CHECKPOINT_NAME, weights_only=True)
    assert checkpoint["step"] == 8
    resumed = train_codesign(config, tmp_path / "split", resume=True, **options)
    assert resumed.history["loss"] == whole.history["loss"]
    expected, actual = _state(whole), _state(resumed)
    assert expected.keys() == actual.keys()
    for key in expected:
        assert torch.equal(expected[key], actual[key]), key
    np.testing.assert_array_equal(
        resumed.design["library_indices"], whole.design["library_indices"]
    )


def test_resume_refuses_other_settings(library, scene_cache, tmp_path):
    options = {"library": library, "progress": False, "scene_cache": scene_cache}
    config = tiny(steps=2, checkpoint_every=2, finetune_steps=0, evaluate_initial=False)
    train_codesign(config, tmp_path, stop_after=2, **options)
    with pytest.raises(ValueError, match="other settings.*learning_rate"):
        train_codesign(config.replace(learning_rate=0.5), tmp_path, resume=True, **options)


def test_unconstrained_encoder_runs(scene_cache, tmp_path):
    config = tiny(encoder="unconstrained", steps=2, finetune_steps=1, evaluate_initial=False,
                  reconstructor="mst", reconstructor_config={"width": 8, "n_blocks": 1,
                                                             "n_stages": 1})  # fmt: skip
    result = train_codesign(config, None, progress=False, scene_cache=scene_cache)
    assert result.design["kind"] == "unconstrained" and result.design["responses"].shape == (9, 8)


def test_config_from_toml(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text(
        '[codesign]\nseed = 3\nbands = 12\nencoder = "unconstrained"\n'
        "wavelength_range_nm = [420.0, 700.0]\n[codesign.reconstructor_config]\nwidth = 8\n"
    )
    config = CodesignConfig.from_toml(path)
    assert config.seed == 3 and config.bands == 12 and config.reconstructor_config == {"width": 8}
    assert config.wavelengths_nm.shape == (12,)
    assert CodesignConfig.from_dict(config.to_dict()) == config
    path.write_text("bands = 12\nlearning_rat = 0.1\n")
    with pytest.raises(ValueError, match="unknown co-design settings.*learning_rat"):
        CodesignConfig.from_toml(path)
    with pytest.raises(ValueError, match="encoder must be one of"):
        CodesignConfig(encoder="magic")
    with pytest.raises(ValueError, match="patch_size 64 exceeds scene_size"):
        CodesignConfig(patch_size=64, scene_size=32)


def test_learning_rate_follows_the_cosine_schedule(scene_cache, monkeypatch):
    from hyplex.models.codesign_config import learning_rate_factor

    assert learning_rate_factor(0, 100, "cosine", 0.1) == pytest.approx(1.0)
    assert learning_rate_factor(50, 100, "cosine", 0.1) == pytest.approx(0.55)
    assert learning_rate_factor(100, 100, "cosine", 0.1) == pytest.approx(0.1)
    assert learning_rate_factor(70, 100, "constant", 0.1) == 1.0
    with pytest.raises(ValueError, match="learning_rate_decay must be one of"):
        CodesignConfig(learning_rate_decay="step")
    with pytest.raises(ValueError, match="learning_rate_floor"):
        CodesignConfig(learning_rate_floor=1.5)
    seen = []  # the decoder group's rate at every optimiser step
    original = torch.optim.Adam.step

    def record(self, *args, **kwargs):
        seen.append(self.param_groups[0]["lr"])
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", record)
    config = tiny(encoder="unconstrained", steps=10, finetune_steps=4, evaluate_initial=False,
                  learning_rate_decay="cosine", learning_rate_floor=0.2)  # fmt: skip
    train_codesign(config, None, progress=False, scene_cache=scene_cache)
    relaxed = [1e-2 * learning_rate_factor(s, 10, "cosine", 0.2) for s in range(10)]
    finetune = [5e-3 * learning_rate_factor(s, 4, "cosine", 0.2) for s in range(4)]
    assert seen == pytest.approx(relaxed + finetune)
    assert seen[0] > seen[9] > 0.2e-2 - 1e-12


@pytest.mark.parametrize("kind", ["surrogate", "pca", "rgb", "identity"])
def test_every_encoder_kind_trains_and_hardens(kind, library, scene_cache):
    from hyplex.optics.surrogate import SpectralSurrogate, describe

    box = (np.append(library.params_nm.min(0), library.thickness_nm.min()),
           np.append(library.params_nm.max(0), library.thickness_nm.max()))  # fmt: skip
    surrogate = SpectralSurrogate(describe(library), *box, hidden=16, blocks=1, fourier_features=4)
    n_filters = 6 if kind == "pca" else 9  # at most one principal component per band (8)
    config = tiny(encoder=kind, n_filters=n_filters, steps=2, finetune_steps=1,
                  evaluate_initial=False, refine_harmonics=1, refine_grid=32)  # fmt: skip
    result = train_codesign(config, None, library=library, surrogate=surrogate, progress=False,
                            scene_cache=scene_cache)  # fmt: skip
    filters = {"rgb": 3, "identity": 8}.get(kind, n_filters)
    assert result.design["responses"].shape == (filters, 8)
    assert np.isfinite(result.metrics["final"]["psnr"])
    if kind == "surrogate":
        assert result.design["geometry_nm"].shape == (9, 3) and result.design["refined_with_rcwa"]
        assert 0 <= result.notes["rms_surrogate_vs_rcwa"] < 1
    if kind == "pca":
        assert result.design["library_indices"].shape == (6,)
        with pytest.raises(ValueError, match="9 PCA target filters need at least as many"):
            train_codesign(config.replace(n_filters=9), None, library=library, progress=False,
                           scene_cache=scene_cache)  # fmt: skip


def test_interrupt_while_checkpointing_keeps_the_last_checkpoint(library, scene_cache, tmp_path,
                                                                  monkeypatch):  # fmt: skip
    """Ctrl-C in the middle of writing checkpoint 2 leaves checkpoint 1 readable (atomic)."""
    import hyplex.models.codesign as codesign

    saves, real_save = [], torch.save

    def interrupted_save(state, handle):
        saves.append(state["step"])
        if len(saves) == 2:
            handle.write(b"half a checkpoint")
            raise KeyboardInterrupt
        real_save(state, handle)

    monkeypatch.setattr(codesign.torch, "save", interrupted_save)
    config = tiny(steps=4, checkpoint_every=2, finetune_steps=0, evaluate_initial=False)
    with pytest.raises(KeyboardInterrupt):
        train_codesign(config, tmp_path, library=library, progress=False, scene_cache=scene_cache)
    monkeypatch.setattr(codesign.torch, "save", real_save)
    assert saves == [2, 4]
    assert torch.load(tmp_path / CHECKPOINT_NAME, weights_only=True)["step"] == 2
    assert [p.name for p in tmp_path.iterdir()] == [CHECKPOINT_NAME], "temporary file removed"
    resumed = train_codesign(config, tmp_path, resume=True, library=library, progress=False,
                             scene_cache=scene_cache)  # fmt: skip
    assert len(resumed.history["loss"]) == 4


def test_resume_refuses_another_world_size(library, scene_cache, tmp_path, monkeypatch):
    """The batches of step k depend on the number of processes: a checkpoint records it and
    a resume under another one is refused."""
    import hyplex.models.codesign as codesign
    from hyplex.models.distributed import DistributedContext

    options = {"library": library, "progress": False, "scene_cache": scene_cache}
    config = tiny(steps=4, checkpoint_every=2, finetune_steps=0, evaluate_initial=False)
    train_codesign(config, tmp_path, stop_after=2, **options)
    assert torch.load(tmp_path / CHECKPOINT_NAME, weights_only=True)["world_size"] == 1
    two = DistributedContext(rank=0, world_size=2, backend="gloo")  # as rank 0 of 2 sees it
    monkeypatch.setattr(codesign.distributed, "init_distributed", lambda device=None: two)
    with pytest.raises(ValueError, match="run of 1 process.*this run has 2.*nproc_per_node 1"):
        train_codesign(config, tmp_path, resume=True, **options)


def test_buffers_are_broadcast_even_without_fine_tuning(library, scene_cache, monkeypatch):
    """Each rank's last DDP step updates its BatchNorm statistics from its own batch, so rank
    0's are broadcast after training whether or not the decoders are fine-tuned."""
    import hyplex.models.codesign as codesign

    broadcast = []
    monkeypatch.setattr(
        codesign.distributed, "broadcast_buffers", lambda module, context: broadcast.append(module)
    )
    config = tiny(steps=2, finetune_steps=0, evaluate_initial=False)
    result = train_codesign(config, None, library=library, progress=False, scene_cache=scene_cache)
    assert broadcast == [result.model]
    assert any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in result.model.modules())


def test_checkpoint_writes_are_unique_and_fsynced(tmp_path, monkeypatch):
    """A checkpoint goes through a temporary file of its own (another run's temporary file at
    the old fixed name ``checkpoint.pt.partial`` is left alone), fsynced before the rename."""
    import os

    from hyplex.models.codesign import _save_checkpoint

    other = tmp_path / f"{CHECKPOINT_NAME}.partial"
    other.write_bytes(b"another run's half-written checkpoint")
    events, real_fsync, real_replace = [], os.fsync, os.replace

    def fsync(descriptor):
        events.append("fsync")
        real_fsync(descriptor)

    def replace(source, target):
        events.append(("replace", Path(source).parent))
        real_replace(source, target)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    _save_checkpoint(tmp_path / CHECKPOINT_NAME, {"step": 7})
    assert torch.load(tmp_path / CHECKPOINT_NAME, weights_only=True) == {"step": 7}
    assert other.read_bytes() == b"another run's half-written checkpoint"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([CHECKPOINT_NAME, other.name])
    assert events[0] == "fsync" and events[1] == ("replace", tmp_path), events


def test_scene_cache_writes_are_unique_and_fsynced(tmp_path, monkeypatch):
    """(hyplex.models.data) Two runs sharing a scene cache never write one temporary file:
    another run's file at the old fixed name ``<cache>.partial.npz`` is left alone, and the
    cache is fsynced before the rename."""
    import os

    from hyplex.models.data import generate_scenes

    arguments = (np.linspace(420.0, 700.0, 8), 1, 0, (8, 8))
    generate_scenes(*arguments, n_objects=1, cache_dir=tmp_path)
    (cache,) = tmp_path.iterdir()
    cache.unlink()
    other = cache.with_name(cache.name + ".partial.npz")
    other.write_bytes(b"another run's half-written cache")
    events, real_fsync = [], os.fsync

    def fsync(descriptor):
        events.append("fsync")
        real_fsync(descriptor)

    monkeypatch.setattr(os, "fsync", fsync)
    scenes = generate_scenes(*arguments, n_objects=1, cache_dir=tmp_path)
    assert events == ["fsync", "fsync"]  # the file, then (after the rename) its directory
    assert other.read_bytes() == b"another run's half-written cache"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([cache.name, other.name])
    again = generate_scenes(*arguments, n_objects=1, cache_dir=tmp_path)  # from the cache
    np.testing.assert_array_equal(again.cubes, scenes.cubes)

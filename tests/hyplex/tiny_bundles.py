"""The tiny co-designed bundle and the tiny recording that the CLI tests (forget, redteam,
openset, segment --uncertainty) run on: 8 bands, 24x24 scenes, a few steps on the shipped quick
library's designs; seconds on one core. Each test module trains its own (module-scoped
fixture) with the overrides it needs (more scenes, another reconstructor)."""

from hyplex.models.bundle import save_bundle
from hyplex.models.codesign import train_codesign
from hyplex.models.codesign_config import CodesignConfig


def tiny_config(**overrides) -> CodesignConfig:
    settings = {
        "bands": 8,
        "wavelength_range_nm": (420.0, 700.0),
        "scene_size": 24,
        "n_train_scenes": 2,
        "n_val_scenes": 1,
        "n_objects": 3,
        "patch_size": 16,
        "batch_size": 2,
        "steps": 3,
        "finetune_steps": 1,
        "evaluate_initial": False,
        "reconstructor_config": {"width": 8, "n_blocks": 1, "n_stages": 1},
        "segmenter_config": {"base_channels": 4, "depth": 1},
        "device": "cpu",
    }
    settings.update(overrides)
    return CodesignConfig(**settings)


def tiny_bundle(tmp_path_factory, **overrides):
    """Train :func:`tiny_config` (with ``overrides``) and save it; returns the bundle folder."""
    from hyplex.models.codesign_library import quick_library

    library = quick_library(tmp_path_factory.mktemp("lib") / "lib.h5", count=24)
    result = train_codesign(tiny_config(**overrides), None, library=library, progress=False)
    return save_bundle(tmp_path_factory.mktemp("bundles") / "design", result, report=False)


def tiny_recording(folder, scale: float = 1.0):
    """``folder/clip.h5``: 3 frames of 240x240 uniform 12-bit noise (seed 0) times ``scale``
    (in (0, 1]: dimmer light), the input the CLI tests decode. Returns the path."""
    import numpy as np

    from hyplex.devices.frame import Frame, PixelFormat
    from hyplex.devices.recorder import Recorder, StreamSpec

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "clip.h5"
    rng = np.random.default_rng(0)
    with Recorder(path, StreamSpec((240, 240), PixelFormat.MONO12)) as recorder:
        for i in range(3):
            data = (rng.integers(0, 4095, (240, 240)) * scale).astype(np.uint16)
            recorder.write(Frame(data, frame_id=i, seq=i, host_timestamp_ns=i))
    return path

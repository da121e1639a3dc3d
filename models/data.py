"""Synthetic labelled training data for encoder co-design, from the camera twin's scenes.

Scenes come from :func:`hyplex.simulation.scenes.make_scene` (earthlib material spectra,
objects with shading, metameric fakes; ~0.3 s each). A :class:`SceneSet` holds ``S`` scenes as
*apparent reflectance* cubes ``R(x) * shading(x)`` (unitless, in [0, 1]; the radiance divided
by ``E / pi``, what a decoder should recover once the illuminant is known), their class maps
and fake maps. :class:`PatchDataset` draws random square patches from it: patch ``i`` is a
pure function of ``(seed, i)``, so a training step's batch is reproducible on any process
(checkpoint resume, one disjoint slice per distributed rank).

Scene ``k`` of a set is drawn from ``numpy.random.default_rng([seed, k])``; a train set and a
held-out set differ by seed. :func:`generate_scenes` loads the spectral library once for all
scenes and can cache the finished set as ``.npz`` (written atomically: unique temporary file,
fsync, rename) under ``cache_dir``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from hyplex.optics.atomic_io import atomic_write
from hyplex.simulation.grids import check_wavelengths

__all__ = ["SceneSet", "generate_scenes", "PatchDataset", "random_crops", "sample_spectra"]

QUICK_CLASSES = ("vegetation", "soil", "paint", "metal")


@dataclass
class SceneSet:
    """``S`` labelled scenes on one grid.

    Attributes
    ----------
    wavelengths_nm : ``(L,)`` nm.
    cubes : ``(S, H, W, L)`` float32 apparent reflectance.
    class_maps : ``(S, H, W)`` int64 class ids (0 = background).
    fake_maps : ``(S, H, W)`` bool, True on metameric fakes.
    class_names : ``n_classes`` names (``"background"``, classes, ``"fake_<class>"``).
    """

    wavelengths_nm: np.ndarray
    cubes: np.ndarray
    class_maps: np.ndarray
    fake_maps: np.ndarray
    class_names: list[str]

    def __post_init__(self):
        self.wavelengths_nm = check_wavelengths(self.wavelengths_nm)
        count = len(self.cubes)
        if self.cubes.ndim != 4 or self.cubes.shape[-1] != self.wavelengths_nm.size:
            raise ValueError(
                f"cubes must be (S, H, W, L={self.wavelengths_nm.size}), got {self.cubes.shape}"
            )
        for name in ("class_maps", "fake_maps"):
            if getattr(self, name).shape != self.cubes.shape[:3]:
                raise ValueError(f"{name} must have shape {self.cubes.shape[:3]}")
        if count < 1:
            raise ValueError("a scene set needs at least one scene")

    def __len__(self) -> int:
        return len(self.cubes)

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    def tensors(self, device=None):
        """``(cubes (S, L, H, W) float32, class_maps (S, H, W) long, fake_maps (S, H, W))``."""
        cubes = torch.as_tensor(self.cubes, device=device).permute(0, 3, 1, 2).contiguous()
        labels = torch.as_tensor(self.class_maps, device=device).long()
        return cubes, labels, torch.as_tensor(self.fake_maps, device=device)


def generate_scenes(
    wavelengths_nm,
    count: int,
    seed: int = 0,
    shape=(64, 64),
    n_objects: int = 4,
    classes=QUICK_CLASSES,
    fake_classes=("vegetation",),
    fake_fraction: float = 0.4,
    max_per_class: int = 100,
    cache_dir=None,
) -> SceneSet:
    """``count`` scenes of ``shape`` (H, W) on ``wavelengths_nm``; see the module docstring.

    The other parameters go to :func:`~hyplex.simulation.scenes.make_scene` and
    :func:`~hyplex.simulation.scenes.scene_library` (``max_per_class`` spectra per class, drawn
    with ``seed``). With ``cache_dir`` the set is read from (or written to) a file named by a
    hash of all arguments.
    """
    grid = check_wavelengths(wavelengths_nm)
    if int(count) < 1:
        raise ValueError(f"count must be >= 1 scene, got {count}")
    height, width = (int(v) for v in shape)
    if min(height, width) < 8:
        raise ValueError(f"scene shape must be at least (8, 8) pixels, got {shape}")
    arguments = {
        "wavelengths_nm": grid.round(9).tolist(),
        "count": int(count),
        "seed": int(seed),
        "shape": [height, width],
        "n_objects": int(n_objects),
        "classes": list(classes),
        "fake_classes": list(fake_classes),
        "fake_fraction": float(fake_fraction),
        "max_per_class": int(max_per_class),
    }
    path = None
    if cache_dir is not None:
        key = hashlib.sha256(json.dumps(arguments, sort_keys=True).encode()).hexdigest()[:16]
        path = Path(cache_dir) / f"scenes-{key}.npz"
        if path.exists():
            with np.load(path, allow_pickle=False) as stored:
                return SceneSet(
                    grid,
                    stored["cubes"],
                    stored["class_maps"],
                    stored["fake_maps"],
                    [str(n) for n in stored["class_names"]],
                )
    from hyplex.simulation.scenes import BACKGROUNDS, make_scene, scene_library

    library = scene_library(grid, classes, BACKGROUNDS, seed=int(seed), max_per_class=max_per_class)
    cubes, class_maps, fake_maps, names = [], [], [], None
    for index in range(int(count)):
        scene = make_scene(
            (height, width),
            grid,
            n_objects=n_objects,
            classes=classes,
            fake_classes=fake_classes,
            fake_fraction=fake_fraction,
            seed=np.random.default_rng([int(seed), index]),
            library=library,
        )
        cubes.append(np.clip(scene.reflectance * scene.shading[..., None], 0.0, 1.0))
        class_maps.append(scene.class_map.astype(np.int64))
        fake_maps.append(scene.fake_map)
        names = list(scene.class_names)
    scenes = SceneSet(
        grid,
        np.stack(cubes).astype(np.float32),
        np.stack(class_maps),
        np.stack(fake_maps),
        names,
    )
    if path is not None:
        _write_cache(path, scenes)
    return scenes


def _write_cache(path: Path, scenes: SceneSet) -> None:
    """Write ``scenes`` to ``path`` atomically: a uniquely named temporary file in the same
    directory (runs sharing a cache never write one file), flushed and fsynced, then renamed
    over ``path``. Readers see no file or a complete one; the last writer wins (the sets are
    equal, being pure functions of the arguments that name the file)."""
    arrays = {
        "cubes": scenes.cubes,
        "class_maps": scenes.class_maps,
        "fake_maps": scenes.fake_maps,
        "class_names": np.array(scenes.class_names),
    }
    atomic_write(path, lambda handle: np.savez(handle, **arrays))


class PatchDataset(Dataset):
    """Random ``patch_size`` square patches of a :class:`SceneSet` (with random flips).

    Item ``i`` (any integer ``>= 0``; ``len`` is ``n_patches`` for samplers) is drawn from
    ``numpy.random.default_rng([seed, i])``: a dict with ``cube (L, p, p)`` float32,
    ``labels (p, p)`` long and ``fake (p, p)`` bool tensors.
    """

    def __init__(self, scenes: SceneSet, patch_size: int = 16, n_patches: int = 10_000, seed=0):
        height, width = scenes.cubes.shape[1:3]
        if not 1 <= int(patch_size) <= min(height, width):
            raise ValueError(
                f"patch_size must lie in 1..{min(height, width)} (the scene size), got {patch_size}"
            )
        if int(n_patches) < 1:
            raise ValueError(f"n_patches must be >= 1, got {n_patches}")
        self.scenes, self.patch_size = scenes, int(patch_size)
        self.n_patches, self.seed = int(n_patches), int(seed)

    def __len__(self) -> int:
        return self.n_patches

    def __getitem__(self, index: int) -> dict:
        if int(index) < 0:
            raise IndexError(f"patch index must be >= 0, got {index}")
        rng = np.random.default_rng([self.seed, int(index)])
        scenes, size = self.scenes, self.patch_size
        scene = int(rng.integers(len(scenes)))
        top = int(rng.integers(scenes.cubes.shape[1] - size + 1))
        left = int(rng.integers(scenes.cubes.shape[2] - size + 1))
        window = (scene, slice(top, top + size), slice(left, left + size))
        cube = scenes.cubes[window].transpose(2, 0, 1)
        labels, fake = scenes.class_maps[window], scenes.fake_maps[window]
        for axis in (1, 2):
            if rng.random() < 0.5:
                cube = np.flip(cube, axis)
                labels, fake = np.flip(labels, axis - 1), np.flip(fake, axis - 1)
        return {
            "cube": torch.from_numpy(np.ascontiguousarray(cube)),
            "labels": torch.from_numpy(np.ascontiguousarray(labels)).long(),
            "fake": torch.from_numpy(np.ascontiguousarray(fake)),
        }

    def batch(self, indices, device=None) -> dict:
        """The items at ``indices`` stacked: ``cube (B, L, p, p)``, ``labels``, ``fake``."""
        items = [self[int(i)] for i in indices]
        return {key: torch.stack([item[key] for item in items]).to(device) for key in items[0]}


def sample_spectra(scenes: SceneSet, count: int = 4096, seed: int = 0) -> np.ndarray:
    """``(count, L)`` float64 spectra of random pixels (for PCA targets and linear fits)."""
    rng = np.random.default_rng(seed)
    flat = scenes.cubes.reshape(-1, scenes.cubes.shape[-1])
    pick = rng.choice(len(flat), size=min(int(count), len(flat)), replace=False)
    return flat[pick].astype(np.float64)


def random_crops(rng: np.random.Generator, tensors, count: int, size: int) -> list[torch.Tensor]:
    """The same ``count`` random ``size x size`` crops of each of ``tensors``.

    Parameters
    ----------
    rng : numpy Generator; draws the items, then the tops, then the lefts (``count`` each).
    tensors : sequence of torch.Tensor, each ``(N, ..., H, W)`` with one ``N, H, W``
        (e.g. barcode maps ``(N, C, H, W)`` and their cubes ``(N, L, H, W)`` or labels
        ``(N, H, W)``).
    count : crops per tensor.
    size : crop side, pixels (``<= H, W``).

    Returns
    -------
    list of torch.Tensor, ``(count, ..., size, size)``, one per tensor, cut at the same corners.
    """
    first = tensors[0]
    n, height, width = first.shape[0], first.shape[-2], first.shape[-1]
    for other in tensors[1:]:
        if other.shape[0] != n or other.shape[-2:] != first.shape[-2:]:
            raise ValueError(
                f"tensors need one N, H, W; got {tuple(first.shape)} and {tuple(other.shape)}"
            )
    if not 1 <= size <= min(height, width):
        raise ValueError(f"size must be in [1, {min(height, width)}], got {size}")
    index = rng.integers(0, n, count)
    top = rng.integers(0, height - size + 1, count)
    left = rng.integers(0, width - size + 1, count)
    corners = list(zip(index, top, left, strict=True))
    return [
        torch.stack([t[i, ..., a : a + size, b : b + size] for i, a, b in corners]) for t in tensors
    ]

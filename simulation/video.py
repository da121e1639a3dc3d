"""Synthetic hyperspectral video: moving objects, occlusion by depth, changing illumination.

Objects are the sprites of ``scenes.py`` moving at constant velocity (pixels per frame) and
bouncing off the frame edges; they keep their depth, so nearer objects occlude farther ones
where they cross. The illuminant changes from ``illuminants[0]`` to ``illuminants[-1]`` over
the clip (a linear mix of spectral irradiance, e.g. daylight to tungsten) with an optional
slow intensity modulation (clouds). Ground truth is kept for every frame: class, instance and
fake maps, reflectance and the illuminant. Frames are rendered on demand (:meth:`Video.frame`)
so a long clip does not sit in memory.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hyplex.simulation.grids import check_wavelengths, hyplex_grid
from hyplex.simulation.illuminants import Illuminant, blend, get_illuminant
from hyplex.simulation.scenes import (
    BACKGROUNDS,
    DEFAULT_CLASSES,
    Scene,
    SceneObject,
    class_names_for,
    make_background,
    make_object,
    paint,
    scene_library,
)


@dataclass
class Video:
    """A synthetic clip; frame t is :meth:`frame` (t).

    Attributes
    ----------
    wavelengths_nm : numpy.ndarray, (L,)
    background_reflectance : numpy.ndarray, (H, W, L) float32
    background_shading : numpy.ndarray, (H, W) float32
    sprites : list of SceneObject
        In painting order (far to near); instance id = position + 1.
    positions : numpy.ndarray, (T, n_objects, 2) int
        Top-left corner (row, col) of each sprite in each frame.
    illuminants : list of Illuminant, length T
    class_names : list of str
    """

    wavelengths_nm: np.ndarray
    background_reflectance: np.ndarray
    background_shading: np.ndarray
    sprites: list[SceneObject]
    positions: np.ndarray
    illuminants: list[Illuminant]
    class_names: list[str]

    @property
    def n_frames(self) -> int:
        return self.positions.shape[0]

    @property
    def shape(self) -> tuple[int, int]:
        return self.background_shading.shape

    def frame(self, index: int) -> Scene:
        """Scene of frame ``index`` (0 <= index < n_frames)."""
        if not 0 <= index < self.n_frames:
            raise IndexError(f"frame {index} outside 0..{self.n_frames - 1}")
        height, width = self.shape
        canvas = {
            "reflectance": self.background_reflectance.copy(),
            "shading": self.background_shading.copy(),
            "class_map": np.zeros((height, width), np.int16),
            "instance_map": np.zeros((height, width), np.int32),
            "fake_map": np.zeros((height, width), bool),
        }
        for number, sprite in enumerate(self.sprites):
            top, left = self.positions[index, number]
            class_id = self.class_names.index(sprite.label)
            paint(canvas, sprite, int(top), int(left), class_id, number + 1)
        return Scene(
            self.wavelengths_nm,
            illuminant=self.illuminants[index],
            class_names=self.class_names,
            **canvas,
        )

    def labels(self) -> dict[str, np.ndarray]:
        """Ground-truth maps of every frame: class_map, instance_map (T, H, W) int and
        fake_map (T, H, W) bool, without rendering spectra."""
        height, width = self.shape
        out = {
            "class_map": np.zeros((self.n_frames, height, width), np.int16),
            "instance_map": np.zeros((self.n_frames, height, width), np.int32),
            "fake_map": np.zeros((self.n_frames, height, width), bool),
        }
        for t in range(self.n_frames):
            for number, sprite in enumerate(self.sprites):
                top, left = (int(v) for v in self.positions[t, number])
                y0, x0 = max(top, 0), max(left, 0)
                y1 = min(top + sprite.mask.shape[0], height)
                x1 = min(left + sprite.mask.shape[1], width)
                if y0 >= y1 or x0 >= x1:
                    continue
                mask = sprite.mask[y0 - top : y1 - top, x0 - left : x1 - left]
                out["class_map"][t, y0:y1, x0:x1][mask] = self.class_names.index(sprite.label)
                out["instance_map"][t, y0:y1, x0:x1][mask] = number + 1
                out["fake_map"][t, y0:y1, x0:x1][mask] = sprite.is_fake
        return out


def _bounce(start, velocity, low, high, n_frames) -> np.ndarray:
    """Positions over time moving at ``velocity`` and reflecting off [low, high]."""
    span = max(high - low, 1e-9)
    raw = start - low + velocity * np.arange(n_frames)
    folded = np.mod(raw, 2 * span)
    return low + np.where(folded > span, 2 * span - folded, folded)


def make_video(
    n_frames: int = 16,
    shape=(96, 128),
    wavelengths_nm=None,
    n_objects: int = 5,
    classes=DEFAULT_CLASSES,
    fake_classes=("vegetation",),
    fake_fraction: float = 0.3,
    illuminants=("D65", "A"),
    illuminance_lux=(10000.0, 2000.0),
    flicker: float = 0.1,
    speed_px=(0.5, 3.0),
    background: str | None = None,
    seed=0,
) -> Video:
    """A random clip of ``n_frames`` frames of ``shape`` (H, W).

    Parameters
    ----------
    illuminants, illuminance_lux : sequences of equal length >= 1
        Start and end illuminants (names for ``get_illuminant``) and their lux; frames blend
        linearly between the first and the last.
    flicker : float
        Relative amplitude of a slow sinusoidal intensity change (0 disables).
    speed_px : (float, float)
        Range of object speeds, pixels per frame.
    Other parameters as for :func:`~hyplex.simulation.scenes.make_scene`.
    """
    if n_frames < 1 or len(illuminants) != len(illuminance_lux) or not illuminants:
        raise ValueError("need n_frames >= 1 and one illuminance_lux per illuminant")
    if not 0 <= flicker < 1:
        raise ValueError(f"flicker must lie in [0, 1), got {flicker}")
    rng = np.random.default_rng(seed)
    grid = hyplex_grid() if wavelengths_nm is None else check_wavelengths(wavelengths_nm)
    height, width = (int(v) for v in shape)
    background = background or str(rng.choice(BACKGROUNDS))
    library = scene_library(grid, classes, (background,), seed=rng)
    d65 = get_illuminant("D65", grid).spectral_irradiance
    names = class_names_for(classes, fake_classes)
    reflectance, shading = make_background(rng, library, background, (height, width))
    paints = library.select("paint")
    sprites, positions = [], np.zeros((n_frames, n_objects, 2), np.int64)
    for number in range(n_objects):
        class_name = str(rng.choice(list(classes)))
        fake = class_name in fake_classes and rng.random() < fake_fraction
        size = tuple(int(v) for v in rng.uniform(0.15, 0.4, 2) * min(height, width) + 4)
        sprites.append(make_object(rng, library, class_name, size, paints if fake else None, d65))
        speed, angle = rng.uniform(*speed_px), rng.uniform(0, 2 * np.pi)
        for axis, (extent, component) in enumerate(
            ((height, np.sin(angle)), (width, np.cos(angle)))
        ):
            low, high = -size[axis] // 3, extent - 2 * size[axis] // 3
            start = rng.uniform(low, high)
            path = _bounce(start, speed * component, low, high, n_frames)
            positions[:, number, axis] = np.round(path).astype(np.int64)
    ends = [
        get_illuminant(n, grid, lux) for n, lux in zip(illuminants, illuminance_lux, strict=True)
    ]
    phase = rng.uniform(0, 2 * np.pi)
    lights = []
    for t in range(n_frames):
        fraction = t / (n_frames - 1) if n_frames > 1 else 0.0
        light = blend(ends[0], ends[-1], fraction) if len(ends) > 1 else ends[0]
        gain = 1.0 + flicker * np.sin(2 * np.pi * t / max(n_frames, 8) + phase)
        lights.append(
            Illuminant(
                light.name,
                grid,
                light.spectral_irradiance * gain,
                light.illuminance_lux * gain,
                light.source,
            )
        )
    return Video(grid, reflectance, shading, sprites, positions, lights, names)

"""Synthetic labelled hyperspectral scenes built from real material spectra.

A scene is a background plus objects of known material classes, each a sprite::

    reflectance(x) = sum_k a_k(x) s_k      s_k: 3 library spectra of the class (earthlib),
                                           a_k(x): smooth random abundances (convex, sum 1)
    radiance(x)    = reflectance(x) * shading(x) * E(lambda) / pi      (Lambertian)

``shading`` is geometric (a dome lit from a random direction for ellipses, a tilted plane
for the others; ambient 0.25) times a fine multiplicative texture (~3 % rms). Objects are
painted far to near (occlusion by depth). A *fake* object (the FVgNET real/fake task) imitates
a natural class: each of its endmembers is the metamer (``colorimetry.metamer``) of a natural
spectrum built on an artificial base (earthlib paint), so under D65 it has the natural colour
(same CIE XYZ) but the paint's spectral shape and near infrared. Class ids: 0 background, then
``classes``, then ``fake_<class>`` for each of ``fake_classes``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter

from hyplex.simulation.colorimetry import metamer, radiance_to_xyz, xyz_to_srgb
from hyplex.simulation.grids import check_same_grid, check_wavelengths, hyplex_grid
from hyplex.simulation.illuminants import Illuminant, get_illuminant
from hyplex.simulation.spectra import EARTHLIB_CLASSES, SpectralLibrary, load_earthlib

DEFAULT_CLASSES = ("vegetation", "soil", "road", "roof", "paint", "metal", "wood", "concrete")
BACKGROUNDS = ("soil", "concrete", "road", "sand", "gravel", "dry_vegetation")
AMBIENT = 0.25


@dataclass
class Scene:
    """A labelled hyperspectral scene.

    Attributes
    ----------
    wavelengths_nm : numpy.ndarray, (L,)
    reflectance : numpy.ndarray, (H, W, L) float32
        Intrinsic reflectance (unitless, 0-1).
    shading : numpy.ndarray, (H, W) float32
        Geometric shading and texture factor (0-1).
    illuminant : Illuminant
        Spectral irradiance on the grid, W m^-2 nm^-1.
    class_map : numpy.ndarray, (H, W) int16
        Index into ``class_names`` (0 = background).
    class_names : list of str
    instance_map : numpy.ndarray, (H, W) int32
        Object number (0 = background, 1.. in painting order).
    fake_map : numpy.ndarray, (H, W) bool
        True on artificial objects made to imitate a natural class.
    """

    wavelengths_nm: np.ndarray
    reflectance: np.ndarray
    shading: np.ndarray
    illuminant: Illuminant
    class_map: np.ndarray
    class_names: list[str]
    instance_map: np.ndarray
    fake_map: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        return self.reflectance.shape[:2]

    @property
    def radiance(self) -> np.ndarray:
        """Spectral radiance (H, W, L) float32, W m^-2 sr^-1 nm^-1 (Lambertian)."""
        scale = (self.illuminant.spectral_irradiance / np.pi).astype(np.float32)
        return self.reflectance * self.shading[..., None] * scale

    def srgb(self, white_quantile: float = 0.99, white_cd_m2: float | None = None):
        """sRGB preview (H, W, 3) in [0, 1] of the radiance (CIE 1931 observer), scaled so
        the ``white_quantile`` of luminance (or ``white_cd_m2``, to keep one scale across
        frames) maps to Y = 1; no white balance."""
        xyz = radiance_to_xyz(self.radiance, self.wavelengths_nm)
        white = white_cd_m2 or np.quantile(xyz[..., 1], white_quantile)
        return xyz_to_srgb(xyz / max(white, 1e-12))

    def luminance_cd_m2(self) -> np.ndarray:
        """Luminance (H, W) of the radiance, cd m^-2."""
        return radiance_to_xyz(self.radiance, self.wavelengths_nm)[..., 1]


@dataclass
class SceneObject:
    """One sprite: a mask with its reflectance and shading, of one class."""

    mask: np.ndarray  # (h, w) bool
    reflectance: np.ndarray  # (h, w, L) float32
    shading: np.ndarray  # (h, w) float32
    class_name: str
    is_fake: bool = False

    @property
    def label(self) -> str:
        return f"fake_{self.class_name}" if self.is_fake else self.class_name


def class_names_for(classes, fake_classes) -> list[str]:
    """["background", *classes, *("fake_" + c for c in fake_classes)]."""
    return ["background", *classes, *(f"fake_{name}" for name in fake_classes)]


def smooth_field(rng, shape, sigma_px: float) -> np.ndarray:
    """Gaussian random field, zero mean, unit standard deviation, correlation ~sigma_px."""
    field = gaussian_filter(rng.standard_normal(shape), sigma=max(sigma_px, 0.5), mode="wrap")
    return (field - field.mean()) / max(field.std(), 1e-12)


def _mixture(rng, endmembers: np.ndarray, shape, sigma_px: float) -> np.ndarray:
    """Per-pixel convex mixture of endmembers (k, L) with smooth softmax abundances."""
    logits = np.stack([smooth_field(rng, shape, sigma_px) for _ in endmembers], axis=-1)
    abundances = np.exp(1.5 * logits)
    abundances /= abundances.sum(-1, keepdims=True)
    return (abundances @ endmembers).astype(np.float32)


def _texture(rng, shape, rms: float = 0.03) -> np.ndarray:
    return 1.0 + rms * smooth_field(rng, shape, 0.8)


def _shape_mask(rng, kind: str, size):
    """Mask (h, w) and unit-surface normals' z and in-plane parts for shading."""
    h, w = size
    y, x = np.mgrid[0:h, 0:w]
    ny, nx = (y + 0.5) / h * 2 - 1, (x + 0.5) / w * 2 - 1  # [-1, 1]
    r2 = nx**2 + ny**2
    if kind == "ellipse":
        mask = r2 <= 1.0
        nz = np.sqrt(np.clip(1.0 - r2, 0.0, 1.0))  # dome: normal (nx, ny, nz)
        return mask, (nx, ny, nz)
    tilt = rng.normal(0.0, 0.25, 2)
    plane = (np.full((h, w), tilt[0]), np.full((h, w), tilt[1]), np.ones((h, w)))
    if kind == "rectangle":
        return np.ones((h, w), bool), plane
    blob = smooth_field(rng, (h, w), min(h, w) / 6.0) * 0.35 + (1.0 - r2)
    return blob > 0.35, plane


def _shading(rng, normals, mask) -> np.ndarray:
    elevation, azimuth = np.radians(rng.uniform(35, 70)), rng.uniform(0, 2 * np.pi)
    light = np.array([np.cos(elevation) * np.cos(azimuth), np.cos(elevation) * np.sin(azimuth)])
    nx, ny, nz = normals
    norm = np.sqrt(nx**2 + ny**2 + nz**2) + 1e-12
    cosine = (nx * light[0] + ny * light[1] + nz * np.sin(elevation)) / norm
    shading = AMBIENT + (1 - AMBIENT) * np.clip(cosine, 0.0, 1.0)
    return (shading * _texture(rng, mask.shape)).clip(0.0, 1.0).astype(np.float32)


def make_object(rng, library: SpectralLibrary, class_name: str, size, fake_base=None, d65=None):
    """A random sprite of ``class_name`` (a label of ``library``) of ``size`` (h, w).

    With ``fake_base`` (a library of artificial spectra) and ``d65`` (the D65 irradiance on the
    grid), the object is a fake: endmembers are metamers of the natural ones on paint bases.
    """
    members = library.select(class_name).reflectance
    endmembers = members[rng.choice(len(members), size=min(3, len(members)), replace=False)]
    is_fake = fake_base is not None
    if is_fake:
        bases = fake_base.reflectance[rng.choice(len(fake_base), size=len(endmembers))]
        endmembers = np.stack(
            [
                metamer(np.clip(t, 0, 1), b, library.wavelengths_nm, d65)
                for t, b in zip(endmembers, bases, strict=True)
            ]
        )
    kind = rng.choice(["ellipse", "rectangle", "blob"], p=[0.45, 0.2, 0.35])
    mask, normals = _shape_mask(rng, kind, size)
    reflectance = _mixture(rng, np.clip(endmembers, 0.0, 1.0), size, min(size) / 5.0)
    return SceneObject(mask, reflectance, _shading(rng, normals, mask), class_name, is_fake)


def make_background(rng, library: SpectralLibrary, class_name: str, shape):
    """Background reflectance (H, W, L) and shading (H, W) from class ``class_name``."""
    members = library.select(class_name).reflectance
    endmembers = members[rng.choice(len(members), size=min(3, len(members)), replace=False)]
    reflectance = _mixture(rng, np.clip(endmembers, 0, 1), shape, min(shape) / 4.0)
    shading = (0.85 + 0.1 * smooth_field(rng, shape, min(shape) / 3.0)) * _texture(rng, shape)
    return reflectance, shading.clip(0.0, 1.0).astype(np.float32)


def paint(canvas: dict, sprite: SceneObject, top: int, left: int, class_id: int, instance: int):
    """Draw ``sprite`` with its corner at (top, left) over ``canvas`` arrays (clipped)."""
    height, width = canvas["class_map"].shape
    h, w = sprite.mask.shape
    y0, x0, y1, x1 = max(top, 0), max(left, 0), min(top + h, height), min(left + w, width)
    if y0 >= y1 or x0 >= x1:
        return
    mask = sprite.mask[y0 - top : y1 - top, x0 - left : x1 - left]
    region = (slice(y0, y1), slice(x0, x1))
    canvas["reflectance"][region][mask] = sprite.reflectance[
        y0 - top : y1 - top, x0 - left : x1 - left
    ][mask]
    canvas["shading"][region][mask] = sprite.shading[y0 - top : y1 - top, x0 - left : x1 - left][
        mask
    ]
    canvas["class_map"][region][mask] = class_id
    canvas["instance_map"][region][mask] = instance
    canvas["fake_map"][region][mask] = sprite.is_fake


def scene_library(wavelengths_nm, classes, backgrounds=BACKGROUNDS, seed=0, max_per_class=300):
    """The earthlib spectra a scene generator needs (its classes, backgrounds and paint)."""
    needed = sorted(set(classes) | set(backgrounds) | {"paint"})
    return load_earthlib(wavelengths_nm, needed, max_per_class=max_per_class, seed=seed)


def make_scene(
    shape=(128, 128),
    wavelengths_nm=None,
    n_objects: int = 6,
    classes=DEFAULT_CLASSES,
    fake_classes=("vegetation",),
    fake_fraction: float = 0.3,
    illuminant: str | Illuminant = "D65",
    illuminance_lux: float = 10000.0,
    background: str | None = None,
    seed=0,
    library: SpectralLibrary | None = None,
) -> Scene:
    """A random labelled scene of ``shape`` (H, W) on ``wavelengths_nm`` (default 204 bands).

    Parameters
    ----------
    n_objects : int
        Objects placed (>= 0), 15-45 % of the smaller side each.
    classes : sequence of str
        Natural material classes (keys of ``spectra.EARTHLIB_CLASSES``).
    fake_classes : sequence of str
        Classes that may appear as fakes (a subset of ``classes``).
    fake_fraction : float
        Probability that an object of a fake-able class is a fake.
    illuminant, illuminance_lux
        Name for :func:`~hyplex.simulation.illuminants.get_illuminant` (or an Illuminant on
        the grid) and its illuminance in lux.
    background : str, optional
        Background class (default: drawn from ``BACKGROUNDS``).
    seed : int or numpy.random.Generator
    library : SpectralLibrary, optional
        Pre-loaded :func:`scene_library` (saves ~0.3 s per scene).
    """
    rng = np.random.default_rng(seed)
    grid = hyplex_grid() if wavelengths_nm is None else check_wavelengths(wavelengths_nm)
    height, width = (int(v) for v in shape)
    if height < 8 or width < 8 or n_objects < 0 or not 0 <= fake_fraction <= 1:
        raise ValueError("need shape >= (8, 8), n_objects >= 0 and fake_fraction in [0, 1]")
    unknown = set(classes) - set(EARTHLIB_CLASSES)
    if unknown or not set(fake_classes) <= set(classes):
        raise ValueError(
            f"classes must be earthlib classes and fake_classes a subset; got {unknown}"
        )
    background = background or str(rng.choice(BACKGROUNDS))
    library = library or scene_library(grid, classes, (background,), seed=rng)
    check_same_grid(library.wavelengths_nm, grid, "the spectral library and wavelengths_nm")
    if not isinstance(illuminant, Illuminant):
        illuminant = get_illuminant(illuminant, grid, illuminance_lux)
    d65 = get_illuminant("D65", grid).spectral_irradiance
    names = class_names_for(classes, fake_classes)
    reflectance, shading = make_background(rng, library, background, (height, width))
    canvas = {
        "reflectance": reflectance,
        "shading": shading,
        "class_map": np.zeros((height, width), np.int16),
        "instance_map": np.zeros((height, width), np.int32),
        "fake_map": np.zeros((height, width), bool),
    }
    paints = library.select("paint")
    for instance in range(1, n_objects + 1):
        class_name = str(rng.choice(list(classes)))
        fake = class_name in fake_classes and rng.random() < fake_fraction
        side = min(height, width)
        size = tuple(int(v) for v in rng.uniform(0.15, 0.45, 2) * side + 4)
        sprite = make_object(rng, library, class_name, size, paints if fake else None, d65)
        top = int(rng.integers(-size[0] // 4, height - 3 * size[0] // 4))
        left = int(rng.integers(-size[1] // 4, width - 3 * size[1] // 4))
        paint(canvas, sprite, top, left, names.index(sprite.label), instance)
    return Scene(grid, illuminant=illuminant, class_names=names, **canvas)

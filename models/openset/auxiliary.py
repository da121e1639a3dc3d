"""The open-set split of the twin: known classes, auxiliary outliers, held-out test unknowns.

Materials come from real spectra (:mod:`hyplex.simulation.spectra`): earthlib categories and
colour-science sample sets. An :class:`OpenSetSplit` divides them into three disjoint groups::

    known classes      the segmenter's K classes (+ "background", drawn from ``backgrounds``)
    auxiliary          surrogate outliers that training may see (outlier exposure and kin),
                       plus mixtures, perturbations and generated spectra of them
    test unknowns      categories no method sees in training; only the evaluation plants them

Scenes are the twin's (:func:`hyplex.simulation.scenes.make_scene`: objects with smooth
convex mixtures of 3 library spectra, shading and texture). :func:`make_openset_scenes` then
paints ``n_unknown`` more objects of the role's outlier pool on top and marks them with the
label :data:`UNKNOWN` (-1) (ignored by the cross-entropy, True in ``unknown``).

Surrogate outliers beyond the categories themselves (the seed list's "held out, mixed,
perturbed, or generated"):

* :func:`mix_spectra`: convex mixtures of two auxiliary spectra of *different* categories;
* :func:`perturb_spectra`: a smooth multiplicative random field along wavelength;
* ``generated``: spectra from a generator such as GenIAS (``anomaly_generator``, engineer B),
  given as an ``(N, L)`` array or any object with ``sample(count, rng) -> (count, L)``
  (:class:`SpectrumGenerator`), added as the auxiliary category ``"generated"``.

Barcodes: :meth:`OpenSetScenes.barcodes` passes the apparent-reflectance cubes through an
encoder (a bundle's :class:`~hyplex.models.encoder_baselines.FixedResponseEncoder`, with its
camera noise), as the segmenter saw them in co-design.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from hyplex.simulation.scenes import BACKGROUNDS, make_object, make_scene, paint
from hyplex.simulation.spectra import (
    COLOUR_LIBRARIES,
    EARTHLIB_CLASSES,
    SpectralLibrary,
    load_earthlib,
    load_reflectances,
)

__all__ = [
    "UNKNOWN",
    "OpenSetSplit",
    "SpectrumGenerator",
    "OpenSetScenes",
    "LabelledBarcodes",
    "OpenSetData",
    "category_library",
    "mix_spectra",
    "perturb_spectra",
    "auxiliary_library",
    "make_openset_scenes",
    "build_openset_data",
    "encode_spectra",
]

#: label of unknown-material pixels (ignored by cross-entropy, ``ignore_index=-1``)
UNKNOWN = -1
CATEGORIES = tuple(EARTHLIB_CLASSES) + COLOUR_LIBRARIES


@dataclass(frozen=True)
class OpenSetSplit:
    """Disjoint material groups of an open-set experiment.

    Attributes
    ----------
    known_classes : earthlib classes the segmenter labels (ids 1..K; 0 is background).
    fake_classes : known classes that may appear as metameric fakes (``fake_<class>`` ids).
    backgrounds : earthlib classes drawn as the scene background (label 0).
    auxiliary : categories (earthlib classes or :data:`COLOUR_LIBRARIES` names) that training
        may use as surrogate outliers.
    test_unknown : categories only the evaluation plants.
    """

    known_classes: tuple[str, ...] = ("vegetation", "soil", "road", "metal")
    fake_classes: tuple[str, ...] = ()
    backgrounds: tuple[str, ...] = ("sand", "gravel")
    auxiliary: tuple[str, ...] = ("wood", "roof", "dry_vegetation", "aces", "cfi2017")
    test_unknown: tuple[str, ...] = ("paint", "char", "concrete", "colorchecker", "nist_cqs")

    def __post_init__(self):
        for name in ("known_classes", "fake_classes", "backgrounds", "auxiliary", "test_unknown"):
            object.__setattr__(self, name, tuple(str(v) for v in getattr(self, name)))
        for name in ("known_classes", "backgrounds"):
            bad = [c for c in getattr(self, name) if c not in EARTHLIB_CLASSES]
            if bad:
                raise ValueError(
                    f"{name} must be earthlib classes {list(EARTHLIB_CLASSES)}; got {bad}"
                )
        for name in ("auxiliary", "test_unknown"):
            bad = [c for c in getattr(self, name) if c not in CATEGORIES]
            if bad:
                raise ValueError(f"{name} must be categories of {list(CATEGORIES)}; got {bad}")
        if not self.known_classes or not self.test_unknown or not self.backgrounds:
            raise ValueError("a split needs known classes, backgrounds and test-unknown categories")
        if not set(self.fake_classes) <= set(self.known_classes):
            raise ValueError(f"fake_classes {self.fake_classes} must be among the known classes")
        known = set(self.known_classes) | set(self.backgrounds)
        groups = {
            "known/background": known,
            "auxiliary": set(self.auxiliary),
            "test_unknown": set(self.test_unknown),
        }
        names = list(groups)
        for i, a in enumerate(names):
            for b in names[i + 1 :]:
                shared = groups[a] & groups[b]
                if shared:
                    raise ValueError(
                        f"the {a} and {b} groups must be disjoint; both hold {sorted(shared)}"
                    )

    @property
    def class_names(self) -> list[str]:
        """``["background", *known_classes, *("fake_" + c for c in fake_classes)]``."""
        return ["background", *self.known_classes, *(f"fake_{c}" for c in self.fake_classes)]

    @classmethod
    def for_class_names(cls, class_names) -> OpenSetSplit:
        """The split for a trained segmenter's ``class_names`` (a bundle's): its classes are
        known, the twin's co-design backgrounds are background, and the remaining categories
        alternate between auxiliary and test-unknown (earthlib first, then colour-science)."""
        names = list(class_names)
        fakes = tuple(n[len("fake_") :] for n in names if n.startswith("fake_"))
        known = tuple(n for n in names[1:] if not n.startswith("fake_"))
        bad = [n for n in known if n not in EARTHLIB_CLASSES]
        if bad:
            raise ValueError(
                f"class names {bad} are not earthlib classes: the open-set split needs the "
                "material classes of the twin's scenes"
            )
        backgrounds = tuple(b for b in BACKGROUNDS if b not in known)
        rest = [c for c in CATEGORIES if c not in known and c not in backgrounds]
        earth = [c for c in rest if c in EARTHLIB_CLASSES]
        colour = [c for c in rest if c not in EARTHLIB_CLASSES]
        auxiliary = tuple(earth[0::2] + colour[0::2])
        test = tuple(earth[1::2] + colour[1::2])
        return cls(known, fakes, backgrounds, auxiliary, test)


@runtime_checkable
class SpectrumGenerator(Protocol):
    """A source of synthetic outlier reflectances (the GenIAS hook)."""

    def sample(self, count: int, rng: np.random.Generator) -> np.ndarray:
        """``(count, L)`` reflectances on the split's grid, unitless in [0, 1]."""


def _concatenate(libraries: list[SpectralLibrary], source: str) -> SpectralLibrary:
    grid = libraries[0].wavelengths_nm
    return SpectralLibrary(
        grid,
        np.concatenate([lib.reflectance for lib in libraries]),
        [n for lib in libraries for n in lib.names],
        [n for lib in libraries for n in lib.labels],
        source,
        np.any([lib.extrapolated for lib in libraries], axis=0),
    )


def category_library(
    categories, wavelengths_nm, max_per_class: int = 100, seed=0
) -> SpectralLibrary:
    """Spectra of ``categories`` (earthlib classes and colour-science set names), labelled by
    category, on ``wavelengths_nm`` ``(L,)`` nm (at most ``max_per_class`` per earthlib class)."""
    categories = list(categories)
    bad = [c for c in categories if c not in CATEGORIES]
    if bad:
        raise ValueError(f"unknown categories {bad}; choose from {list(CATEGORIES)}")
    parts = []
    earth = [c for c in categories if c in EARTHLIB_CLASSES]
    if earth:
        parts.append(load_earthlib(wavelengths_nm, earth, max_per_class=max_per_class, seed=seed))
    parts += [load_reflectances(c, wavelengths_nm) for c in categories if c not in EARTHLIB_CLASSES]
    if not parts:
        raise ValueError("no categories given")
    lib = _concatenate(parts, "; ".join(p.source for p in parts))
    lib.reflectance = np.clip(lib.reflectance, 0.0, 1.0)
    return lib


def mix_spectra(library: SpectralLibrary, count: int, rng: np.random.Generator) -> np.ndarray:
    """``(count, L)`` convex mixtures ``w a + (1 - w) b``, ``w ~ U(0.3, 0.7)``, of two spectra
    of different labels of ``library`` (any two when it holds one label)."""
    labels = np.asarray(library.labels)
    values = library.reflectance
    first = rng.integers(len(values), size=int(count))
    second = np.empty_like(first)
    for i, a in enumerate(first):
        others = np.flatnonzero(labels != labels[a])
        second[i] = rng.choice(others) if others.size else rng.integers(len(values))
    weight = rng.uniform(0.3, 0.7, size=(int(count), 1))
    return np.clip(weight * values[first] + (1 - weight) * values[second], 0.0, 1.0)


def perturb_spectra(
    spectra: np.ndarray,
    rng: np.random.Generator,
    strength: float = 0.3,
    correlation_bands: float = 6.0,
) -> np.ndarray:
    """``spectra (N, L) * (1 + strength * g)``, ``g`` a unit-variance Gaussian random field
    along wavelength with correlation ``correlation_bands`` bands; clipped to [0, 1]."""
    from scipy.ndimage import gaussian_filter1d

    spectra = np.asarray(spectra, dtype=np.float64)
    if spectra.ndim != 2:
        raise ValueError(f"spectra must be (N, L); got shape {spectra.shape}")
    noise = gaussian_filter1d(
        rng.standard_normal(spectra.shape), correlation_bands, axis=1, mode="nearest"
    )
    noise /= max(noise.std(), 1e-12)
    return np.clip(spectra * (1.0 + strength * noise), 0.0, 1.0)


def auxiliary_library(
    split: OpenSetSplit,
    wavelengths_nm,
    n_mixed: int = 60,
    n_perturbed: int = 60,
    generated=None,
    max_per_class: int = 100,
    seed=0,
) -> SpectralLibrary:
    """The auxiliary outlier pool: ``split.auxiliary`` categories plus ``"mixed"``,
    ``"perturbed"`` and ``"generated"`` spectra (see the module docstring).

    Parameters
    ----------
    generated : (N, L) array, or a :class:`SpectrumGenerator` (``N = 60`` samples drawn), or None.
    """
    rng = np.random.default_rng(seed)
    if not split.auxiliary and generated is None:
        raise ValueError("the split has no auxiliary categories and nothing was generated")
    parts = []
    if split.auxiliary:
        base = category_library(split.auxiliary, wavelengths_nm, max_per_class, seed=rng)
        parts.append(base)
        extra = []
        if n_mixed:
            extra.append(("mixed", mix_spectra(base, n_mixed, rng)))
        if n_perturbed:
            pick = base.reflectance[rng.integers(len(base), size=int(n_perturbed))]
            extra.append(("perturbed", perturb_spectra(pick, rng)))
        for label, values in extra:
            parts.append(
                SpectralLibrary(
                    base.wavelengths_nm,
                    values,
                    [f"{label}_{i}" for i in range(len(values))],
                    [label] * len(values),
                    f"{label} auxiliary spectra",
                )
            )
    if generated is not None:
        grid = np.asarray(wavelengths_nm, dtype=np.float64)
        values = (
            generated.sample(60, rng) if isinstance(generated, SpectrumGenerator) else generated
        )
        values = np.asarray(values, dtype=np.float64)
        if values.ndim != 2 or values.shape[1] != grid.size or len(values) == 0:
            raise ValueError(
                f"generated spectra must be (N >= 1, L={grid.size}); got {values.shape}"
            )
        values = np.clip(values, 0.0, 1.0)
        parts.append(
            SpectralLibrary(
                grid,
                values,
                [f"generated_{i}" for i in range(len(values))],
                ["generated"] * len(values),
                "generated outlier spectra",
            )
        )
    return _concatenate(parts, "open-set auxiliary outliers")


@dataclass
class OpenSetScenes:
    """``S`` scenes with known classes and planted unknown materials.

    Attributes
    ----------
    wavelengths_nm : (L,) nm.
    cubes : (S, H, W, L) float32 apparent reflectance (reflectance x shading).
    labels : (S, H, W) int64 class ids into ``class_names``; :data:`UNKNOWN` on planted ones.
    class_names : the known class names.
    categories : per scene, the categories planted as unknown.
    """

    wavelengths_nm: np.ndarray
    cubes: np.ndarray
    labels: np.ndarray
    class_names: list[str]
    categories: list[list[str]] = field(default_factory=list)

    @property
    def unknown(self) -> np.ndarray:
        """(S, H, W) bool, True on planted unknown-material pixels."""
        return self.labels == UNKNOWN

    def barcodes(
        self, encoder, seed: int = 0, noise: bool = True, batch_size: int = 8
    ) -> LabelledBarcodes:
        """Encode the cubes with ``encoder`` (``cube (B, L, H, W) -> (B, F, H, W)``, e.g. a
        bundle's encoder) under a fixed noise ``seed``; returns :class:`LabelledBarcodes`."""
        generator = torch.Generator().manual_seed(int(seed))
        out = []
        with torch.no_grad():
            for start in range(0, len(self.cubes), batch_size):
                cube = torch.as_tensor(self.cubes[start : start + batch_size]).permute(0, 3, 1, 2)
                try:
                    codes = encoder(cube, generator=generator, noise=noise)
                except TypeError:  # a plain callable of the cube
                    codes = encoder(cube)
                out.append(codes.float().cpu())
        return LabelledBarcodes(torch.cat(out), torch.as_tensor(self.labels, dtype=torch.long))


def encode_spectra(encoder, spectra, generator=None, noise: bool = True) -> torch.Tensor:
    """Barcodes ``(N, F)`` of point reflectances ``spectra (N, L)`` (unitless, [0, 1]) through
    ``encoder`` (a column image ``(1, L, N, 1)``, so the same camera model applies)."""
    values = torch.as_tensor(spectra, dtype=torch.float32)
    if values.ndim != 2:
        raise ValueError(f"spectra must be (N, L); got shape {tuple(values.shape)}")
    cube = values.T.reshape(1, values.shape[1], values.shape[0], 1)
    try:
        codes = encoder(cube, generator=generator, noise=noise)
    except TypeError:  # a plain callable of the cube
        codes = encoder(cube)
    return codes[0, :, :, 0].T.contiguous()


@dataclass
class LabelledBarcodes:
    """Barcodes ``(N, F, H, W)`` float32 with labels ``(N, H, W)`` int64 (:data:`UNKNOWN` on
    unknown pixels)."""

    barcodes: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self):
        if self.barcodes.ndim != 4 or self.labels.shape != (
            self.barcodes.shape[0],
            *self.barcodes.shape[2:],
        ):
            raise ValueError(
                "barcodes must be (N, F, H, W) and labels (N, H, W); got "
                f"{tuple(self.barcodes.shape)} and {tuple(self.labels.shape)}"
            )

    def __len__(self) -> int:
        return len(self.barcodes)

    @property
    def unknown(self) -> torch.Tensor:
        """(N, H, W) bool, True on unknown pixels."""
        return self.labels == UNKNOWN

    def batch(self, indices, device=None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(barcodes, labels)`` of the scenes at ``indices`` on ``device``."""
        index = torch.as_tensor(indices, dtype=torch.long)
        return self.barcodes[index].to(device), self.labels[index].to(device)


@dataclass
class OpenSetData:
    """What an open-set method trains and is judged on (all encoded by the same encoder).

    Attributes
    ----------
    train : ID scenes (no unknowns) for the segmenter.
    auxiliary : scenes with planted *auxiliary* outliers (label :data:`UNKNOWN`).
    heldout : ID scenes for the 95 %-TPR threshold (never trained on).
    test : scenes with planted *test-unknown* categories (never trained on).
    class_names : the segmenter's classes.
    split : the :class:`OpenSetSplit`.
    wavelengths_nm : (L,) nm.
    target : unlabelled barcodes ``(N, F, H, W)`` of another domain (adaptation), or None.
    encoder : the encoder that made the barcodes (``cube (B, L, H, W) -> (B, F, H, W)``), for
        methods that generate spectra of their own (ATOL); None when unknown.
    """

    train: LabelledBarcodes
    auxiliary: LabelledBarcodes
    heldout: LabelledBarcodes
    test: LabelledBarcodes
    class_names: list[str]
    split: OpenSetSplit
    wavelengths_nm: np.ndarray
    target: torch.Tensor | None = None
    encoder: object = None

    @property
    def n_channels(self) -> int:
        return int(self.train.barcodes.shape[1])


def make_openset_scenes(
    split: OpenSetSplit,
    wavelengths_nm,
    count: int,
    role: str = "id",
    shape=(32, 32),
    n_objects: int = 3,
    n_unknown: int = 1,
    seed=0,
    outliers: SpectralLibrary | None = None,
    max_per_class: int = 100,
    progress: bool = False,
) -> OpenSetScenes:
    """``count`` twin scenes of the split's known classes, with planted unknowns by ``role``.

    Parameters
    ----------
    role : ``"id"`` (none planted), ``"auxiliary"`` (from :func:`auxiliary_library` or
        ``outliers``) or ``"test"`` (from ``split.test_unknown``).
    shape : (H, W) pixels, each >= 8.
    n_objects : known objects per scene; ``n_unknown`` unknown objects painted on top.
    seed : int; scene ``k`` draws from ``default_rng([seed, k])``.
    outliers : the outlier pool for ``"auxiliary"``/``"test"`` (default built from the split).
    """
    from tqdm.auto import tqdm

    if role not in ("id", "auxiliary", "test"):
        raise ValueError(f"role must be 'id', 'auxiliary' or 'test'; got {role!r}")
    if int(count) < 1:
        raise ValueError(f"count must be >= 1 scene; got {count}")
    grid = np.asarray(wavelengths_nm, dtype=np.float64)
    height, width = (int(v) for v in shape)
    classes = list(split.known_classes)
    needed = sorted(set(classes) | set(split.backgrounds) | {"paint"})
    library = load_earthlib(grid, needed, max_per_class=max_per_class, seed=int(seed))
    if role != "id" and outliers is None:
        outliers = (
            auxiliary_library(split, grid, seed=int(seed))
            if role == "auxiliary"
            else category_library(split.test_unknown, grid, max_per_class, seed=int(seed))
        )
    names = split.class_names
    cubes = np.empty((int(count), height, width, grid.size), np.float32)
    labels = np.empty((int(count), height, width), np.int64)
    planted = []
    for k in tqdm(range(int(count)), desc=f"open-set {role} scenes", disable=not progress):
        rng = np.random.default_rng([int(seed), k])
        scene = make_scene(
            (height, width),
            grid,
            n_objects,
            classes,
            split.fake_classes,
            fake_fraction=0.3 if split.fake_classes else 0.0,
            background=str(rng.choice(split.backgrounds)),
            seed=rng,
            library=library,
        )
        canvas = {
            "reflectance": scene.reflectance,
            "shading": scene.shading,
            "class_map": scene.class_map.astype(np.int16),
            "instance_map": scene.instance_map,
            "fake_map": scene.fake_map,
        }
        here = []
        if role != "id":
            categories = sorted(set(outliers.labels))
            for j in range(int(n_unknown)):
                category = str(rng.choice(categories))
                size = tuple(int(v) for v in rng.uniform(0.25, 0.45, 2) * min(height, width) + 4)
                sprite = make_object(rng, outliers, category, size)
                top = int(rng.integers(0, max(height - size[0], 1)))
                left = int(rng.integers(0, max(width - size[1], 1)))
                paint(canvas, sprite, top, left, UNKNOWN, n_objects + 1 + j)
                here.append(category)
        planted.append(here)
        cubes[k] = canvas["reflectance"] * canvas["shading"][..., None]
        labels[k] = canvas["class_map"]
    return OpenSetScenes(grid, cubes, labels, names, planted)


def build_openset_data(
    encoder,
    wavelengths_nm,
    split: OpenSetSplit | None = None,
    counts: dict | None = None,
    shape=(32, 32),
    seed: int = 0,
    generated=None,
    noise: bool = True,
    progress: bool = False,
) -> OpenSetData:
    """Encode the four scene sets of an experiment (see :class:`OpenSetData`).

    Parameters
    ----------
    encoder : ``cube (B, L, H, W) -> barcodes (B, F, H, W)`` (e.g. ``bundle.encoder()``).
    wavelengths_nm : (L,) nm, the encoder's grid.
    counts : scenes per set, keys ``train``, ``auxiliary``, ``heldout``, ``test`` (defaults
        32, 16, 8, 8).
    generated : GenIAS hook for :func:`auxiliary_library`.
    seed : the four sets use disjoint scene seeds derived from it.
    """
    split = split or OpenSetSplit()
    sizes = {"train": 32, "auxiliary": 16, "heldout": 8, "test": 8, **(counts or {})}
    grid = np.asarray(wavelengths_nm, dtype=np.float64)
    roles = {"train": "id", "auxiliary": "auxiliary", "heldout": "id", "test": "test"}
    sets = {}
    for offset, (name, role) in enumerate(roles.items()):
        outliers = (
            auxiliary_library(split, grid, generated=generated, seed=seed)
            if role == "auxiliary"
            else None
        )
        scenes = make_openset_scenes(
            split,
            grid,
            sizes[name],
            role,
            shape,
            seed=seed * 10 + offset + 1,
            outliers=outliers,
            progress=progress,
        )
        sets[name] = scenes.barcodes(encoder, seed=seed * 10 + offset + 101, noise=noise)
    return OpenSetData(
        **sets, class_names=split.class_names, split=split, wavelengths_nm=grid, encoder=encoder
    )

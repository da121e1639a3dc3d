"""Real reflectance spectra for synthetic scenes, resampled onto a requested grid.

Sources (all ship inside PyPI wheels; nothing is downloaded at run time):

==============  ====  =========  =============================================================
library         N     range nm   source
==============  ====  =========  =============================================================
colorchecker    24    380-730    colour-science ``SDS_COLOURCHECKERS["BabelColor Average"]``
                                 (BabelColor 2012 average of 30 ColorChecker charts)
cfi2017         99    380-780    CIE 224:2017 colour fidelity index test samples (colour-science
                                 ``load_TCS_CIE2017``)
aces            190   380-780    rawtoaces v1 training spectra (AMPAS), colour-science
                                 ``read_training_data_rawtoaces_v1``
tcs1995         14    360-830    CIE 13.3-1995 test colour samples (colour-science ``SDS_TCS``)
nist_cqs        15    380-830    NIST CQS 9.0 samples, Davis & Ohno 2010 (``SDS_VS``)
earthlib        7261  400-2450   earthlib 1.1 (Anderson 2020): labelled field, lab and PROSAIL
                                 spectra of soil, vegetation, roofs, roads, paint, metal, wood,
                                 read from its ENVI ``spectra.sli`` without importing earthlib
==============  ====  =========  =============================================================

Outside a source's range, reflectance is held at its end value (``extrapolation="constant"``,
the colour-science default) and the affected bands are flagged in
:attr:`SpectralLibrary.extrapolated`. The colour-science sets end at 730-830 nm, so on the
204-band grid (to 1003 nm) their near-infrared is a flat guess: use earthlib where the NIR
matters (vegetation's red edge, for one).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np

from hyplex.optics.extras import MissingExtraError, find_extra
from hyplex.simulation.envi import read_spectral_library
from hyplex.simulation.grids import check_wavelengths, extrapolated_bands, hyplex_grid, resample

# Material classes of the scenes, as sets of earthlib LEVEL_3 labels (earthlib spectra.csv).
EARTHLIB_CLASSES: dict[str, tuple[str, ...]] = {
    "soil": ("soil", "dirt"),
    "sand": ("sand",),
    "gravel": ("gravel",),
    "vegetation": ("canopy",),
    "dry_vegetation": ("litter", "npv"),
    "wood": ("wood", "bark", "wood_shingle"),
    "road": ("road", "asphalt"),
    "concrete": ("sidewalk", "parking_lot", "driveway", "concrete_tile", "bridge"),
    "roof": ("comp_shingle", "tile"),
    "paint": ("paint",),
    "metal": ("metal", "manhole"),
    "char": ("char",),
    "glass": ("glass",),
}
COLOUR_LIBRARIES = ("colorchecker", "cfi2017", "aces", "tcs1995", "nist_cqs")


@dataclass
class SpectralLibrary:
    """Labelled reflectance spectra on one wavelength grid.

    Attributes
    ----------
    wavelengths_nm : numpy.ndarray, shape (L,)
    reflectance : numpy.ndarray, shape (N, L), float64, unitless (0-1, a few exceed 1 slightly)
    names : list of str, length N
        Sample names from the source.
    labels : list of str, length N
        Material class of each sample (a key of :data:`EARTHLIB_CLASSES` for earthlib; the
        library name for colour-science sets).
    source : str
        Citation of the data.
    extrapolated : numpy.ndarray of bool, shape (L,)
        Bands outside the source's measured range (values held constant there).
    """

    wavelengths_nm: np.ndarray
    reflectance: np.ndarray
    names: list[str]
    labels: list[str]
    source: str
    extrapolated: np.ndarray = field(default=None)

    def __post_init__(self):
        self.wavelengths_nm = check_wavelengths(self.wavelengths_nm)
        if self.reflectance.shape != (len(self.names), self.wavelengths_nm.size):
            raise ValueError(
                f"reflectance must be (N={len(self.names)}, L={self.wavelengths_nm.size}), "
                f"got {self.reflectance.shape}"
            )
        if self.extrapolated is None:
            self.extrapolated = np.zeros(self.wavelengths_nm.size, dtype=bool)

    def __len__(self) -> int:
        return len(self.names)

    def select(self, label: str) -> SpectralLibrary:
        """The samples whose label is ``label``; ValueError if there are none."""
        keep = [i for i, name in enumerate(self.labels) if name == label]
        if not keep:
            raise ValueError(
                f"no spectra labelled {label!r}; labels are {sorted(set(self.labels))}"
            )
        return SpectralLibrary(
            self.wavelengths_nm,
            self.reflectance[keep],
            [self.names[i] for i in keep],
            [self.labels[i] for i in keep],
            self.source,
            self.extrapolated.copy(),
        )

    def plot(self, ax=None, max_spectra: int = 30):
        """Plot up to ``max_spectra`` spectra against wavelength (nm); return ``ax``."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots()
        for row in self.reflectance[:max_spectra]:
            ax.plot(self.wavelengths_nm, row, lw=0.8)
        if self.extrapolated.any():
            wl = self.wavelengths_nm
            ax.fill_between(wl, 0, 1, where=self.extrapolated, color="0.9", label="extrapolated")
            ax.legend()
        ax.set(xlabel="wavelength (nm)", ylabel="reflectance", title=self.source.split(";")[0])
        return ax


def earthlib_data_dir() -> Path:
    """Folder holding earthlib's ``spectra.sli`` (found without importing earthlib)."""
    spec = find_extra("earthlib", feature="scenes from earthlib's labelled spectra")
    if not spec.submodule_search_locations:
        raise MissingExtraError(f"earthlib at {spec.origin} is not a package with data files")
    return Path(list(spec.submodule_search_locations)[0]) / "data"


@cache
def _earthlib_raw():
    folder = earthlib_data_dir()
    library = read_spectral_library(folder / "spectra.sli")
    with open(folder / "spectra.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    if len(rows) != len(library.names):
        raise ValueError(f"earthlib: {len(rows)} metadata rows for {len(library.names)} spectra")
    level3 = [row["LEVEL_3"] for row in rows]
    return library, level3


def load_earthlib(
    wavelengths_nm=None, classes=None, max_per_class: int | None = None, seed=0
) -> SpectralLibrary:
    """Labelled material spectra from earthlib, resampled onto ``wavelengths_nm``.

    Parameters
    ----------
    wavelengths_nm : array_like, shape (L,), optional
        Target grid in nm (default: :func:`~hyplex.simulation.grids.hyplex_grid`).
    classes : sequence of str, optional
        Keys of :data:`EARTHLIB_CLASSES` to keep (default: all).
    max_per_class : int, optional
        Keep at most this many spectra per class, drawn at random (soil alone has 4185).
    seed : int or numpy.random.Generator
        For the random draw.
    """
    grid = hyplex_grid() if wavelengths_nm is None else check_wavelengths(wavelengths_nm)
    classes = list(EARTHLIB_CLASSES) if classes is None else list(classes)
    unknown = [name for name in classes if name not in EARTHLIB_CLASSES]
    if unknown:
        raise ValueError(f"unknown classes {unknown}; choose from {list(EARTHLIB_CLASSES)}")
    raw, level3 = _earthlib_raw()
    rng = np.random.default_rng(seed)
    rows, labels = [], []
    for name in classes:
        members = [i for i, label in enumerate(level3) if label in EARTHLIB_CLASSES[name]]
        if max_per_class is not None and len(members) > max_per_class:
            members = sorted(rng.choice(members, size=max_per_class, replace=False).tolist())
        rows += members
        labels += [name] * len(members)
    low, high = raw.wavelengths_nm[0], raw.wavelengths_nm[-1]
    values = resample(raw.wavelengths_nm, raw.spectra[rows], grid, extrapolation="constant")
    return SpectralLibrary(
        grid,
        values,
        [raw.names[i] for i in rows],
        labels,
        "earthlib 1.1 (C. Anderson, 2020), spectra.sli; classes from LEVEL_3 labels",
        extrapolated_bands((low, high), grid),
    )


@cache
def _colour_raw(name: str):
    """(wavelengths nm, values (N, K), names, citation) of a colour-science reflectance set."""
    import colour

    if name == "colorchecker":
        sds = colour.SDS_COLOURCHECKERS["BabelColor Average"]
        multi = colour.colorimetry.sds_and_msds_to_msds(list(sds.values()))
        citation = "BabelColor ColorChecker average (2012), via colour-science"
    elif name == "cfi2017":
        from colour.quality.cfi2017 import load_TCS_CIE2017

        multi = load_TCS_CIE2017(colour.SpectralShape(380, 780, 5))
        citation = "CIE 224:2017 colour fidelity index test samples, via colour-science"
    elif name == "aces":
        from colour.characterisation import read_training_data_rawtoaces_v1

        multi = read_training_data_rawtoaces_v1()
        citation = "AMPAS rawtoaces v1 training spectra, via colour-science"
    elif name in ("tcs1995", "nist_cqs"):
        from colour.quality.datasets import SDS_TCS, SDS_VS

        sds = SDS_TCS["CIE 1995"] if name == "tcs1995" else SDS_VS["NIST CQS 9.0"]
        multi = colour.colorimetry.sds_and_msds_to_msds(list(sds.values()))
        citation = (
            "CIE 13.3-1995 test colour samples"
            if name == "tcs1995"
            else "NIST CQS 9.0 samples (Davis & Ohno 2010)"
        ) + ", via colour-science"
    else:
        raise ValueError(f"unknown library {name!r}; choose from {COLOUR_LIBRARIES}")
    values = np.asarray(multi.values, dtype=np.float64).T
    return np.asarray(multi.wavelengths, dtype=np.float64), values, list(multi.labels), citation


def load_reflectances(name: str, wavelengths_nm=None) -> SpectralLibrary:
    """A reflectance library by name (``"earthlib"`` or one of :data:`COLOUR_LIBRARIES`).

    Values are band averages on ``wavelengths_nm`` (default the 204-band Hyplex grid), held
    constant outside the measured range (see :attr:`SpectralLibrary.extrapolated`).
    """
    if name == "earthlib":
        return load_earthlib(wavelengths_nm)
    if name not in COLOUR_LIBRARIES:
        raise ValueError(
            f"unknown library {name!r}; choose from {('earthlib',) + COLOUR_LIBRARIES}"
        )
    grid = hyplex_grid() if wavelengths_nm is None else check_wavelengths(wavelengths_nm)
    source_nm, values, names, citation = _colour_raw(name)
    return SpectralLibrary(
        grid,
        resample(source_nm, values, grid, extrapolation="constant"),
        list(names),
        [name] * len(names),
        citation,
        extrapolated_bands((source_nm[0], source_nm[-1]), grid),
    )

"""Reader for the FVgNET real/fake vegetation dataset in its on-disk layout.

FVgNET (Makarenko et al., the Hyplex CVPR 2022 paper's dataset) was captured with a Specim IQ
(204 bands, 397-1003 nm). A local copy is laid out as::

    root/
      normalizedHSI/<name>.h5       one reflectance-normalised cube per file
      labeledDataNPY/<name>.npy     per-pixel class labels (H, W), integer
      data.csv                      one row per sample (labels, folders, frames, ...)

The dataset is not redistributed here and nothing is downloaded: point :class:`FVgNetDataset`
at a copy a user has. Since the HDF5 key names vary between releases, the cube is the largest
3-D dataset of each file (or ``dataset_key``), its spectral axis is the one whose length
matches the wavelengths (a 1-D dataset or attribute named like ``wavelength*``, else the
204-band Specim grid), moved last.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from hyplex.simulation.grids import check_wavelengths, hyplex_grid

HSI_FOLDER, LABEL_FOLDER, TABLE = "normalizedHSI", "labeledDataNPY", "data.csv"


@dataclass
class FVgNetSample:
    """One FVgNET sample.

    Attributes
    ----------
    name : str
        File stem shared by the cube and its labels.
    cube : numpy.ndarray, (H, W, L) float32
        Normalised reflectance.
    wavelengths_nm : numpy.ndarray, (L,)
    labels : numpy.ndarray or None, (H, W) int
    metadata : list of dict
        Rows of data.csv that name this sample (any field equal to the stem, path or not).
    """

    name: str
    cube: np.ndarray
    wavelengths_nm: np.ndarray
    labels: np.ndarray | None
    metadata: list[dict] = field(default_factory=list)


def _largest_cube(file: h5py.File, key: str | None) -> h5py.Dataset:
    if key is not None:
        if key not in file:
            raise KeyError(f"{file.filename}: no dataset {key!r}; it has {list(file)}")
        return file[key]
    found: list[h5py.Dataset] = []
    file.visititems(lambda _, item: found.append(item) if isinstance(item, h5py.Dataset) else None)
    cubes = [d for d in found if d.ndim == 3]
    if not cubes:
        raise ValueError(f"{file.filename}: no 3-D dataset (hyperspectral cube) found")
    return max(cubes, key=lambda d: d.size)


def _wavelengths(file: h5py.File, cube: h5py.Dataset) -> np.ndarray | None:
    for holder in (cube, file):
        for name, value in holder.attrs.items():
            if name.lower().startswith(("wavelength", "wl")) and np.ndim(value) == 1:
                return np.asarray(value, dtype=np.float64)
    for name in file:
        item = file[name]
        if isinstance(item, h5py.Dataset) and item.ndim == 1:
            if name.lower().startswith(("wavelength", "wl", "band")):
                return item[()].astype(np.float64)
    return None


class FVgNetDataset:
    """Index of a local FVgNET copy; ``dataset[i]`` or ``dataset["name"]`` loads a sample.

    Parameters
    ----------
    root : path
        Folder holding ``normalizedHSI/``, ``labeledDataNPY/`` and ``data.csv``.
    dataset_key : str, optional
        HDF5 dataset of the cube (default: the largest 3-D dataset).
    wavelengths_nm : array_like, optional
        Grid to assume when the files carry none (default: 204 bands, 397-1003 nm).

    Raises
    ------
    FileNotFoundError
        If ``root/normalizedHSI`` is missing or holds no ``.h5`` file.
    """

    def __init__(self, root, dataset_key: str | None = None, wavelengths_nm=None):
        self.root = Path(root)
        folder = self.root / HSI_FOLDER
        self.files = sorted(folder.glob("*.h5")) if folder.is_dir() else []
        if not self.files:
            raise FileNotFoundError(
                f"no FVgNET cubes: expected {folder}/*.h5 (layout: {HSI_FOLDER}/*.h5, "
                f"{LABEL_FOLDER}/*.npy, {TABLE})"
            )
        self.dataset_key = dataset_key
        self.default_wavelengths = (
            hyplex_grid() if wavelengths_nm is None else check_wavelengths(wavelengths_nm)
        )
        table = self.root / TABLE
        self.table: list[dict] = []
        if table.is_file():
            with open(table, newline="") as handle:
                self.table = list(csv.DictReader(handle))

    @property
    def names(self) -> list[str]:
        return [path.stem for path in self.files]

    def __len__(self) -> int:
        return len(self.files)

    def metadata(self, name: str) -> list[dict]:
        """Rows of data.csv with a field naming ``name`` (as stem, file name or path)."""

        def names_it(value: str) -> bool:
            value = value.strip().rstrip("/")
            return bool(value) and (value == name or Path(value).stem == name)

        return [row for row in self.table if any(names_it(str(v)) for v in row.values())]

    def __getitem__(self, item) -> FVgNetSample:
        if isinstance(item, str):
            if item not in self.names:
                raise KeyError(f"no sample {item!r}; e.g. {self.names[:3]}")
            item = self.names.index(item)
        path = self.files[item]
        with h5py.File(path, "r") as file:
            dataset = _largest_cube(file, self.dataset_key)
            cube = dataset[()].astype(np.float32)
            wavelengths = _wavelengths(file, dataset)
        wavelengths = self.default_wavelengths if wavelengths is None else wavelengths
        axes = [axis for axis in (2, 0, 1) if cube.shape[axis] == wavelengths.size]
        if not axes:
            raise ValueError(
                f"{path}: cube shape {cube.shape} has no axis of {wavelengths.size} bands; pass "
                "wavelengths_nm matching the data"
            )
        cube = np.ascontiguousarray(np.moveaxis(cube, axes[0], -1))
        labels = None
        label_path = self.root / LABEL_FOLDER / f"{path.stem}.npy"
        if label_path.is_file():
            labels = np.load(label_path, allow_pickle=False)
            if labels.shape != cube.shape[:2]:
                raise ValueError(
                    f"{label_path}: labels {labels.shape} do not match the cube's {cube.shape[:2]}"
                )
        return FVgNetSample(
            path.stem, cube, check_wavelengths(wavelengths), labels, self.metadata(path.stem)
        )

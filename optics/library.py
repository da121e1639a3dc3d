"""Response libraries: many unit-cell designs and their spectra, stored in HDF5.

A library holds, for every design ``i``: the shape parameters ``params_nm[i]`` of one
parametric family (:data:`hyplex.optics.geometry.SHAPES`), the pillar ``thickness_nm[i]``,
the transmittance ``T[i]`` ``(L, 2)`` for TE and TM and, optionally, the zeroth-order Jones
matrix ``t[i]`` ``(L, 2, 2)`` and a free-form fill grid ``density[i]`` ``(Nx, Ny)``. The period,
materials, wavelengths and solver settings are shared by all designs. Designs are drawn by
:mod:`hyplex.optics.library_spec` and solved and committed by :mod:`hyplex.optics.library_build`.

File layout (format ``hyplex-response-library``, version 2; version 1 files, which have no
accuracy record, still read, as "accuracy unknown")::

    /                       attrs: format, format_version, hyplex_version, torch_version,
                                   created_utc, family, parameter_names, period_nm, material,
                                   substrate, superstrate, solver (JSON), generation (JSON)
    /wavelengths_nm   (L,)          float64, attrs units="nm"
    /params_nm        (N, P)        float64, the family's parameters in nm
    /thickness_nm     (N,)          float64
    /T                (N, L, 2)     float64, total transmittance [TE, TM]; NaN until done
    /t                (N, L, 2, 2)  complex128 Jones [out, in] in the (s, p) basis (optional)
    /density          (N, Nx, Ny)   float32 free-form fill fractions (optional)
    /done             (N,)          uint8, 1 once the design's spectra are written
    /solve_seconds    (n_chunks,)   float64, solver wall time per chunk (NaN until done)
    /accuracy         group, optional (version 2): the library's error against spectra
                      re-solved at the converged order on a seeded sample of its designs
                      (:mod:`hyplex.optics.library_accuracy`); attrs ``summary`` (JSON)
    /convergence_probe group, optional (version 2): the order ladder that chose the library's
                      order or the reference order (:mod:`hyplex.optics.library_probe`)

Crash safety. Every dataset is allocated in full, contiguous, when the file is created, so
filling in results only overwrites raw bytes at fixed offsets and never touches HDF5 metadata:
a process killed mid-write cannot corrupt the file's structure (tested: a commit changes only
bytes inside dataset storage). A chunk is committed by writing its spectra, flushing them to
disk (``fsync``), and only then setting its ``done`` flags (and flushing again), so every
design flagged done has complete spectra. Growing a library (more designs)
writes a new file beside the old one and renames it over the old one atomically.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import h5py
import numpy as np
import torch

from .atomic_io import atomic_path
from .library_records import RECORD_NAMES, Record, read_record, write_record

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "READABLE_VERSIONS",
    "PRECISIONS",
    "LibraryError",
    "SolverSettings",
    "ResponseLibrary",
    "read_library",
    "write_library",
    "read_metadata",
    "check_same_grid",
    "open_library",
    "LibraryWarning",
    "nonfinite_designs",
    "NONFINITE_POLICIES",
    "Record",
    "read_records",
    "update_records",
]

FORMAT = "hyplex-response-library"
FORMAT_VERSION = 2
#: Versions this hyplex reads: 1 (no accuracy record: "accuracy unknown") and 2.
READABLE_VERSIONS = (1, 2)
SOLVER_NAME = "hyplex.optics.rcwa"
_STRING = h5py.string_dtype()


class LibraryError(ValueError):
    """A library file is missing, corrupt, foreign, or does not match what was asked for."""


class LibraryWarning(UserWarning):
    """A library file is readable but holds suspect data (NaN or inf in finished designs)."""


#: What :func:`read_library` does with finished designs whose arrays hold NaN or inf.
NONFINITE_POLICIES = ("warn", "raise", "drop", "keep")


#: Floating-point precisions of the RCWA a library may be solved in.
PRECISIONS = ("complex128", "complex64")


@dataclass(frozen=True)
class SolverSettings:
    """RCWA settings shared by every design of a library (see :func:`hyplex.optics.rcwa.solve`).

    Attributes
    ----------
    harmonics : ``(M, N)``, orders ``-M..M`` along x and ``-N..N`` along y.
    factorization : one of :data:`hyplex.optics.rcwa.FACTORIZATIONS`: ``"vector"`` (the
        default: the normal-vector rule, whose grey edge pixels are averaged anisotropically,
        so its spectra converge with the grid as well as with the order), ``"jones"``,
        ``"normal"``, ``"li"``, ``"laurent"``. Files keep the rule they were built with.
    grid : ``(Nx, Ny)`` pixels of the rendered fill-fraction pattern.
    angle_deg, azimuth_deg : incidence in the superstrate, degrees.
    precision : ``"complex128"`` (default) or ``"complex64"`` (about twice as fast; on three
        c-Si rectangles, 18 wavelengths, M = 4 and 6, it differed from complex128 by at most
        1e-4 in T). Files written before this field read as ``"complex128"``, which is what
        they were solved in.
    """

    harmonics: tuple[int, int] = (2, 2)
    factorization: str = "vector"
    grid: tuple[int, int] = (64, 64)
    angle_deg: float = 0.0
    azimuth_deg: float = 0.0
    precision: str = "complex128"

    def __post_init__(self):
        from .rcwa import FACTORIZATIONS

        harmonics = tuple(int(v) for v in np.broadcast_to(self.harmonics, (2,)))
        grid = tuple(int(v) for v in np.broadcast_to(self.grid, (2,)))
        if min(harmonics) < 0:
            raise ValueError(f"harmonics must be >= 0, got {self.harmonics}")
        if min(grid) < 1:
            raise ValueError(f"grid must be positive (Nx, Ny) pixels, got {self.grid}")
        if self.factorization not in FACTORIZATIONS:
            raise ValueError(
                f"factorization must be one of {FACTORIZATIONS}, got {self.factorization!r}"
            )
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if not 0 <= float(self.angle_deg) < 90:
            raise ValueError(f"angle_deg must lie in [0, 90) degrees, got {self.angle_deg}")
        object.__setattr__(self, "harmonics", harmonics)
        object.__setattr__(self, "grid", grid)
        object.__setattr__(self, "angle_deg", float(self.angle_deg))
        object.__setattr__(self, "azimuth_deg", float(self.azimuth_deg))

    @property
    def dtype(self) -> torch.dtype:
        """The torch complex dtype of :attr:`precision`."""
        return getattr(torch, self.precision)

    def to_dict(self) -> dict:
        """JSON-ready fields (lists for the pairs)."""
        values = asdict(self)
        values["harmonics"], values["grid"] = list(self.harmonics), list(self.grid)
        return values

    def to_json(self) -> str:
        return json.dumps({"name": SOLVER_NAME, **asdict(self)}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | dict) -> SolverSettings:
        """Settings from :meth:`to_json` text (or its dict). Keys a file written before a field
        existed lack get that field's historical value (``precision="complex128"``)."""
        values = dict(json.loads(text)) if isinstance(text, str | bytes) else dict(text)
        values.pop("name", None)
        unknown = set(values) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown solver settings {sorted(unknown)}")
        return cls(**values)


@dataclass
class ResponseLibrary:
    """An in-memory response library (see the module docstring for the stored layout).

    Attributes
    ----------
    wavelengths_nm : ``(L,)`` vacuum wavelengths, nm, strictly increasing.
    family : shape family name (a key of :data:`hyplex.optics.geometry.SHAPES`, or
        ``"freeform"`` for density grids).
    parameter_names : ``(P,)`` names of the columns of ``params_nm``.
    params_nm : ``(N, P)`` shape parameters in nm.
    thickness_nm : ``(N,)`` pillar thickness in nm.
    period_nm : square lattice period, nm.
    material, substrate, superstrate : material names
        (:func:`hyplex.optics.materials.get_material`); the pillar is ``material``
        surrounded by ``superstrate``.
    solver : the RCWA settings.
    T : ``(N, L, 2)`` total transmittance for TE and TM incidence; NaN where not ``done``.
    done : ``(N,)`` bool, designs whose spectra are computed.
    t : ``(N, L, 2, 2)`` complex zeroth-order Jones matrices, or None.
    density : ``(N, Nx, Ny)`` float32 fill fractions of free-form designs, or None.
    generation : how the designs were drawn (a :class:`~hyplex.optics.library_build.LibrarySpec`
        as a dict), or None for a library assembled by hand.
    provenance : hyplex and torch versions and creation time (filled in when written).
    """

    wavelengths_nm: np.ndarray
    family: str
    parameter_names: tuple[str, ...]
    params_nm: np.ndarray
    thickness_nm: np.ndarray
    period_nm: float
    material: str
    substrate: str
    superstrate: str
    solver: SolverSettings
    T: np.ndarray  # noqa: N815 - physics notation
    done: np.ndarray
    t: np.ndarray | None = None
    density: np.ndarray | None = None
    generation: dict | None = None
    provenance: dict = field(default_factory=dict)

    def __post_init__(self):
        self.wavelengths_nm = np.asarray(self.wavelengths_nm, dtype=np.float64)
        self.parameter_names = tuple(str(n) for n in self.parameter_names)
        self.params_nm = np.asarray(self.params_nm, dtype=np.float64)
        self.thickness_nm = np.asarray(self.thickness_nm, dtype=np.float64)
        self.T = np.asarray(self.T, dtype=np.float64)
        self.done = np.asarray(self.done, dtype=bool)
        self.period_nm = float(self.period_nm)
        _check_consistent(self, "ResponseLibrary")

    def __len__(self) -> int:
        return self.thickness_nm.shape[0]

    def completed(self) -> ResponseLibrary:
        """The designs whose spectra are computed (``done``), as a new library."""
        return self.subset(np.flatnonzero(self.done))

    def subset(self, indices) -> ResponseLibrary:
        """The designs at ``indices`` (int array or bool mask ``(N,)``), as a new library."""
        index = np.asarray(indices)
        pick = {}
        for name in ("params_nm", "thickness_nm", "T", "done", "t", "density"):
            value = getattr(self, name)
            pick[name] = None if value is None else value[index]
        return replace(self, **pick)


# --------------------------------------------------------------------------- validation


def _check_consistent(library: ResponseLibrary, where: str) -> None:
    wl = library.wavelengths_nm
    if wl.ndim != 1 or wl.size < 1 or not np.isfinite(wl).all() or (wl <= 0).any():
        raise LibraryError(f"{where}: wavelengths_nm must be a 1-D array of positive nm")
    if wl.size > 1 and (np.diff(wl) <= 0).any():
        raise LibraryError(f"{where}: wavelengths_nm must be strictly increasing")
    n, n_wl, n_par = library.thickness_nm.shape[0], wl.size, len(library.parameter_names)
    expected = {
        "params_nm": (n, n_par),
        "thickness_nm": (n,),
        "T": (n, n_wl, 2),
        "done": (n,),
        "t": (n, n_wl, 2, 2),
    }
    for name, shape in expected.items():
        value = getattr(library, name)
        if value is not None and tuple(value.shape) != shape:
            raise LibraryError(
                f"{where}: {name} has shape {tuple(value.shape)}, expected {shape} "
                f"(N={n} designs, L={n_wl} wavelengths, P={n_par} parameters)"
            )
    if library.density is not None and (library.density.ndim != 3 or len(library.density) != n):
        raise LibraryError(
            f"{where}: density must have shape (N={n}, Nx, Ny), got {library.density.shape}"
        )
    if not (math.isfinite(library.period_nm) and library.period_nm > 0):
        raise LibraryError(f"{where}: period_nm must be positive, got {library.period_nm}")


def check_same_grid(expected_nm, actual_nm, what: str = "library") -> None:
    """Raise :class:`LibraryError` unless two wavelength grids (nm) are identical.

    Spectra on different grids cannot be mixed or compared element-wise; resample first.
    """
    expected = np.asarray(expected_nm, dtype=np.float64).reshape(-1)
    actual = np.asarray(actual_nm, dtype=np.float64).reshape(-1)
    if expected.shape == actual.shape and np.array_equal(expected, actual):
        return
    raise LibraryError(
        f"mismatched wavelength grids: {what} has {actual.size} wavelengths "
        f"{_describe_grid(actual)}, expected {expected.size} {_describe_grid(expected)}"
    )


def _describe_grid(wl: np.ndarray) -> str:
    if wl.size == 0:
        return "(empty)"
    return f"{wl[0]:g}-{wl[-1]:g} nm"


# --------------------------------------------------------------------------- reading


def open_library(path, mode: str = "r", locking: bool = True) -> h5py.File:
    """Open a library file with h5py after checking its format; raises :class:`LibraryError`."""
    handle = _open(path, mode, locking)
    try:
        _check_format(handle, path)
    except LibraryError:
        handle.close()
        raise
    return handle


def _open(path, mode: str = "r", locking: bool = True) -> h5py.File:
    path = Path(path)
    if not path.exists():
        raise LibraryError(f"{path}: no such library file")
    try:
        return h5py.File(path, mode, locking=locking)
    except OSError as error:
        raise LibraryError(
            f"{path}: not a readable HDF5 file (corrupt, truncated, or open for writing "
            f"by another process): {error}"
        ) from None


def _check_format(handle: h5py.File, path) -> None:
    found = handle.attrs.get("format")
    if isinstance(found, bytes):
        found = found.decode()
    if found != FORMAT:
        raise LibraryError(
            f"{path}: an HDF5 file but not a hyplex response library (root attribute "
            f"format={found!r}, expected {FORMAT!r}); top-level items: {sorted(handle)[:8]}"
        )
    file_version = int(handle.attrs.get("format_version", -1))
    if file_version not in READABLE_VERSIONS:
        raise LibraryError(
            f"{path}: library format_version {file_version}; this hyplex reads versions "
            f"{', '.join(map(str, READABLE_VERSIONS))}"
        )
    for name in ("wavelengths_nm", "params_nm", "thickness_nm", "T", "done", "solve_seconds"):
        if name not in handle:
            raise LibraryError(f"{path}: library is missing the dataset /{name} (corrupt file)")


def read_metadata(path, locking: bool = True) -> dict:
    """The library's shared description without the per-design arrays.

    Returns a dict with ``family, parameter_names, period_nm, material, substrate,
    superstrate, solver`` (:class:`SolverSettings`), ``wavelengths_nm`` ``(L,)``,
    ``generation`` (dict or None), ``provenance``, ``count`` (N), ``done`` (number of
    computed designs), ``has_jones``, ``has_density``, ``solve_seconds`` (total) and
    ``nonfinite`` (int array: the finished designs whose spectra, Jones matrices, parameters
    or thickness hold NaN or inf; a build never commits those, so they mean a corrupt or
    hand-made file), ``format_version``, and the summaries (dicts) of the records
    ``accuracy`` and ``convergence_probe``, None where the file has none: a version 1 file
    (or one never estimated) has ``accuracy`` None, "accuracy unknown".
    ``locking=False`` reads a library that a build is still writing.
    """
    with open_library(path, "r", locking) as handle:
        done = handle["done"][()].astype(bool)
        records = {}
        for name in RECORD_NAMES:
            record = read_record(handle, name, arrays=False)
            records[name] = None if record is None else record.summary
        return (
            _metadata(handle, path)
            | {
                "count": int(done.shape[0]),
                "done": int(np.count_nonzero(done)),
                "has_jones": "t" in handle,
                "has_density": "density" in handle,
                "solve_seconds": float(np.nansum(handle["solve_seconds"][()])),
                "nonfinite": _scan_nonfinite(handle, done),
                "format_version": int(handle.attrs["format_version"]),
            }
            | records
        )


def read_records(path, locking: bool = True) -> dict[str, Record | None]:
    """Every record of a library file (summary and arrays), None for those it lacks."""
    with open_library(path, "r", locking) as handle:
        return {name: read_record(handle, name) for name in RECORD_NAMES}


def update_records(path, records: dict[str, Record | None]) -> Path:
    """Store (or, for a value None, delete) records of an existing library, atomically.

    The file is copied beside itself, the records are written into the copy, which becomes
    format version 2, and the copy is renamed over the original (:func:`~.atomic_io.atomic_path`):
    a crash leaves the old file whole. Opening the original with HDF5 file locking refuses a
    file that a build is writing (:class:`LibraryError`); do not start a build on it before
    this returns.
    """
    import shutil

    path = Path(path)
    for name in records:
        if name not in RECORD_NAMES:
            raise ValueError(f"record name must be one of {RECORD_NAMES}, got {name!r}")
    with open_library(path, "r", locking=True):
        pass  # format check, and no writer holds it now
    with atomic_path(path) as partial:
        shutil.copyfile(path, partial)
        with h5py.File(partial, "r+") as handle:
            for name, record in records.items():
                if record is None:
                    if name in handle:
                        del handle[name]
                else:
                    write_record(handle, name, record)
            handle.attrs["format_version"] = FORMAT_VERSION
    return path


_SCAN_ROWS = 1 << 15  # designs read at a time when scanning a file for NaN/inf


def _scan_nonfinite(handle: h5py.File, done: np.ndarray) -> np.ndarray:
    """Indices of finished designs with NaN/inf, read a block of designs at a time."""
    found = []
    for start in range(0, done.size, _SCAN_ROWS):
        stop = min(start + _SCAN_ROWS, done.size)
        arrays = {name: handle[name][start:stop] for name in _PER_DESIGN if name in handle}
        bad = _nonfinite_rows(arrays) & done[start:stop]
        found.append(start + np.flatnonzero(bad))
    return np.concatenate(found) if found else np.zeros(0, dtype=np.int64)


_PER_DESIGN = ("params_nm", "thickness_nm", "T", "t")


def _nonfinite_rows(arrays: dict) -> np.ndarray:
    rows = None
    for value in arrays.values():
        if value is None:
            continue
        value = np.asarray(value)
        bad = ~np.isfinite(value.reshape(value.shape[0], -1)).all(axis=1)
        rows = bad if rows is None else rows | bad
    return rows


def nonfinite_designs(library: ResponseLibrary) -> np.ndarray:
    """Indices of the finished (``done``) designs whose ``T``, ``t``, ``params_nm`` or
    ``thickness_nm`` hold NaN or inf. Designs not done are NaN by design and not counted."""
    rows = _nonfinite_rows({name: getattr(library, name) for name in _PER_DESIGN})
    return np.flatnonzero(rows & library.done)


def _describe_indices(indices: np.ndarray, limit: int = 10) -> str:
    shown = ", ".join(str(int(i)) for i in indices[:limit])
    return shown + (f", ... ({indices.size - limit} more)" if indices.size > limit else "")


def _metadata(handle: h5py.File, path) -> dict:
    attrs = handle.attrs
    try:
        generation = json.loads(attrs["generation"]) if "generation" in attrs else None
        meta = {
            "family": str(attrs["family"]),
            "parameter_names": tuple(str(n) for n in attrs["parameter_names"]),
            "period_nm": float(attrs["period_nm"]),
            "material": str(attrs["material"]),
            "substrate": str(attrs["substrate"]),
            "superstrate": str(attrs["superstrate"]),
            "solver": SolverSettings.from_json(attrs["solver"]),
            "wavelengths_nm": handle["wavelengths_nm"][()],
            "generation": generation,
            "provenance": {
                key: str(attrs[key])
                for key in ("hyplex_version", "torch_version", "created_utc")
                if key in attrs
            },
        }
    except (KeyError, TypeError, ValueError) as error:
        raise LibraryError(f"{path}: library metadata is incomplete or corrupt: {error}") from None
    units = handle["wavelengths_nm"].attrs.get("units", "")
    if str(units) != "nm":
        raise LibraryError(f"{path}: /wavelengths_nm has units {units!r}, expected 'nm'")
    return meta


def read_library(path, locking: bool = True, nonfinite: str = "warn") -> ResponseLibrary:
    """Load a whole library file into memory (designs not yet computed have ``done=False``).

    ``locking=False`` reads a library that a build is still writing (its finished designs).

    ``nonfinite`` says what to do with finished designs whose arrays hold NaN or inf (see
    :func:`nonfinite_designs`; a build never writes those): ``"warn"`` (default) loads them
    and issues a :class:`LibraryWarning` naming them, ``"raise"`` refuses the file,
    ``"drop"`` marks them not done (``done=False``, ``T`` NaN, kept in place so indices
    still match the file; :meth:`ResponseLibrary.completed` leaves them out), ``"keep"``
    loads them silently.

    Raises
    ------
    LibraryError
        If the file is missing, not HDF5, not a hyplex response library, of another format
        version, or its datasets have inconsistent shapes; with ``nonfinite="raise"``, if a
        finished design holds NaN or inf.
    """
    if nonfinite not in NONFINITE_POLICIES:
        raise ValueError(f"nonfinite must be one of {NONFINITE_POLICIES}, got {nonfinite!r}")
    library = _read_library(path, locking)
    bad = nonfinite_designs(library) if nonfinite != "keep" else np.zeros(0, dtype=np.int64)
    if bad.size == 0:
        return library
    what = f"{path}: {bad.size} finished designs hold NaN or inf: {_describe_indices(bad)}"
    if nonfinite == "raise":
        raise LibraryError(what + " (rebuild them, or read with nonfinite='drop')")
    if nonfinite == "warn":
        import warnings

        warnings.warn(what, LibraryWarning, stacklevel=2)
        return library
    library.done[bad] = False
    library.T[bad] = np.nan
    if library.t is not None:
        library.t[bad] = np.nan
    return library


def _read_library(path, locking: bool = True) -> ResponseLibrary:
    with open_library(path, "r", locking) as handle:
        meta = _metadata(handle, path)
        # done first: a design flagged done has its spectra on disk already (see LibraryWriter),
        # so reading a library while a build writes it never yields half-written spectra.
        arrays = {name: handle[name][()] for name in ("done", "params_nm", "thickness_nm", "T")}
        for name in ("t", "density"):
            arrays[name] = handle[name][()] if name in handle else None
    provenance = meta.pop("provenance")
    return ResponseLibrary(**meta, **arrays, provenance=provenance)


# --------------------------------------------------------------------------- writing


def _provenance() -> dict:
    try:
        hyplex_version = version("hyplex")
    except PackageNotFoundError:  # a source tree that is not installed
        hyplex_version = "0.0.0+unknown"
    return {
        "hyplex_version": hyplex_version,
        "torch_version": str(torch.__version__),
        "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def write_library(
    path, library: ResponseLibrary, chunk_count: int = 1, records: dict | None = None
) -> Path:
    """Write ``library`` to a new file at ``path`` atomically (:func:`~.atomic_io.atomic_path`).

    The stored arrays round-trip exactly through :func:`read_library`. ``chunk_count`` sizes
    the per-chunk ``/solve_seconds`` record of a build. ``records`` (name -> :class:`Record`)
    are stored beside the designs (:mod:`hyplex.optics.library_records`). Returns the path.
    """
    _check_consistent(library, "write_library")
    path = Path(path)
    provenance = library.provenance or _provenance()
    # a unique, fsynced temporary renamed over the target (two writers never share one)
    with atomic_path(path) as partial, h5py.File(partial, "w") as handle:
        attrs = handle.attrs
        attrs["format"] = FORMAT
        attrs["format_version"] = FORMAT_VERSION
        for key, value in provenance.items():
            attrs[key] = str(value)
        attrs["family"] = library.family
        attrs.create("parameter_names", list(library.parameter_names), dtype=_STRING)
        attrs["period_nm"] = library.period_nm
        attrs["material"] = library.material
        attrs["substrate"] = library.substrate
        attrs["superstrate"] = library.superstrate
        attrs["solver"] = library.solver.to_json()
        if library.generation is not None:
            attrs["generation"] = json.dumps(library.generation, sort_keys=True)
        _dataset(handle, "wavelengths_nm", library.wavelengths_nm, units="nm")
        _dataset(handle, "params_nm", library.params_nm, units="nm")
        handle["params_nm"].attrs.create("columns", list(library.parameter_names), dtype=_STRING)
        _dataset(handle, "thickness_nm", library.thickness_nm, units="nm")
        _dataset(handle, "T", library.T, units="1", axes="design, wavelength, [TE, TM]")
        if library.t is not None:
            jones = np.asarray(library.t, dtype=np.complex128)
            _dataset(handle, "t", jones, units="1", axes="design, wavelength, out, in (s, p)")
        if library.density is not None:
            density = np.asarray(library.density, dtype=np.float32)
            _dataset(handle, "density", density, units="1", axes="design, x, y")
        _dataset(handle, "done", library.done.astype(np.uint8))
        _dataset(handle, "solve_seconds", np.full(max(1, chunk_count), np.nan), units="s")
        for name, record in (records or {}).items():
            if record is not None:
                write_record(handle, name, record)
    return path


def _dataset(handle: h5py.File, name: str, data: np.ndarray, **attrs) -> None:
    # Contiguous and written in full now: later writes never allocate (see module docstring).
    dataset = handle.create_dataset(name, data=data, track_times=False)
    for key, value in attrs.items():
        dataset.attrs[key] = value

"""FDTD reference solver: MIT Meep, run in a subprocess of the system Python.

The differentiable RCWA (:mod:`hyplex.optics.rcwa`) is trusted only where an independent
full-wave method agrees with it. This module takes the RCWA's own unit-cell description (a
list of :class:`~hyplex.optics.rcwa.Layer`, the period, the superstrate and substrate) and
computes the transmittance and reflectance spectra with Meep (Oskooi et al., Comput. Phys.
Commun. 181, 687 (2010)).

How Meep is reached
-------------------
Meep comes from Debian (``apt-get install python3-meep python3-matplotlib python3-scipy``)
for the system interpreter ``/usr/bin/python3`` and its numpy 1.24. Each job runs as
``/usr/bin/python3 _meep_worker.py job.json result.npz`` (override the interpreter with
``HYPLEX_MEEP_PYTHON``). The project's venv keeps its own numpy and torch, and Meep's
process-wide flush-to-zero mode never reaches this process.

The simulation (see ``_meep_worker.py`` for the cell diagrams)
---------------------------------------------------------------
- One period, Bloch-periodic in the plane, PML along the propagation axis. The cell is the
  cheapest exact one (``FDTDSettings.dimensions``, default automatic): an unpatterned stack at
  normal incidence runs in 1-D, a structure uniform along y (a 1-D grating, or a film at oblique
  incidence) in 2-D, anything else in 3-D.
- A planar Ex (TM here) or Ey (TE) current sheet launches one broadband Gaussian pulse over
  the requested band; flux monitors take DFTs at exactly the requested wavelengths.
- Oblique incidence (2-D cells; plane of incidence x-z, as the RCWA's ``azimuth_deg = 0``): at
  a fixed Bloch wavevector the angle changes with frequency (sin theta = k_x / (n f)), so a
  broadband pulse is not one angle. Each wavelength runs as its own narrowband job with
  k_x = n_sup sin(theta) / lambda, and only that wavelength's DFT is read.
- T is normalised by the incident flux of an empty-cell run; R subtracts the incident DFT
  fields (Meep's ``load_minus_flux_data``). The empty-cell run is cached and shared by every
  structure with the same cell and settings.
- Runs stop when the monitors' DFTs change by less than ``dft_tol`` (or at ``max_time``).
- Mirror symmetries of the structure cut the cell by up to 4x (normal incidence); a structure
  with 4-fold symmetry runs one polarisation only (TE = TM). ``use_symmetry=False`` runs the
  full cell (a check: the reduced cell must give the same spectra).
- :func:`solve_ladder` runs several resolutions and Richardson-extrapolates them with a fitted
  convergence order (:mod:`hyplex.optics.extrapolation`): never trust one resolution.

Materials are handed to Meep as their own dispersion models, so both solvers see identical
materials: a :class:`~hyplex.optics.materials.LorentzMaterial` (``cSi_meep``, ``aSi_meep``,
``SiO2_meep``) as Lorentzian susceptibilities, a Sellmeier material (``SiO2``, ``BK7``,
``Si3N4``) as undamped Lorentzians (Sellmeier term B l^2/(l^2 - C) = B f0^2/(f0^2 - f^2) with
f0 = 1/sqrt(C)), and a real constant index as a constant epsilon. Tabulated materials (``cSi``,
``aSi``, ``TiO2``) have no time-domain model and are refused with the name of the Lorentz twin.

Accuracy: Meep's error is second order in the grid step where its sub-pixel smoothing applies
(frequency-independent, lossless media). Meep does not smooth dispersive (Lorentz) media
(Meep docs, "Subpixel Smoothing"), so on ``cSi_meep`` / ``aSi_meep`` structures it converges
at first order: an a-Si grating in 2-D was 0.081 / 0.033 / 0.015 / 0.008 / 0.005 RMS from the
converged RCWA at 50-800 px/um. Use :func:`solve_ladder` (README, fidelity table).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from functools import cache
from pathlib import Path

import numpy as np

from .extrapolation import DEFAULT_ORDER_BOUNDS, Extrapolation, extrapolate
from .fdtd_structure import UnsupportedStructureError, describe
from .rcwa import Layer

__all__ = [
    "FDTDSettings",
    "FDTDResult",
    "LadderResult",
    "MeepNotFoundError",
    "UnsupportedStructureError",
    "FDTDError",
    "solve",
    "solve_many",
    "solve_ladder",
    "grid_misalignment",
    "meep_version",
]

WORKER = Path(__file__).with_name("_meep_worker.py")
INSTALL_HINT = (
    "install MIT Meep for the system Python: `apt-get install -y python3-meep "
    "python3-matplotlib python3-scipy` (Debian/Ubuntu; `make test` does it), or set "
    "HYPLEX_MEEP_PYTHON to an interpreter that can `import meep`"
)


class MeepNotFoundError(RuntimeError):
    """Meep is not importable by the interpreter that runs FDTD jobs."""


class FDTDError(RuntimeError):
    """A Meep job failed; the message carries the end of its stderr."""


@dataclass(frozen=True)
class FDTDSettings:
    """Discretisation and run control of the FDTD reference. Lengths in um (Meep's a = 1 um).

    Attributes
    ----------
    resolution : float
        Grid points per um. The error is second order in 1/resolution; in silicon (n ~ 4-5.6
        at 400-500 nm) about 200 px/um gives |dT| ~ 0.02 (see the module docstring).
    pml_um : float
        PML thickness at each end of the cell (z).
    pad_um : float
        Spacing between the PML and the source, and between the T monitor and the PML.
    gap_um : float
        Spacing source -> R monitor -> structure -> T monitor; it lets evanescent orders decay.
    dft_tol : float
        Stop when the monitors' DFT fields change by less than this (relative).
    max_time : float
        Hard limit on the simulated time after the source, in units of a/c (3.34 fs).
    subpixel_averaging : bool
        Meep's anisotropic sub-pixel smoothing of the permittivity at interfaces.
    courant : float or None
        Courant number dt c / dx. None: the largest value <= 0.5 that is stable for the
        Lorentz media at this resolution (see ``stable_courant`` in ``_meep_worker.py``).
    dimensions : 1, 2, 3 or None
        The Meep cell. None: the cheapest exact one (1-D for an unpatterned stack at normal
        incidence, 2-D for a structure uniform along y, else 3-D). 2 needs a structure uniform
        along y; 1 an unpatterned stack at normal incidence; oblique incidence needs 2.
    use_symmetry : bool
        Exploit the structure's mirror planes (normal incidence only). False runs the full cell.
    """

    resolution: float = 100.0
    pml_um: float = 0.5
    pad_um: float = 0.1
    gap_um: float = 0.3
    dft_tol: float = 1e-8
    max_time: float = 400.0
    subpixel_averaging: bool = True
    courant: float | None = None
    dimensions: int | None = None
    use_symmetry: bool = True

    def __post_init__(self):
        for name in ("resolution", "pml_um", "gap_um", "dft_tol", "max_time"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"FDTDSettings.{name} must be a positive number, got {value!r}")
        if not (math.isfinite(self.pad_um) and self.pad_um >= 0):
            raise ValueError(f"FDTDSettings.pad_um must be >= 0 um, got {self.pad_um!r}")
        if self.dimensions not in (None, 1, 2, 3):
            raise ValueError(
                f"FDTDSettings.dimensions must be 1, 2, 3 or None, got {self.dimensions!r}"
            )


@dataclass
class FDTDResult:
    """Spectra of one structure. Polarisation axis as in the RCWA: 0 = TE (Ey), 1 = TM (Ex).

    Attributes
    ----------
    wavelengths_nm : ndarray ``(L,)``
    T, R : ndarray ``(L, 2)``
        Total transmittance into the substrate (all diffraction orders) and reflectance.
    settings : FDTDSettings
    wall_s : float
        Meep wall time spent on this structure in this call (0 if it all came from the cache).
    cached : bool
        True if every polarisation came from the on-disk cache.
    jobs : list of str
        Cache file names of the runs behind this result (one per polarisation run, or per
        polarisation and wavelength at oblique incidence).
    compute_s : float
        Meep wall time the runs took when they were computed (read back from the cache).
    dimensions : int
        The Meep cell that ran (1, 2 or 3).
    angle_deg : float
        Angle of incidence in the superstrate (plane of incidence x-z).
    """

    wavelengths_nm: np.ndarray
    T: np.ndarray
    R: np.ndarray
    settings: FDTDSettings
    wall_s: float = 0.0
    cached: bool = False
    jobs: list[str] = field(default_factory=list)
    compute_s: float = 0.0
    dimensions: int = 3
    angle_deg: float = 0.0

    def unpolarized(self) -> tuple[np.ndarray, np.ndarray]:
        """(T, R) averaged over TE and TM, each ``(L,)``."""
        return self.T.mean(-1), self.R.mean(-1)


# --------------------------------------------------------------------------- Meep discovery
def _meep_python() -> str:
    return os.environ.get("HYPLEX_MEEP_PYTHON", "/usr/bin/python3")


@cache
def _meep_version_for(python: str) -> str:
    if shutil.which(python) is None and not Path(python).exists():
        raise MeepNotFoundError(f"no interpreter at {python}: {INSTALL_HINT}")
    proc = subprocess.run(
        [python, str(WORKER), "--version"], capture_output=True, text=True, timeout=120
    )
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1:] or ["(no stderr)"]
        raise MeepNotFoundError(f"{python} cannot import meep ({tail[0]}): {INSTALL_HINT}")
    # Meep prints "Elapsed run time" at exit: take the JSON line.
    line = next(x for x in proc.stdout.splitlines() if x.startswith("{"))
    return json.loads(line)["meep"]


def meep_version() -> str:
    """Version of the Meep that FDTD jobs use; raises MeepNotFoundError if there is none."""
    return _meep_version_for(_meep_python())


# --------------------------------------------------------------------------- jobs and cache
def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:32]


def _cache_dir(cache_dir) -> Path:
    if cache_dir is None:
        default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "hyplex"
        cache_dir = Path(os.environ.get("HYPLEX_CACHE_DIR", default)) / "fdtd"
    path = Path(cache_dir)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _join_wrapped_blocks(structure: dict) -> dict:
    """Join blocks that continue across a cell face into one block that crosses it.

    A binary grid whose pattern wraps round the cell (an ``(Nx, 1)`` grid ``[1, 0, 0, 1]``: one
    line cut in two by the face x = +-Lx/2) is described as two blocks that only *touch* the
    face, and Meep then puts the default medium on the grid points at the face (measured, n =
    2, a 200 nm line wrapped across the face of a 400 nm cell against the same line centred:
    T off by 0.044 in 2-D at 50 px/um, 0.049 without sub-pixel smoothing, as in Lorentz media;
    a 200 nm square pillar cut into four corners, 3-D at 25 px/um: 0.061). Joined into one
    block that crosses the face, Meep copies it to the other side itself
    (``ensure_periodicity``): without smoothing the two then agree to 1e-15, with it TE does
    and TM is still 0.017 off (see :func:`_half_period_shift`, which removes that). Pairs join
    along x, then y (the four corners become one block); a pair whose extents across the face
    differ is left as it is. A block spanning the whole period is left alone (the worker
    makes it infinite along it). Structures without such pairs are returned unchanged, so
    their jobs, and cache keys, are too (every structure of benchmarks/fidelity.py).
    """
    period = structure["period_um"]
    layers, changed = [], False
    for layer in structure["layers"]:
        objects = list(layer["objects"])
        joined = True
        while joined:
            joined = False
            blocks = [o for o in objects if o["kind"] == "block"]
            pairs = (
                (axis, a, b)
                for axis in (0, 1)
                for a in blocks  # on the -face
                for b in blocks  # on the +face, same extent along the other axis
                if a is not b and _wrapped_pair(a, b, axis, period)
            )
            pair = next(pairs, None)
            if pair is None:
                break
            axis, a, b = pair
            start = b["center"][axis] - b["size"][axis] / 2  # b's inner edge
            size = b["size"][axis] + a["size"][axis]  # from there past the +face by a's size
            merged = {**b, "center": list(b["center"]), "size": list(b["size"])}
            merged["center"][axis] = start + size / 2
            merged["size"][axis] = size
            objects = [o for o in objects if o is not a and o is not b] + [merged]
            joined = changed = True
        layers.append({**layer, "objects": objects} if objects != layer["objects"] else layer)
    return {**structure, "layers": layers} if changed else structure


def _wrapped_pair(a: dict, b: dict, axis: int, period) -> bool:
    """Block ``a`` on the cell's -face and ``b`` on its +face along ``axis``, one feature."""
    other, half, tol = 1 - axis, period[axis] / 2, 1e-9 * max(period)
    return (
        a["material"] == b["material"]
        and a["size"][axis] + b["size"][axis] < period[axis] - tol
        and abs(a["center"][axis] - a["size"][axis] / 2 + half) <= tol
        and abs(b["center"][axis] + b["size"][axis] / 2 - half) <= tol
        and abs(a["center"][other] - b["center"][other]) <= tol
        and abs(a["size"][other] - b["size"][other]) <= tol
    )


def _on_face(obj: dict, axis: int, period) -> bool:
    """Whether an object reaches the cell's faces along ``axis`` (touching or crossing) without
    spanning the whole period there."""
    half, tol = period[axis] / 2, 1e-9 * max(period)
    extent = obj["size"][axis] if obj["kind"] == "block" else 2 * obj["radius"]
    if extent >= period[axis] - tol:
        return False
    return abs(obj["center"][axis]) + extent / 2 >= half - tol


def _half_period_shift(structure: dict) -> dict:
    """Shift the whole stack by half a period along each axis where that takes every object off
    the cell's faces (the joined blocks of :func:`_join_wrapped_blocks` then sit in the middle).

    Meep's anisotropic sub-pixel smoothing is not the same at the copy of an object that
    crosses a periodic face as at the object itself (measured, 2-D, n = 2, 50 px/um: the line
    joined across the face still gave TM off by 0.017, TE exact; without smoothing both were
    exact). A lateral shift of the whole periodic stack changes no transmitted or reflected
    power, and half a period keeps every mirror plane through the cell centre (a periodic
    structure mirror-symmetric about x = 0 is also symmetric about x = Lx/2). With the shift,
    the wrapped line and the four corners above give the centred results to 1e-14 (TE and TM,
    with and without smoothing). Where half a period would put another object on a face (a
    centred cylinder), nothing is shifted along that axis."""
    period = structure["period_um"]
    for axis in (0, 1):
        objects = [o for layer in structure["layers"] for o in layer["objects"]]
        if not any(_on_face(o, axis, period) for o in objects):
            continue

        def moved(obj, axis=axis):
            centre = list(obj["center"])
            # Into [-L/2, L/2): the shifted centre of an object that straddled the face.
            centre[axis] = (centre[axis] + period[axis]) % period[axis] - period[axis] / 2
            return {**obj, "center": centre}

        layers = [
            {**layer, "objects": [moved(o) for o in layer["objects"]]}
            for layer in structure["layers"]
        ]
        shifted = [o for layer in layers for o in layer["objects"]]
        if not any(_on_face(o, axis, period) for o in shifted):
            structure = {**structure, "layers": layers}
    return structure


def _describe(layers, wavelengths, period, superstrate, substrate) -> tuple[dict, dict]:
    """:func:`describe`, with blocks cut by a cell face joined (:func:`_join_wrapped_blocks`)
    and moved off the faces where half a period does it (:func:`_half_period_shift`)."""
    structure, symmetry = describe(layers, wavelengths, period, superstrate, substrate)
    return _half_period_shift(_join_wrapped_blocks(structure)), symmetry


def _dimensions(requested, structure, symmetry, angle_deg) -> int:
    """The Meep cell for a structure: the requested one, checked, or the cheapest exact one."""
    patterned = any(layer["objects"] for layer in structure["layers"])
    oblique = angle_deg != 0
    if requested is None:
        if not patterned and not oblique:
            return 1
        requested = 2 if symmetry["uniform_y"] else 3
    if requested == 1 and (patterned or oblique):
        what = "a patterned layer" if patterned else "oblique incidence"
        raise UnsupportedStructureError(
            f"dimensions=1 takes an unpatterned stack at normal incidence; this job has {what}: "
            "use dimensions=2 (structures uniform along y) or 3"
        )
    if requested == 2 and not symmetry["uniform_y"]:
        raise UnsupportedStructureError(
            "dimensions=2 needs a structure uniform along y (a film, or a 1-D grating whose "
            "boxes span the whole period along y, e.g. Rectangle(w, Ly) or an (Nx, 1) grid); "
            "this one varies along y: use dimensions=3"
        )
    if requested == 3 and oblique:
        raise UnsupportedStructureError(
            "oblique incidence runs in 2-D cells only (a film or a 1-D grating, plane of "
            "incidence x-z); 3-D oblique incidence is not implemented"
        )
    return requested


def _jobs_for(structure, symmetry, wavelengths_nm, settings, angle_deg, version, cache):
    """Worker jobs of one structure: ``{pol: [(job, result_path, wavelength indices)]}``.

    pol "y" is TE, "x" is TM. At normal incidence each polarisation is one broadband job; at
    oblique incidence each wavelength is its own narrowband job with its own Bloch k_x.
    """
    frequencies = 1000.0 / wavelengths_nm  # 1/um
    dimensions = _dimensions(settings.dimensions, structure, symmetry, angle_deg)
    oblique = angle_deg != 0
    base = {
        **structure,
        **asdict(settings),
        "dimensions": dimensions,
        "meep_version": version,
        "worker": WORKER.read_bytes().decode(),  # any change to the worker invalidates
    }
    del base["use_symmetry"]  # what it changes is in mirror_x / mirror_y
    # One key per grid: 80 and 80.0 px/um are the same run (JSON would tell them apart).
    if float(settings.resolution).is_integer():
        base["resolution"] = int(settings.resolution)
    mirrors = settings.use_symmetry and not oblique and dimensions > 1
    base["mirror_x"] = bool(mirrors and symmetry["mirror_x"])
    base["mirror_y"] = bool(mirrors and symmetry["mirror_y"] and dimensions == 3)
    if oblique:
        n_sup = math.sqrt(structure["superstrate"]["epsilon"])
        sin_theta = math.sin(math.radians(angle_deg))
        # One wavelength per job: k_x = n_sup sin(theta) f fixes the angle at f only. The
        # pulse is narrowband (30% of f), so its whole spectrum stays propagating.
        bands = [
            {
                "frequencies": [float(f)],
                "fcen": float(f),
                "fwidth": 0.3 * float(f),
                "kx": n_sup * sin_theta * float(f),
                "index": [i],
            }
            for i, f in enumerate(frequencies)
        ]
    else:
        f_min, f_max = float(frequencies.min()), float(frequencies.max())
        f_center = (f_min + f_max) / 2
        bands = [
            {
                "frequencies": frequencies.tolist(),
                "fcen": f_center,
                # Gaussian pulse wide enough that the band edges keep >= ~1% of the peak power.
                "fwidth": max(1.5 * (f_max - f_min), 0.2 * f_center),
                "kx": 0.0,
                "index": list(range(frequencies.size)),
            }
        ]
    polarizations = ["x"] if (symmetry["c4"] and not oblique) else ["y", "x"]
    jobs = {}
    for pol in polarizations:
        jobs[pol] = []
        for band in bands:
            job = {**base, **{k: v for k, v in band.items() if k != "index"}, "polarization": pol}
            key = _digest(job)
            # The empty-cell run depends on the cell, not on what is in it.
            norm = {k: v for k, v in job.items() if k not in ("layers", "substrate")}
            norm["stack_um"] = sum(layer["thickness_um"] for layer in job["layers"])
            job["norm_file"] = str(cache / f"norm-{_digest(norm)}.npz")
            jobs[pol].append((job, cache / f"fdtd-{key}.npz", band["index"]))
    return jobs, dimensions


def _run_worker(job: dict, result: Path, on_line, processes: set, lock) -> None:
    """Run one Meep job in the system interpreter; the result file appears atomically."""
    with tempfile.TemporaryDirectory(prefix="hyplex-fdtd-") as tmp:
        job_path = Path(tmp) / "job.json"
        job_path.write_text(json.dumps({k: v for k, v in job.items() if k != "worker"}))
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
        proc = subprocess.Popen(
            [_meep_python(), str(WORKER), str(job_path), str(result)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=tmp,
        )
        with lock:
            processes.add(proc)
        stderr_lines: list[str] = []
        reader = threading.Thread(target=lambda: stderr_lines.extend(proc.stderr), daemon=True)
        reader.start()
        try:
            for line in proc.stdout:
                if line.startswith("{"):
                    on_line(json.loads(line))
            proc.wait()
            reader.join()
        finally:
            with lock:
                processes.discard(proc)
        if proc.returncode != 0 or not result.exists():
            tail = "".join(stderr_lines[-15:])
            raise FDTDError(f"Meep job failed (exit {proc.returncode}):\n{tail}")


def _check_inputs(wavelengths_nm, period_nm, angle_deg):
    wavelengths = np.asarray(wavelengths_nm, dtype=float).reshape(-1)
    if wavelengths.size == 0 or not np.isfinite(wavelengths).all() or (wavelengths <= 0).any():
        raise ValueError(f"wavelengths_nm must be positive finite numbers (nm), got {wavelengths}")
    period = (period_nm, period_nm) if np.ndim(period_nm) == 0 else tuple(period_nm)
    if len(period) != 2 or not all(math.isfinite(p) and p > 0 for p in period):
        raise ValueError(f"period_nm must be a positive number or (Lx, Ly) in nm, got {period_nm}")
    angle = float(angle_deg)
    if not (math.isfinite(angle) and 0 <= angle < 90):
        raise ValueError(f"angle_deg must lie in [0, 90) degrees, got {angle_deg}")
    return wavelengths, (float(period[0]), float(period[1])), angle


def _solve_items(
    items, wavelengths, period, superstrate, substrate, angle, workers, cache_dir, progress
) -> list[FDTDResult]:
    """Spectra of ``items = [(layers, FDTDSettings), ...]``, all jobs in one parallel pool."""
    structures = [
        _describe(layers, wavelengths, period, superstrate, substrate) for layers, _ in items
    ]
    version = meep_version()
    cache = _cache_dir(cache_dir)
    planned = [
        _jobs_for(structure, symmetry, wavelengths, settings, angle, version, cache)
        for (structure, symmetry), (_, settings) in zip(structures, items, strict=True)
    ]
    pending = {}  # result path -> job, deduplicated
    for jobs, _ in planned:
        for runs in jobs.values():
            for job, path, _ in runs:
                if not path.exists():
                    pending[path] = job
    # Empty-cell runs first (one per distinct cell), so structures share them.
    norms = {}
    for job in pending.values():
        if not Path(job["norm_file"]).exists():
            norms[job["norm_file"]] = {**job, "norm_only": True}
    # Longest first (finest grids), so the pool does not end on one long job.
    order = sorted(pending.items(), key=lambda item: -item[1]["resolution"])
    _execute(list(norms.items()), order, workers, progress)

    results = []
    for (jobs, dimensions), (_, settings) in zip(planned, items, strict=True):
        columns, wall, compute, cached = {}, 0.0, 0.0, True
        for pol, runs in jobs.items():
            T = np.empty(wavelengths.size)
            R = np.empty(wavelengths.size)
            for _, path, index in runs:
                data = np.load(path)
                T[index], R[index] = data["T"], data["R"]
                compute += float(data["wall_s"])
                fresh = path in pending
                wall += float(data["wall_s"]) if fresh else 0.0
                cached &= not fresh
            columns[pol] = (T, R)
        te = columns.get("y", columns["x"])
        tm = columns["x"]
        results.append(
            FDTDResult(
                wavelengths_nm=wavelengths,
                T=np.stack([te[0], tm[0]], -1),
                R=np.stack([te[1], tm[1]], -1),
                settings=settings,
                wall_s=wall,
                cached=cached,
                jobs=[path.name for runs in jobs.values() for _, path, _ in runs],
                compute_s=compute,
                dimensions=dimensions,
                angle_deg=angle,
            )
        )
    return results


def solve_many(
    designs: Sequence[Sequence[Layer]],
    wavelengths_nm,
    period_nm: float | tuple[float, float],
    superstrate="air",
    substrate="SiO2",
    settings: FDTDSettings | None = None,
    workers: int | None = None,
    cache_dir: str | Path | None = None,
    progress: bool = True,
    angle_deg: float = 0.0,
) -> list[FDTDResult]:
    """FDTD spectra of several structures, run as parallel Meep processes.

    Parameters
    ----------
    designs : sequence of layer lists; each is one structure as :func:`hyplex.optics.rcwa.solve`
        takes it (top to bottom), with scalar thicknesses and one pattern per layer: a
        :class:`~hyplex.optics.geometry.Shape` (exact edges) or a binary ``(Nx, Ny)`` grid.
    wavelengths_nm : array ``(L,)`` of vacuum wavelengths in nm (any order).
    period_nm : float or ``(Lx, Ly)`` in nm.
    superstrate : constant real index (name or number): the incidence medium.
    substrate : material-like with a Meep model (Lorentz, Sellmeier or constant real index).
    settings : :class:`FDTDSettings` (resolution, PML, stopping, cell dimensions, symmetry).
    workers : parallel Meep processes (default: CPU count; each is single-threaded).
    cache_dir : where results live (default ``$HYPLEX_CACHE_DIR/fdtd`` or ``~/.cache/hyplex/fdtd``);
        each result is keyed by a hash of the full job, so a cached spectrum returns at once.
    progress : show a progress bar (jobs done, simulated time of the running job).
    angle_deg : polar angle of incidence in the superstrate, degrees in [0, 90); the plane of
        incidence is x-z (the RCWA's ``azimuth_deg = 0``). Non-zero angles need a structure
        uniform along y (2-D cell) and run one Meep job per wavelength and polarisation.

    Returns
    -------
    list of :class:`FDTDResult`, one per design, T and R of shape ``(L, 2)`` (TE, TM).

    Raises
    ------
    MeepNotFoundError, UnsupportedStructureError, FDTDError, ValueError
    """
    settings = settings or FDTDSettings()
    wavelengths, period, angle = _check_inputs(wavelengths_nm, period_nm, angle_deg)
    return _solve_items(
        [(design, settings) for design in designs],
        wavelengths,
        period,
        superstrate,
        substrate,
        angle,
        workers,
        cache_dir,
        progress,
    )


def _execute(norm_jobs, structure_jobs, workers, progress) -> None:
    """Run the empty-cell jobs, then the structure jobs, ``workers`` at a time."""
    from tqdm.auto import tqdm

    total = len(norm_jobs) + len(structure_jobs)
    if total == 0:
        return
    workers = max(1, min(workers or os.cpu_count() or 1, total))
    processes: set = set()
    lock = threading.Lock()
    bar = tqdm(total=total, desc="Meep FDTD", unit="run", disable=not progress, file=sys.stderr)

    def on_line(message):
        bar.set_postfix(stage=message.get("stage"), t=f"{message.get('t', 0):.0f} a/c")

    def run(item):
        path, job = item
        _run_worker(job, Path(path), on_line, processes, lock)
        bar.update()

    try:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for batch in (norm_jobs, structure_jobs):
                for future in [pool.submit(run, item) for item in batch]:
                    future.result()
    except BaseException:
        # Ctrl-C or a failed job: stop every Meep process. Results are written atomically,
        # so finished spectra stay in the cache and a rerun resumes from them.
        with lock:
            for proc in processes:
                proc.terminate()
        raise
    finally:
        bar.close()


def solve(
    layers: Sequence[Layer],
    wavelengths_nm,
    period_nm: float | tuple[float, float],
    superstrate="air",
    substrate="SiO2",
    settings: FDTDSettings | None = None,
    cache_dir: str | Path | None = None,
    progress: bool = True,
    angle_deg: float = 0.0,
) -> FDTDResult:
    """FDTD spectra of one structure; see :func:`solve_many` for the parameters.

    Example
    -------
    >>> from hyplex.optics import fdtd, geometry, rcwa
    >>> layers = [rcwa.Layer(150.0, "cSi_meep", geometry.Disk(100.0))]
    >>> result = fdtd.solve(layers, [500.0, 600.0, 700.0], period_nm=400.0)  # doctest: +SKIP
    >>> result.T.shape                                                         # doctest: +SKIP
    (3, 2)
    """
    return solve_many(
        [layers],
        wavelengths_nm,
        period_nm,
        superstrate=superstrate,
        substrate=substrate,
        settings=settings,
        cache_dir=cache_dir,
        progress=progress,
        angle_deg=angle_deg,
    )[0]


def grid_misalignment(structure: dict, settings: FDTDSettings, dimensions: int) -> list[str]:
    """Planar interfaces of a described structure that miss the grid at ``settings.resolution``.

    Without sub-pixel smoothing (Lorentz media) the staircase error depends on where an
    interface falls inside its pixel, so a ladder whose rungs move interfaces relative to the
    grid is not a power law in the resolution (measured: a c-Si square whose 100 nm height was
    13.5 px at 135 px/um broke the convergence of a 60/90/135 ladder). Positions are measured
    from the cell's corner, as Meep's grid is; curved edges (cylinders) are not checked.

    Parameters
    ----------
    structure : the first return value of :func:`hyplex.optics.fdtd_structure.describe`.
    settings : :class:`FDTDSettings` (resolution and the cell's padding).
    dimensions : the cell (1, 2 or 3).

    Returns
    -------
    list of str, one per interface off the grid (empty if all are on it).
    """
    r = settings.resolution
    off = []

    def check(what, position_um):
        pixels = position_um * r
        if abs(pixels - round(pixels)) > 1e-6:
            off.append(f"{what} at {pixels:.3f} px")

    start = settings.pml_um + settings.pad_um + 2 * settings.gap_um
    for k, layer in enumerate(structure["layers"]):
        check(f"layer {k} top", start)
        start += layer["thickness_um"]
        check(f"layer {k} bottom", start)
        if dimensions == 1:
            continue
        for shape in layer["objects"]:
            if shape["kind"] != "block":
                continue
            axes = ("x", "y") if dimensions == 3 else ("x",)
            for axis, period, center, size in zip(
                axes, structure["period_um"], shape["center"], shape["size"], strict=False
            ):
                if size >= period * (1 - 1e-9):
                    continue  # spans the period: no edge
                for sign in (-1, 1):
                    check(f"layer {k} box edge {axis}", center + sign * size / 2 + period / 2)
    return off


@dataclass
class LadderResult:
    """Meep at several resolutions, Richardson-extrapolated to infinite resolution.

    Polarisation axis as in the RCWA: 0 = TE, 1 = TM. The convergence order is fitted per
    polarisation (:func:`hyplex.optics.extrapolation.extrapolate`).

    Attributes
    ----------
    wavelengths_nm : ndarray ``(L,)``
    resolutions : ndarray ``(K,)``, px/um, ascending.
    T_ladder, R_ladder : ndarray ``(K, L, 2)``, the spectra at each resolution.
    T, R : ndarray ``(L, 2)``, the extrapolated spectra.
    T_error, R_error : ndarray ``(L, 2)``, error estimates of ``T`` and ``R`` (the spread of the
        extrapolation over the orders the ladder supports; Roache's GCI for two levels).
    T_order, R_order : ndarray ``(2,)``, the convergence order used per polarisation.
    order_fitted : bool
        True if the orders were fitted from the ladder (K >= 3 and no fixed order).
    fits : dict ``{"T": [Extrapolation TE, TM], "R": [...]}`` with the full diagnostics.
    runs : list of :class:`FDTDResult`, one per resolution.
    compute_s : ndarray ``(K,)``, Meep wall time of each resolution (when computed).
    """

    wavelengths_nm: np.ndarray
    resolutions: np.ndarray
    T_ladder: np.ndarray
    R_ladder: np.ndarray
    T: np.ndarray
    R: np.ndarray
    T_error: np.ndarray
    R_error: np.ndarray
    T_order: np.ndarray
    R_order: np.ndarray
    order_fitted: bool
    fits: dict
    runs: list[FDTDResult]
    compute_s: np.ndarray
    grid_notes: list[str] = field(default_factory=list)

    @property
    def notes(self) -> list[str]:
        """Grid-alignment warnings, then the extrapolation's (prefixed with T/R and TE/TM)."""
        out = list(self.grid_notes)
        for quantity, fits in self.fits.items():
            for pol, fit in zip(("TE", "TM"), fits, strict=True):
                out += [f"{quantity} {pol}: {note}" for note in fit.notes]
        return out


def solve_ladder(
    layers: Sequence[Layer],
    wavelengths_nm,
    period_nm: float | tuple[float, float],
    resolutions: Sequence[float],
    superstrate="air",
    substrate="SiO2",
    settings: FDTDSettings | None = None,
    angle_deg: float = 0.0,
    order: float | None = None,
    assumed_order: float = 1.0,
    order_bounds=DEFAULT_ORDER_BOUNDS,
    fit_levels: int | None = None,
    workers: int | None = None,
    cache_dir: str | Path | None = None,
    progress: bool = True,
) -> LadderResult:
    """FDTD spectra at several resolutions, extrapolated to zero grid step.

    Parameters
    ----------
    layers, wavelengths_nm, period_nm, superstrate, substrate, angle_deg, workers, cache_dir,
    progress : as in :func:`solve_many`.
    resolutions : sequence of K >= 2 distinct resolutions in px/um. Three or more let the
        convergence order be fitted; a geometric ladder (e.g. 200, 400, 800) is best. Choose
        rungs that put every planar interface on the grid (see :func:`grid_misalignment`; a
        warning names those that miss it).
    settings : template :class:`FDTDSettings`; its ``resolution`` is replaced by each rung's.
    order : fix the convergence order instead of fitting it.
    assumed_order : the order for a two-rung ladder: 1 for Lorentz media (``cSi_meep``,
        ``aSi_meep``: Meep does not smooth them), 2 for non-dispersive lossless media.
    order_bounds : ``(p_min, p_max)``; fitted orders outside are clamped with a warning.
    fit_levels : fit the order on the finest ``fit_levels`` (>= 3) rungs only; default all.

    Returns
    -------
    LadderResult with the extrapolated ``T``, ``R`` ``(L, 2)``, their error estimates and orders.

    Example
    -------
    >>> ladder = fdtd.solve_ladder(layers, wl, 400.0, [200, 400, 800])  # doctest: +SKIP
    >>> ladder.T, ladder.T_error, ladder.T_order                         # doctest: +SKIP
    """
    settings = settings or FDTDSettings()
    rungs = sorted(float(r) for r in resolutions)
    if len(rungs) < 2 or len(set(rungs)) != len(rungs):
        raise ValueError(f"resolutions must hold >= 2 distinct values (px/um), got {resolutions}")
    wavelengths, period, angle = _check_inputs(wavelengths_nm, period_nm, angle_deg)
    items = [(layers, replace(settings, resolution=r)) for r in rungs]
    runs = _solve_items(
        items, wavelengths, period, superstrate, substrate, angle, workers, cache_dir, progress
    )
    structure, _ = _describe(layers, wavelengths, period, superstrate, substrate)
    grid_notes = []
    for run in runs:
        off = grid_misalignment(structure, run.settings, run.dimensions)
        if off:
            grid_notes.append(
                f"{run.settings.resolution:g} px/um: {len(off)} interfaces off the grid "
                f"({'; '.join(off[:3])}{'; ...' if len(off) > 3 else ''}); the staircase error "
                "then depends on sub-pixel positions and the ladder is not a clean power law: "
                "choose rungs that put every interface on the grid"
            )
    for note in grid_notes:
        warnings.warn(note, stacklevel=2)
    r = np.asarray(rungs)
    T_ladder = np.stack([run.T for run in runs])
    R_ladder = np.stack([run.R for run in runs])
    fits: dict[str, list[Extrapolation]] = {"T": [], "R": []}
    for name, ladder in (("T", T_ladder), ("R", R_ladder)):
        for pol in range(2):
            fits[name].append(
                extrapolate(
                    r,
                    ladder[..., pol],
                    order=order,
                    assumed_order=assumed_order,
                    order_bounds=order_bounds,
                    fit_levels=fit_levels,
                )
            )

    def stack(name, attribute):
        return np.stack([getattr(fit, attribute) for fit in fits[name]], -1)

    return LadderResult(
        wavelengths_nm=wavelengths,
        resolutions=r,
        T_ladder=T_ladder,
        R_ladder=R_ladder,
        T=stack("T", "value"),
        R=stack("R", "value"),
        T_error=stack("T", "error"),
        R_error=stack("R", "error"),
        T_order=np.array([fit.order for fit in fits["T"]]),
        R_order=np.array([fit.order for fit in fits["R"]]),
        order_fitted=all(fit.order_fitted for fit in fits["T"] + fits["R"]),
        fits=fits,
        runs=runs,
        compute_s=np.array([run.compute_s for run in runs]),
        grid_notes=grid_notes,
    )

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

The simulation (see ``_meep_worker.py`` for the cell diagram)
--------------------------------------------------------------
- A 3-D cell of one period, Bloch-periodic in x and y (k = 0, normal incidence), PML in z; an
  unpatterned stack runs as an exact 1-D cell.
- A planar Ex (TM here) or Ey (TE) current sheet launches one broadband Gaussian pulse over
  the requested band; flux monitors take DFTs at exactly the requested wavelengths.
- T is normalised by the incident flux of an empty-cell run; R subtracts the incident DFT
  fields (Meep's ``load_minus_flux_data``). The empty-cell run is cached and shared by every
  structure with the same cell and settings.
- Runs stop when the monitors' DFTs change by less than ``dft_tol`` (or at ``max_time``).
- Mirror symmetries of the structure cut the cell by up to 4x; a structure with 4-fold symmetry
  runs one polarisation only (TE = TM).

Materials are handed to Meep as their own dispersion models, so both solvers see identical
materials: a :class:`~hyplex.optics.materials.LorentzMaterial` (``cSi_meep``, ``aSi_meep``,
``SiO2_meep``) as Lorentzian susceptibilities, a Sellmeier material (``SiO2``, ``BK7``,
``Si3N4``) as undamped Lorentzians (Sellmeier term B l^2/(l^2 - C) = B f0^2/(f0^2 - f^2) with
f0 = 1/sqrt(C)), and a real constant index as a constant epsilon. Tabulated materials (``cSi``,
``aSi``, ``TiO2``) have no time-domain model and are refused with the name of the Lorentz twin.

Accuracy: Meep's error is second order in the grid step where its sub-pixel smoothing applies.
For a 100 nm c-Si film on glass, RMS |dT| against the exact TMM is 0.0195 / 0.0055 / 0.0022 at
100 / 200 / 400 px/um (``tests/optics/test_fdtd.py``, ``benchmarks/fidelity.py``). Meep does not
smooth dispersive media, so patterned Lorentz silicon converges more slowly (README, fidelity).
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
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path

import numpy as np

from .fdtd_structure import UnsupportedStructureError, describe
from .rcwa import Layer

__all__ = [
    "FDTDSettings",
    "FDTDResult",
    "MeepNotFoundError",
    "UnsupportedStructureError",
    "FDTDError",
    "solve",
    "solve_many",
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
    """

    resolution: float = 100.0
    pml_um: float = 0.5
    pad_um: float = 0.1
    gap_um: float = 0.3
    dft_tol: float = 1e-8
    max_time: float = 400.0
    subpixel_averaging: bool = True
    courant: float | None = None

    def __post_init__(self):
        for name in ("resolution", "pml_um", "gap_um", "dft_tol", "max_time"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"FDTDSettings.{name} must be a positive number, got {value!r}")
        if not (math.isfinite(self.pad_um) and self.pad_um >= 0):
            raise ValueError(f"FDTDSettings.pad_um must be >= 0 um, got {self.pad_um!r}")


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
        Meep wall time spent on this structure (0 if it all came from the cache).
    cached : bool
        True if every polarisation came from the on-disk cache.
    jobs : list of str
        Cache file names of the runs behind this result (one per polarisation run).
    """

    wavelengths_nm: np.ndarray
    T: np.ndarray
    R: np.ndarray
    settings: FDTDSettings
    wall_s: float = 0.0
    cached: bool = False
    jobs: list[str] = field(default_factory=list)

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


def _jobs_for(structure, symmetry, wavelengths_nm, settings, version, cache):
    """Worker jobs ``{pol: (job, result_path)}`` of one structure; pol "y" is TE, "x" is TM."""
    frequencies = 1000.0 / wavelengths_nm  # 1/um
    f_min, f_max = float(frequencies.min()), float(frequencies.max())
    f_center = (f_min + f_max) / 2
    base = {
        **structure,
        **asdict(settings),
        "frequencies": frequencies.tolist(),
        "fcen": f_center,
        # Gaussian pulse wide enough that the band edges keep >= ~1% of the peak power.
        "fwidth": max(1.5 * (f_max - f_min), 0.2 * f_center),
        "meep_version": version,
        "worker": WORKER.read_bytes().decode(),  # any change to the worker invalidates
    }
    polarizations = ["x"] if symmetry["c4"] else ["y", "x"]
    jobs = {}
    for pol in polarizations:
        job = {**base, "polarization": pol, "mirror_x": symmetry["mirror_x"]}
        job["mirror_y"] = symmetry["mirror_y"]
        key = _digest(job)
        # The empty-cell run depends on the cell, not on what is in it.
        norm = {k: v for k, v in job.items() if k not in ("layers", "substrate")}
        norm["stack_um"] = sum(layer["thickness_um"] for layer in job["layers"])
        norm["one_d"] = not any(layer["objects"] for layer in job["layers"])
        job["norm_file"] = str(cache / f"norm-{_digest(norm)}.npz")
        jobs[pol] = (job, cache / f"fdtd-{key}.npz")
    return jobs


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
    settings : :class:`FDTDSettings` (resolution, PML, stopping).
    workers : parallel Meep processes (default: CPU count; each is single-threaded).
    cache_dir : where results live (default ``$HYPLEX_CACHE_DIR/fdtd`` or ``~/.cache/hyplex/fdtd``);
        each result is keyed by a hash of the full job, so a cached spectrum returns at once.
    progress : show a progress bar (jobs done, simulated time of the running job).

    Returns
    -------
    list of :class:`FDTDResult`, one per design, T and R of shape ``(L, 2)`` (TE, TM).

    Raises
    ------
    MeepNotFoundError, UnsupportedStructureError, FDTDError, ValueError
    """
    settings = settings or FDTDSettings()
    wavelengths = np.asarray(wavelengths_nm, dtype=float).reshape(-1)
    if wavelengths.size == 0 or not np.isfinite(wavelengths).all() or (wavelengths <= 0).any():
        raise ValueError(f"wavelengths_nm must be positive finite numbers (nm), got {wavelengths}")
    period = (period_nm, period_nm) if np.ndim(period_nm) == 0 else tuple(period_nm)
    if len(period) != 2 or not all(math.isfinite(p) and p > 0 for p in period):
        raise ValueError(f"period_nm must be a positive number or (Lx, Ly) in nm, got {period_nm}")
    period = (float(period[0]), float(period[1]))
    structures = [describe(d, wavelengths, period, superstrate, substrate) for d in designs]
    version = meep_version()
    cache = _cache_dir(cache_dir)
    per_design = [
        _jobs_for(structure, symmetry, wavelengths, settings, version, cache)
        for structure, symmetry in structures
    ]
    pending = {}  # result path -> job, deduplicated
    for jobs in per_design:
        for job, path in jobs.values():
            if not path.exists():
                pending[path] = job
    # Empty-cell runs first (one per distinct cell), so structures share them.
    norms = {}
    for job in pending.values():
        if not Path(job["norm_file"]).exists():
            norms[job["norm_file"]] = {**job, "norm_only": True}
    _execute(list(norms.items()), list(pending.items()), workers, progress)

    results = []
    for jobs in per_design:
        columns, wall, cached = {}, 0.0, True
        for pol, (_, path) in jobs.items():
            data = np.load(path)
            columns[pol] = (data["T"], data["R"])
            wall += float(data["wall_s"])
            cached &= path not in pending
        te = columns.get("y", columns["x"])
        tm = columns["x"]
        results.append(
            FDTDResult(
                wavelengths_nm=wavelengths,
                T=np.stack([te[0], tm[0]], -1),
                R=np.stack([te[1], tm[1]], -1),
                settings=settings,
                wall_s=0.0 if cached else wall,
                cached=cached,
                jobs=[path.name for _, path in jobs.values()],
            )
        )
    return results


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
    )[0]

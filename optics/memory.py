"""Memory estimates made before large allocations, so a request that cannot fit is refused
with a message (``this needs 320 GB; the machine has 24 GB``) instead of failing deep inside
a solver with a ``MemoryError``, an allocator's errno, or minutes of swapping.

::

    needed = rcwa_memory_bytes(harmonics=50, grid=64, batch=8, wavelengths=61)
    check_memory(needed, "the RCWA at harmonics=50", setting="harmonics", value=50)

The RCWA model counts the solver's largest arrays per design and wavelength (complex128):
about 15 matrices of ``2n x 2n`` with ``n = (2M+1)(2N+1)`` harmonics (the P, Q blocks, their
product, the eigenvectors W and V, the S-matrix blocks and their temporaries; 26 with
gradients), about 3 complex values per pixel of the Fourier grid (the inverse permittivity
grid and its transforms) and the inverse-rule blocks of Li's factorisation. The factors were
measured as the peak resident memory of :func:`hyplex.optics.rcwa.solve` on a CPU
(M = 5..12, grids 64..1024); the estimate is meant to refuse the impossible (TiB), not to
budget to the last megabyte.

Available memory is the kernel's ``MemAvailable`` (``/proc/meminfo``), capped by a cgroup v2
limit when there is one; elsewhere psutil (if installed) or ``os.sysconf``. The environment
variable ``HYPLEX_MEMORY_BYTES`` overrides it (a budget on a shared machine, or tests).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

__all__ = [
    "MemoryBudgetError",
    "available_memory_bytes",
    "available_disk_bytes",
    "check_memory",
    "check_disk",
    "fits_hint",
    "format_bytes",
    "largest_fitting",
    "rcwa_memory_bytes",
]

#: complex128 ``2n x 2n`` matrices alive at the solver's peak per (design, wavelength).
RCWA_MATRICES = 15
#: the same with autograd keeping the forward pass for the backward one.
RCWA_MATRICES_GRAD = 26
#: complex values per Fourier-grid pixel per (design, wavelength) (x 1.8 with gradients).
RCWA_GRID_VALUES = 3
#: float64 values per pixel per design of the rendered pattern and its masks.
RENDER_VALUES = 4
#: fixed overhead of a solve (orders, wavevectors, small tensors), bytes.
RCWA_BASE_BYTES = 1 << 20


class MemoryBudgetError(ValueError, MemoryError):
    """A request would need more memory (or disk) than the machine has; raised before any
    allocation. It is a ValueError (a bad setting) and a MemoryError.

    Attributes
    ----------
    needed, available : bytes.
    setting : name of the setting that asked for it (``"harmonics"``, ``"count"``), or None.
    value : that setting's value.
    """

    def __init__(self, message, needed=0, available=0, setting=None, value=None):
        super().__init__(message)
        self.needed, self.available = int(needed), int(available)
        self.setting, self.value = setting, value


def format_bytes(n: float) -> str:
    """``320 GB``, ``1.2 TB``, ``850 MB``: decimal units, 2-3 significant digits."""
    n = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB", "PB", "EB"):
        if abs(n) < 1000 or unit == "EB":
            break
        n /= 1000
    if unit == "EB" and n >= 1000:
        return f"{n:.1e} EB"
    return f"{n:.0f} {unit}" if n >= 100 or unit == "B" else f"{n:.2g} {unit}"


def _meminfo_available() -> int | None:
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _cgroup_available() -> int | None:
    """Room left under a cgroup v2 memory limit (``memory.max - memory.current``), if any."""
    root = Path("/sys/fs/cgroup")
    try:
        limit = (root / "memory.max").read_text().strip()
        if limit == "max":
            return None
        return max(int(limit) - int((root / "memory.current").read_text().strip()), 0)
    except (OSError, ValueError):
        return None


def available_memory_bytes() -> int:
    """Memory a new allocation can take without swapping, bytes (see the module doc)."""
    override = os.environ.get("HYPLEX_MEMORY_BYTES", "").strip()
    if override:
        try:
            return int(float(override))
        except ValueError:
            raise ValueError(
                f"HYPLEX_MEMORY_BYTES must be a number of bytes, got {override!r}"
            ) from None
    found = _meminfo_available()
    if found is None:
        try:
            import psutil

            found = int(psutil.virtual_memory().available)
        except ImportError:
            try:
                found = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
            except (ValueError, OSError, AttributeError):
                found = None
    cgroup = _cgroup_available()
    if found is None:
        return cgroup if cgroup is not None else 2**63 - 1  # unknown: refuse nothing
    return found if cgroup is None else min(found, cgroup)


def available_disk_bytes(path) -> int:
    """Free bytes on the file system that would hold ``path`` (its nearest existing folder)."""
    folder = Path(path).absolute()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        folder = folder.parent
    return shutil.disk_usage(folder).free


def _pair(value, name: str) -> tuple[int, int]:
    if isinstance(value, int | float):
        value = (value, value)
    a, b = (int(v) for v in value)
    if a < 0 or b < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return a, b


def rcwa_memory_bytes(
    harmonics,
    grid=None,
    batch: int = 1,
    wavelengths: int = 1,
    patterned_layers: int = 1,
    grad: bool = False,
    complex_bytes: int = 16,
) -> int:
    """Peak memory of one :func:`hyplex.optics.rcwa.solve` call, bytes (an estimate).

    Parameters
    ----------
    harmonics : M or ``(M, N)``: orders ``-M..M`` along x and ``-N..N`` along y, so
        ``n = (2M+1)(2N+1)`` harmonics and matrices of ``2n x 2n``.
    grid : Nx or ``(Nx, Ny)`` pixels of the patterned layers' Fourier grid (None: uniform).
    batch : designs solved together.
    wavelengths : wavelengths per design.
    patterned_layers : patterned layers in the stack (each has its own modes).
    grad : autograd keeps the forward pass for the backward one.
    complex_bytes : 16 for complex128 (default), 8 for complex64.
    """
    m, n_y = _pair(harmonics, "harmonics")
    n = (2 * m + 1) * (2 * n_y + 1)
    matrices = RCWA_MATRICES_GRAD if grad else RCWA_MATRICES
    per_point = matrices * (2 * n) ** 2 * complex_bytes
    per_design = 0
    if grid is not None:
        nx, ny = _pair(grid, "grid")
        grid_values = RCWA_GRID_VALUES * (1.8 if grad else 1.0)
        # the Fourier grid, and Li's inverse-rule blocks: one (2M+1)^2 block per pixel row
        per_point += int(grid_values * nx * ny * complex_bytes)
        per_point += 2 * (ny * (2 * m + 1) ** 2 + nx * (2 * n_y + 1) ** 2) * complex_bytes
        per_design = RENDER_VALUES * nx * ny * 8
    points = int(batch) * int(wavelengths)
    layers = max(int(patterned_layers), 1)
    return RCWA_BASE_BYTES + layers * (points * per_point + int(batch) * per_design)


def check_memory(
    needed: int,
    what: str,
    *,
    setting: str | None = None,
    value=None,
    hint: str = "",
    available: int | None = None,
) -> None:
    """Raise :class:`MemoryBudgetError` if ``needed`` bytes exceed the available memory.

    The message reads ``"{what} needs about 320 GB of memory; this machine has 24 GB
    available{hint}"``; ``what`` should name the value that asks for it (``"harmonics=100"``)
    and ``hint`` what would fit (``"; expected harmonics <= 23"``).
    """
    available = available_memory_bytes() if available is None else int(available)
    if needed <= available:
        return
    raise MemoryBudgetError(
        f"{what} needs about {format_bytes(needed)} of memory; this machine has "
        f"{format_bytes(available)} available{hint}",
        needed,
        available,
        setting,
        value,
    )


def check_disk(needed: int, path, what: str, *, setting=None, value=None, hint: str = "") -> None:
    """Raise :class:`MemoryBudgetError` if ``needed`` bytes exceed the free space at ``path``."""
    free = available_disk_bytes(path)
    if needed <= free:
        return
    raise MemoryBudgetError(
        f"{what} needs about {format_bytes(needed)} on disk; {Path(path).absolute().parent} "
        f"has {format_bytes(free)} free{hint}",
        needed,
        free,
        setting,
        value,
    )


def largest_fitting(estimate, budget: int, low: int = 0, high: int = 1 << 62) -> int | None:
    """The largest integer ``k`` in ``[low, high]`` with ``estimate(k) <= budget`` (``estimate``
    non-decreasing), or None if even ``low`` does not fit. For messages: "at most k fit"."""
    if estimate(low) > budget:
        return None
    while low < high:
        middle = (low + high + 1) // 2
        if estimate(middle) <= budget:
            low = middle
        else:
            high = middle - 1
    return low


def fits_hint(estimate, budget: int, name: str, low: int = 0) -> str:
    """``"; expected name <= k to fit"`` (or a note that nothing fits) for an error message."""
    best = largest_fitting(estimate, budget, low)
    if best is None:
        return f"; even {name}={low} does not fit"
    return f"; expected {name} <= {best:,} to fit"

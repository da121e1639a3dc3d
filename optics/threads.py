"""One thread policy for the whole process, set at its entry points.

Every compute library in hyplex runs its own thread pool: torch (intra-op and inter-op),
numba (simulation kernels), and the BLAS/OpenMP libraries under numpy and scipy. Left alone,
each sizes itself to every core of the machine, and on a shared machine that is a cliff, not
a slope: with one of 2 cores busy, two torch threads made ``hyplex design --quick --resume``
run 2.2-3.3 s per step against 35 steps/s on one thread (each OpenMP region waits a whole
scheduler time slice for its second thread). So one number ``N`` of compute threads is chosen
once per process and given to all of them.

Choosing ``N``, first that applies:

1. an explicit number: ``hyplex --threads N ...``, or :func:`configure_threads` ``(N)``;
2. the environment variable ``HYPLEX_THREADS``;
3. the free cores: the cores this process may run on (``os.sched_getaffinity``, capped by a
   cgroup CPU quota) minus the cores other work keeps busy, rounded, at least 1, and at most
   ``OMP_NUM_THREADS`` when that is set. "Busy" is the larger of the 1-minute load average
   (less this process's own share) and the CPU time other processes take during a 0.1 s
   look at ``/proc/stat``: the load average lags by about a minute and counts the whole host
   inside a container, the short look misses work that pauses and catches bursts. Erring
   low costs at most the idle cores, erring high the cliff above, hence the larger; where
   neither can be read every core counts as free. Under ``torchrun`` the free cores are
   shared by the ranks on the machine (``LOCAL_WORLD_SIZE``). ``HYPLEX_THREADS`` settles any
   doubt.

Giving it (:func:`apply_thread_policy`): ``torch.set_num_threads(N)``, torch's inter-op pool
to ``N`` (possible once per process, before inter-op work starts), ``numba.set_num_threads``
(the calling thread; numba's OpenMP layer then resets libgomp, so torch is set last), and
every BLAS/OpenMP library loaded in the process through :mod:`threadpoolctl` (an environment
variable set after numpy is imported has no effect). The command line's root callback calls
:func:`configure_threads`, which also exports ``OMP_NUM_THREADS``, ``MKL_NUM_THREADS`` and
``NUMBA_NUM_THREADS`` while torch and numba are not imported yet (for what the command imports
later and for its child processes); the library's entry functions (``build_library``,
``train_codesign``) call :func:`apply_thread_policy`, and the video pipeline splits ``N``
between its numba preprocessing and its torch inference workers.

One exception, for safety: an RCWA solve runs torch on one intra-op thread whatever ``N`` is
(the oneMKL hang in batched complex LU, :mod:`hyplex.optics.parallel`); a forward-only library
build gives ``N`` back when it ends, a solve with gradients keeps one thread for the job.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

__all__ = [
    "ENV_VAR",
    "ThreadPolicy",
    "apply_thread_policy",
    "configure_threads",
    "free_cores",
    "resolve_threads",
    "thread_policy",
    "usable_cores",
]

ENV_VAR = "HYPLEX_THREADS"
#: Read by a library when it loads: exported while that library is not loaded yet (for the
#: command's later imports and its child processes; a loaded one is set through its API).
_EXPORTED = {
    "OMP_NUM_THREADS": "torch",
    "MKL_NUM_THREADS": "torch",
    "OPENBLAS_NUM_THREADS": "numpy",
    "NUMBA_NUM_THREADS": "numba",
}

_log = logging.getLogger(__name__)
_lock = threading.Lock()
_policy: ThreadPolicy | None = None
_interop_done = False


@dataclass(frozen=True)
class ThreadPolicy:
    """The process's compute threads and why.

    Attributes
    ----------
    threads : compute threads for torch intra-op, torch inter-op, numba and BLAS/OpenMP.
    source : ``"explicit"``, ``"HYPLEX_THREADS"`` or ``"free cores"``.
    cores : cores this process may use (affinity and cgroup quota).
    busy : cores other work kept busy when the policy was chosen (None: not read).
    """

    threads: int
    source: str
    cores: int
    busy: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def _positive_int(value, what: str) -> int:
    try:
        number = int(str(value).strip())
    except ValueError:
        raise ValueError(f"{what} must be a whole number of threads >= 1, got {value!r}") from None
    if number < 1:
        raise ValueError(f"{what} must be a whole number of threads >= 1, got {value!r}")
    return number


def _cgroup_quota() -> float | None:
    """CPUs allowed by a cgroup CPU quota (v2 ``cpu.max`` or v1 CFS), None if unlimited."""
    try:
        text = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if text and text[0] != "max":
            return int(text[0]) / int(text[1])
    except (OSError, ValueError, IndexError):
        pass
    try:
        quota = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
        period = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
        if quota > 0 and period > 0:
            return quota / period
    except (OSError, ValueError):
        pass
    return None


def usable_cores() -> int:
    """Cores this process may run on: its CPU affinity, capped by a cgroup CPU quota."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    quota = _cgroup_quota()
    if quota is not None:
        cores = min(cores, math.ceil(quota))
    return max(1, cores)


def _own_cpu_share() -> float:
    """This process's average CPU use since it started, in cores (0 where unknown)."""
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        started = int(fields[19]) / os.sysconf("SC_CLK_TCK")  # seconds after boot
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0.0
    times = os.times()
    wall = uptime - started
    return (times.user + times.system) / wall if wall > 1.0 else 0.0


def _cpu_ticks(cpus) -> tuple[int, int] | None:
    """(busy, total) clock ticks of the CPUs ``cpus`` from ``/proc/stat`` (None elsewhere)."""
    try:
        lines = Path("/proc/stat").read_text().splitlines()
    except OSError:
        return None
    busy = total = 0
    for line in lines:
        name, *fields = line.split()
        if not name.startswith("cpu") or name == "cpu" or int(name[3:]) not in cpus:
            continue
        ticks = [int(v) for v in fields[:8]]  # user nice system idle iowait irq softirq steal
        total += sum(ticks)
        busy += sum(ticks) - ticks[3] - ticks[4]
    return (busy, total) if total else None


def _busy_now(window_s: float = 0.1) -> float | None:
    """Cores other processes keep busy right now: ``/proc/stat`` over ``window_s``, less
    this process's own CPU time in the window (None where it cannot be read)."""
    try:
        cpus = os.sched_getaffinity(0)
    except AttributeError:
        return None
    before, own_before = _cpu_ticks(cpus), os.times()
    if before is None:
        return None
    time.sleep(window_s)
    after, own_after = _cpu_ticks(cpus), os.times()
    if after is None or after[1] <= before[1]:
        return None
    ticks_per_core = (after[1] - before[1]) / len(cpus)
    busy = (after[0] - before[0]) / ticks_per_core  # in cores
    own = (own_after.user + own_after.system - own_before.user - own_before.system) / window_s
    return max(0.0, busy - own)


def free_cores(cores: int | None = None) -> tuple[int, float | None]:
    """``(free cores, busy)``: usable cores minus those other work keeps busy (>= 1).

    ``busy`` is the larger of two readings, in cores: the 1-minute load average less this
    process's own share (it lags by a minute), and the CPU time other processes take over
    the next 0.1 s (``/proc/stat``; it sees a job that just started, and a burst). The
    larger, because more threads than free cores cost 10-100x and fewer at most the idle
    cores. None where neither can be read (then every usable core counts as free).
    """
    cores = usable_cores() if cores is None else cores
    readings = []
    try:
        readings.append(max(0.0, os.getloadavg()[0] - _own_cpu_share()))
    except (AttributeError, OSError):
        pass
    now = _busy_now()
    if now is not None:
        readings.append(now)
    if not readings:
        return cores, None
    busy = max(readings)
    return max(1, cores - int(busy + 0.5)), busy


def resolve_threads(threads: int | None = None) -> ThreadPolicy:
    """Choose the compute threads (see the module docstring), without applying them."""
    cores = usable_cores()
    if threads is not None:
        return ThreadPolicy(_positive_int(threads, "--threads"), "explicit", cores)
    value = os.environ.get(ENV_VAR, "").strip()
    if value:
        return ThreadPolicy(_positive_int(value, ENV_VAR), ENV_VAR, cores)
    free, busy = free_cores(cores)
    local = os.environ.get("LOCAL_WORLD_SIZE", "").strip()  # torchrun: ranks on this machine
    if local.isdigit() and int(local) > 1:
        free = max(1, free // int(local))
    omp = os.environ.get("OMP_NUM_THREADS", "").strip()
    if omp.isdigit() and int(omp) >= 1:
        free = min(free, int(omp))
    return ThreadPolicy(free, "free cores", cores, None if busy is None else round(busy, 2))


def thread_policy() -> ThreadPolicy:
    """The process's policy: chosen on first use (or by :func:`configure_threads`), then kept."""
    global _policy
    with _lock:
        if _policy is None:
            _policy = resolve_threads()
            _log.info("hyplex threads: %s", _policy)
        return _policy


def configure_threads(threads: int | None = None, export: bool = True) -> ThreadPolicy:
    """Choose the process's policy now (``threads`` overrides ``HYPLEX_THREADS``) and apply it.

    The entry point of a program calls this once. ``export`` also sets the environment
    variable (``OMP_NUM_THREADS``, ``NUMBA_NUM_THREADS`` ...) of each library not imported
    yet, for the program's later imports and its child processes.
    """
    global _policy
    policy = resolve_threads(threads)
    with _lock:
        _policy = policy
    if export:
        for name, library in _EXPORTED.items():
            if library not in sys.modules:
                os.environ[name] = str(policy.threads)
    return apply_thread_policy(policy, import_libraries=False)


def apply_thread_policy(
    policy: ThreadPolicy | int | None = None, import_libraries: bool = True
) -> ThreadPolicy:
    """Give the policy's thread count to torch, numba and the BLAS/OpenMP libraries.

    Parameters
    ----------
    policy : a :class:`ThreadPolicy`, a thread count, or None for :func:`thread_policy`.
    import_libraries : import torch and numba to set them; False sets only those already
        imported (the environment covers the rest).

    Returns the policy applied. Idempotent and cheap (~ms); entry functions call it.
    """
    if policy is None:
        policy = thread_policy()
    elif not isinstance(policy, ThreadPolicy):
        policy = ThreadPolicy(_positive_int(policy, "threads"), "explicit", usable_cores())
    n = policy.threads
    # numba first: launching its threading layer loads an OpenMP runtime that the BLAS/OpenMP
    # limits must then see; torch last, since both may touch the OpenMP setting it reads
    numba = _module("numba", import_libraries)
    if numba is not None:
        numba.set_num_threads(max(1, min(n, numba.config.NUMBA_NUM_THREADS)))
    _limit_blas(n)
    torch = _module("torch", import_libraries)
    if torch is not None:
        _set_interop(torch, n)
        if not os.environ.get("HYPLEX_KEEP_TORCH_THREADS") and torch.get_num_threads() != n:
            torch.set_num_threads(n)
    return policy


def _module(name: str, load: bool):
    if name in sys.modules:
        return sys.modules[name]
    if not load:
        return None
    import importlib

    return importlib.import_module(name)


def _limit_blas(n: int) -> None:
    if "numpy" not in sys.modules and "scipy" not in sys.modules:
        return  # nothing loaded yet: the environment variables cover later loads
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # a core dependency; tolerate a broken install rather than fail
        _log.warning("threadpoolctl is not installed: BLAS/OpenMP thread counts left alone")
        return
    threadpool_limits(limits=n)


def _set_interop(torch, n: int) -> None:
    global _interop_done
    with _lock:
        if _interop_done:
            return
        _interop_done = True
        if torch.get_num_interop_threads() == n:
            return
        try:
            torch.set_num_interop_threads(n)
        except RuntimeError:  # inter-op work already started in this process: keep its pool
            _log.debug("torch inter-op threads already in use; left at %d",
                       torch.get_num_interop_threads())  # fmt: skip

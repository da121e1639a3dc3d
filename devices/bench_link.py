"""The simulated bench across processes: instruments publish their state, the light follows.

On a real bench the camera and the power meter do not talk to the monochromator: they see its
*light*. When the simulated instruments run as separate ``hyplex sim-device --pty`` processes,
that optical path is a folder of small state files, one per instrument::

    hyplex sim-device monochromator --pty --bench-state D   --writes-->  D/monochromator.json
    hyplex sim-device filterwheel  --pty --bench-state D    --writes-->  D/filterwheel.json
    hyplex sim-device powermeter   --pty --bench-state D    --reads---   LinkedBench(D)
    SimulatedCamera(LinkedBench(D))   (in the process that runs the calibration)  --reads--

Why files and not the instruments' own query commands: a camera never sends ``WAVE?`` to a
monochromator; querying through the serial line would add traffic the real bench does not
have and would share one port between two clients. The state file is the side channel the
light is on a real bench, and the serial line stays exactly what the driver exchanges.

Ordering: :class:`PublishingSimulator` writes the state *after* handling a command and
*before* its reply leaves (the :class:`~hyplex.devices.pty_bridge.PtyBridge` writes the
bytes ``feed`` returns), so a driver that has read a reply never observes an older light.
Writes are atomic (a temporary file ``os.replace``\\ d over the target), so a reader sees the
old state or the new one, never half of one. A missing file means the instrument is not
running: its power-on state (shutter closed, filter position 1), i.e. no light.

:class:`LinkedBench` is a :class:`~hyplex.devices.sim_bench.SimulatedBench` whose lamp,
sphere and meter coupling are its own (same defaults) and whose monochromator and filter wheel
are read from the folder, so the camera and the power meter compute the same watts from the
same light model as the in-process bench.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from hyplex.devices.clock import MonotonicClock
from hyplex.devices.sim_bench import SimulatedBench

#: instrument kind -> the attributes of its simulator that carry the light
PUBLISHED = {
    "monochromator": ("wavelength_nm", "bandwidth_nm", "slit_um", "shutter_open", "busy"),
    "filterwheel": ("position", "transmission"),
    "stage": ("position_mm",),
    "powermeter": ("correction_nm", "average_count"),
}
#: what a reader assumes when an instrument has not published (not running: no light)
POWER_ON = {
    "monochromator": {
        "wavelength_nm": 500.0,
        "bandwidth_nm": 3.3,
        "slit_um": 500.0,
        "shutter_open": False,
        "busy": False,
    },
    "filterwheel": {"position": 1, "transmission": 1.0},
    "stage": {"position_mm": 0.0},
    "powermeter": {"correction_nm": 633.0, "average_count": 1},
}


def state_path(folder, kind: str) -> Path:
    """``folder/<kind>.json``: where instrument ``kind`` publishes its state."""
    if kind not in PUBLISHED:
        raise ValueError(f"unknown instrument {kind!r}; expected one of {sorted(PUBLISHED)}")
    return Path(folder) / f"{kind}.json"


def write_state(folder, kind: str, state: dict) -> None:
    """Atomically replace ``folder/<kind>.json`` with ``state`` (JSON numbers and booleans)."""
    target = state_path(folder, kind)
    handle, temporary = tempfile.mkstemp(prefix=f".{kind}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(handle, "w") as file:
            json.dump(state, file)
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def read_state(folder, kind: str) -> dict:
    """The last state ``kind`` published in ``folder``; its power-on state when none."""
    try:
        text = state_path(folder, kind).read_text()
    except FileNotFoundError:
        return dict(POWER_ON[kind])
    return {**POWER_ON[kind], **json.loads(text)}


class PublishingSimulator:
    """Wrap an instrument simulator so every command it handles publishes its state.

    Everything but :meth:`feed` is the wrapped simulator's (attribute access is forwarded),
    so the wrapper goes wherever the simulator goes (``PtyBridge``).

    Parameters
    ----------
    simulator : InstrumentSimulator
        Of a kind in :data:`PUBLISHED`.
    folder : path
        Existing folder shared by the bench's processes.
    """

    def __init__(self, simulator, folder):
        folder = Path(folder)
        if not folder.is_dir():
            raise ValueError(f"bench state folder {folder} does not exist; expected a folder")
        state_path(folder, simulator.kind)  # checks the kind
        self.simulator, self.folder = simulator, folder
        self._published: dict | None = None
        self.publish()

    def state(self) -> dict:
        """The published attributes of the simulator now."""
        sim = self.simulator
        values = {name: getattr(sim, name) for name in PUBLISHED[sim.kind]}
        return {k: (v if isinstance(v, bool) else float(v)) for k, v in values.items()}

    def publish(self) -> None:
        """Write the state, unless it is the one last written (``feed`` runs per command)."""
        state = self.state()
        if state != self._published:
            write_state(self.folder, self.simulator.kind, state)
            self._published = state

    def feed(self, data: bytes) -> bytes:
        """The simulator's ``feed``; the state is on disk before the reply is returned."""
        reply = self.simulator.feed(data)
        self.publish()
        return reply

    def __getattr__(self, name):
        return getattr(self.simulator, name)


class _MonochromatorView:
    """Read-only monochromator state from the folder (what ``SimulatedBench`` reads)."""

    def __init__(self, folder: Path):
        self.folder = folder

    def _state(self) -> dict:
        return read_state(self.folder, "monochromator")

    @property
    def wavelength_nm(self) -> float:
        return float(self._state()["wavelength_nm"])

    @property
    def bandwidth_nm(self) -> float:
        return float(self._state()["bandwidth_nm"])

    @property
    def shutter_open(self) -> bool:
        return bool(self._state()["shutter_open"])


class _FilterWheelView:
    def __init__(self, folder: Path):
        self.folder = folder

    @property
    def position(self) -> int:
        return int(read_state(self.folder, "filterwheel")["position"])

    @property
    def transmission(self) -> float:
        return float(read_state(self.folder, "filterwheel")["transmission"])


class _StageView:
    def __init__(self, folder: Path):
        self.folder = folder

    @property
    def position_mm(self) -> float:
        return float(read_state(self.folder, "stage")["position_mm"])


class LinkedBench(SimulatedBench):
    """A :class:`SimulatedBench` whose instruments run elsewhere and publish into ``folder``.

    The light model (lamp, slit triangle, sphere, meter coupling; see ``sim_bench``) is the
    parent's; the monochromator, filter wheel and stage are read from the folder at every
    call, so the camera (``SimulatedCamera(LinkedBench(D))``) and the power meter
    (``hyplex sim-device powermeter --bench-state D``) follow the instruments' processes.

    Parameters
    ----------
    folder : path
        The folder the instruments publish into (it must exist).
    peak_power_W_per_nm, lamp_temperature_k, radiance_per_watt, meter_fraction : float
        As for :class:`SimulatedBench` (same defaults: every process must agree).
    """

    def __init__(
        self,
        folder,
        peak_power_W_per_nm: float = 1e-4,
        lamp_temperature_k: float = 3200.0,
        radiance_per_watt: float = 500.0,
        meter_fraction: float = 0.05,
    ):
        folder = Path(folder)
        if not folder.is_dir():
            raise ValueError(f"bench state folder {folder} does not exist; expected a folder")
        self.folder = folder
        self.clock = MonotonicClock()
        self.peak_power_W_per_nm = float(peak_power_W_per_nm)
        self.lamp_temperature_k = float(lamp_temperature_k)
        self.radiance_per_watt = float(radiance_per_watt)
        self.meter_fraction = float(meter_fraction)
        self.monochromator = _MonochromatorView(folder)
        self.filter_wheel = _FilterWheelView(folder)
        self.stage = _StageView(folder)
        self.power_meter = None
        self.urls = {}

    def __repr__(self) -> str:
        return f"LinkedBench({str(self.folder)!r})"

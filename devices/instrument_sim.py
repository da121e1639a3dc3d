"""Simulated serial instruments: a line-in, line-out state machine on an injected clock.

Each simulator implements ``handle(line) -> reply`` (the instrument's command set; None when
the real device sends nothing back; an instrument that echoes commands, like the Cornerstone
on RS-232, sets ``echo`` and ``feed`` sends the echo line first) and keeps "busy until"
deadlines on its :class:`~hyplex.devices.clock.Clock`, so a move takes simulated time.
``feed(bytes)`` wraps it into a byte stream: it splits commands on the instrument's
terminator, appends the reply terminator and injects line faults. The same object is
reachable three ways:

1. ``sim://<kind>[?id=N]`` pyserial URLs (``protocol_sim.py``), for unit tests;
2. a pseudo-terminal (``pty_bridge.PtyBridge``), through the real termios path;
3. ``hyplex sim-device <kind> --pty``, for manual runs.

``attach(simulator)`` returns a ``sim://`` URL that reaches that very instance (kept in a
weak registry: the URL works while the simulator is alive); a URL without ``id`` builds a
fresh simulator of the kind.
"""

from __future__ import annotations

import importlib
import itertools
import threading
import weakref
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

from hyplex.devices.clock import Clock, MonotonicClock

SIMULATOR_CLASSES = {
    "monochromator": "hyplex.devices.monochromator_sim:MonochromatorSimulator",
    "filterwheel": "hyplex.devices.filter_wheel:FilterWheelSimulator",
    "stage": "hyplex.devices.stage:StageSimulator",
    "powermeter": "hyplex.devices.power_meter:PowerMeterSimulator",
}

_LIVE: weakref.WeakValueDictionary[int, InstrumentSimulator] = weakref.WeakValueDictionary()
_IDS = itertools.count(1)
_REGISTRY_LOCK = threading.Lock()


class TimedMove:
    """One axis that moves linearly in time on a simulator's clock (a grating, a stage, a wheel).

    ``value`` is where the axis is now, interpolated linearly between ``origin`` and
    ``target`` while ``busy``; a move that is started mid-way starts from the current value.
    Units are the caller's (nm, mm, slot numbers); durations are seconds.
    """

    def __init__(self, clock: Clock, value: float):
        self.clock = clock
        self.origin = self.target = value
        self.start_ns = self.end_ns = clock.now_ns()

    def go(self, target, duration_s: float, origin=None) -> None:
        """Start moving to ``target``, arriving ``duration_s`` later, from ``origin`` (default:
        the current value; a stepping axis passes the slot it reports)."""
        now = self.clock.now_ns()
        self.origin, self.target = (self.value if origin is None else origin), target
        self.start_ns, self.end_ns = now, now + round(max(float(duration_s), 0.0) * 1e9)

    @property
    def busy(self) -> bool:
        return self.clock.now_ns() < self.end_ns

    @property
    def value(self):
        """The position now: ``target`` once arrived, else linear between origin and target."""
        now = self.clock.now_ns()
        if now >= self.end_ns:
            return self.target
        fraction = (now - self.start_ns) / max(self.end_ns - self.start_ns, 1)
        return self.origin + fraction * (self.target - self.origin)


@dataclass
class LineFaults:
    """Faults injected into the next replies (each counter decrements as it fires).

    Attributes
    ----------
    silent : int
        Replies swallowed: the driver times out.
    garbled : int
        Replies corrupted (a byte that is not ASCII): the driver cannot parse them.
    partial : int
        Replies cut in half, without terminator: the driver times out mid-line.
    after : int
        Replies sent intact before the faults start (a fault mid-sweep).
    """

    silent: int = 0
    garbled: int = 0
    partial: int = 0
    after: int = 0

    @classmethod
    def parse(cls, text: str) -> LineFaults:
        """``"after=40,garbled=3"`` -> ``LineFaults(garbled=3, after=40)`` (counts >= 0).

        ``hyplex sim-device --faults`` uses it, so a simulator in another process can stop
        answering (``silent=1000000``) or garble replies mid-run.
        """
        faults = cls()
        names = ("silent", "garbled", "partial", "after")
        for item in filter(None, (part.strip() for part in str(text).split(","))):
            name, _, value = item.partition("=")
            name = name.strip()
            if name not in names or not value.strip().isdigit():
                raise ValueError(
                    f"bad fault {item!r}; expected NAME=COUNT with NAME one of {names} and "
                    "COUNT an integer >= 0, e.g. 'after=40,garbled=3'"
                )
            setattr(faults, name, int(value))
        return faults


class InstrumentSimulator(ABC):
    """Base class of the instrument simulators.

    Parameters
    ----------
    clock : Clock, optional
        Time of the busy-until deadlines (default: monotonic; tests pass a VirtualClock).
    """

    kind: ClassVar[str] = "instrument"
    command_terminator: ClassVar[bytes] = b"\r\n"
    reply_terminator: ClassVar[bytes] = b"\r\n"
    #: echo every command line back before its reply (an instance may switch it off)
    echo: bool = False

    def __init__(self, clock: Clock | None = None):
        self.clock = clock or MonotonicClock()
        self.faults = LineFaults()
        self.lock = threading.RLock()
        self.log: list[tuple[str, str | None]] = []
        self._pending = bytearray()

    @abstractmethod
    def handle(self, line: str) -> str | None:
        """The reply (without terminator) to one command line, or None for no reply."""

    def feed(self, data: bytes) -> bytes:
        """Bytes from the host in, bytes of the replies out (terminated, faults applied)."""
        out = bytearray()
        with self.lock:
            self._pending += data
            terminator = self.command_terminator
            while (end := self._pending.find(terminator)) >= 0:
                line = bytes(self._pending[:end]).decode("ascii", "replace").strip()
                del self._pending[: end + len(terminator)]
                if not line:
                    continue
                echo = self.echo  # characters are echoed as they arrive: before the command acts
                reply = self.handle(line)
                self.log.append((line, reply))
                sent = line.encode("ascii", "replace") + self.reply_terminator if echo else b""
                if reply is not None:
                    sent += reply.encode("ascii") + self.reply_terminator
                if sent:
                    out += self._with_faults(sent)
        return bytes(out)

    def _with_faults(self, reply: bytes) -> bytes:
        faults = self.faults
        if faults.after > 0 and (faults.silent or faults.garbled or faults.partial):
            faults.after -= 1
            return reply
        if faults.silent > 0:
            faults.silent -= 1
            return b""
        if faults.garbled > 0:
            faults.garbled -= 1
            return b"#\xff" + reply[2:]
        if faults.partial > 0:
            faults.partial -= 1
            return reply[: max(len(reply) // 2, 1)]
        return reply

    def now_s(self) -> float:
        return self.clock.now_ns() * 1e-9


def attach(simulator: InstrumentSimulator) -> str:
    """A ``sim://`` URL that opens a serial port onto ``simulator`` itself."""
    with _REGISTRY_LOCK:
        for number, live in _LIVE.items():
            if live is simulator:
                return f"sim://{simulator.kind}?id={number}"
        number = next(_IDS)
        _LIVE[number] = simulator
    return f"sim://{simulator.kind}?id={number}"


def simulator_class(kind: str) -> type[InstrumentSimulator]:
    """The simulator class of ``kind`` (see :data:`SIMULATOR_CLASSES`)."""
    if kind not in SIMULATOR_CLASSES:
        known = sorted(SIMULATOR_CLASSES)
        raise ValueError(f"unknown instrument {kind!r}; expected one of {known}")
    module, name = SIMULATOR_CLASSES[kind].split(":")
    return getattr(importlib.import_module(module), name)


def resolve(kind: str, number: int | None) -> InstrumentSimulator:
    """The attached simulator ``number`` (checked to be a ``kind``), or a new one."""
    if number is None:
        return simulator_class(kind)()
    with _REGISTRY_LOCK:
        simulator = _LIVE.get(number)
    if simulator is None:
        raise ValueError(f"no live simulator with id {number} (it was garbage-collected?)")
    if simulator.kind != kind:
        raise ValueError(f"simulator {number} is a {simulator.kind}, not a {kind}")
    return simulator

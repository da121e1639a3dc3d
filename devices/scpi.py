"""SCPI commands declared once: a setting descriptor for drivers, a header matcher for
simulators.

Drivers declare each setting as a class attribute, the way pymeasure's
``Instrument.control`` does (query, set command, validator, units in the docstring); the
transport underneath (serial or VISA) is not their concern::

    class PowerMeter(Instrument):
        wavelength_nm = Setting(
            "SENS:CORR:WAV?", "SENS:CORR:WAV {:g}", "Correction wavelength, nm.",
            validate=in_range(400.0, 1100.0, "wavelength_nm", "nm"),
        )

    meter.wavelength_nm = 780.0   # validated, written, read back and compared
    meter.wavelength_nm           # queried

Simulators match incoming headers against the manual's notation with
:func:`header_pattern`: upper-case letters are the short form, the whole word the long form,
``[...]`` nodes are optional (``[SENSe]:CORRection:WAVelength`` accepts ``SENS:CORR:WAV``,
``CORRECTION:WAVELENGTH`` and ``sense:corr:wav``; IEEE 488.2 / SCPI-99 syntax, as summarised
in the Thorlabs PM100D manual, section 6.4.1).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

from hyplex.devices.errors import InstrumentError


def in_range(low: float, high: float, name: str, unit: str) -> Callable[[Any], float]:
    """Validator: a finite number in ``[low, high]``, else ValueError naming ``name``."""

    def validate(value) -> float:
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{name} must be a number, got {value!r}") from None
        if not (math.isfinite(number) and low <= number <= high):
            raise ValueError(f"{name} must lie in [{low:g}, {high:g}] {unit}, got {value!r}")
        return number

    return validate


def integer_in(low: int, high: int, name: str) -> Callable[[Any], int]:
    """Validator: an integer in ``[low, high]``, else ValueError naming ``name``."""

    def validate(value) -> int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
            raise ValueError(f"{name} must be an integer in [{low}, {high}], got {value!r}")
        if not low <= int(value) <= high:
            raise ValueError(f"{name} must be an integer in [{low}, {high}], got {value!r}")
        return int(value)

    return validate


def boolean(name: str) -> Callable[[Any], int]:
    """Validator: True/False (or 1/0), sent as SCPI ``1``/``0``."""

    def validate(value) -> int:
        if value not in (True, False, 0, 1):
            raise ValueError(f"{name} must be True or False, got {value!r}")
        return int(bool(value))

    return validate


def scpi_bool(reply: str) -> bool:
    """``1``/``0``/``ON``/``OFF`` -> bool (ValueError otherwise: a garbled reply)."""
    text = reply.strip().upper()
    if text in ("1", "ON"):
        return True
    if text in ("0", "OFF"):
        return False
    raise ValueError(f"expected a SCPI boolean, got {reply!r}")


class Setting:
    """One instrument setting: its query, its set command, a validator, read-back checking.

    Parameters
    ----------
    query : str
        Query command (``"SENS:CORR:WAV?"``).
    command : str or None
        Set command with one ``{}`` field for the validated value (``"SENS:CORR:WAV {:g}"``);
        None for a read-only setting.
    doc : str
        What it is, with its unit.
    parse : callable
        Reply text -> value (ValueError marks a garbled reply, retried by the transport).
    validate : callable, optional
        Value -> value to send, raising ValueError (before anything is sent).
    tolerance : float
        Relative tolerance of the read-back comparison (SCPI instruments round values).

    Setting writes the command, then reads the value back (SCPI set commands send nothing
    back); a value that does not stick is re-sent up to the transport's retries, then the
    instrument's error queue (``error_query`` of the driver, e.g. ``SYST:ERR?``) is read and
    named in an :class:`~hyplex.devices.errors.InstrumentError`.
    """

    def __init__(
        self,
        query: str,
        command: str | None,
        doc: str,
        parse: Callable[[str], Any] = float,
        validate: Callable[[Any], Any] | None = None,
        tolerance: float = 1e-6,
    ):
        self.query, self.command, self.parse = query, command, parse
        self.validate = validate or (lambda value: value)
        self.tolerance = float(tolerance)
        self.__doc__ = doc
        self.name = query

    def __set_name__(self, owner, name: str) -> None:
        self.name = name

    def __get__(self, instrument, owner=None):
        if instrument is None:
            return self
        return instrument.transport.query(self.query, self.parse)

    def __set__(self, instrument, value) -> None:
        self.set(instrument, value)

    def set(self, instrument, value):
        """Validate, write, read back; returns the read-back value."""
        if self.command is None:
            raise AttributeError(f"{self.name} is read-only ({self.query})")
        value = self.validate(value)
        transport = instrument.transport
        readback = None
        with transport.lock:  # write, read back and the error query as one exchange
            for _ in range(transport.retries + 1):
                transport.write(self.command.format(value))
                readback = transport.query(self.query, self.parse)
                if self._same(readback, value):
                    return readback
            error_query = getattr(instrument, "ERROR_QUERY", None)
            error = transport.query(error_query) if error_query else "(no error query)"
        raise InstrumentError(
            f"{getattr(instrument, 'KIND', 'instrument')}: {self.command.format(value)!r} not "
            f"applied (reads back {readback!r}); device error: {error}"
        )

    def _same(self, readback, value) -> bool:
        if isinstance(value, bool) or isinstance(readback, bool):
            return bool(readback) == bool(value)
        try:
            return abs(float(readback) - float(value)) <= self.tolerance * max(abs(value), 1)
        except (TypeError, ValueError):
            return readback == value


_MNEMONIC = re.compile(r"^(\*?[A-Z][A-Z0-9]*)([a-z0-9]*)$")


def _node(mnemonic: str) -> str:
    """``"CORRection"`` -> ``(?:CORRECTION|CORR)`` (long or short form)."""
    match = _MNEMONIC.match(mnemonic)
    if match is None:
        raise ValueError(f"not a SCPI mnemonic: {mnemonic!r}")
    short, rest = match.groups()
    long = short + rest.upper()
    if long == short:
        return re.escape(short)
    return f"(?:{re.escape(long)}|{re.escape(short)})"


def header_pattern(notation: str) -> re.Pattern:
    """Regex matching every spelling of a SCPI header written in a manual's notation.

    ``notation`` uses ``:`` between nodes, ``[...]`` around optional nodes and upper-case
    letters for the short form (``"[SENSe]:POWer[:DC]:RANGe[:UPPer]?"``). The match is
    case-insensitive and accepts a leading ``:``.
    """
    text = notation.strip()
    question = text.endswith("?")
    text = text.rstrip("?")
    nodes = re.findall(r"\[:?([^\]:]+)\]|:?([^:\[\]]+)", text)
    regex = ""
    for index, (optional, required) in enumerate(nodes):
        node = _node(optional or required)
        if index == 0:
            regex += f"(?:{node}:)?" if optional else node
        else:
            regex += f"(?::{node})?" if optional else f":{node}"
    if nodes and nodes[0][0]:  # "[SENSe]:CORR": the separator belongs to the optional root
        regex = regex.replace(":)?:", ":)?", 1)
    return re.compile(rf"^:?{regex}{re.escape('?') if question else ''}$", re.IGNORECASE)

"""Monochromator: driver of the Newport/Oriel Cornerstone 130B/260B (its simulator:
:mod:`hyplex.devices.monochromator_sim`).

Source: Newport, *Cornerstone 130B Monochromators* user manual (MCS130B, doc. 90088262),
Appendix I "Remote commands and queries", and its twin for the CS260B (MCS260B) and the
older Cornerstone 260 (MCS260, Appendix I "Low level commands and queries"):

- section 15.1 (CS260B): RS-232 at 9600 baud, 8 data bits, no parity, 1 stop bit, no flow
  control; statements end in CR LF; the USB port is USB-TMC. The older CS260 (16.1)
  accepts statements ended by LF alone, so CR LF suits both.
- section 15.3 (CS130B): responses end in CR LF; statements are case-insensitive; a
  parameter follows the command after at least one space.
- section 15.4 "Standard mode": with Echo on (the factory setting on RS-232, 15.1) the
  instrument echoes every statement; "after sending a Command, an application must read back
  the echoed command. There is no further response to a Command"; after a query it sends
  the echo and then the response (``WAVE?`` -> ``WAVE?`` CR LF ``500.01`` CR LF). Statements
  received on the USB port are never echoed.
- section 15.8 "Synchronization": ``GOWAVE`` is an overlapped command; ``*OPC`` sets bit 0
  of the Event Status Register once pending operations finish, read with ``*ESR?`` (which
  clears it): "if bit 0 is not set, read it again. Continue until bit 0 is set".
- section 15.9 "Error codes": a command that is not understood or has a bad parameter gets
  no error reply; the Status Byte (``STB?``) becomes 32 (the CS260 manual, 16.7, shows it
  as hexadecimal ``20``) and the Error Code (``ERROR?``) says why; reading either clears it.

============================  =================  ==============================================
statement                     response (echo on   effect
                              RS-232: echo first)
============================  =================  ==============================================
``UNITS NM``                  (none)             wavelength units nanometres
``GOWAVE 550.000``            (none)             start moving the grating (overlapped)
``WAVE?``                     ``550.000``        current wavelength, in the set units
``*OPC``, ``*ESR?``           ``1`` when done    operation-complete handshake (15.8)
``SHUTTER O`` / ``SHUTTER C``  (none)             open / close the shutter
``SHUTTER?``                  ``O`` or ``C``
``SLIT1MICRONS 500``          (none)             entrance slit width, um
``SLIT1MICRONS?``             ``500``
``GRAT 1``                    (none)             select grating 1..3 (overlapped)
``GRAT?``                     ``1,1200,VIS``     number, lines/mm, label
``STB?``                      ``0`` / ``32``     status byte, 32 after any error; cleared
``ERROR?``                    ``0``..``10``      last error code (table of 15.9); cleared
``INFO?``                     model string
``ECHO 0`` / ``ECHO 1``       (none)             switch the RS-232 echo
============================  =================  ==============================================

Not confirmed from the manual pages we could read (the detailed command reference pages
were not retrievable): the exact reply formats of ``GRAT?`` (``number,lines,label``, as
parsed by open-source Cornerstone drivers), ``SHUTTER?`` (``O``/``C``) and ``INFO?``, the
number of decimals of ``WAVE?``, and the slit range. The simulator models the move time as
``settle_s + distance / slew_nm_per_s`` (a choice, not a specification).

Bandwidth (FWHM of the triangular slit function, equal slits) = slit width (mm) x reciprocal
dispersion (6.6 nm/mm for the Cornerstone 130 with a 1200 l/mm grating).
"""

from __future__ import annotations

from hyplex.devices.errors import InstrumentError
from hyplex.devices.instrument_driver import Instrument, wait_until
from hyplex.devices.monochromator_sim import (
    ERROR_CODES,
    SLIT_RANGE_UM,
    STATUS_ERROR,
    WAVELENGTH_RANGE_NM,
    MonochromatorSimulator,
)
from hyplex.devices.scpi import in_range
from hyplex.devices.transport import is_serial_line

__all__ = [
    "ERROR_CODES",
    "SLIT_RANGE_UM",
    "STATUS_ERROR",
    "WAVELENGTH_RANGE_NM",
    "Monochromator",
    "MonochromatorSimulator",
]

ARRIVAL_TOLERANCE_NM = 0.5  # a finished move that reads back further off is an error


class Monochromator(Instrument):
    """Driver of a Cornerstone 130B/260B monochromator (see the module doc for the commands).

    Every statement is checked: its echo (RS-232), then the status byte (``STB?``); a
    nonzero status reads the error code (``ERROR?``) and raises
    :class:`~hyplex.devices.errors.InstrumentError` naming the statement and the manual's
    meaning of the code (section 15.9). Moves wait on the ``*OPC`` / ``*ESR?`` handshake of
    section 15.8; ``*OPC`` is re-sent before every poll, so a lost ``*ESR?`` reply (which
    clears the bit it reported) cannot hide the end of a move.

    Parameters
    ----------
    port : str or LineTransport
        ``/dev/ttyUSB0``, ``ASRL/dev/ttyUSB0::INSTR`` (RS-232, echo on), ``USB0::...::INSTR``
        (USB-TMC, no echo), ``sim://monochromator`` or a transport.
    timeout_s, retries : float, int
        Per reply line, s, and extra attempts (see ``LineTransport``).
    clock : Clock, optional
        Used to wait for moves (pass the simulator's VirtualClock in tests).
    poll_s : float
        Status polling period while waiting for a move, s.
    echo : bool, optional
        Override the echo expected from the URL (RS-232 links echo, USB does not).
    """

    KIND = "monochromator"
    BAUD = 9600
    WRITE_EOL = b"\r\n"
    READ_EOL = b"\n"  # CR LF (15.3) or LF (the CS260 echo, 16.3); the CR is stripped
    POLL_S = 0.02

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._set("UNITS NM")

    @classmethod
    def echoes_on(cls, url: str) -> bool:
        """RS-232 links echo (section 15.1); USB-TMC, TCPIP and GPIB do not (15.4)."""
        return is_serial_line(url)

    def _set(self, command: str) -> None:
        """Send a statement, read its echo, and raise if the status byte reports an error."""
        with self.transport.lock:  # no other thread's statement between it and STB?
            self.transport.write(command)
            self.check_errors(command)

    def check_errors(self, after: str = "the last statement") -> None:
        """Read the status byte; if it reports an error, read the code and raise."""
        status = self._ask("STB?", _integer)
        if status:
            code = self._ask("ERROR?", _integer)
            meaning = ERROR_CODES.get(code, "unknown error code")
            raise InstrumentError(
                f"monochromator refused {after!r}: error {code} ({meaning}; Cornerstone "
                "manual, section 15.9)"
            )

    def _ask(self, command: str, parse=float):
        return self.transport.query(command, parse)

    def identify(self) -> str:
        return self._ask("INFO?", str)

    @property
    def wavelength_nm(self) -> float:
        """Current wavelength, nm (read from the device)."""
        return self._ask("WAVE?")

    def go_to(self, wavelength_nm: float, wait: bool = True, timeout_s: float = 30.0) -> float:
        """Move the grating; with ``wait``, block until it arrives. Returns the read-back nm.

        Raises ValueError, before anything is sent, for a wavelength outside
        ``WAVELENGTH_RANGE_NM``; InstrumentError if the instrument refuses it (error 3) or
        reads back more than ``ARRIVAL_TOLERANCE_NM`` off once the move is over.
        """
        low, high = WAVELENGTH_RANGE_NM
        value = float(wavelength_nm)
        if not low <= value <= high:
            raise ValueError(
                f"monochromator: wavelength_nm {wavelength_nm} is outside the instrument's "
                f"range [{low:g}, {high:g}] nm"
            )
        self._set(f"GOWAVE {value:.3f}")
        if not wait:
            return self.wavelength_nm
        self.wait_until_idle(timeout_s)
        arrived = self.wavelength_nm
        if abs(arrived - value) > ARRIVAL_TOLERANCE_NM:
            raise InstrumentError(
                f"monochromator: asked for {value:.3f} nm, reads {arrived:.3f} nm after the "
                f"move (tolerance {ARRIVAL_TOLERANCE_NM:g} nm)"
            )
        return arrived

    @property
    def busy(self) -> bool:
        """True while an overlapped operation (a grating move) is pending (section 15.8)."""
        with self.transport.lock:
            self.transport.write("*OPC")
            return not self._ask("*ESR?", _integer) & 1

    def wait_until_idle(self, timeout_s: float = 30.0) -> None:
        wait_until(lambda: not self.busy, self.clock, timeout_s, self.poll_s, "monochromator move")

    @property
    def shutter_open(self) -> bool:
        reply = self._ask("SHUTTER?", str).upper()
        if reply not in ("O", "C"):
            raise InstrumentError(f"monochromator: unexpected shutter state {reply!r}")
        return reply == "O"

    def open_shutter(self) -> None:
        self._set("SHUTTER O")

    def close_shutter(self) -> None:
        self._set("SHUTTER C")

    @property
    def slit_um(self) -> float:
        return self._ask("SLIT1MICRONS?")

    def set_slit_um(self, slit_um: float) -> float:
        """Set the entrance slit (um); returns the read-back width."""
        slit_um = in_range(*SLIT_RANGE_UM, "slit_um", "um")(slit_um)
        self._set(f"SLIT1MICRONS {slit_um:.0f}")
        return self.slit_um

    @property
    def grating(self) -> tuple[int, int, str]:
        """``(number, lines per mm, label)`` of the grating in use."""
        fields = self._ask("GRAT?", str).split(",")
        if len(fields) < 2:
            raise ValueError(f"expected number,lines,label, got {','.join(fields)!r}")
        return int(fields[0]), int(float(fields[1])), ",".join(fields[2:]).strip()

    def set_grating(self, number: int, timeout_s: float = 30.0) -> tuple[int, int, str]:
        """Select grating ``number`` (1..3) and wait for the turret; returns :attr:`grating`."""
        if int(number) != number or not 1 <= number <= 3:
            raise ValueError(f"grating number must be 1, 2 or 3, got {number!r}")
        self._set(f"GRAT {int(number)}")
        self.wait_until_idle(timeout_s)
        return self.grating

    def bandwidth_nm(self, dispersion_nm_per_mm: float = 6.6) -> float:
        """FWHM bandwidth, nm, from the slit and the grating's reciprocal dispersion."""
        return self.slit_um * 1e-3 * dispersion_nm_per_mm


def _integer(text: str) -> int:
    """``STB?``/``ERROR?``/``*ESR?`` replies: decimal (CS130B) or two-digit (CS260, 16.7)."""
    text = text.strip()
    if not text.isdigit():
        raise ValueError(f"expected an integer status, got {text!r}")
    return int(text)

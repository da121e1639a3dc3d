"""The simulators and drivers follow the instruments' manuals: the Cornerstone 130B's echo,
status byte, error codes and *OPC/*ESR? handshake (Appendix I, sections 15.3-15.9), and the
PM100's SCPI syntax, identification and range/saturation handling (PM100D manual, 6.4).
Each test names the section it checks."""

import pytest

from hyplex.devices.clock import VirtualClock
from hyplex.devices.errors import GarbledReply, InstrumentError, InstrumentTimeout
from hyplex.devices.instruments import (
    Monochromator,
    MonochromatorSimulator,
    PowerMeter,
    PowerMeterSimulator,
    SerialTransport,
    attach,
)
from hyplex.devices.power_meter import HEAD_MAX_POWER_W, PowerReadingOutOfRange
from hyplex.devices.scpi import header_pattern

# -- Cornerstone 130B ---------------------------------------------------------------------


def test_the_echo_comes_first_then_the_response():
    """15.4: ``GOWAVE 500`` -> echo only; ``WAVE?`` -> echo, then the response."""
    mono = MonochromatorSimulator(VirtualClock())
    assert mono.feed(b"GOWAVE 500\r\n") == b"GOWAVE 500\r\n"
    assert mono.feed(b"WAVE?\r\n") == b"WAVE?\r\n500.000\r\n"
    assert mono.feed(b"wave?\n") == b"wave?\r\n500.000\r\n"  # 15.3: any case; 16.2: LF only


def test_no_echo_on_usb_or_after_echo_0():
    """15.4: statements received on the USB port are never echoed; ``ECHO 0`` switches the
    RS-232 echo off."""
    usb = MonochromatorSimulator(VirtualClock(), echo=False)
    assert usb.feed(b"GOWAVE 500\r\n") == b""
    assert usb.feed(b"WAVE?\r\n") == b"500.000\r\n"
    serial = MonochromatorSimulator(VirtualClock())
    assert serial.feed(b"ECHO 0\r\n") == b"ECHO 0\r\n"  # echoed before it takes effect
    assert serial.feed(b"WAVE?\r\n") == b"500.000\r\n"


def test_errors_set_the_status_byte_and_the_error_code():
    """15.9: no error reply; STB? = 32 until read; ERROR? gives the code, then 0."""
    mono = MonochromatorSimulator(VirtualClock())
    assert mono.feed(b"GOWAVE 9999\r\n") == b"GOWAVE 9999\r\n"
    assert mono.handle("STB?") == "32" and mono.handle("STB?") == "0"
    assert mono.handle("ERROR?") == "3" and mono.handle("ERROR?") == "0"
    assert mono.wavelength_nm == 500.0  # nothing moved


def test_operation_complete_handshake_ends_a_move():
    """15.8: after ``*OPC``, ``*ESR?`` bit 0 is set once the move is over, and reading clears
    it."""
    clock = VirtualClock()
    mono = MonochromatorSimulator(clock)
    mono.handle("GOWAVE 700")  # 0.05 s + 200 nm / 200 nm/s
    mono.handle("*OPC")
    assert mono.handle("*ESR?") == "0"
    clock.advance(1.05)
    assert mono.handle("*ESR?") == "1"
    assert mono.handle("*ESR?") == "0"  # cleared by the read


def test_driver_reads_the_echo_and_checks_the_status_byte():
    clock = VirtualClock()
    mono = MonochromatorSimulator(clock)
    with Monochromator(attach(mono), clock=clock) as driver:
        assert driver.transport.echo
        assert driver.go_to(600.0) == pytest.approx(600.0)
        assert driver.grating == (1, 1200, "VIS")
        with pytest.raises(InstrumentError, match=r"refused 'GRAT 9'.*error 2 \(bad parameter"):
            driver._set("GRAT 9")
        assert driver.set_grating(2)[:2] == (2, 600)
    sent = [command for command, _ in mono.log]
    assert sent[sent.index("GRAT 9") :][:3] == ["GRAT 9", "STB?", "ERROR?"]


def test_out_of_range_wavelength_names_the_range_before_sending():
    clock = VirtualClock()
    mono = MonochromatorSimulator(clock)
    with Monochromator(attach(mono), clock=clock) as driver:
        mono.log.clear()
        with pytest.raises(ValueError, match=r"1500 is outside .* range \[200, 1100\] nm"):
            driver.go_to(1500)
        assert mono.log == []


def test_a_usb_monochromator_has_no_echo_and_a_wrong_echo_setting_is_a_clear_error():
    clock = VirtualClock()
    usb = MonochromatorSimulator(clock, echo=False)
    with Monochromator(attach(usb), clock=clock, echo=False) as driver:
        assert driver.go_to(450.0) == pytest.approx(450.0)
    with pytest.raises(InstrumentTimeout, match=r"timeout echo of 'UNITS NM' after 1 attempt"):
        Monochromator(attach(usb), clock=clock, echo=True, retries=0)
    transport = SerialTransport(attach(usb), "monochromator", echo=True, retries=0)
    with pytest.raises(GarbledReply, match=r"expected the echo 'WAVE\?', got '450.000'"):
        transport.query("WAVE?")


def test_a_move_that_ends_elsewhere_is_an_error():
    clock = VirtualClock()
    mono = MonochromatorSimulator(clock)
    handle = mono.handle

    def drifting(line):  # a grating that stops 2 nm short
        reply = handle(line)
        return f"{float(reply) - 2.0:.3f}" if line == "WAVE?" else reply

    mono.handle = drifting
    driver = Monochromator(attach(mono), clock=clock)
    with pytest.raises(InstrumentError, match=r"asked for 600.000 nm, reads 598.000 nm"):
        driver.go_to(600.0)
    with pytest.raises(ValueError, match="poll_s must be > 0"):
        Monochromator(attach(mono), clock=clock, poll_s=0)


def test_a_lost_esr_reply_does_not_hide_the_end_of_a_move():
    """*ESR? clears the bit it reports: the driver re-arms *OPC before every poll."""
    clock = VirtualClock()
    mono = MonochromatorSimulator(clock)
    handle, lost = mono.handle, []

    def losing_the_first_completion(line):
        reply = handle(line)
        if line == "*ESR?" and reply == "1" and not lost:
            lost.append(line)
            mono.faults.silent = 1  # this very reply (echo and "1") never arrives
        return reply

    mono.handle = losing_the_first_completion
    driver = Monochromator(attach(mono), clock=clock, retries=2)
    driver._set("GOWAVE 520.000")
    clock.advance(1.0)  # the move is over
    driver.wait_until_idle(timeout_s=2.0)  # would time out if *OPC were sent only once
    assert lost and driver.wavelength_nm == pytest.approx(520.0)


# -- Thorlabs PM100 -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "spelling",
    ["SENS:CORR:WAV?", "sense:correction:wavelength?", ":SENS:CORR:WAV?", "CORR:WAV?"],
)
def test_scpi_long_and_short_forms(spelling):
    """6.4.1: upper-case letters are the short form, [SENSe] is optional, any case."""
    meter = PowerMeterSimulator(VirtualClock())
    assert meter.handle(spelling) == "6.330000E+02"


def test_other_abbreviations_are_errors():
    """6.4.1: "Other forms, such as CUR and CURREN, will generate an error"."""
    meter = PowerMeterSimulator(VirtualClock())
    assert meter.handle("SENS:CORRE:WAV 700") is None
    assert meter.handle("SYST:ERR?") == '-113,"Undefined header"'
    assert meter.handle("SENS:CORR:WAV?") == "6.330000E+02"
    assert not header_pattern("CURRent[:DC]:RANGe").match("CUR:RANG")


def test_min_max_and_identification():
    meter = PowerMeterSimulator(VirtualClock())
    assert meter.handle("SENS:CORR:WAV? MAX") == "1.100000E+03"  # PM100USB manual p. 20
    assert meter.handle("SENS:CORR:WAV MIN") is None
    assert meter.handle("SENS:CORR:WAV?") == "4.000000E+02"
    vendor, model, serial, firmware = meter.handle("*IDN?").split(",")  # 6.4.2.2.1
    assert vendor.upper() == "THORLABS" and model.startswith("PM100")
    fields = meter.handle("SYST:SENS:IDN?").split(",")  # name,sn,cal,type,subtype,flags
    assert len(fields) == 6 and int(fields[5]) & 1 and int(fields[5]) & 32  # power, wavelength


def test_settings_are_validated_before_sending_and_verified_after():
    clock = VirtualClock()
    meter = PowerMeterSimulator(clock)
    driver = PowerMeter(attach(meter))
    with pytest.raises(ValueError, match=r"wavelength_nm must lie in \[400, 1100\] nm"):
        driver.wavelength_nm = 1500
    with pytest.raises(ValueError, match="average_count must be an integer"):
        driver.average_count = 2.5
    assert meter.log == []
    driver.wavelength_nm = 850
    driver.average_count = 20
    assert driver.wavelength_nm == 850.0 and driver.average_count == 20
    assert driver.auto_range is True and driver.range_W == pytest.approx(HEAD_MAX_POWER_W)
    assert [c for c, _ in meter.log][:2] == ["SENS:CORR:WAV 850", "SENS:CORR:WAV?"]
    with pytest.raises(AttributeError, match="read-only"):
        driver.range_W = 1.0


def test_a_saturated_reading_is_an_error_naming_value_and_range():
    meter = PowerMeterSimulator(VirtualClock(), power_W=lambda: 0.2, noise=0.0)
    driver = PowerMeter(attach(meter))
    with pytest.raises(PowerReadingOutOfRange, match=r"saturated: reading 9.9e\+37 W.*0.05 W"):
        driver.power_W()


def test_no_light_where_light_is_expected_is_an_error():
    meter = PowerMeterSimulator(VirtualClock(), noise=0.0, dark_W=0.0)
    driver = PowerMeter(attach(meter))
    assert driver.power_W() == 0.0  # a dark reading is a reading
    with pytest.raises(PowerReadingOutOfRange, match=r"reads 0.000e\+00 W .*expected more"):
        driver.power_W(expect_light=True)
    meter.power_W = lambda: 1e-6
    assert driver.power_W(expect_light=True, floor_W=1e-9) == pytest.approx(1e-6)
    meter.handle("SENS:POW:RANG:UPP 1e-7")  # manual range below the light: overrange
    assert meter.handle("SENS:POW:RANG:AUTO?") == "0"
    with pytest.raises(PowerReadingOutOfRange, match="saturated"):
        driver.power_W()

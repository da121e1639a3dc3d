"""Protocol tests: the command/reply exchanges of each simulated instrument, and the
drivers sending exactly those commands."""

import pytest

from hyplex.devices.clock import VirtualClock
from hyplex.devices.errors import InstrumentError
from hyplex.devices.instruments import (
    FilterWheel,
    FilterWheelSimulator,
    Monochromator,
    MonochromatorSimulator,
    PowerMeter,
    PowerMeterSimulator,
    Stage,
    StageSimulator,
    attach,
)

# Cornerstone 130B manual, Appendix I: commands have no response (15.4; the RS-232 echo is
# added by ``feed``, see test_the_echo_comes_first), errors only set the status byte to 32 and
# the error code (15.9), and the *OPC / *ESR? handshake ends a move (15.8)
MONOCHROMATOR_EXCHANGES = [
    ("UNITS NM", None),
    ("INFO?", "Newport Cornerstone 130 (hyplex simulator)"),
    ("WAVE?", "500.000"),
    ("GOWAVE 600.000", None),
    ("*OPC", None),
    ("*ESR?", "0"),  # moving: 0.05 s + 100 nm / 200 nm/s
    ("WAVE?", "500.000"),  # no time has passed yet
    ("SHUTTER O", None),
    ("SHUTTER?", "O"),
    ("SLIT1MICRONS 250", None),
    ("SLIT1MICRONS?", "250"),
    ("GRAT?", "1,1200,VIS"),
    ("STB?", "0"),
    ("GOWAVE 5000", None),
    ("STB?", "32"),
    ("STB?", "0"),  # reading clears it
    ("ERROR?", "3"),  # destination position for wavelength motion not allowed
    ("ERROR?", "0"),
    ("SHUTTER X", None),
    ("ERROR?", "2"),  # bad parameter
    ("FOO", None),
    ("ERROR?", "1"),  # command not understood
    ("STB?", "32"),
]

FILTER_WHEEL_EXCHANGES = [
    ("*idn?", "THORLABS FW102C/FW212C Filter Wheel version 1.07 (hyplex simulator)"),
    ("pcount?", "6"),
    ("pos?", "1"),
    ("pos=3", "pos=3"),
    ("pos?", "1"),  # still turning
    ("pos=9", "Command error CMD_ARG_INVALID"),
    ("speed=1", "Command error CMD_NOT_DEFINED"),
]

STAGE_EXCHANGES = [
    ("G90", "ok"),
    ("?", "<Idle|MPos:0.000,0.000,0.000>"),
    ("G0 X10", "ok"),
    ("?", "<Run|MPos:0.000,0.000,0.000>"),
    ("G0 X99", "error:15"),
    ("M3", "error:1"),
]

POWER_METER_EXCHANGES = [
    ("*IDN?", "Thorlabs,PM100USB,P1000000,1.7.0 (hyplex simulator)"),
    ("SENS:CORR:WAV 550", None),
    ("SENS:CORR:WAV?", "5.500000E+02"),
    ("SENS:CORR:WAV 5", None),
    ("SYST:ERR?", '-222,"Data out of range"'),
    ("SYST:ERR?", '+0,"No error"'),
    ("SENS:AVER:COUN 10", None),
    ("SENS:AVER:COUN?", "10"),
    ("MEAS:POW?", "1.000000E-10"),  # dark: no light wired in
]


@pytest.mark.parametrize(
    "simulator, exchanges",
    [
        (MonochromatorSimulator, MONOCHROMATOR_EXCHANGES),
        (FilterWheelSimulator, FILTER_WHEEL_EXCHANGES),
        (StageSimulator, STAGE_EXCHANGES),
        (lambda clock: PowerMeterSimulator(clock, noise=0.0), POWER_METER_EXCHANGES),
    ],
    ids=["monochromator", "filterwheel", "stage", "powermeter"],
)
def test_exchanges(simulator, exchanges):
    device = simulator(VirtualClock())
    for command, reply in exchanges:
        assert device.handle(command) == reply, command


def test_busy_until_on_the_injected_clock():
    clock = VirtualClock()
    mono = MonochromatorSimulator(clock)
    mono.handle("GOWAVE 700")  # 0.05 s + 200 nm / 200 nm/s = 1.05 s
    clock.advance(0.525)  # half way (linear over the move)
    assert mono.busy and mono.handle("WAVE?") == "600.000"
    clock.advance(0.525)
    assert not mono.busy and mono.handle("WAVE?") == "700.000"


def test_byte_stream_framing_with_terminators():
    wheel = FilterWheelSimulator(VirtualClock())
    assert wheel.feed(b"pos") == b""  # nothing until the terminator
    assert wheel.feed(b"?\rpcount?\r") == b"1\r6\r"


def test_drivers_send_the_documented_commands():
    clock = VirtualClock()
    mono, wheel = MonochromatorSimulator(clock), FilterWheelSimulator(clock)
    stage, meter = StageSimulator(clock), PowerMeterSimulator(clock)
    with Monochromator(attach(mono), clock=clock) as driver:
        assert driver.go_to(632.8) == pytest.approx(632.8)
        driver.open_shutter()
        assert driver.shutter_open
        assert driver.set_slit_um(300) == 300
        assert driver.bandwidth_nm() == pytest.approx(0.3 * 6.6)
        with pytest.raises(ValueError, match="wavelength_nm"):
            driver.go_to(50)
    sent = [command for command, _ in mono.log]
    assert sent[:4] == ["UNITS NM", "STB?", "GOWAVE 632.800", "STB?"]
    assert sent[4:6] == ["*OPC", "*ESR?"]  # the handshake of section 15.8
    assert "SHUTTER O" in sent and "SLIT1MICRONS 300" in sent
    with FilterWheel(attach(wheel), clock=clock) as driver:
        assert driver.positions == 6 and driver.move_to(4) == 4
    assert [c for c, _ in wheel.log][:2] == ["pcount?", "pos=4"]
    with Stage(attach(stage), clock=clock) as driver:
        assert driver.move_to(12.5) == pytest.approx(12.5)
        driver.home()
        assert driver.position_mm == 0.0
    assert [c for c, _ in stage.log][:2] == ["G90", "G0 X12.500"]
    with PowerMeter(attach(meter)) as driver:
        assert driver.set_wavelength_nm(780) == 780
        assert driver.set_average_count(5) == 5
        assert driver.power_W() == pytest.approx(1e-10, rel=0.01)
    assert [c for c, _ in meter.log][:2] == ["SENS:CORR:WAV 780", "SENS:CORR:WAV?"]


def test_refused_commands_raise_at_once_without_retry():
    clock = VirtualClock()
    mono = MonochromatorSimulator(clock)
    driver = Monochromator(attach(mono), clock=clock)
    mono.log.clear()
    with pytest.raises(InstrumentError, match=r"refused 'SHUTTER X': error 2 \(bad parameter"):
        driver._set("SHUTTER X")
    assert [c for c, _ in mono.log] == ["SHUTTER X", "STB?", "ERROR?"]  # sent once
    with pytest.raises(InstrumentError, match="error 3 .destination position"):
        driver._set("GOWAVE 1500")  # the instrument's own range check (bypassing go_to's)
    assert not mono.busy and mono.wavelength_nm == 500.0


def test_power_meter_reports_a_setting_it_did_not_apply():
    meter = PowerMeterSimulator(VirtualClock())
    meter.handle = _ignoring_wavelength(meter.handle)
    with pytest.raises(InstrumentError, match="not applied.*No error"):
        PowerMeter(attach(meter), retries=1).set_wavelength_nm(500)


def _ignoring_wavelength(handle):
    def patched(line):
        return None if line.startswith("SENS:CORR:WAV ") else handle(line)

    return patched


def test_timed_move_is_linear_in_time_and_restarts_from_where_it_is():
    from hyplex.devices.clock import VirtualClock
    from hyplex.devices.instrument_sim import TimedMove

    clock = VirtualClock()
    axis = TimedMove(clock, 10.0)
    assert not axis.busy and axis.value == 10.0
    axis.go(20.0, 2.0)
    clock.sleep(0.5)
    assert axis.busy and axis.value == pytest.approx(12.5)
    axis.go(0.0, 1.0)  # a new move mid-way starts from the current position
    assert axis.origin == pytest.approx(12.5)
    clock.sleep(0.5)
    assert axis.value == pytest.approx(6.25)
    clock.sleep(0.5)
    assert not axis.busy and axis.value == 0.0
    axis.go(3, 1.0, origin=1)  # a stepping axis names the slot it leaves
    assert axis.origin == 1 and axis.target == 3
    clock.sleep(1.0)
    assert axis.value == 3

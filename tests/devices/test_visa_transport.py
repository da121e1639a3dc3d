"""The VISA transport and the URL opener: the same drivers over pyvisa (pyvisa-py's ASRL path
to a simulator on a pseudo-terminal, and pyvisa-sim), with the serial transport's retries
and errors."""

import pathlib
import sys

import pytest

from hyplex.devices.clock import VirtualClock
from hyplex.devices.errors import GarbledReply, InstrumentError, InstrumentTimeout
from hyplex.devices.instruments import (
    Monochromator,
    MonochromatorSimulator,
    PtyBridge,
    SerialTransport,
    attach,
    open_instrument,
)
from hyplex.devices.transport import is_serial_line, is_visa_resource, transport_kind

pytest.importorskip("pyvisa_py")
pytestmark = pytest.mark.timeout(60)
pty_only = pytest.mark.skipif(sys.platform == "win32", reason="pseudo-terminals are POSIX")


@pytest.mark.parametrize(
    "url, kind, serial_line",
    [
        ("ASRL/dev/ttyUSB0::INSTR", "visa", True),
        ("ASRL3::INSTR", "visa", True),
        ("USB0::0x1313::0x8072::P2000000::INSTR", "visa", False),
        ("TCPIP::192.168.1.5::INSTR", "visa", False),
        ("TCPIP0::lab-meter::5025::SOCKET", "visa", False),
        ("GPIB0::5::INSTR", "visa", False),
        ("/dev/ttyUSB0", "serial", True),
        ("COM3", "serial", True),
        ("socket://localhost:7777", "serial", True),
        ("sim://monochromator?id=3", "sim", True),
    ],
)
def test_the_url_picks_the_transport(url, kind, serial_line):
    assert transport_kind(url) == kind
    assert is_visa_resource(url) == (kind == "visa")
    assert is_serial_line(url) == serial_line


def test_open_instrument_by_kind_and_url():
    clock = VirtualClock()
    simulator = MonochromatorSimulator(clock)
    for kind in ("monochromator", "Monochromator", "mono-chromator"):
        with open_instrument(kind, attach(simulator), clock=clock) as driver:
            assert isinstance(driver, Monochromator)
            assert isinstance(driver.transport, SerialTransport)
            assert driver.go_to(555.0) == pytest.approx(555.0)
    with pytest.raises(ValueError, match=r"unknown instrument kind 'laser'.*monochromator"):
        open_instrument("laser", "sim://monochromator")
    with pytest.raises(ValueError, match="non-empty"):
        open_instrument("monochromator", "")


def test_the_requirements_text_names_every_bench_instrument_and_the_urls():
    from hyplex.devices.instruments import requirements_text

    text = requirements_text()
    for needed in ("monochromator", "GOWAVE", "power_meter", "MEAS:POW?", "USB0::", "sim://"):
        assert needed in text


def test_a_missing_visa_resource_is_a_clear_error():
    with pytest.raises(InstrumentError, match=r"power meter: cannot open VISA resource.*ASRL"):
        open_instrument("power_meter", "ASRL/dev/no-such-tty-hyplex::INSTR", timeout_s=0.2)


@pty_only
def test_the_monochromator_over_visa_asrl_on_a_pty():
    simulator = MonochromatorSimulator()  # real clock: the pty is real
    with PtyBridge(simulator, chunk_bytes=4, chunk_delay_s=0.001) as bridge:
        url = f"ASRL{bridge.port}::INSTR"
        # 1 s per line: ample on a loaded machine; the three lost replies below wait 3 s
        with open_instrument("monochromator", url, timeout_s=1.0, poll_s=0.01) as driver:
            assert type(driver.transport).__name__ == "VisaTransport"
            assert driver.go_to(510.0) == pytest.approx(510.0)
            driver.open_shutter()
            assert driver.shutter_open
            simulator.faults.silent = 1  # a lost reply is retried
            assert driver.wavelength_nm == pytest.approx(510.0)
            simulator.faults.garbled = 1
            assert driver.wavelength_nm == pytest.approx(510.0)
            simulator.faults.silent = 3
            with pytest.raises(InstrumentTimeout, match=r"monochromator at ASRL.*'WAVE\?'"):
                _ = driver.wavelength_nm
            simulator.faults.garbled = 6
            with pytest.raises(GarbledReply, match="monochromator"):
                _ = driver.wavelength_nm
            simulator.faults.garbled = 0
            assert driver.wavelength_nm == pytest.approx(510.0)


SIM_YAML = pathlib.Path(__file__).resolve().parents[1] / "data" / "visa_instruments.yaml"
PM100_USB = "USB0::0x1313::0x8072::P2000000::INSTR"


@pytest.fixture
def visa_sim_backend():
    pytest.importorskip("pyvisa_sim")
    return f"{SIM_YAML}@sim"


def test_the_power_meter_over_usb_tmc_with_pyvisa_sim(visa_sim_backend):
    with open_instrument(
        "power_meter", PM100_USB, visa_backend=visa_sim_backend, timeout_s=0.2
    ) as meter:
        assert type(meter.transport).__name__ == "VisaTransport"
        assert not meter.transport.echo  # USB-TMC carries no echo
        assert meter.identify().startswith("Thorlabs,PM100USB,")
        assert meter.set_wavelength_nm(780) == 780.0  # written, then read back
        assert meter.set_average_count(10) == 10 and meter.average_count == 10
        assert meter.set_auto_range(True) is True
        assert meter.power_W(expect_light=True) == pytest.approx(1.2345e-5)
        assert meter.transport.query("SYST:ERR?") == '+0,"No error"'
        meter.transport.write("FOO:BAR")  # an unknown header lands in the error queue
        assert meter.transport.query("SYST:ERR?") == '-113,"Undefined header"'
        with pytest.raises(InstrumentTimeout, match=r"power meter at USB0::.*'FOO\?'.*3 attempt"):
            meter.transport.query("FOO?")  # no reply at all: the VISA read times out


def test_a_saturated_usb_power_meter_is_a_clear_error(visa_sim_backend):
    from hyplex.devices.power_meter import PowerReadingOutOfRange

    url = "USB0::0x1313::0x8072::P2000001::INSTR"
    with open_instrument("power_meter", url, visa_backend=visa_sim_backend) as meter:
        with pytest.raises(PowerReadingOutOfRange, match=r"saturated.*range tops at 0.05 W"):
            meter.power_W()


def test_a_setting_that_does_not_stick_reads_the_error_queue(visa_sim_backend):
    """pyvisa-sim's property refuses 1200 nm (its spec tops at 1100): the read-back differs,
    the setting is re-sent, then the device error is named. (An unvalidated Setting: the
    driver's own would refuse 1200 nm before sending.)"""
    from hyplex.devices.scpi import Setting

    unchecked = Setting("SENS:CORR:WAV?", "SENS:CORR:WAV {:g}", "wavelength, nm")
    with open_instrument(
        "power_meter", PM100_USB, visa_backend=visa_sim_backend, retries=1
    ) as meter:
        with pytest.raises(InstrumentError, match=r"'SENS:CORR:WAV 1200' not applied .*633"):
            unchecked.set(meter, 1200)


def test_the_monochromator_over_usb_tmc_has_no_echo(visa_sim_backend):
    url = "USB0::0x1FDE::0x0014::CS130B0001::INSTR"
    with open_instrument(
        "monochromator", url, visa_backend=visa_sim_backend, timeout_s=0.5
    ) as driver:
        assert not driver.transport.echo  # USB: never echoed (section 15.4)
        assert driver.identify().startswith("Newport Cornerstone 130B")
        assert driver.go_to(632.8) == pytest.approx(632.8)
        driver.open_shutter()
        assert driver.shutter_open


@pytest.mark.parametrize("link", ["visa_resource", "serial_url"], ids=["TCPIP-SOCKET", "socket"])
def test_the_power_meter_over_a_tcp_socket(link):
    """pyvisa-py's TCPIP socket session and pyserial's socket:// reach a simulator on a local
    port; a reply cut in half is flushed (device clear / input reset) and retried."""
    from hyplex.devices.instruments import PowerMeterSimulator, SocketBridge

    simulator = PowerMeterSimulator(power_W=lambda: 2e-6, noise=0.0)
    with SocketBridge(simulator) as bridge:
        url = getattr(bridge, link)
        with open_instrument("power_meter", url, timeout_s=1.0) as meter:
            assert meter.identify().startswith("Thorlabs,PM100USB")
            assert meter.set_wavelength_nm(700) == 700.0
            assert meter.power_W(expect_light=True) == pytest.approx(2e-6, rel=1e-3)
            simulator.faults.partial = 1
            assert meter.power_W() == pytest.approx(2e-6, rel=1e-3)
            simulator.faults.garbled = 3
            with pytest.raises(GarbledReply, match=r"power meter at .*'MEAS:POW\?'"):
                meter.power_W()

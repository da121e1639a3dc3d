"""SerialTransport: retries on timeouts and garbled replies, clear errors, no half-applied
state, the per-device lock; and the pty bridge through the real termios path."""

import sys
import threading
import time

import pytest

from hyplex.devices.clock import VirtualClock
from hyplex.devices.errors import GarbledReply, InstrumentTimeout
from hyplex.devices.instruments import (
    FilterWheel,
    FilterWheelSimulator,
    Monochromator,
    MonochromatorSimulator,
    PtyBridge,
    SerialTransport,
    attach,
)

# ptys and reader threads: a hang fails here, with stacks
pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def mono():
    clock = VirtualClock()
    simulator = MonochromatorSimulator(clock)
    driver = Monochromator(attach(simulator), timeout_s=1.0, retries=2, clock=clock)
    simulator.log.clear()
    yield simulator, driver
    driver.close()


def test_a_lost_reply_is_retried(mono):
    simulator, driver = mono
    simulator.faults.silent = 1
    assert driver.wavelength_nm == 500.0
    assert [c for c, _ in simulator.log] == ["WAVE?", "WAVE?"]


def test_timeouts_then_a_clear_error_without_waiting_on_a_virtual_clock(mono):
    simulator, driver = mono
    simulator.faults.silent = 3
    start_virtual, start = simulator.clock.now_ns(), time.monotonic()
    with pytest.raises(InstrumentTimeout) as error:
        _ = driver.wavelength_nm
    message = str(error.value)
    assert "monochromator" in message and "'WAVE?'" in message and "3 attempt" in message
    assert simulator.clock.now_ns() - start_virtual >= 3e9  # three 1 s timeouts ...
    assert time.monotonic() - start < 2.5  # ... in no wall time (real waits: 3 s)
    assert driver.wavelength_nm == 500.0  # the line works again


def test_garbled_replies_are_retried_then_raise(mono):
    simulator, driver = mono
    simulator.faults.garbled = 2
    assert driver.wavelength_nm == 500.0
    simulator.faults.garbled = 3
    with pytest.raises(GarbledReply, match=r"garbled .*'WAVE\?'.*last bytes received: b'#\\xff"):
        _ = driver.wavelength_nm


def test_a_partial_line_is_flushed_before_the_retry(mono):
    simulator, driver = mono
    simulator.faults.partial = 1
    assert driver.wavelength_nm == 500.0
    assert driver.shutter_open is False  # no stale half-line taken for this answer


def test_no_half_applied_state_after_a_failed_set(mono):
    simulator, driver = mono
    with pytest.raises(ValueError, match="wavelength_nm"):
        driver.go_to(5000.0)  # refused before anything is sent
    assert simulator.log == []
    simulator.faults.garbled = 3  # every echo of the set command is unreadable
    with pytest.raises(GarbledReply):
        driver.go_to(600.0)
    # the retried command is idempotent: the device moved once, to 600 nm, and the driver
    # reports what the device says, not a cached guess
    assert [c for c, _ in simulator.log] == ["GOWAVE 600.000"] * 3
    driver.wait_until_idle()
    assert driver.wavelength_nm == simulator.wavelength_nm == 600.0
    assert driver.transport.port.in_waiting == 0


def test_filter_wheel_failed_move_leaves_driver_and_device_consistent():
    clock = VirtualClock()
    wheel = FilterWheelSimulator(clock)
    driver = FilterWheel(attach(wheel), retries=1, clock=clock)
    wheel.faults.silent = 2
    with pytest.raises(InstrumentTimeout, match="filter wheel.*pos=5"):
        driver.move_to(5)
    clock.advance(5.0)
    assert driver.position == wheel.position


def test_the_device_lock_keeps_exchanges_whole():
    clock = VirtualClock()
    simulator = MonochromatorSimulator(clock)
    transport = SerialTransport(attach(simulator), "monochromator", timeout_s=0.5, echo=True)
    results = {"WAVE?": [], "SHUTTER?": []}

    def ask(command):
        for _ in range(50):
            results[command].append(transport.query(command))

    threads = [threading.Thread(target=ask, args=(c,)) for c in results]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results["WAVE?"] == ["500.000"] * 50 and results["SHUTTER?"] == ["C"] * 50


def test_transport_validates_its_settings():
    with pytest.raises(ValueError, match="timeout_s"):
        SerialTransport("sim://stage", timeout_s=0)
    with pytest.raises(ValueError, match="retries"):
        SerialTransport("sim://stage", retries=-1)


pty_only = pytest.mark.skipif(sys.platform == "win32", reason="pseudo-terminals are POSIX")


@pty_only
def test_driver_over_a_pty_with_partial_reads():
    simulator = MonochromatorSimulator()  # real clock: the pty is real
    with PtyBridge(simulator, chunk_bytes=3, chunk_delay_s=0.002) as bridge:
        with Monochromator(bridge.port, timeout_s=0.5, poll_s=0.01) as driver:
            assert driver.identify() == "Newport Cornerstone 130 (hyplex simulator)"
            assert driver.go_to(510.0) == pytest.approx(510.0)
            driver.open_shutter()
            assert driver.shutter_open


@pty_only
def test_timeouts_and_garbage_over_a_pty():
    simulator = MonochromatorSimulator()
    with PtyBridge(simulator) as bridge:
        driver = Monochromator(bridge.port, timeout_s=0.1, retries=1)
        simulator.faults.partial = 1
        assert driver.wavelength_nm == 500.0
        simulator.faults.silent = 2
        with pytest.raises(InstrumentTimeout, match="2 attempt"):
            _ = driver.wavelength_nm
        simulator.faults.garbled = 2
        with pytest.raises(GarbledReply):
            _ = driver.wavelength_nm
        assert driver.wavelength_nm == 500.0
        driver.close()


def test_line_faults_parse_and_start_after_good_replies():
    from hyplex.devices.instrument_sim import LineFaults

    assert LineFaults.parse("after=40, garbled=3") == LineFaults(garbled=3, after=40)
    assert LineFaults.parse("") == LineFaults()
    with pytest.raises(ValueError, match="bad fault 'silent=-1'"):
        LineFaults.parse("silent=-1")
    clock = VirtualClock()
    simulator = MonochromatorSimulator(clock)
    driver = Monochromator(attach(simulator), clock=clock, retries=0)
    simulator.faults = LineFaults.parse("after=1,silent=1")
    assert driver.wavelength_nm == 500.0  # the one good reply
    with pytest.raises(InstrumentTimeout, match="'WAVE\\?'"):
        _ = driver.wavelength_nm
    assert driver.wavelength_nm == 500.0

"""The simulated bench across processes: published instrument state and the light it gives."""

import json

import numpy as np
import pytest

from hyplex.devices.bench_link import LinkedBench, PublishingSimulator, read_state
from hyplex.devices.clock import VirtualClock
from hyplex.devices.instruments import FilterWheel, Monochromator, attach
from hyplex.devices.sim_bench import SimulatedBench


def test_published_state_gives_the_same_light_as_the_in_process_bench(tmp_path):
    """Monochromator and filter wheel driven through their publishing wrappers: the linked
    bench (what another process sees) matches the bench that holds the simulators."""
    bench = SimulatedBench(VirtualClock())
    mono = PublishingSimulator(bench.monochromator, tmp_path)
    wheel = PublishingSimulator(bench.filter_wheel, tmp_path)
    linked = LinkedBench(tmp_path)
    assert linked.power_on_meter_W() == 0.0  # power-on state: shutter closed
    with (
        Monochromator(attach(bench.monochromator), clock=bench.clock) as driver,
        FilterWheel(attach(bench.filter_wheel), clock=bench.clock) as wheel_driver,
    ):
        driver.set_slit_um(300.0)
        driver.go_to(612.0)
        driver.open_shutter()
        wheel_driver.move_to(2)
    mono.publish()  # the pty bridge calls feed(); here the drivers went through sim://
    wheel.publish()
    grid = np.linspace(400, 730, 34)
    assert linked.monochromator.wavelength_nm == pytest.approx(612.0)
    assert linked.filter_wheel.position == 2
    assert linked.power_on_meter_W() == pytest.approx(bench.power_on_meter_W(), rel=1e-12)
    np.testing.assert_allclose(linked.spectral_radiance(grid), bench.spectral_radiance(grid))
    assert linked.state_key() == bench.state_key()


def test_feed_publishes_before_the_reply_is_returned(tmp_path):
    bench = SimulatedBench(VirtualClock())
    mono = PublishingSimulator(bench.monochromator, tmp_path)
    mono.feed(b"SHUTTER O\r\n")
    state = json.loads((tmp_path / "monochromator.json").read_text())
    assert state["shutter_open"] is True and read_state(tmp_path, "monochromator")["shutter_open"]
    assert not list(tmp_path.glob(".*.tmp"))  # atomic replace: no temporary left behind


def test_a_missing_folder_is_named(tmp_path):
    with pytest.raises(ValueError, match="does not exist; expected a folder"):
        LinkedBench(tmp_path / "nowhere")

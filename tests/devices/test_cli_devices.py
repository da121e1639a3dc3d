"""``hyplex stream``, ``hyplex devices list`` and ``hyplex sim-device`` (registered on a
fresh Typer app, as hyplex.cli does)."""

import signal
import subprocess
import sys

import pytest
import typer
from typer.testing import CliRunner

from hyplex.cli.devices import register
from hyplex.devices.errors import GarbledReply, InstrumentTimeout
from hyplex.devices.instruments import Monochromator
from hyplex.devices.recorder import Recording

APP_SCRIPT = (
    "import typer; from hyplex.cli.devices import register; "
    "app = typer.Typer(); register(app); app()"
)


# a pty simulator and streaming threads: a hang fails here, with stacks
pytestmark = pytest.mark.timeout(120)


def _sim_device_process(*options: str) -> subprocess.Popen:
    """``hyplex sim-device monochromator --pty`` in a child process that a SIGINT stops (its
    first stdout line names the port). The child's SIGINT is reset to the default first: a
    runner started in the background (``cmd &`` in a script) hands its children SIGINT
    *ignored*, and Python then installs no KeyboardInterrupt handler, so the test's SIGINT
    would go unheard and the child run on."""
    return subprocess.Popen(
        [sys.executable, "-c", APP_SCRIPT, "sim-device", "monochromator", "--pty", *options],
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


@pytest.fixture(scope="module")
def app():
    application = typer.Typer()
    register(application)
    return application


def test_devices_list(app):
    result = CliRunner().invoke(app, ["devices", "list"])
    assert result.exit_code == 0, result.output
    assert "sim://monochromator" in result.output and "Viky" in result.output
    assert "camera     sim" in result.output


def test_stream_an_image_sequence_into_a_recording(app, png_sequence, tmp_path):
    out = tmp_path / "seq.h5"
    result = CliRunner().invoke(
        app, ["stream", "--camera", f"opencv:{png_sequence}", "--record", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "12 frames, dropped 0" in result.output and "fps" in result.output
    with Recording(out) as recording:
        assert len(recording) == 12 and recording[5][0, 0] == 500


def test_stream_the_simulated_camera(app, tmp_path):
    out = tmp_path / "sim.h5"
    arguments = ["stream", "--camera", "sim", "--sim-shape", "96x128", "--frames", "5"]
    result = CliRunner().invoke(app, [*arguments, "--cycle-frames", "2", "--record", str(out)])
    assert result.exit_code == 0, result.output
    assert "5 frames, dropped 0" in result.output
    with Recording(out) as recording:
        assert len(recording) == 5 and recording[0].shape == (96, 128)


def test_stream_reports_a_bad_camera(app):
    result = CliRunner().invoke(app, ["stream", "--camera", "opencv:/no/such/file.avi"])
    assert result.exit_code != 0


def test_sim_device_console(app):
    commands = "WAVE?\nFOO\nSTB?\nERROR?\n"
    result = CliRunner().invoke(app, ["sim-device", "monochromator"], input=commands)
    assert result.exit_code == 0
    # a command has no response; an unknown one sets the status byte and error code 1
    assert result.output.splitlines() == ["500.000", "", "32", "1"]


def test_sim_device_refuses_a_bad_fault_spec(app):
    result = CliRunner().invoke(app, ["sim-device", "monochromator", "--faults", "lost=2"])
    assert result.exit_code == 2 and "after=40,garbled=3" in result.output


@pytest.mark.parametrize(
    "faults, error, what",
    [
        ("after=2,garbled=3", GarbledReply, r"garbled .*'WAVE\?' after 3 attempt"),
        ("after=2,silent=1000000", InstrumentTimeout, r"timeout .*'WAVE\?' after 3 attempt"),
    ],
    ids=["garbled", "stops-answering"],
)
def test_sim_device_process_with_line_faults(faults, error, what):
    """A simulator in another process fails mid-run: the driver retries, then names the
    instrument and the command (the first two replies, UNITS NM's echo and STB?, are good)."""
    process = _sim_device_process("--faults", faults)
    try:
        port = process.stdout.readline().split(" on ")[1].split()[0]
        with Monochromator(port, timeout_s=0.5, retries=2) as driver:
            with pytest.raises(error, match=rf"monochromator at {port}: {what}"):
                _ = driver.wavelength_nm
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=10)


def test_sim_device_on_a_pty():
    process = _sim_device_process()
    try:
        line = process.stdout.readline()
        port = line.split(" on ")[1].split()[0]
        with Monochromator(port, timeout_s=1.0) as driver:
            assert driver.go_to(520.0) == pytest.approx(520.0)
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=10)

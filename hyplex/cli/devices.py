"""``hyplex stream``, ``hyplex devices list`` and ``hyplex sim-device``: the devices wing.

Registered from ``hyplex.cli`` with ``register(app)``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated

import typer

CameraSpec = Annotated[
    str, typer.Option("--camera", help="sim | opencv:<index|file|pattern> | genicam[:<N>|<cti>]")
]
RecordPath = Annotated[
    Path | None, typer.Option("--record", help="HDF5 file to record into (default: no file).")
]
Seconds = Annotated[float, typer.Option(min=0.0, help="Stream duration, s (host clock).")]
Frames = Annotated[int | None, typer.Option(min=1, help="Stop after this many frames.")]
Policy = Annotated[
    str, typer.Option(help="Ring overflow policy: block | drop_oldest | newest_only.")
]
Buffer = Annotated[int, typer.Option(min=2, help="Ring slots (each one frame in memory).")]
Exposure = Annotated[float | None, typer.Option(help="Exposure, us (default: the camera's).")]
FrameRate = Annotated[float | None, typer.Option(help="Frame rate, Hz (default: the camera's).")]
SimShape = Annotated[str, typer.Option(help="Simulated sensor, ROWSxCOLS (e.g. 3000x4000).")]
Cycle = Annotated[
    int, typer.Option(min=0, help="Simulated camera: noisy frames rendered once and looped.")
]
Overwrite = Annotated[
    bool, typer.Option("--overwrite", help="Replace an existing --record file (default: refuse).")
]
Compression = Annotated[
    str,
    typer.Option(
        help="Lossless codec of --record: none | lz4 | zstd (Blosc2 with bit-shuffle; read with "
        "h5py after `import hdf5plugin`). lz4 is the fastest; zstd stores ~8 % less."
    ),
]
Packing = Annotated[
    str, typer.Option(help="--record pixel packing: none | mono12p (12-bit sensors, 3 B / 2 px).")
]
QueueFrames = Annotated[
    int,
    typer.Option(
        min=0,
        help="--record write queue, frames: compression and disk writes run on their own "
        "threads; a frame that finds it full waits under --policy block (the camera then "
        "drops, counted), else it is dropped and counted (0: write in line).",
    ),
]
ThrottleMBps = Annotated[
    float | None,
    typer.Option(
        "--throttle-mbps", min=0.001, help="Hold --record's writes to N MB/s (emulate a slow disk)."
    ),
]


def register(app: typer.Typer) -> None:
    """Add ``stream``, ``devices list`` and ``sim-device`` to ``app``."""
    devices_app = typer.Typer(help="Cameras and serial instruments.", no_args_is_help=True)
    devices_app.command("list")(list_devices_command)
    app.add_typer(devices_app, name="devices")
    app.command("stream")(stream_command)
    app.command("sim-device")(sim_device_command)


def list_devices_command(
    genicam: Annotated[bool, typer.Option(help="Query GenTL producers too.")] = True,
) -> None:
    """List cameras and serial instruments, the simulators included."""
    from hyplex.devices.discovery import list_devices

    for info in list_devices(genicam=genicam):
        typer.echo(f"{info.kind:<10} {info.backend:<8} {info.address:<40} {info.description}")


def parse_shape(text: str) -> tuple[int, int]:
    """``"ROWSxCOLS"`` -> ``(rows, cols)`` pixels; typer.BadParameter if malformed or < 8."""
    try:
        rows, cols = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise typer.BadParameter(f"expected ROWSxCOLS, got {text!r}") from None
    if rows < 8 or cols < 8:
        raise typer.BadParameter(f"sensor must be at least 8x8, got {text!r}")
    return rows, cols


def check_stream_options(camera, policy, exposure_us, frame_rate_hz, sim_shape, buffer=4):
    """One line per wrong value, before the camera (or the twin, seconds) is opened."""
    from hyplex.cli.checks import check_sim_sensor, finite
    from hyplex.devices.ring import OverflowPolicy

    try:
        OverflowPolicy.parse(policy)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="'--policy'") from None
    finite(exposure_us, "--exposure-us", positive=True, unit="us")
    finite(frame_rate_hz, "--frame-rate-hz", positive=True, unit="Hz")
    if camera == "sim":
        rows, cols = parse_shape(sim_shape)
        # the looped noisy frames, the ring's slots and the device's buffers, uint16 each
        check_sim_sensor(sim_shape, rows, cols, frames=3 + buffer + 4)


def apply_settings(device, **settings) -> None:
    """Set camera properties (``exposure_us=...``); the camera's range error becomes one line
    naming the option."""
    for name, value in settings.items():
        if value is None:
            continue
        try:
            setattr(device, name, value)
        except ValueError as error:
            raise typer.BadParameter(
                str(error), param_hint=f"'--{name.replace('_', '-')}'"
            ) from None


def _open(camera: str, sim_shape: str, cycle_frames: int):
    from hyplex.devices.discovery import open_camera

    if camera != "sim":
        return open_camera(camera)
    from hyplex.simulation.grids import prototype_grid
    from hyplex.simulation.scenes import make_scene

    rows, cols = parse_shape(sim_shape)
    typer.echo(f"building the {cols}x{rows} camera twin and a scene ...", err=True)
    scene = make_scene((max(rows // 20, 16), max(cols // 20, 16)), prototype_grid(), seed=0)
    return open_camera("sim", source=scene, sensor_shape=(rows, cols), cycle_frames=cycle_frames)


def stream_command(
    camera: CameraSpec = "sim",
    record: RecordPath = None,
    seconds: Seconds = 10.0,
    frames: Frames = None,
    policy: Policy = "block",
    buffer: Buffer = 4,
    exposure_us: Exposure = None,
    frame_rate_hz: FrameRate = None,
    sim_shape: SimShape = "3000x4000",
    cycle_frames: Cycle = 3,
    overwrite: Overwrite = False,
    compression: Compression = "lz4",
    packing: Packing = "none",
    queue_frames: QueueFrames = 8,
    throttle_mbps: ThrottleMBps = None,
) -> None:
    """Stream a camera for SECONDS with a live progress line (fps, drops); optionally record.

    --record refuses an existing file unless --overwrite, and a file another recorder is
    writing (exit code 1, naming the other writer). It warns before the start when the disk
    may not hold the recording, and stops cleanly, with a valid file, when the disk fills."""
    from hyplex.devices.compression import require_codec
    from hyplex.devices.errors import CameraError, RecordingError, StreamEnded
    from hyplex.devices.recorder import Recorder, RecordingDiskFull, StreamSpec, check_target
    from hyplex.devices.ring import OverflowPolicy
    from hyplex.optics.extras import MissingExtraError

    check_stream_options(camera, policy, exposure_us, frame_rate_hz, sim_shape, buffer)
    if packing not in ("none", "mono12p"):
        raise typer.BadParameter(
            f"expected none or mono12p, got {packing!r}", param_hint="'--packing'"
        )
    if record is not None:
        try:
            require_codec(compression)
        except ValueError as error:
            raise typer.BadParameter(str(error), param_hint="'--compression'") from None
        except MissingExtraError as error:
            typer.echo(f"error: {error}", err=True)
            raise typer.Exit(1) from None
        try:  # before the camera is built; the recorder checks again under its lock
            check_target(record, overwrite)
        except RecordingError as error:
            typer.echo(f"error: {error}", err=True)
            raise typer.Exit(1) from None
    device = _open(camera, sim_shape, cycle_frames)
    try:
        device.open()
        apply_settings(device, exposure_us=exposure_us, frame_rate_hz=frame_rate_hz)
        recorder = None
        if record:
            rate = getattr(device, "frame_rate_hz", None) or 0.0
            by_time = int(seconds * rate) + 1 if 0 < rate < float("inf") else None
            expected = [n for n in (frames, by_time) if n]
            try:
                recorder = Recorder(
                    record,
                    StreamSpec.for_camera(device),
                    overwrite=overwrite,
                    compression=compression,
                    packing=packing,
                    queue_frames=queue_frames,
                    # BLOCK: a full queue holds the ring back (a live camera then drops at the
                    # device, counted there; a file source loses nothing); else it drops here
                    block_when_full=OverflowPolicy.parse(policy) is OverflowPolicy.BLOCK,
                    throttle_MBps=throttle_mbps,
                    expected_frames=min(expected) if expected else None,
                )
            except ValueError as error:  # e.g. --packing mono12p on a 16-bit camera
                typer.echo(f"error: {error}", err=True)
                raise typer.Exit(1) from None
        count, start, last_print = 0, time.monotonic(), 0.0
        device.start(n=frames, policy=policy, buffer_frames=buffer)
        try:
            while time.monotonic() - start < seconds:
                try:
                    # The first frame may wait for one-off work (numba compilation and the
                    # twin's first render take tens of seconds on a fresh machine).
                    frame = device.read(timeout=5.0 if count else 120.0, copy=False)
                except StreamEnded:
                    break
                if recorder is None:
                    frame.release()
                else:
                    try:  # the recorder takes the ring slot over (no copy) and releases it
                        recorder.write(frame, take=True)
                    except RecordingDiskFull as error:
                        sys.stderr.write("\n")
                        typer.echo(f"stopped: {error}", err=True)
                        break
                count += 1
                elapsed = time.monotonic() - start
                if elapsed - last_print >= 0.25:
                    _progress(count, elapsed, device.stats, recorder)
                    last_print = elapsed
        finally:
            device.stop()
            if recorder is not None:
                recorder.close()
        _progress(count, time.monotonic() - start, device.stats, recorder)
        sys.stderr.write("\n")
        stats = device.stats
        recorded = ""
        if recorder is not None:
            recorded = (
                f", recorded to {record} ({recorder.flushed()} frames, {compression}, ratio "
                f"{recorder.compression_ratio:.2f}, recorder dropped {recorder.dropped})"
            )
        typer.echo(
            f"{count} frames, dropped {stats.dropped} (device {stats.dropped_device}, host "
            f"{stats.dropped_host})" + recorded
        )
        if recorder is not None and recorder.failure is not None:
            raise typer.Exit(1)
    except (CameraError, RecordingError) as error:
        sys.stderr.write("\n")
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(1) from None
    finally:
        device.close()


def _progress(count, elapsed, stats, recorder) -> None:
    fps = count / max(elapsed, 1e-9)
    line = (
        f"\r{elapsed:6.1f} s {count:6d} frames {fps:6.1f} fps  dropped {stats.dropped} "
        f"(device {stats.dropped_device}, host {stats.dropped_host})"
    )
    if recorder is not None:
        line += (
            f"  recorder {recorder.throughput_MBps:7.1f} MB/s, ratio "
            f"{recorder.compression_ratio:.2f}, recorder dropped {recorder.dropped}"
        )
    sys.stderr.write(line)
    sys.stderr.flush()


def sim_device_command(
    kind: Annotated[str, typer.Argument(help="monochromator | filterwheel | stage | powermeter")],
    pty: Annotated[bool, typer.Option("--pty", help="Serve on a pseudo-terminal.")] = False,
    chunk_bytes: Annotated[int, typer.Option(min=0, help="Split replies (pty only).")] = 0,
    bench_state: Annotated[
        Path | None,
        typer.Option(
            help="Folder shared by the simulated bench's processes: the monochromator and "
            "filter wheel publish their state there, the power meter (and a simulated camera, "
            "hyplex calibrate --bench-state) read the light from it (hyplex.devices.bench_link)."
        ),
    ] = None,
    faults: Annotated[
        str,
        typer.Option(
            help="Line faults, e.g. 'after=40,garbled=3' (3 garbled replies after 40 good "
            "ones) or 'after=40,silent=1000000' (stops answering): silent | garbled | "
            "partial | after (hyplex.devices.instrument_sim.LineFaults)."
        ),
    ] = "",
) -> None:
    """Run an instrument simulator: on a pty (open the printed port with any serial tool), or
    as a line-by-line console on stdin/stdout."""
    from hyplex.devices.instrument_sim import SIMULATOR_CLASSES, simulator_class

    if kind not in SIMULATOR_CLASSES:
        raise typer.BadParameter(f"unknown instrument {kind!r}; one of {sorted(SIMULATOR_CLASSES)}")
    if bench_state is not None and not bench_state.is_dir():
        raise typer.BadParameter(
            f"{bench_state} is not a folder; expected an existing folder shared by the bench",
            param_hint="'--bench-state'",
        )
    from hyplex.devices.instrument_sim import LineFaults

    try:
        line_faults = LineFaults.parse(faults)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="'--faults'") from None
    simulator = simulator_class(kind)()
    simulator.faults = line_faults
    if bench_state is not None:
        from hyplex.devices.bench_link import LinkedBench, PublishingSimulator

        if kind == "powermeter":  # the meter reads the light the monochromator publishes
            simulator.power_W = LinkedBench(bench_state).power_on_meter_W
        simulator = PublishingSimulator(simulator, bench_state)
    if pty:
        from hyplex.devices.pty_bridge import PtyBridge

        with PtyBridge(simulator, chunk_bytes=chunk_bytes) as bridge:
            typer.echo(f"simulated {kind} on {bridge.port} (Ctrl-C to stop)")
            try:
                while True:
                    time.sleep(0.5)
            except KeyboardInterrupt:
                typer.echo("stopped")
        return
    for line in sys.stdin:
        if not line.strip():
            continue
        reply = simulator.handle(line.strip())
        if bench_state is not None:
            simulator.publish()
        typer.echo("" if reply is None else reply)

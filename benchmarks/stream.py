"""Benchmark: stream the simulated 4000 x 3000 uint16 camera at 30 fps into the ring and record
it to HDF5, against a raw write of the same frames to the same disk.

The camera is ``hyplex.devices.SimulatedCamera`` on the host's real clock, looping
``--cycle-frames`` noisy frames of the twin (rendered before the clock starts; see
``sim_camera.py``). The consumer reads frames zero-copy from the ring (BLOCK policy: nothing is
overwritten on the host; if the recorder falls behind, the simulated device loses frames once
its ``device_buffers`` are full, as a real camera does) and writes each one with
``hyplex.devices.Recorder`` (one chunk per frame, SWMR, flushed per frame).

Figures:

- ``frames``, ``dropped`` (device + host), ``fps`` (frames recorded / wall seconds);
  ``acquired`` and ``pending_at_stop`` show frames still buffered (ring) when the time was up:
  a recorder slower than the camera shows as fps below target before it shows as drops;
- ``recorder_MBps``: frame bytes / seconds spent inside ``Recorder.write`` (its capacity);
- ``disk_write_MBps``: the peer, ``os.write`` of the same number of frames of the same size to
  a plain file in the same folder, measured in the same run (before the recording);
- ``recorder_vs_disk``: their ratio (goal >= 0.8), and ``stream_MBps`` (bytes / wall time).

Neither side calls fsync: both measure writes into the OS page cache, which the kernel drains
to the disk behind them; runs that outgrow the free memory measure the disk itself. Both
files are deleted at the end unless ``--keep``. Disk space: 2 x frames x 24 MB at most at a
time (the raw file is deleted before the recording starts).

Reproduce (one JSON line on stdout)::

    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/stream.py --quick   # 10 s
    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/stream.py           # 60 s
"""
# ruff: noqa: E402  (BLAS thread settings must precede the numpy import)

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def raw_write_MBps(folder: Path, frame: np.ndarray, n_frames: int) -> float:
    """MB/s of ``os.write`` of ``n_frames`` copies of ``frame`` to a new file in ``folder``."""
    path = folder / "raw_write.bin"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(frame).cast("B")
        start = time.perf_counter()
        for _ in range(n_frames):
            os.write(fd, view)
        elapsed = time.perf_counter() - start
    finally:
        os.close(fd)
        path.unlink()
    return n_frames * frame.nbytes / elapsed / 1e6


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10 s instead of 60 s")
    parser.add_argument("--seconds", type=float, default=None, help="stream duration, s")
    parser.add_argument("--shape", default="3000x4000", help="sensor ROWSxCOLS")
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--cycle-frames", type=int, default=3)
    parser.add_argument("--buffer-frames", type=int, default=6, help="ring slots")
    parser.add_argument(
        "--device-buffers", type=int, default=4, help="frames the simulated device holds"
    )
    parser.add_argument("--folder", default=None, help="where to write (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the recording")
    args = parser.parse_args(argv)
    seconds = args.seconds or (10.0 if args.quick else 60.0)
    rows, cols = (int(v) for v in args.shape.split("x"))

    from hyplex.devices.recorder import Recorder, StreamSpec
    from hyplex.devices.sim_camera import SimulatedCamera
    from hyplex.simulation.camera import default_camera
    from hyplex.simulation.grids import prototype_grid
    from hyplex.simulation.scenes import make_scene

    setup = time.perf_counter()
    grid = prototype_grid()
    twin = default_camera(grid, (rows, cols))
    scene = make_scene((max(rows // 20, 16), max(cols // 20, 16)), grid, seed=0)
    camera = SimulatedCamera(
        scene,
        twin,
        frame_rate_hz=args.fps,
        cycle_frames=args.cycle_frames,
        exposure_us=1000,
        device_buffers=args.device_buffers,
    )
    first = camera.render_raw(0)  # renders the loop before the clock starts
    setup_s = time.perf_counter() - setup
    n_expected = int(seconds * args.fps)

    folder = Path(args.folder or tempfile.mkdtemp(prefix="hyplex-stream-"))
    folder.mkdir(parents=True, exist_ok=True)
    disk_MBps = raw_write_MBps(folder, first, n_expected)

    path = folder / "stream.h5"
    frames = 0
    with camera, Recorder(path, StreamSpec.for_camera(camera), overwrite=True) as recorder:
        camera.start(policy="block", buffer_frames=args.buffer_frames)
        start = time.monotonic()
        while time.monotonic() - start < seconds:
            with camera.read(timeout=5.0, copy=False) as frame:
                recorder.write(frame)
            frames += 1
        wall = time.monotonic() - start
        camera.stop()
        stats = camera.stats
        recorder_MBps = recorder.throughput_MBps
    if not args.keep:
        path.unlink()
        if args.folder is None:
            folder.rmdir()
    frame_MB = first.nbytes / 1e6
    result = {
        "benchmark": "stream",
        "shape": [rows, cols],
        "dtype": "uint16",
        "target_fps": args.fps,
        "ring_slots": args.buffer_frames,
        "device_buffers": args.device_buffers,
        "seconds": round(wall, 2),
        "frames": frames,
        "acquired": stats.acquired,
        "pending_at_stop": stats.pending,
        "dropped": stats.dropped,
        "dropped_device": stats.dropped_device,
        "dropped_host": stats.dropped_host,
        "fps": round(frames / wall, 2),
        "recorder_MBps": round(recorder_MBps, 1),
        "disk_write_MBps": round(disk_MBps, 1),
        "recorder_vs_disk": round(recorder_MBps / disk_MBps, 3),
        "stream_MBps": round(frames * frame_MB / wall, 1),
        "required_MBps": round(args.fps * frame_MB, 1),
        "peer": "os.write of the same frames to a plain file on the same disk, same run",
        "setup_s": round(setup_s, 1),
        "goal_met": stats.dropped == 0 and recorder_MBps >= 0.8 * disk_MBps,
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])

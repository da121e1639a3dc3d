"""Benchmark: stream the simulated 4000 x 3000 uint16 camera at 30 fps into the ring and record
it to HDF5, losslessly compressed, optionally with the writer held to a slow disk's rate.

The camera is ``hyplex.devices.SimulatedCamera`` on the host's real clock, looping
``--cycle-frames`` noisy frames of the twin (rendered before the clock starts; see
``sim_camera.py``). The consumer reads frames zero-copy from the ring (BLOCK policy) and hands
each to ``hyplex.devices.Recorder`` with a write queue (``--queue-frames``): the recorder
takes the ring slot over (``--copy``: copies it into a pooled buffer), an encoder thread
compresses it (Blosc2, bit-shuffle, LZ4 or
Zstandard; ``--compression``), a writer thread writes the chunk (SWMR, flushed per frame)
through a token bucket of ``--throttle-mbps`` MB/s (a slow disk, emulated). A frame that finds
the queue full is dropped by the recorder (counted); a consumer that stalls makes the
simulated device lose frames once its ``device_buffers`` are full, as a real camera does.

Figures (last stdout line, JSON):

- ``frames``, ``dropped`` (device + host + recorder), ``fps``; ``acquired`` and
  ``pending_at_stop`` (frames still in the ring when the time was up);
- ``compression_ratio``: frame bytes / stored bytes of this recording; ``ratio_by_exposure``:
  the ratio of twin frames at several exposures (shot noise limits it: more signal, more
  noise bits), on a smaller sensor (``--ratio-shape``) of the same twin, for each codec;
- ``write_mb_s_needed``: fps x frame MB / compression ratio, the write rate the disk must
  sustain; ``write_mb_s_measured``: stored bytes / seconds the writer spent writing and
  throttled (what the disk, or the throttle, gave); ``throttle_mbps``;
- ``recorder_cpu_cores``: CPU seconds of every thread but the camera's acquisition thread
  (the consumer's copy, the encoder with Blosc2's threads, the writer) / wall seconds;
  ``recorder_cpu_cores_at_target_fps``: those CPU seconds per recorded frame x the target fps,
  the cores the recorder needs at 30 fps (less sensitive to a machine shared with other work
  than the wall-clock figures); ``cpu_ms_per_recorded_frame`` by thread role;
  ``process_cpu_cores`` the whole process; ``load_average_1min`` says how busy the machine was;
- ``verified``: every recorded frame, read back with plain ``h5py`` after
  ``import hdf5plugin``, equals the twin frame of its frame id (``--no-verify`` skips it);
- ``disk_write_MBps``: ``os.write`` of up to 40 frames (960 MB) to a plain file in the same folder
  (the machine's disk, measured in the same run, before the recording);
  ``recorder_MBps``: frame bytes per second of the recorder's busiest stage.

Neither side calls fsync: both measure writes into the OS page cache, which the kernel drains
to the disk behind them. Disk space: up to 40 x 24 MB for the raw test, then the recording
(about 60 s x 720 MB/s / ratio; the folder's free space is checked first). Both files are
deleted at the end unless ``--keep``.

Reproduce (one JSON line on stdout)::

    export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1
    .venv/bin/python benchmarks/stream.py --quick                    # 10 s, lz4, no throttle
    .venv/bin/python benchmarks/stream.py --compression zstd --throttle-mbps 400    # 60 s
    .venv/bin/python benchmarks/stream.py --compression lz4 --throttle-mbps 400
    .venv/bin/python benchmarks/stream.py --compression none --throttle-mbps 400    # drops
"""
# ruff: noqa: E402  (BLAS thread settings must precede the numpy import)

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import json
import sys
import tempfile
import threading
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


def ratio_by_exposure(grid, scene, shape, exposures_us, codecs) -> list[dict]:
    """Compression ratio of one twin frame per exposure, for each (compression, packing)."""
    from hyplex.devices.compression import FrameEncoding, encode_frame
    from hyplex.devices.sim_camera import SimulatedCamera
    from hyplex.simulation.camera import default_camera

    twin = default_camera(grid, shape)
    rows = []
    for exposure in exposures_us:
        camera = SimulatedCamera(scene, twin, exposure_us=exposure, seed=1)
        frame = camera.render_raw(0)
        row = {
            "exposure_us": exposure,
            "mean_dn": round(float(frame.mean()), 1),
            "saturated_fraction": round(float(np.mean(frame >= twin.sensor.max_dn)), 4),
        }
        for compression, packing in codecs:
            encoding = FrameEncoding(frame.shape, frame.dtype, compression, packing)
            stored = encode_frame(encoding, np.ascontiguousarray(frame))
            size = stored.nbytes if isinstance(stored, np.ndarray) else len(stored)
            name = compression if packing == "none" else f"{packing}+{compression}"
            row[name] = round(frame.nbytes / size, 3)
        rows.append(row)
    return rows


def thread_cpu_seconds() -> dict[int, float] | None:
    """CPU seconds (user + system) of each thread of this process, by native thread id (None
    without psutil)."""
    try:
        import psutil
    except ImportError:
        return None
    return {t.id: t.user_time + t.system_time for t in psutil.Process().threads()}


def cpu_by_role(before, after, roles) -> dict[str, float]:
    """CPU seconds spent between two :func:`thread_cpu_seconds` snapshots, by role:
    ``roles`` maps native ids to a role; every other thread (Blosc2's pthreads, started by
    the encoder) counts as "encoder"."""
    if before is None or after is None:
        return {}
    spent: dict[str, float] = {}
    for tid, seconds in after.items():
        role = roles.get(tid, "encoder")
        spent[role] = spent.get(role, 0.0) + seconds - before.get(tid, 0.0)
    return spent


def verify(path: Path, sources, frame_ids) -> bool:
    """Every frame of ``path``, read with plain h5py (+ hdf5plugin), equals the source frame
    of its frame id, ``sources[frame_id % len(sources)]`` (unpacked first when Mono12p)."""
    import h5py
    import hdf5plugin  # noqa: F401  (registers the Blosc2 filter)

    from hyplex.devices.bitpack import unpack_mono12p

    with h5py.File(path, "r", swmr=True) as handle:
        group = handle["streams/camera"]
        frames, committed = group["frames"], int(group["committed"][0])
        packing = group.attrs.get("packing", "none")
        shape = tuple(int(v) for v in group.attrs["frame_shape"])
        if committed != len(frame_ids):
            return False
        ids = group["metadata"]["frame_id"][:committed]
        if list(ids) != list(frame_ids):
            return False
        for index, frame_id in enumerate(frame_ids):
            data = frames[index]
            if packing == "mono12p":
                data = unpack_mono12p(data, shape)
            if not np.array_equal(data, sources[int(frame_id) % len(sources)]):
                return False
    return True


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10 s instead of 60 s")
    parser.add_argument("--seconds", type=float, default=None, help="stream duration, s")
    parser.add_argument("--shape", default="3000x4000", help="sensor ROWSxCOLS")
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--exposure-us", type=float, default=1000.0)
    parser.add_argument("--cycle-frames", type=int, default=3)
    parser.add_argument(
        "--buffer-frames",
        type=int,
        default=12,
        help="ring slots (queued frames hold theirs)",
    )
    parser.add_argument(
        "--copy",
        action="store_true",
        help="copy frames into the queue, not hand slots over",
    )
    parser.add_argument(
        "--device-buffers", type=int, default=4, help="frames the simulated device holds"
    )
    parser.add_argument("--compression", choices=("none", "lz4", "zstd"), default="lz4")
    parser.add_argument("--clevel", type=int, default=1, help="Blosc2 level 1-9")
    parser.add_argument("--packing", choices=("none", "mono12p"), default="none")
    parser.add_argument(
        "--throttle-mbps", type=float, default=None, help="hold the writer to N MB/s"
    )
    parser.add_argument(
        "--queue-frames", type=int, default=8, help="recorder write queue (0: synchronous)"
    )
    parser.add_argument(
        "--ratio-exposures", default="100,300,1000,3000,10000", help="exposures, us"
    )
    parser.add_argument("--ratio-shape", default="750x1000", help="sensor of the ratio table")
    parser.add_argument("--no-verify", dest="verify", action="store_false")
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
    scene = make_scene((max(rows // 20, 16), max(cols // 20, 16)), grid, seed=0)
    ratio_shape = tuple(int(v) for v in args.ratio_shape.split("x"))
    codecs = [("lz4", "none"), ("zstd", "none"), ("none", "mono12p"), ("zstd", "mono12p")]
    exposures = [float(v) for v in args.ratio_exposures.split(",") if v]
    ratios = ratio_by_exposure(grid, scene, ratio_shape, exposures, codecs)
    twin = default_camera(grid, (rows, cols))
    camera = SimulatedCamera(
        scene,
        twin,
        frame_rate_hz=args.fps,
        cycle_frames=args.cycle_frames,
        exposure_us=args.exposure_us,
        device_buffers=args.device_buffers,
    )
    first = camera.render_raw(0)  # renders the loop before the clock starts
    # the looped frames, kept for the check (closing the camera drops its loop)
    sources = [camera.render_raw(k).copy() for k in range(max(args.cycle_frames, 1))]
    setup_s = time.perf_counter() - setup
    n_expected = int(seconds * args.fps)

    folder = Path(args.folder or tempfile.mkdtemp(prefix="hyplex-stream-"))
    folder.mkdir(parents=True, exist_ok=True)
    disk_MBps = raw_write_MBps(folder, first, min(n_expected, 40))

    path = folder / "stream.h5"
    frames, frame_ids = 0, []
    options = dict(
        compression=args.compression,
        clevel=args.clevel,
        packing=args.packing,
        queue_frames=args.queue_frames,
        throttle_MBps=args.throttle_mbps,
        expected_frames=n_expected,
    )
    with camera, Recorder(path, StreamSpec.for_camera(camera), overwrite=True, **options) as rec:
        camera.start(policy="block", buffer_frames=args.buffer_frames)
        roles = {threading.get_native_id(): "consumer"}
        for thread in threading.enumerate():
            if thread.name == "hyplex-acquisition":
                roles[thread.native_id] = "camera"
            elif thread.name.startswith("hyplex-encoder"):
                roles[thread.native_id] = "encoder"  # all encoder threads together
            elif thread.name == "hyplex-writer":
                roles[thread.native_id] = "writer"
        cpu0 = thread_cpu_seconds()
        start = time.monotonic()
        while time.monotonic() - start < seconds:
            frame = camera.read(timeout=5.0, copy=False)
            frame_id = frame.frame_id
            # the recorder takes the ring slot over (no copy) and releases it once encoded
            if rec.write(frame, take=not args.copy) is not None:
                frame_ids.append(frame_id)
            frames += 1
        wall = time.monotonic() - start
        cpu1 = thread_cpu_seconds()
        camera.stop()
        stats = camera.stats
    recorded = len(frame_ids)
    verified = None
    if args.verify and args.cycle_frames > 0:  # cycle_frames=0 renders every frame anew
        verified = verify(path, sources, frame_ids)
    if not args.keep:
        path.unlink()
        if args.folder is None:
            folder.rmdir()
    frame_MB = first.nbytes / 1e6
    dropped = stats.dropped + rec.dropped
    ratio = rec.compression_ratio
    needed = args.fps * frame_MB / ratio
    cpu = cpu_by_role(cpu0, cpu1, roles)
    recorder_cpu = sum(v for k, v in cpu.items() if k != "camera") if cpu else None
    result = {
        "benchmark": "stream",
        "shape": [rows, cols],
        "dtype": "uint16",
        "target_fps": args.fps,
        "exposure_us": args.exposure_us,
        "mean_dn": round(float(first.mean()), 1),
        "compression": args.compression,
        "clevel": args.clevel,
        "packing": args.packing,
        "queue_frames": args.queue_frames,
        "handed_over": not args.copy,
        "throttle_mbps": args.throttle_mbps,
        "ring_slots": args.buffer_frames,
        "device_buffers": args.device_buffers,
        "seconds": round(wall, 2),
        "frames": frames,
        "recorded": recorded,
        "acquired": stats.acquired,
        "pending_at_stop": stats.pending,
        "dropped": dropped,
        "dropped_device": stats.dropped_device,
        "dropped_host": stats.dropped_host,
        "dropped_recorder": rec.dropped,
        "fps": round(recorded / wall, 2),
        "compression_ratio": round(ratio, 3),
        "write_mb_s_needed": round(needed, 1),
        "write_mb_s_measured": round(rec.write_MBps, 1),
        "recorder_cpu_cores": None if recorder_cpu is None else round(recorder_cpu / wall, 2),
        "recorder_cpu_cores_at_target_fps": None
        if recorder_cpu is None
        else round(recorder_cpu / max(recorded, 1) * args.fps, 2),
        "cpu_ms_per_recorded_frame": {
            role: round(1e3 * seconds / max(recorded, 1), 1) for role, seconds in cpu.items()
        },
        "process_cpu_cores": round(sum(cpu.values()) / wall, 2) if cpu else None,
        "load_average_1min": round(os.getloadavg()[0], 2),
        "cpu_cores_available": len(os.sched_getaffinity(0)),
        "encode_s_per_frame": round(rec.encode_seconds / max(recorded, 1), 4),
        "verified": verified,
        "ratio_by_exposure": ratios,
        "ratio_shape": list(ratio_shape),
        "recorder_MBps": round(rec.throughput_MBps, 1),
        "disk_write_MBps": round(disk_MBps, 1),
        "recorder_vs_disk": round(rec.throughput_MBps / disk_MBps, 3),
        "stream_MBps": round(recorded * frame_MB / wall, 1),
        "required_MBps": round(args.fps * frame_MB, 1),
        "peer": "os.write of the same frames to a plain file on the same disk, same run",
        "setup_s": round(setup_s, 1),
        "goal_met": dropped == 0 and verified is not False,
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])

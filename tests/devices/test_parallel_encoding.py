"""Recording at frame rate on few cores: pre-faulted ring slots, per-thread Blosc2 contexts,
several encoder threads that keep the frame order, and 2 MiB Blosc2 blocks (issue 19)."""

import ctypes
import os
import threading
import time

import numpy as np
import pytest

from hyplex.devices.blosc2_native import PluginBlosc2
from hyplex.devices.compression import DEFAULT_BLOCKSIZE, FrameEncoding, decode_chunk
from hyplex.devices.frame import Frame, PixelFormat
from hyplex.devices.recorder import Recorder, Recording, StreamSpec
from hyplex.devices.ring import FrameRing
from hyplex.devices.write_queue import Job, WriteQueue

pytestmark = pytest.mark.timeout(120)


def _sensor_frame(shape, seed=0, electrons=1100.0):
    """A 12-bit frame like the twin's at 1000 us: a smooth scene, shot noise, K = 0.39."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0 : shape[0], 0 : shape[1]]
    scene = electrons * (1 + 0.6 * np.sin(cols / 40.0) * np.cos(rows / 30.0))
    return np.clip(np.rint(rng.poisson(scene) * 0.39 + 16), 0, 4095).astype(np.uint16)


def _resident_share(array: np.ndarray) -> float:
    """The share of ``array``'s memory pages that are resident now (``mincore(2)``)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.POINTER(ctypes.c_ubyte)]
    page = os.sysconf("SC_PAGE_SIZE")
    address = array.ctypes.data
    start = address - address % page
    length = address + array.nbytes - start
    pages = -(-length // page)
    vector = (ctypes.c_ubyte * pages)()
    if libc.mincore(start, length, vector) != 0:
        raise OSError(ctypes.get_errno(), "mincore failed")
    return sum(v & 1 for v in vector) / pages


def test_ring_slots_are_resident_before_streaming():
    """The ring touches its pages when it is made (before acquisition), so a first touch
    during streaming never pays the kernel's huge-page compaction: every page of its slots is
    resident at construction. Read per page with mincore, not from the process's resident
    total, which a freed block that malloc reuses (already resident) leaves unchanged; 64 MiB
    is above glibc's largest mmap threshold (32 MiB), so the slots, and the control array,
    are fresh mappings whatever ran before."""
    control = np.empty((8, 2048, 2048), np.uint16)  # 64 MiB, never touched
    assert _resident_share(control) < 0.5  # mincore tells untouched pages apart
    ring = FrameRing(8, (2048, 2048), np.uint16)  # 64 MiB
    assert _resident_share(ring.slots) == 1.0


def test_the_library_contexts_are_used_and_threads_compress_side_by_side():
    plugin = PluginBlosc2.load()
    assert plugin is not None and plugin.contextual  # the struct layout was confirmed
    frames = [_sensor_frame((300, 400), seed) for seed in range(6)]
    encoding = FrameEncoding(frames[0].shape, np.uint16, "lz4")
    out = [None] * len(frames)

    def compress(k):
        out[k] = plugin.compress(frames[k], "lz4", 1, 1, blocksize=encoding.blocksize)

    threads = [threading.Thread(target=compress, args=(k,)) for k in range(len(frames))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for frame, chunk in zip(frames, out, strict=True):
        assert not chunk.flags.writeable  # a view of the library's buffer
        assert np.array_equal(decode_chunk(encoding, chunk), frame)


def test_the_global_fallback_makes_the_same_chunks(monkeypatch):
    plugin = PluginBlosc2.load()
    frame = _sensor_frame((200, 300))
    contextual = plugin.compress(frame, "zstd", 1, 2, blocksize=1 << 16)
    monkeypatch.setattr(plugin, "contextual", False)
    fallback = plugin.compress(frame, "zstd", 1, 2, blocksize=1 << 16)
    encoding = FrameEncoding(frame.shape, np.uint16, "zstd", blocksize=1 << 16)
    assert np.array_equal(decode_chunk(encoding, fallback), frame)
    assert abs(fallback.nbytes - contextual.nbytes) <= 64  # same codec, blocks and filters


def test_larger_blocks_store_shot_noise_frames_smaller():
    """2 MiB blocks give the bit-shuffled high planes longer runs than the library's default
    block for level 1 (measured on the twin's 4000x3000 frames: 1.901x vs 1.854x)."""
    plugin = PluginBlosc2.load()
    frame = _sensor_frame((1000, 2000))
    default = plugin.compress(frame, "lz4", 1, 1, blocksize=0).nbytes
    large = plugin.compress(frame, "lz4", 1, 1, blocksize=DEFAULT_BLOCKSIZE).nbytes
    assert large < 0.99 * default


def test_frame_encoding_refuses_a_bad_block_size():
    with pytest.raises(ValueError, match="blocksize"):
        FrameEncoding((4, 4), np.uint16, "lz4", blocksize=-1)


def test_encoders_finishing_out_of_order_still_write_in_order():
    """Even frames take longer to encode, so the second encoder finishes frame k+1 before
    the first finishes frame k; the writer still stores 0, 1, 2, ... One chunk slot and two
    encoders must not deadlock (the slots are taken in job order)."""
    written, drops = [], []

    def encode(stream, pixels):
        time.sleep(0.03 if int(pixels[0, 0]) % 2 == 0 else 0.001)
        return pixels.copy()

    queue = WriteQueue(
        {"cam": ((2, 2), np.uint16)},
        queue_frames=1,
        encode=encode,
        store=lambda stream, index, payload, row: written.append((index, int(payload[0, 0]))),
        store_drop=lambda stream, row: drops.append(row),
        encoders=2,
    )
    for index in range(12):
        buffer = queue.take_buffer("cam", block=True, timeout=5)
        buffer[:] = index
        queue.submit(Job("cam", index, buffer, np.zeros(()), slot=True))
        if index == 5:
            queue.submit(Job("cam", None, None, np.zeros(())))  # a drop, in order
    assert queue.wait_idle(timeout=10)
    queue.close()
    assert written == [(k, k) for k in range(12)]
    assert len(drops) == 1 and queue.failure is None


def test_two_encoders_record_every_frame_in_order(tmp_path):
    frames = [_sensor_frame((120, 160), seed) for seed in range(10)]
    path = tmp_path / "rec.h5"
    spec = StreamSpec((120, 160), PixelFormat.MONO12)
    with Recorder(
        path, spec, compression="lz4", queue_frames=3, encoders=2, block_when_full=True
    ) as recorder:
        assert recorder.encoders == 2
        for k, data in enumerate(frames):
            recorder.write(Frame(data, k, k, 1000 + k, pixel_format=PixelFormat.MONO12))
    with Recording(path) as recording:
        stored = np.stack([recording[k] for k in range(len(recording))])
        assert [int(i) for i in recording.metadata["frame_id"]] == list(range(10))
    assert np.array_equal(stored, np.stack(frames))

"""The recording file format: its layout, the stream spec and the datasets of a new stream.

File layout (one group per stream)::

    /                               attrs: format = "hyplex-recording", version, created
    /streams/<name>/frames          (N, H, W) uint8/uint16, chunks (1, H, W), resizable in N;
                                    packed Mono12p: (N, H, 3 W / 2) uint8; compressed: HDF5
                                    filter 32026 (Blosc2, bit-shuffle + LZ4 or Zstandard)
    /streams/<name>/metadata        (N,) structured table, ``frame.metadata_dtype(extra)``
    /streams/<name>/committed       (1,) int64: frames fully written and flushed
    /streams/<name>/dropped         (D,) the metadata rows of frames the recorder had to drop
                                    (its queue was full); absent in version-1 files
                                    attrs: pixel_format, bit_depth, frame_shape, compression,
                                    packing, user attrs

Crash safety: the file is written in SWMR mode (HDF5 single-writer/multiple-reader,
``libver="latest"``), whose metadata writes are ordered so that the file is readable at any
instant. Each frame is written as one chunk (``write_direct_chunk``: no chunk cache, no copy;
a compressed frame is already a Blosc2 chunk, see :mod:`hyplex.devices.compression`), its
metadata row appended, both flushed, and only then is ``committed`` raised and flushed.
A process killed with SIGKILL thus leaves a file where the first ``committed`` frames and
rows are intact; readers (``recording.Recording``) trust ``committed``, not the dataset
length. The data reach the OS page cache at every flush: a killed process loses nothing
flushed, a power cut may (no fsync). ``flush_every`` > 1 trades that granularity for speed.
Readers of such a file must open it with ``swmr=True`` (``Recording`` does); plain h5py reads
a compressed file after ``import hdf5plugin``.

The writer is :class:`hyplex.devices.recorder.Recorder`; the reader
:class:`hyplex.devices.recording.Recording`.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from dataclasses import dataclass, field

import h5py
import numpy as np

from hyplex.devices.compression import FrameEncoding, Packing
from hyplex.devices.frame import PixelFormat, metadata_dtype

FORMAT_NAME = "hyplex-recording"
FORMAT_VERSION = 2  # 2: compression, packing, the dropped table
METADATA_CHUNK_ROWS = 256

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "METADATA_CHUNK_ROWS",
    "StreamSpec",
    "stream_encoding",
    "write_file_attrs",
    "create_stream",
]


@dataclass(frozen=True)
class StreamSpec:
    """One stream of a recording: frame shape (H, W), pixel format, extra float columns of
    the metadata table (``frame.extra`` keys) and attributes (str, numbers)."""

    frame_shape: tuple[int, int]
    pixel_format: PixelFormat = PixelFormat.MONO16
    extra_fields: tuple[str, ...] = ()
    attrs: Mapping[str, object] = field(default_factory=dict)

    @classmethod
    def for_camera(cls, camera, extra_fields=(), attrs=None) -> StreamSpec:
        """The spec of ``camera``'s current ROI and pixel format, its model in the attrs."""
        info = {"backend": camera.backend, "model": camera.capabilities().model}
        return cls(
            camera.roi.shape, camera.pixel_format, tuple(extra_fields), {**info, **(attrs or {})}
        )


def stream_encoding(spec: StreamSpec, compression, packing, clevel, threads) -> FrameEncoding:
    """How the frames of ``spec`` are stored: ``compression`` (a ``Compression``), ``packing``
    (a ``Packing``), Blosc2 level ``clevel`` (1-9) and ``threads``.

    Raises
    ------
    ValueError
        Mono12p packing asked for a stream of more than 12 bits.
    """
    if packing is Packing.MONO12P and spec.pixel_format.bits > 12:
        raise ValueError(
            f"packing='mono12p' holds 12-bit pixels; this stream is {spec.pixel_format.value} "
            f"({spec.pixel_format.bits} bits): record it unpacked or set the camera to Mono12"
        )
    return FrameEncoding(
        spec.frame_shape, spec.pixel_format.dtype, compression, packing, clevel, threads
    )


def write_file_attrs(file: h5py.File) -> None:
    """Mark ``file`` (new, writable) as a recording of this format version, created now (UTC)."""
    file.attrs.update(
        format=FORMAT_NAME,
        version=FORMAT_VERSION,
        created=datetime.datetime.now(datetime.UTC).isoformat(),
    )


def create_stream(file: h5py.File, name: str, spec: StreamSpec, encoding: FrameEncoding) -> dict:
    """Create the group ``/streams/<name>`` of ``file`` with its empty datasets and attrs.

    Returns the writer's state of the stream: its datasets (``frames``, ``metadata``,
    ``dropped``, ``committed``), metadata ``table`` dtype, frame ``shape`` (H, W) and
    ``dtype``, the ``encoding``, and the counters ``count``, ``written``, ``flushed`` and
    ``n_dropped`` (all 0).
    """
    height, width = (int(v) for v in spec.frame_shape)
    group = file.create_group(f"streams/{name}")
    stored = encoding.stored_shape
    frames = group.create_dataset(
        "frames",
        (0, *stored),
        encoding.stored_dtype,
        maxshape=(None, *stored),
        chunks=(1, *stored),
        **encoding.hdf5_filter(),
    )
    table = metadata_dtype(spec.extra_fields)
    metadata = group.create_dataset(
        "metadata", (0,), table, maxshape=(None,), chunks=(METADATA_CHUNK_ROWS,)
    )
    dropped = group.create_dataset(
        "dropped", (0,), table, maxshape=(None,), chunks=(METADATA_CHUNK_ROWS,)
    )
    committed = group.create_dataset("committed", data=np.zeros(1, np.int64))
    group.attrs.update(
        pixel_format=spec.pixel_format.value,
        bit_depth=spec.pixel_format.bits,
        frame_shape=(height, width),
        compression=encoding.compression.value,
        packing=encoding.packing.value,
        **{key: value for key, value in spec.attrs.items() if value is not None},
    )
    return {
        "name": name,
        "frames": frames,
        "metadata": metadata,
        "dropped": dropped,
        "committed": committed,
        "table": table,
        "count": 0,  # frames accepted (indices given out)
        "written": 0,  # frames whose chunk and row are written
        "flushed": 0,  # frames committed in the file
        "n_dropped": 0,
        "dtype": spec.pixel_format.dtype,
        "shape": (height, width),
        "encoding": encoding,
    }

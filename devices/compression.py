"""Lossless frame codecs for recordings: Blosc2 (LZ4 or Zstandard after a bit-shuffle) as an
HDF5 filter, and the frame encoding (Mono12p packing, compression) the recorder writes.

Blosc2 (Alted et al., https://www.blosc.org; C-Blosc2 format specification, "Blosc2 chunk
format" and "frame format") splits a buffer into blocks, applies a *bit-shuffle* to each
block (bit plane k of every ``typesize``-byte item stored together, so the constant high bits
of 12-bit pixels in 16-bit words become runs of zeros) and compresses each block with LZ4 or
Zstandard. On a camera frame the bit-shuffle is what pays: the noisy low bits do not compress
(shot noise), the unused high bits and the slowly varying middle bits do.

In the file, the frames dataset carries HDF5 filter 32026 (``hdf5plugin.Blosc2``, registered
with The HDF Group), so any h5py reads it after ``import hdf5plugin``::

    import h5py, hdf5plugin
    frames = h5py.File("rec.h5", "r", swmr=True)["streams/camera/frames"][:]

The recorder does not let HDF5 run the filter (that would compress inside HDF5's write call,
on the writer thread): :func:`encode_frame` compresses each frame on the recorder's encoder
thread into the chunk layout filter 32026 decodes, a serialized Blosc2 super-chunk
("cframe") holding the frame's one Blosc2 chunk, and the writer stores it with
``write_direct_chunk``.

Without the GIL and on several threads: :class:`PluginBlosc2`
(:mod:`hyplex.devices.blosc2_native`) calls the C-Blosc2 that ``hdf5plugin`` ships (the
library HDF5's own filter uses) through ``ctypes``, which releases the GIL for the call, with
one compression context per thread, so the recorder's encoder threads compress frames side
by side. Where that library lacks the symbols the python-blosc2 path is used.

Block size: Blosc2 bit-shuffles and compresses each block on its own. Larger blocks give the
codec longer runs of the constant high bit planes: on the twin's 4000x3000 frames at 1000 us
(mean 442 DN) LZ4 stores 1.854x at the library's block size for level 1 and 1.901x with
2 MiB blocks, for the same CPU time (measured with ``benchmarks/stream.py``'s frame; 1.902x
at 4 MiB), so :data:`DEFAULT_BLOCKSIZE` is 2 MiB.

``compression="none"`` stores raw chunks as before; ``packing="mono12p"`` stores 12-bit frames
as three bytes per two pixels (:mod:`hyplex.devices.bitpack`), alone or before compression.
"""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass

import numpy as np

from hyplex.devices.bitpack import pack_mono12p, packed_shape, unpack_mono12p
from hyplex.devices.blosc2_native import PluginBlosc2
from hyplex.optics.extras import require

__all__ = [
    "Compression",
    "Packing",
    "FrameEncoding",
    "BLOSC2_FILTER_ID",
    "require_codec",
    "require_hdf5plugin",
    "encode_frame",
    "decode_chunk",
    "default_threads",
    "PluginBlosc2",
    "DEFAULT_BLOCKSIZE",
]

BLOSC2_FILTER_ID = 32026  # registered HDF5 filter id of Blosc2 (hdf5plugin.Blosc2)
DEFAULT_BLOCKSIZE = 2 << 20  # bytes per Blosc2 block (module doc)


class Compression(enum.Enum):
    """Lossless codec of recorded frames."""

    NONE = "none"
    LZ4 = "lz4"
    ZSTD = "zstd"

    @classmethod
    def parse(cls, value) -> Compression:
        """A Compression from itself or its name (``"lz4"``, case-insensitive)."""
        if isinstance(value, cls):
            return value
        for member in cls:
            if str(value).lower() == member.value:
                return member
        raise ValueError(f"unknown compression {value!r}; expected one of {[m.value for m in cls]}")


class Packing(enum.Enum):
    """How pixels are laid out in the file."""

    NONE = "none"
    MONO12P = "mono12p"

    @classmethod
    def parse(cls, value) -> Packing:
        if value is None:
            return cls.NONE
        if isinstance(value, cls):
            return value
        for member in cls:
            if str(value).lower() == member.value:
                return member
        raise ValueError(f"unknown packing {value!r}; expected one of {[m.value for m in cls]}")


def default_threads() -> int:
    """Cores this process may run on (``os.sched_getaffinity``), at least 1."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except AttributeError:  # not Linux
        return max(os.cpu_count() or 1, 1)


def require_hdf5plugin():
    """Import ``hdf5plugin`` (registers the Blosc2 HDF5 filter) or raise
    :class:`~hyplex.optics.extras.MissingExtraError` naming it."""
    return require(
        "hdf5plugin", extra="devices", feature="reading or writing compressed recordings"
    )


def require_codec(compression) -> Compression:
    """Check that ``compression`` can be written here: its packages (``blosc2`` and
    ``hdf5plugin``) import and Blosc2 has the codec. Returns the parsed Compression.

    Raises
    ------
    ValueError
        Unknown codec name.
    MissingExtraError
        ``blosc2`` or ``hdf5plugin`` is not installed; the message names the package and the
        ``pip install`` that brings it.
    """
    compression = Compression.parse(compression)
    if compression is Compression.NONE:
        return compression
    blosc2 = require("blosc2", extra="devices", feature=f"--compression {compression.value}")
    require_hdf5plugin()
    names = {getattr(codec, "name", str(codec)).lower() for codec in blosc2.compressor_list()}
    if compression.value not in names:
        raise ValueError(
            f"this blosc2 build has no {compression.value} codec (it has {sorted(names)})"
        )
    return compression


@dataclass(frozen=True)
class FrameEncoding:
    """How the recorder turns a (H, W) frame into the bytes of one HDF5 chunk.

    Attributes
    ----------
    frame_shape : (int, int)
        Pixels (H, W).
    dtype : numpy.dtype
        The frames' dtype (uint8 or uint16).
    compression : Compression
    packing : Packing
        ``MONO12P`` needs uint16 frames of at most 12 significant bits and an even W.
    clevel : int
        Blosc2 compression level, 1-9 (1: fastest).
    threads : int
        Blosc2 threads of one frame's compression (>= 1).
    blocksize : int
        Bytes per Blosc2 block (0: the library's choice for ``clevel``; default 2 MiB, see
        the module doc).
    """

    frame_shape: tuple[int, int]
    dtype: np.dtype
    compression: Compression = Compression.NONE
    packing: Packing = Packing.NONE
    clevel: int = 1
    threads: int = 1
    blocksize: int = DEFAULT_BLOCKSIZE

    def __post_init__(self):
        object.__setattr__(self, "frame_shape", tuple(int(v) for v in self.frame_shape))
        object.__setattr__(self, "dtype", np.dtype(self.dtype))
        object.__setattr__(self, "compression", Compression.parse(self.compression))
        object.__setattr__(self, "packing", Packing.parse(self.packing))
        if int(self.clevel) != self.clevel or not 1 <= self.clevel <= 9:
            raise ValueError(f"clevel must be an integer in 1..9, got {self.clevel!r}")
        if int(self.threads) != self.threads or self.threads < 1:
            raise ValueError(f"threads must be an integer >= 1, got {self.threads!r}")
        if int(self.blocksize) != self.blocksize or not 0 <= self.blocksize < 2**31:
            raise ValueError(f"blocksize must be an integer in [0, 2**31), got {self.blocksize!r}")
        if self.packing is Packing.MONO12P:
            if self.dtype != np.uint16:
                raise ValueError(f"Mono12p packing needs uint16 frames, got {self.dtype}")
            packed_shape(self.frame_shape)  # even width

    @property
    def stored_shape(self) -> tuple[int, int]:
        """Shape of one frame in the frames dataset: (H, W), or (H, 3 W / 2) bytes packed."""
        if self.packing is Packing.MONO12P:
            return packed_shape(self.frame_shape)
        return self.frame_shape

    @property
    def stored_dtype(self) -> np.dtype:
        return np.dtype(np.uint8) if self.packing is Packing.MONO12P else self.dtype

    @property
    def stored_nbytes(self) -> int:
        """Bytes of one frame before compression."""
        return int(np.prod(self.stored_shape)) * self.stored_dtype.itemsize

    def hdf5_filter(self) -> dict:
        """Keyword arguments of ``create_dataset`` for the frames (empty when uncompressed)."""
        if self.compression is Compression.NONE:
            return {}
        hdf5plugin = require_hdf5plugin()
        return dict(
            hdf5plugin.Blosc2(
                cname=self.compression.value,
                clevel=int(self.clevel),
                filters=hdf5plugin.Blosc2.BITSHUFFLE,
            )
        )

    def _cparams(self) -> dict:
        import blosc2

        codec = blosc2.Codec.LZ4 if self.compression is Compression.LZ4 else blosc2.Codec.ZSTD
        return dict(
            typesize=self.stored_dtype.itemsize,
            clevel=int(self.clevel),
            codec=codec,
            filters=[blosc2.Filter.BITSHUFFLE],
            nthreads=int(self.threads),
            blocksize=int(self.blocksize),
        )


def encode_frame(encoding: FrameEncoding, frame: np.ndarray, plugin: PluginBlosc2 | None = None):
    """The bytes of ``frame``'s chunk: packed if asked, then a Blosc2 cframe if compressed.

    Parameters
    ----------
    encoding : FrameEncoding
    frame : numpy.ndarray, ``encoding.frame_shape`` of ``encoding.dtype``, C-contiguous
    plugin : PluginBlosc2, optional
        Compress through it, without the GIL (default: python-blosc2, with the GIL).

    Returns
    -------
    numpy.ndarray or bytes
        What ``write_direct_chunk`` stores: the (packed) array itself when uncompressed.
    """
    data = frame
    if encoding.packing is Packing.MONO12P:
        data = pack_mono12p(frame)
    if encoding.compression is Compression.NONE:
        return data
    if plugin is not None:
        return plugin.compress(
            data,
            encoding.compression.value,
            encoding.clevel,
            encoding.threads,
            blocksize=encoding.blocksize,
        )
    import blosc2

    chunk = blosc2.SChunk(chunksize=data.nbytes, data=data, cparams=encoding._cparams())
    return chunk.to_cframe()


def decode_chunk(encoding: FrameEncoding, payload) -> np.ndarray:
    """The (H, W) frame of one chunk written by :func:`encode_frame` (tests, tools; readers
    go through HDF5 and :class:`~hyplex.devices.recording.Recording`)."""
    if encoding.compression is Compression.NONE:
        stored = np.frombuffer(payload, encoding.stored_dtype)
    else:
        import blosc2

        chunk = blosc2.schunk_from_cframe(bytes(payload), copy=True)
        stored = np.frombuffer(chunk.decompress_chunk(0), encoding.stored_dtype)
    stored = stored.reshape(encoding.stored_shape)
    if encoding.packing is Packing.MONO12P:
        return unpack_mono12p(stored, encoding.frame_shape)
    return stored.copy()

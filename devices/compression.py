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

Without the GIL: python-blosc2 keeps the GIL while it compresses (measured: a Python thread
counting beside one compressing thread ran at 0.14-0.22 of its speed on 2 cores, and two
compressing Python threads were 0.9x one), so a 10-30 ms compression would stall the
acquisition and writer threads. :class:`PluginBlosc2` therefore calls the C-Blosc2 that
``hdf5plugin`` ships (the library HDF5's own filter uses) through ``ctypes``, which releases
the GIL for the call: ``blosc2_compress`` (bit-shuffle, LZ4/Zstandard, ``threads`` pthreads)
into a chunk, ``blosc2_schunk_new`` / ``blosc2_schunk_append_chunk`` /
``blosc2_schunk_to_buffer`` into the cframe (measured: the counting thread kept 0.45 of its
speed on a loaded 2-core machine). Where that library lacks those symbols the python-blosc2
path is used.

``compression="none"`` stores raw chunks as before; ``packing="mono12p"`` stores 12-bit frames
as three bytes per two pixels (:mod:`hyplex.devices.bitpack`), alone or before compression.
"""

from __future__ import annotations

import ctypes
import enum
import os
import threading
from dataclasses import dataclass

import numpy as np

from hyplex.devices.bitpack import pack_mono12p, packed_shape, unpack_mono12p
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
]

BLOSC2_FILTER_ID = 32026  # registered HDF5 filter id of Blosc2 (hdf5plugin.Blosc2)


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
    """

    frame_shape: tuple[int, int]
    dtype: np.dtype
    compression: Compression = Compression.NONE
    packing: Packing = Packing.NONE
    clevel: int = 1
    threads: int = 1

    def __post_init__(self):
        object.__setattr__(self, "frame_shape", tuple(int(v) for v in self.frame_shape))
        object.__setattr__(self, "dtype", np.dtype(self.dtype))
        object.__setattr__(self, "compression", Compression.parse(self.compression))
        object.__setattr__(self, "packing", Packing.parse(self.packing))
        if int(self.clevel) != self.clevel or not 1 <= self.clevel <= 9:
            raise ValueError(f"clevel must be an integer in 1..9, got {self.clevel!r}")
        if int(self.threads) != self.threads or self.threads < 1:
            raise ValueError(f"threads must be an integer >= 1, got {self.threads!r}")
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
        )


class _Storage(ctypes.Structure):
    """``blosc2_storage`` (c-blosc2 >= 2.0): NULL params select the library's defaults."""

    _fields_ = [
        ("contiguous", ctypes.c_bool),
        ("urlpath", ctypes.c_char_p),
        ("cparams", ctypes.c_void_p),
        ("dparams", ctypes.c_void_p),
        ("io", ctypes.c_void_p),
    ]


_SHUFFLE_CODES = {"noshuffle": 0, "shuffle": 1, "bitshuffle": 2}


class PluginBlosc2:
    """C-Blosc2 from ``hdf5plugin``'s Blosc2 filter library, called through ``ctypes`` so
    that the GIL is released while it compresses (module doc).

    ``blosc2_compress`` uses the library's global context (its compressor and thread count
    are process-wide settings), so every call holds :attr:`lock` from setting them to the end
    of the compression; the lock belongs to the class, as the library's context belongs to the
    process. Build one with :meth:`load`, which returns None where the library or a symbol is
    missing.
    """

    lock = threading.Lock()  # guards the C library's global compressor settings

    def __init__(self, library: ctypes.CDLL):
        lib = self.lib = library
        lib.blosc2_init.argtypes, lib.blosc2_init.restype = [], None
        lib.blosc2_compress.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int32]
        lib.blosc2_compress.argtypes += [ctypes.c_void_p, ctypes.c_int32]
        lib.blosc2_compress.argtypes += [ctypes.c_void_p, ctypes.c_int32]
        lib.blosc2_compress.restype = ctypes.c_int
        lib.blosc1_set_compressor.argtypes = [ctypes.c_char_p]
        lib.blosc1_set_compressor.restype = ctypes.c_int
        lib.blosc2_set_nthreads.argtypes = [ctypes.c_int16]
        lib.blosc2_set_nthreads.restype = ctypes.c_int16
        lib.blosc2_schunk_new.argtypes = [ctypes.POINTER(_Storage)]
        lib.blosc2_schunk_new.restype = ctypes.c_void_p
        lib.blosc2_schunk_append_chunk.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_bool]
        lib.blosc2_schunk_append_chunk.restype = ctypes.c_int64
        lib.blosc2_schunk_to_buffer.argtypes = [
            ctypes.c_void_p,
            ctypes.POINTER(ctypes.c_void_p),
            ctypes.POINTER(ctypes.c_bool),
        ]
        lib.blosc2_schunk_to_buffer.restype = ctypes.c_int64
        lib.blosc2_schunk_free.argtypes = [ctypes.c_void_p]
        lib.blosc2_schunk_free.restype = ctypes.c_int
        self._free = ctypes.CDLL(None).free
        self._free.argtypes, self._free.restype = [ctypes.c_void_p], None
        lib.blosc2_init()

    @classmethod
    def load(cls) -> PluginBlosc2 | None:
        try:
            hdf5plugin = require_hdf5plugin()
            path = os.path.join(os.path.dirname(hdf5plugin.__file__), "plugins", "libh5blosc2.so")
            return cls(ctypes.CDLL(path))
        except (OSError, AttributeError, ImportError):
            return None

    def compress(
        self, data: np.ndarray, codec: str, clevel: int, threads: int, shuffle="bitshuffle"
    ) -> bytes:
        """The cframe of one Blosc2 chunk of ``data`` (C-contiguous), as filter 32026 reads."""
        with self.lock:
            return self._compress_locked(data, codec, clevel, threads, shuffle)

    def _compress_locked(self, data, codec, clevel, threads, shuffle) -> bytes:
        # one chunk buffer per instance, reused: a fresh 24 MB array per frame cost its page
        # faults every time (the lock makes the reuse safe)
        dest = getattr(self, "_dest", None)
        if dest is None or dest.nbytes < data.nbytes + 64:  # BLOSC2_MAX_OVERHEAD is 32
            dest = self._dest = np.empty(data.nbytes + 64, np.uint8)
        if self.lib.blosc1_set_compressor(codec.encode()) < 0:
            raise ValueError(f"the hdf5plugin Blosc2 library has no {codec} codec")
        self.lib.blosc2_set_nthreads(int(threads))
        size = self.lib.blosc2_compress(
            int(clevel),
            _SHUFFLE_CODES[shuffle],
            data.dtype.itemsize,
            data.ctypes.data,
            data.nbytes,
            dest.ctypes.data,
            dest.nbytes,
        )
        if size <= 0:
            raise RuntimeError(f"blosc2_compress failed ({size})")
        storage = _Storage(True, None, None, None, None)
        schunk = self.lib.blosc2_schunk_new(ctypes.byref(storage))
        if not schunk:
            raise MemoryError("blosc2_schunk_new failed")
        try:
            if self.lib.blosc2_schunk_append_chunk(schunk, dest.ctypes.data, True) != 1:
                raise RuntimeError("blosc2_schunk_append_chunk failed")
            pointer, needs_free = ctypes.c_void_p(), ctypes.c_bool()
            length = self.lib.blosc2_schunk_to_buffer(
                schunk, ctypes.byref(pointer), ctypes.byref(needs_free)
            )
            if length <= 0:
                raise RuntimeError(f"blosc2_schunk_to_buffer failed ({length})")
            frame = ctypes.string_at(pointer.value, length)
            if needs_free.value:
                self._free(pointer)
            return frame
        finally:
            self.lib.blosc2_schunk_free(schunk)


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
        return plugin.compress(data, encoding.compression.value, encoding.clevel, encoding.threads)
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

"""C-Blosc2 from ``hdf5plugin``'s Blosc2 filter library, called through ``ctypes``: frame
compression that releases the GIL and runs on several threads at once.

Why not python-blosc2: it keeps the GIL while it compresses (measured: a Python thread
counting beside one compressing thread ran at 0.14-0.22 of its speed on 2 cores, and two
compressing Python threads were 0.9x one), so a 10-30 ms compression stalls the acquisition
and writer threads. A ``ctypes`` call releases the GIL for its duration.

Why contexts: Blosc2's non-contextual ``blosc2_compress`` keeps its codec, level, block size
and thread count in one process-wide context, so calls from two threads had to be serialised
by a lock. :class:`PluginBlosc2` uses the contextual API instead (C-Blosc2 reference, "Context
API": ``blosc2_create_cctx(blosc2_cparams)``, ``blosc2_compress_ctx``): each calling thread
keeps its own compression context per parameter set, so two encoder threads compress two
frames at the same time. The ``blosc2_cparams`` struct is declared here field by field (its
layout in ``blosc2.h`` has been stable through C-Blosc2 2.x and 3.x); :meth:`PluginBlosc2.load`
checks the library's defaults (``blosc2_get_blosc2_cparams_defaults``) against the documented
ones and falls back to the global, locked path where they differ.

What the HDF5 filter 32026 decodes is a serialized Blosc2 super-chunk ("cframe", C-Blosc2
"frame format") holding the frame's one chunk: ``blosc2_schunk_new`` /
``blosc2_schunk_append_chunk`` / ``blosc2_schunk_to_buffer``. The cframe is handed to the
writer as a numpy view of the library's own buffer (:class:`Cframe`), freed when the view is
garbage, so the 10+ MB chunk is not copied once more into a Python ``bytes``.
"""

from __future__ import annotations

import ctypes
import os
import threading
import weakref

import numpy as np

from hyplex.optics.extras import require

__all__ = ["PluginBlosc2", "SHUFFLE_CODES"]

SHUFFLE_CODES = {"noshuffle": 0, "shuffle": 1, "bitshuffle": 2}
_MAX_FILTERS = 6  # BLOSC2_MAX_FILTERS
_MAX_OVERHEAD = 32  # BLOSC2_MAX_OVERHEAD, bytes a chunk may add to its data


class _Storage(ctypes.Structure):
    """``blosc2_storage``: NULL params select the library's defaults."""

    _fields_ = [
        ("contiguous", ctypes.c_bool),
        ("urlpath", ctypes.c_char_p),
        ("cparams", ctypes.c_void_p),
        ("dparams", ctypes.c_void_p),
        ("io", ctypes.c_void_p),
    ]


class _CParams(ctypes.Structure):
    """``blosc2_cparams`` (``blosc2.h``, C-Blosc2 >= 2.6), in declaration order."""

    _fields_ = [
        ("compcode", ctypes.c_uint8),
        ("compcode_meta", ctypes.c_uint8),
        ("clevel", ctypes.c_uint8),
        ("use_dict", ctypes.c_int),
        ("typesize", ctypes.c_int32),
        ("nthreads", ctypes.c_int16),
        ("blocksize", ctypes.c_int32),
        ("splitmode", ctypes.c_int32),
        ("schunk", ctypes.c_void_p),
        ("filters", ctypes.c_uint8 * _MAX_FILTERS),
        ("filters_meta", ctypes.c_uint8 * _MAX_FILTERS),
        ("prefilter", ctypes.c_void_p),
        ("preparams", ctypes.c_void_p),
        ("tuner_params", ctypes.c_void_p),
        ("tuner_id", ctypes.c_int),
        ("instr_codec", ctypes.c_bool),
        ("codec_params", ctypes.c_void_p),
        ("filter_params", ctypes.c_void_p * _MAX_FILTERS),
    ]


def _defaults_look_right(p: _CParams) -> bool:
    """The documented ``BLOSC2_CPARAMS_DEFAULTS``: BloscLZ, level 5, typesize 8, 1 thread,
    automatic block size, a shuffle as the last filter, no prefilter or tuner."""
    return (
        p.compcode == 0
        and p.clevel == 5
        and p.typesize == 8
        and p.nthreads == 1
        and p.blocksize == 0
        and list(p.filters) == [0] * (_MAX_FILTERS - 1) + [1]
        and not p.prefilter
        and not p.schunk
    )


class PluginBlosc2:
    """Blosc2 compression through ``hdf5plugin``'s C library (see the module doc). Build one
    with :meth:`load`, which returns None where the library or a symbol is missing.

    One instance may be used from several threads at once: each thread compresses with its
    own contexts (``contextual``), or, where the library's struct layout could not be
    confirmed, through the global context under :attr:`lock` (one call at a time).
    """

    lock = threading.Lock()  # guards the C library's global context (non-contextual path)

    def __init__(self, library: ctypes.CDLL):
        lib = self.lib = library
        c = ctypes
        self._declare("blosc2_init", [], None)
        self._declare("blosc2_compress", [c.c_int, c.c_int, c.c_int32, c.c_void_p, c.c_int32,
                                          c.c_void_p, c.c_int32], c.c_int)  # fmt: skip
        self._declare("blosc1_set_compressor", [c.c_char_p], c.c_int)
        self._declare("blosc1_set_blocksize", [c.c_size_t], None)
        self._declare("blosc2_set_nthreads", [c.c_int16], c.c_int16)
        self._declare("blosc2_compname_to_compcode", [c.c_char_p], c.c_int)
        self._declare("blosc2_schunk_new", [c.POINTER(_Storage)], c.c_void_p)
        self._declare("blosc2_schunk_append_chunk", [c.c_void_p, c.c_void_p, c.c_bool], c.c_int64)
        self._declare("blosc2_schunk_to_buffer", [c.c_void_p, c.POINTER(c.c_void_p),
                                                  c.POINTER(c.c_bool)], c.c_int64)  # fmt: skip
        self._declare("blosc2_schunk_free", [c.c_void_p], c.c_int)
        self._free = c.CDLL(None).free
        self._free.argtypes, self._free.restype = [c.c_void_p], None
        lib.blosc2_init()
        self.contextual = False
        try:
            self._declare("blosc2_get_blosc2_cparams_defaults", [], _CParams)
            self._declare("blosc2_create_cctx", [_CParams], c.c_void_p)
            self._declare("blosc2_compress_ctx", [c.c_void_p, c.c_void_p, c.c_int32, c.c_void_p,
                                                  c.c_int32], c.c_int)  # fmt: skip
            self._declare("blosc2_free_ctx", [c.c_void_p], None)
            self.contextual = _defaults_look_right(lib.blosc2_get_blosc2_cparams_defaults())
        except AttributeError:  # an older library without the contextual API
            pass
        self._local = threading.local()  # per-thread contexts and chunk buffers

    def _declare(self, name, argtypes, restype):
        function = getattr(self.lib, name)
        function.argtypes, function.restype = argtypes, restype

    @classmethod
    def load(cls) -> PluginBlosc2 | None:
        try:
            hdf5plugin = require(
                "hdf5plugin", extra="devices", feature="writing compressed recordings"
            )
            path = os.path.join(os.path.dirname(hdf5plugin.__file__), "plugins", "libh5blosc2.so")
            return cls(ctypes.CDLL(path))
        except (OSError, AttributeError, ImportError):
            return None

    def compress(
        self,
        data: np.ndarray,
        codec: str,
        clevel: int,
        threads: int,
        shuffle: str = "bitshuffle",
        blocksize: int = 0,
    ) -> np.ndarray:
        """The cframe of one Blosc2 chunk of ``data`` (C-contiguous), as filter 32026 reads.

        Parameters
        ----------
        data : numpy.ndarray, C-contiguous, at most 2 GB
        codec : str
            ``"lz4"``, ``"zstd"`` or another name the library knows.
        clevel : int
            1-9.
        threads : int
            Blosc2 threads for this one chunk.
        shuffle : {"noshuffle", "shuffle", "bitshuffle"}
        blocksize : int
            Bytes per Blosc2 block (0: the library's choice for ``clevel``).

        Returns
        -------
        numpy.ndarray of uint8, (n_bytes,)
            A read-only view of the library's buffer, freed when the array is garbage.
        """
        if not data.flags.c_contiguous:
            raise ValueError("data must be C-contiguous")
        local = self._local
        dest = getattr(local, "dest", None)
        if dest is None or dest.nbytes < data.nbytes + _MAX_OVERHEAD:
            # one chunk buffer per thread, reused: a fresh 24 MB array per frame paid its
            # page faults every time
            dest = local.dest = np.empty(data.nbytes + 2 * _MAX_OVERHEAD, np.uint8)
        if self.contextual:
            ctx = self._context(codec, clevel, data.dtype.itemsize, threads, shuffle, blocksize)
            size = self.lib.blosc2_compress_ctx(
                ctx, data.ctypes.data, data.nbytes, dest.ctypes.data, dest.nbytes
            )
        else:
            with self.lock:
                size = self._compress_global(data, dest, codec, clevel, threads, shuffle, blocksize)
        if size <= 0:
            raise RuntimeError(f"Blosc2 compression failed ({size})")
        return self._cframe(dest)

    def _context(self, codec, clevel, typesize, threads, shuffle, blocksize):
        key = (codec, int(clevel), int(typesize), int(threads), shuffle, int(blocksize))
        contexts = getattr(self._local, "contexts", None)
        if contexts is None:
            contexts = self._local.contexts = {}
        if key not in contexts:
            params = self.lib.blosc2_get_blosc2_cparams_defaults()
            compcode = self.lib.blosc2_compname_to_compcode(codec.encode())
            if compcode < 0:
                raise ValueError(f"the hdf5plugin Blosc2 library has no {codec} codec")
            params.compcode, params.clevel, params.typesize = compcode, clevel, typesize
            params.nthreads, params.blocksize = threads, blocksize
            params.filters[_MAX_FILTERS - 1] = SHUFFLE_CODES[shuffle]
            ctx = self.lib.blosc2_create_cctx(params)
            if not ctx:
                raise MemoryError("blosc2_create_cctx failed")
            # the context lives as long as this thread's cache of contexts
            weakref.finalize(threading.current_thread(), self.lib.blosc2_free_ctx, ctx)
            contexts[key] = ctx
        return contexts[key]

    def _compress_global(self, data, dest, codec, clevel, threads, shuffle, blocksize) -> int:
        if self.lib.blosc1_set_compressor(codec.encode()) < 0:
            raise ValueError(f"the hdf5plugin Blosc2 library has no {codec} codec")
        self.lib.blosc2_set_nthreads(int(threads))
        self.lib.blosc1_set_blocksize(int(blocksize))
        try:
            return self.lib.blosc2_compress(
                int(clevel), SHUFFLE_CODES[shuffle], data.dtype.itemsize,
                data.ctypes.data, data.nbytes, dest.ctypes.data, dest.nbytes,
            )  # fmt: skip
        finally:
            self.lib.blosc1_set_blocksize(0)

    def _cframe(self, chunk: np.ndarray) -> np.ndarray:
        """The cframe of a super-chunk holding ``chunk`` (copied into it), as a view."""
        lib = self.lib
        storage = _Storage(True, None, None, None, None)
        schunk = lib.blosc2_schunk_new(ctypes.byref(storage))
        if not schunk:
            raise MemoryError("blosc2_schunk_new failed")
        try:
            if lib.blosc2_schunk_append_chunk(schunk, chunk.ctypes.data, True) != 1:
                raise RuntimeError("blosc2_schunk_append_chunk failed")
            pointer, needs_free = ctypes.c_void_p(), ctypes.c_bool()
            length = lib.blosc2_schunk_to_buffer(
                schunk, ctypes.byref(pointer), ctypes.byref(needs_free)
            )
            if length <= 0:
                raise RuntimeError(f"blosc2_schunk_to_buffer failed ({length})")
        except BaseException:
            lib.blosc2_schunk_free(schunk)
            raise
        memory = (ctypes.c_uint8 * length).from_address(pointer.value)
        free = self._free if needs_free.value else None
        # every numpy view of the cframe keeps ``memory`` alive: free with it
        weakref.finalize(memory, _release, lib.blosc2_schunk_free, schunk, free, pointer.value)
        view = np.ctypeslib.as_array(memory)
        view.flags.writeable = False
        return view


def _release(schunk_free, schunk, free, pointer) -> None:
    """Free a cframe's super-chunk (and its buffer, when ``to_buffer`` made a copy)."""
    if free is not None:
        free(pointer)
    schunk_free(schunk)

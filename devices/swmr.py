"""Reading SWMR HDF5 files that may be truncated, without hanging: open, header and extent checks.

Why this exists: a reader opened with ``swmr=True`` skips HDF5's "file shorter than its
header says" check (a live writer grows the file), and when a checksummed metadata block
fails to verify (zeros past the end of a truncated file) it retries, doubling its sleep each
time from 1 ns, up to the file's *metadata read attempts*: 100 by default under SWMR, a wait
of 2**99 ns, i.e. for ever. A recording cut to 20 kB thus hung ``hyplex segment`` inside
h5py's read. Raw data read past the end of the file, on the other hand, come back as zeros,
without an error. So:

- :func:`open_swmr_reader` opens with :data:`SWMR_READ_ATTEMPTS` attempts (about 0.1 s of
  retries in all per block: enough to ride over a live writer's torn metadata write, and a
  prompt ``OSError`` on a truncated file);
- :func:`check_superblock` compares the file's size with the end of file recorded in its
  superblock, for a file its writer closed cleanly (a live or killed SWMR writer does not
  keep that field current, so it is skipped then);
- :func:`check_chunks_within` checks that every chunk of the first ``n`` rows of a dataset
  lies inside the file.

The last two raise :class:`~hyplex.devices.errors.RecordingTruncated` with what is missing.
"""

from __future__ import annotations

import ctypes
import os
import struct

import h5py

from hyplex.devices.errors import RecordingError, RecordingTruncated

SIGNATURE = b"\x89HDF\r\n\x1a\n"
SWMR_READ_ATTEMPTS = 27  # retries sleep 1, 2, 4, ... ns: about 2**26 ns = 0.07 s in all
_WRITE_ACCESS_FLAGS = 0x01 | 0x04  # superblock v2/v3: open for writing, open for SWMR writing

__all__ = [
    "SWMR_READ_ATTEMPTS",
    "open_swmr_reader",
    "check_superblock",
    "check_chunks_within",
    "superblock_end",
]

_set_attempts = None


def _read_attempts_setter():
    """``H5Pset_metadata_read_attempts`` from the libhdf5 h5py is linked to, or None."""
    global _set_attempts
    if _set_attempts is None:
        try:
            # dlsym on an extension module searches the libraries it links (libhdf5)
            function = ctypes.CDLL(h5py.h5p.__file__).H5Pset_metadata_read_attempts
            function.argtypes, function.restype = [ctypes.c_int64, ctypes.c_uint], ctypes.c_int
            _set_attempts = function
        except (OSError, AttributeError):
            _set_attempts = False
    return _set_attempts or None


def open_swmr_reader(path, read_attempts: int = SWMR_READ_ATTEMPTS) -> h5py.File:
    """``h5py.File(path, "r", swmr=True)`` with at most ``read_attempts`` reads of each
    checksummed metadata block (see the module doc), so a truncated file raises instead of
    hanging. Falls back to HDF5's default where the setting cannot be reached."""
    fapl = h5py.h5p.create(h5py.h5p.FILE_ACCESS)
    fapl.set_fclose_degree(h5py.h5f.CLOSE_STRONG)
    setter = _read_attempts_setter()
    if setter is not None and setter(fapl.id, int(read_attempts)) < 0:
        raise RecordingError(f"HDF5 refused metadata read attempts = {read_attempts}")
    flags = h5py.h5f.ACC_RDONLY | h5py.h5f.ACC_SWMR_READ
    fid = h5py.h5f.open(os.fsencode(os.fspath(path)), flags, fapl=fapl)
    return h5py.File(fid)


def superblock_end(path) -> tuple[int | None, bool]:
    """(end of file recorded in the HDF5 superblock, bytes from the file's start, or None if it
    cannot be told; True if the superblock says a writer has the file open).

    Raises RecordingError when ``path`` is not an HDF5 file at all (no signature at 0, 512,
    1024, ... bytes) and RecordingTruncated when the superblock itself is cut off.
    """
    path = os.fspath(path)
    size = os.path.getsize(path)
    head = b""
    with open(path, "rb") as handle:
        offset = 0
        while offset < max(size, 1):  # the superblock sits at 0, 512, 1024, 2048, ...
            handle.seek(offset)
            head = handle.read(96)
            if head[:8] == SIGNATURE:
                break
            offset = 512 if offset == 0 else offset * 2
        else:
            raise RecordingError(f"{path} is not an HDF5 file (no HDF5 signature; {size} bytes)")
    if len(head) < 14:
        raise RecordingTruncated(f"{path} is truncated: {size} bytes end inside its superblock")
    version = head[8]
    if version in (2, 3):
        width = head[9]  # size of offsets
        flags = head[11]
        fields = 12
    elif version in (0, 1):
        width = head[13]
        flags = struct.unpack_from("<I", head, 20)[0]
        fields = 24 if version == 0 else 28
    else:
        return None, False
    if width not in (4, 8):
        return None, bool(flags)
    # base address, then (v2/3) extension, end of file / (v0/1) free-space, end of file
    end_at = fields + 2 * width
    if len(head) < end_at + width:
        raise RecordingTruncated(f"{path} is truncated: {size} bytes end inside its superblock")
    code = "<I" if width == 4 else "<Q"
    base = struct.unpack_from(code, head, fields)[0]
    end = struct.unpack_from(code, head, end_at)[0]
    writing = bool(flags & _WRITE_ACCESS_FLAGS) if version >= 2 else bool(flags)
    return base + end, writing


def check_superblock(path) -> None:
    """RecordingTruncated if ``path`` was closed cleanly by its writer yet is shorter than the
    end of file its superblock records; RecordingError if it is not HDF5 (see
    :func:`superblock_end`). A file its writer still has open (or was killed in) passes: its
    superblock's end is stale, and :func:`check_chunks_within` covers it."""
    end, writing = superblock_end(path)
    size = os.path.getsize(path)
    if end is not None and not writing and size < end:
        raise RecordingTruncated(
            f"{os.fspath(path)} is truncated: {size} bytes, but its writer closed it at {end} "
            f"bytes ({end - size} missing: an interrupted copy or a full disk?); copy it "
            "again from the original"
        )


def check_chunks_within(dataset: h5py.Dataset, n_rows: int, file_size: int) -> int:
    """Rows (along axis 0) of ``dataset``'s first ``n_rows`` whose chunks lie wholly inside a
    file of ``file_size`` bytes: ``n_rows`` when all do. A row with no chunk counts as
    missing. Chunks must span the other axes whole (one chunk per block of rows, as the
    recorder and the decoded writer make them); a contiguous dataset is checked as a whole."""
    if n_rows <= 0:
        return 0
    if dataset.chunks is None:
        offset = dataset.id.get_offset()
        end = (offset or 0) + dataset.id.get_storage_size()
        return n_rows if offset is not None and end <= file_size else 0
    rows_per_chunk = dataset.chunks[0]
    n_chunks = -(-n_rows // rows_per_chunk)
    ends: dict[int, int] = {}
    if hasattr(dataset.id, "chunk_iter"):

        def visit(info) -> None:
            if info.byte_offset is not None:
                row = info.chunk_offset[0] // rows_per_chunk
                ends[row] = max(ends.get(row, 0), info.byte_offset + info.size)

        dataset.id.chunk_iter(visit)
    else:  # HDF5 < 1.12.3
        for k in range(dataset.id.get_num_chunks()):
            info = dataset.id.get_chunk_info(k)
            if info.byte_offset is not None:
                row = info.chunk_offset[0] // rows_per_chunk
                ends[row] = max(ends.get(row, 0), info.byte_offset + info.size)
    for chunk in range(n_chunks):
        end = ends.get(chunk)
        if end is None or end > file_size:
            return chunk * rows_per_chunk
    return n_rows

"""``Recording``: read a recorder's HDF5 file, by frame index or by time; export to images.

Opens files with ``swmr=True``, so a recording that is still being written, or whose writer
was killed, reads as its first ``committed`` frames (see ``recording_layout.py``).

A truncated file (an interrupted copy, a full disk) fails at once, never hangs and never
reads as zeros: opening checks the size against the end of file in the HDF5 superblock (for
a file its writer closed), that ``committed`` does not exceed the datasets' extent, and that
the chunk of every committed frame and metadata row lies inside the file; HDF5 metadata
reads retry a bounded number of times (see :mod:`hyplex.devices.swmr`). Each failure raises
:class:`~hyplex.devices.errors.RecordingTruncated` (or ``RecordingError``) saying what is
missing.

Compressed and packed recordings (``compression`` and ``packing`` attributes of the stream,
see ``recording_layout.py``) read the same way: ``hdf5plugin`` is imported to register the Blosc2
filter (a missing one is an error naming the package), and Mono12p frames are unpacked to
(H, W) uint16 on read.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from hyplex.devices.bitpack import unpack_mono12p
from hyplex.devices.errors import RecordingError, RecordingTruncated
from hyplex.devices.frame import FRAME_METADATA_DTYPE, Frame, FrameStatus, PixelFormat
from hyplex.devices.swmr import check_chunks_within, check_superblock, open_swmr_reader
from hyplex.optics.extras import require

EXPORT_FORMATS = ("png", "tiff")


class Recording:
    """One stream of a recording.

    Parameters
    ----------
    path : str or Path
    stream : str, optional
        Stream name (default: the only one, or ``"camera"``).

    Raises
    ------
    FileNotFoundError
        No such file.
    RecordingTruncated
        The file is shorter than its header or its committed frames need (module doc).
    RecordingError
        Not an HDF5 file, or HDF5 cannot read its structure.
    ValueError
        Not a ``hyplex-recording``, no stream or no such stream.
    """

    def __init__(self, path, stream: str | None = None):
        self.path = os.fspath(path)
        if not os.path.isfile(self.path):
            raise FileNotFoundError(f"{self.path}: no such recording file")
        check_superblock(self.path)
        try:
            self._file = open_swmr_reader(self.path)
        except (OSError, RuntimeError) as error:
            raise RecordingError(
                f"{self.path}: HDF5 cannot open it ({error}); a truncated or damaged file?"
            ) from None
        try:
            self._open(stream)
        except (OSError, RuntimeError, KeyError) as error:
            self._file.close()
            if isinstance(error, RecordingError):
                raise
            raise RecordingError(
                f"{self.path}: HDF5 cannot read its structure ({error}); a truncated or "
                "damaged file?"
            ) from None
        except BaseException:
            self._file.close()
            raise

    def _open(self, stream: str | None) -> None:
        kind = self._file.attrs.get("format")
        if kind != "hyplex-recording":
            raise ValueError(
                f"{self.path} has format {kind!r}, expected 'hyplex-recording' (written by "
                "hyplex stream --record / hyplex.devices.Recorder)"
            )
        names = sorted(self._file.get("streams", {}))
        if not names:
            raise ValueError(f"{self.path} holds no stream")
        if stream is None:
            stream = names[0] if len(names) == 1 else "camera"
        if stream not in names:
            raise ValueError(f"{self.path} has no stream {stream!r}; streams: {names}")
        self.stream, self.streams = stream, names
        group = self._file[f"streams/{stream}"]
        self._frames, self._metadata = group["frames"], group["metadata"]
        self._committed = group["committed"]
        self.attrs = dict(group.attrs)
        self.pixel_format = PixelFormat.parse(self.attrs["pixel_format"])
        self.compression = str(self.attrs.get("compression", "none"))
        self.packing = str(self.attrs.get("packing", "none"))
        if self.packing not in ("none", "mono12p"):
            raise RecordingError(f"{self.path}: unknown packing {self.packing!r}")
        if self.compression != "none" or _has_plugin_filter(self._frames):
            from hyplex.devices.compression import require_hdf5plugin

            require_hdf5plugin()  # registers the Blosc2 filter
        self.frame_shape = tuple(int(v) for v in self.attrs["frame_shape"])
        self.check()

    def check(self) -> int:
        """Verify that every committed frame and metadata row is in the file (module doc);
        returns the committed count. Raises RecordingTruncated naming the first frame that
        is not, or when the index itself cannot be read."""
        size = os.path.getsize(self.path)
        try:
            if check_chunks_within(self._committed, 1, size) < 1:
                raise RecordingTruncated(
                    f"{self.path} is truncated: the file ({size} bytes) ends before its "
                    "committed-frame counter (an interrupted copy or a full disk?)"
                )
            # A live writer writes and flushes frames, rows and index before it raises
            # committed: read committed first, then the extents, the size and the index.
            committed = int(self._committed[0])
            self._frames.refresh()
            self._metadata.refresh()
            size = os.path.getsize(self.path)
            extent = min(self._frames.shape[0], self._metadata.shape[0])
            if committed < 0 or committed > extent:
                raise RecordingTruncated(
                    f"{self.path} is damaged: {committed} frames committed but the datasets "
                    f"hold {self._frames.shape[0]} frames and {self._metadata.shape[0]} rows"
                )
            intact = min(
                check_chunks_within(self._frames, committed, size),
                check_chunks_within(self._metadata, committed, size),
            )
        except RecordingError:
            raise
        except (OSError, RuntimeError, KeyError, ValueError) as error:
            raise RecordingTruncated(
                f"{self.path}: the frame index is unreadable ({error}); the file ({size} "
                "bytes) was probably cut short"
            ) from None
        if intact < committed:
            missing = (
                f"frame {intact} is"
                if intact == committed - 1
                else f"frames {intact}..{committed - 1} are"
            )
            raise RecordingTruncated(
                f"{self.path} is truncated: {committed} frames are committed but the file "
                f"({size} bytes) ends before frame {intact}; {missing} missing (an "
                "interrupted copy or a full disk?)"
            )
        return committed

    def refresh(self) -> None:
        """Re-read the committed count (a recording still being written grows); the frames
        added since :meth:`check` are not re-checked against the file's size."""
        for dataset in (self._committed, self._frames, self._metadata):
            dataset.refresh()

    def __len__(self) -> int:
        committed = int(self._committed[0])
        return min(committed, self._frames.shape[0], self._metadata.shape[0])

    @property
    def metadata(self) -> np.ndarray:
        """The metadata table of the committed frames, structured (N,)."""
        return self._metadata[: len(self)]

    def _check_index(self, index: int) -> int:
        count = len(self)
        if index < 0:
            index += count
        if not 0 <= index < count:
            raise IndexError(f"frame {index} outside 0..{count - 1} (committed frames)")
        return int(index)

    @property
    def dropped(self) -> np.ndarray:
        """Metadata rows of the frames the recorder dropped (its queue was full), structured
        (D,); empty for files without the table."""
        if "dropped" not in self._frames.parent:
            return np.zeros(0, self._metadata.dtype)
        table = self._frames.parent["dropped"]
        table.refresh()
        return table[:]

    def __getitem__(self, index: int) -> np.ndarray:
        """Pixels of frame ``index`` (negative counts from the end), (H, W)."""
        return self._read(self._check_index(index))

    def _read(self, index: int) -> np.ndarray:
        stored = self._frames[index]
        if self.packing == "mono12p":
            return unpack_mono12p(stored, self.frame_shape)
        return stored

    def frame(self, index: int) -> Frame:
        """Frame ``index`` with its metadata."""
        index = self._check_index(index)
        row = self._metadata[index]
        extra_names = row.dtype.names[len(FRAME_METADATA_DTYPE.names) :]
        device_ns = int(row["device_timestamp_ns"])
        return Frame(
            data=self._read(index),
            frame_id=int(row["frame_id"]),
            seq=int(row["seq"]),
            host_timestamp_ns=int(row["host_timestamp_ns"]),
            exposure_us=float(row["exposure_us"]),
            gain_db=float(row["gain_db"]),
            pixel_format=list(PixelFormat)[int(row["pixel_format"])],
            device_timestamp_ns=None if device_ns < 0 else device_ns,
            status=FrameStatus(int(row["status"])),
            extra={name: float(row[name]) for name in extra_names},
        )

    def index_at(self, seconds: float, clock: str = "host") -> int:
        """Index of the last frame taken at or before ``seconds`` after the first frame.

        ``clock`` is "host" (monotonic host time) or "device" (the camera's timestamps).
        """
        if clock not in ("host", "device"):
            raise ValueError(f"clock must be 'host' or 'device', got {clock!r}")
        stamps = self.metadata[f"{clock}_timestamp_ns"]
        if stamps.size == 0:
            raise IndexError("the recording has no committed frame")
        if clock == "device" and np.any(stamps < 0):
            raise ValueError("this recording has no device timestamps; use clock='host'")
        target = stamps[0] + round(seconds * 1e9)
        index = int(np.searchsorted(stamps, target, side="right")) - 1
        if index < 0:
            raise IndexError(f"no frame at or before {seconds} s")
        return index

    def frame_at(self, seconds: float, clock: str = "host") -> Frame:
        """The frame shown at ``seconds`` after the first (see :meth:`index_at`)."""
        return self.frame(self.index_at(seconds, clock))

    def export(self, folder, fmt: str = "png", start: int = 0, stop: int | None = None):
        """Write frames [start, stop) as ``frame_000000.<fmt>`` files; returns their paths."""
        return export_frames(self, folder, fmt, start, stop)

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> Recording:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _has_plugin_filter(dataset) -> bool:
    """True when ``dataset`` has an HDF5 filter outside the built-in ones (ids >= 256, such
    as Blosc2's 32026), which only a registered plugin decodes."""
    plist = dataset.id.get_create_plist()
    return any(plist.get_filter(k)[0] >= 256 for k in range(plist.get_nfilters()))


def export_frames(recording: Recording, folder, fmt="png", start=0, stop=None) -> list[Path]:
    """Write frames of ``recording`` to a PNG or TIFF sequence (16-bit kept) in ``folder``.

    The files ``frame_%06d.<fmt>`` read back with ``OpenCVCamera("folder/frame_%06d.png")``.
    """
    cv2 = require("cv2", feature="exporting frames as images")

    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"fmt must be one of {EXPORT_FORMATS}, got {fmt!r}")
    stop = len(recording) if stop is None else min(stop, len(recording))
    if not 0 <= start <= stop:
        raise ValueError(f"need 0 <= start <= stop, got start={start}, stop={stop}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(start, stop):
        path = folder / f"frame_{index:06d}.{fmt}"
        if not cv2.imwrite(str(path), recording[index]):
            raise OSError(f"OpenCV could not write {path}")
        paths.append(path)
    return paths

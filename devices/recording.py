"""``Recording``: read a recorder's HDF5 file, by frame index or by time; export to images.

Opens files with ``swmr=True``, so a recording that is still being written, or whose writer
was killed, reads as its first ``committed`` frames (see ``recorder.py``).
"""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np

from hyplex.devices.frame import FRAME_METADATA_DTYPE, Frame, FrameStatus, PixelFormat

EXPORT_FORMATS = ("png", "tiff")


class Recording:
    """One stream of a recording.

    Parameters
    ----------
    path : str or Path
    stream : str, optional
        Stream name (default: the only one, or ``"camera"``).
    """

    def __init__(self, path, stream: str | None = None):
        self.path = os.fspath(path)
        self._file = h5py.File(self.path, "r", swmr=True)
        names = sorted(self._file.get("streams", {}))
        if not names:
            self._file.close()
            raise ValueError(f"{self.path} holds no stream")
        if stream is None:
            stream = names[0] if len(names) == 1 else "camera"
        if stream not in names:
            self._file.close()
            raise ValueError(f"{self.path} has no stream {stream!r}; streams: {names}")
        self.stream, self.streams = stream, names
        group = self._file[f"streams/{stream}"]
        self._frames, self._metadata = group["frames"], group["metadata"]
        self._committed = group["committed"]
        self.attrs = dict(group.attrs)
        self.pixel_format = PixelFormat.parse(self.attrs["pixel_format"])

    def refresh(self) -> None:
        """Re-read the committed count (a recording still being written grows)."""
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

    def __getitem__(self, index: int) -> np.ndarray:
        """Pixels of frame ``index`` (negative counts from the end)."""
        return self._frames[self._check_index(index)]

    def frame(self, index: int) -> Frame:
        """Frame ``index`` with its metadata."""
        index = self._check_index(index)
        row = self._metadata[index]
        extra_names = row.dtype.names[len(FRAME_METADATA_DTYPE.names) :]
        device_ns = int(row["device_timestamp_ns"])
        return Frame(
            data=self._frames[index],
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


def export_frames(recording: Recording, folder, fmt="png", start=0, stop=None) -> list[Path]:
    """Write frames of ``recording`` to a PNG or TIFF sequence (16-bit kept) in ``folder``.

    The files ``frame_%06d.<fmt>`` read back with ``OpenCVCamera("folder/frame_%06d.png")``.
    """
    import cv2

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

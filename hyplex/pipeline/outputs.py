"""Outputs of the streaming engine: label maps and cubes to HDF5, an overlay MP4, statistics.

Every sink has ``write(result)`` (one :class:`~hyplex.pipeline.FrameResult`, called from the
output stage in frame order) and ``close(summary)``; ``close`` runs on every exit path of the
engine, Ctrl-C included, so the files stay valid.

HDF5 file (format ``hyplex-decoded``), SWMR like the recorder: every dataset exists before
the first frame, each frame's rows are written and flushed, then ``committed`` is raised and
flushed; a killed writer leaves its first ``committed`` frames readable (:func:`read_decoded`)::

    /labels         (N, h, w) uint8/int16, chunks (1, h, w), gzip
    /confidence     (N, h, w) float16
    /cube           (N, h, w, L') float32, chunks (1, h, w, L')   (optional)
    /frame_index    (N,) int64: index in the source;  /frame_id (N,) int64
    /committed      (1,) int64
    attrs: format, version, class_names (JSON), wavelengths_nm
"""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path

import h5py
import numpy as np

FORMAT_NAME = "hyplex-decoded"
FORMAT_VERSION = 1


def label_palette(n_classes: int) -> np.ndarray:
    """Distinct RGB colours (n_classes, 3) uint8 (class 0 dark grey)."""
    hues = (np.arange(max(n_classes, 1)) * 0.61803398875) % 1.0
    hsv = np.stack([hues * 179, np.full_like(hues, 200), np.full_like(hues, 230)], -1)
    import cv2

    rgb = cv2.cvtColor(hsv.astype(np.uint8)[None], cv2.COLOR_HSV2RGB)[0]
    rgb[0] = (60, 60, 60)
    return rgb


def to_uint8(image, low_percentile: float = 1.0, high_percentile: float = 99.5) -> np.ndarray:
    """A real (H, W[, 3]) image stretched between two percentiles to uint8 (NaN -> 0)."""
    values = np.asarray(image, np.float32)
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return np.zeros(values.shape, np.uint8)
    low, high = np.percentile(finite, [low_percentile, high_percentile])
    scaled = (np.nan_to_num(values, nan=low) - low) / max(high - low, 1e-12)
    return (np.clip(scaled, 0, 1) * 255).astype(np.uint8)


def overlay(intensity, labels, n_classes: int, alpha: float = 0.45, scale: int = 1):
    """Label colours blended over a grey image: RGB (h * scale, w * scale, 3) uint8."""
    grey = to_uint8(intensity)
    colours = label_palette(n_classes)[np.clip(labels, 0, n_classes - 1)]
    mixed = ((1 - alpha) * grey[..., None] + alpha * colours).astype(np.uint8)
    if scale > 1:
        mixed = np.repeat(np.repeat(mixed, scale, 0), scale, 1)
    return mixed


def rgb_rendering(cube, wavelengths_nm, band: int | None = None) -> np.ndarray:
    """RGB (h, w, 3) uint8 of a cube (h, w, L): the bands nearest 610/550/465 nm, or one
    ``band`` in grey."""
    cube = np.asarray(cube, np.float32)
    if band is not None:
        if not 0 <= band < cube.shape[-1]:
            raise ValueError(f"band {band} outside 0..{cube.shape[-1] - 1}")
        return np.repeat(to_uint8(cube[..., band])[..., None], 3, -1)
    wavelengths = np.asarray(wavelengths_nm, float)
    picks = [int(np.argmin(np.abs(wavelengths - target))) for target in (610, 550, 465)]
    return to_uint8(cube[..., picks])


class DecodedWriter:
    """Label maps (and cubes) of every processed frame to HDF5 (see the module doc).

    Parameters
    ----------
    path : str or Path
        File to create (overwritten).
    metapixels : (int, int)
        (h, w) of the label maps.
    n_classes : int
    cube_bands : int
        L' kept bands to store (0: no cube).
    wavelengths_nm, class_names : optional metadata.
    """

    def __init__(
        self,
        path,
        metapixels,
        n_classes: int,
        cube_bands: int = 0,
        wavelengths_nm=None,
        class_names=None,
    ):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        height, width = (int(v) for v in metapixels)
        label_dtype = np.uint8 if n_classes <= 256 else np.int16
        self._file = h5py.File(self.path, "w", libver="latest")
        f = self._file
        f.attrs.update(
            format=FORMAT_NAME,
            version=FORMAT_VERSION,
            n_classes=int(n_classes),
            class_names=json.dumps(list(class_names or [])),
        )
        if wavelengths_nm is not None:
            f.attrs["wavelengths_nm"] = np.asarray(wavelengths_nm, float)
        grow = dict(maxshape=(None, height, width), chunks=(1, height, width))
        self.labels = f.create_dataset(
            "labels",
            (0, height, width),
            label_dtype,
            compression="gzip",
            compression_opts=1,
            **grow,
        )
        self.confidence = f.create_dataset("confidence", (0, height, width), np.float16, **grow)
        self.cube = None
        if cube_bands:
            self.cube = f.create_dataset(
                "cube",
                (0, height, width, cube_bands),
                np.float32,
                maxshape=(None, height, width, cube_bands),
                chunks=(1, height, width, cube_bands),
            )
        self.frame_index = f.create_dataset(
            "frame_index", (0,), np.int64, maxshape=(None,), chunks=(256,)
        )
        self.frame_id = f.create_dataset(
            "frame_id", (0,), np.int64, maxshape=(None,), chunks=(256,)
        )
        self.committed = f.create_dataset("committed", data=np.zeros(1, np.int64))
        f.swmr_mode = True
        self.count = 0

    def write(self, result) -> None:
        if result.labels is None and result.cube is None:
            return
        n = self.count
        datasets = [self.frame_index, self.frame_id, self.labels, self.confidence]
        if self.cube is not None:
            datasets.append(self.cube)
        for dataset in datasets:
            dataset.resize(n + 1, axis=0)
        self.frame_index[n], self.frame_id[n] = result.index, result.frame_id
        if result.labels is not None:
            self.labels[n] = result.labels
            self.confidence[n] = result.confidence
        if self.cube is not None and result.cube is not None:
            self.cube[n] = result.cube
        for dataset in datasets:
            dataset.flush()
        self.count = n + 1
        self.committed[0] = self.count
        self.committed.flush()

    def close(self, summary=None) -> None:
        """Close the file; ``committed`` frames are valid whatever stopped the run."""
        if self._file:
            self._file.close()


def read_decoded(path) -> dict:
    """The committed frames of a :class:`DecodedWriter` file: arrays and attributes."""
    with h5py.File(path, "r", swmr=True) as f:
        if f.attrs.get("format") != FORMAT_NAME:
            raise ValueError(
                f"{path} is not a {FORMAT_NAME} file (format {f.attrs.get('format')!r})"
            )
        n = int(f["committed"][0])
        out = {name: f[name][:n] for name in ("labels", "confidence", "frame_index", "frame_id")}
        if "cube" in f:
            out["cube"] = f["cube"][:n]
        out["attrs"] = dict(f.attrs)
        return out


class OverlayVideoWriter:
    """The segmentation overlay of every frame as an MP4 (OpenCV ``mp4v``).

    Parameters
    ----------
    path : str or Path
    n_classes : int
    fps : float
        Frame rate written into the file, Hz.
    scale : int
        Each metapixel becomes ``scale`` x ``scale`` video pixels.
    """

    def __init__(self, path, n_classes: int, fps: float = 30.0, scale: int = 4):
        self.path, self.n_classes = Path(path), int(n_classes)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fps, self.scale = float(fps), int(scale)
        self._writer = None
        self.count = 0

    def write(self, result) -> None:
        import cv2

        if result.labels is None:
            return
        intensity = result.intensity if result.intensity is not None else result.labels
        image = overlay(intensity, result.labels, self.n_classes, scale=self.scale)
        if self._writer is None:
            size = (image.shape[1], image.shape[0])
            self._writer = cv2.VideoWriter(
                str(self.path), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, size
            )
            if not self._writer.isOpened():
                raise OSError(f"OpenCV cannot write an mp4v video to {self.path}")
        self._writer.write(cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        self.count += 1

    def close(self, summary=None) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None


class StatsWriter:
    """Per-frame timing to CSV and the run's summary to JSON (written atomically at close).

    CSV columns: index, frame_id, status ("ok" or the error), latency_ms (source read to
    output), preprocess_ms, inference_ms (the frame's share of its batch), batch, dropped
    (frames dropped so far, all stages).
    """

    COLUMNS = (
        "index",
        "frame_id",
        "status",
        "latency_ms",
        "preprocess_ms",
        "inference_ms",
        "batch",
        "dropped",
    )

    def __init__(self, csv_path, json_path=None):
        self.csv_path = Path(csv_path)
        self.csv_path.parent.mkdir(parents=True, exist_ok=True)
        self.json_path = Path(json_path) if json_path else self.csv_path.with_suffix(".json")
        self._handle = open(self.csv_path, "w", newline="")  # noqa: SIM115 (closed in close)
        self._csv = csv.writer(self._handle)
        self._csv.writerow(self.COLUMNS)

    def write(self, result) -> None:
        def ms(seconds):
            return "" if seconds is None or not math.isfinite(seconds) else f"{seconds * 1e3:.3f}"

        self._csv.writerow(
            [
                result.index,
                result.frame_id,
                "ok" if result.error is None else result.error,
                ms(result.latency_s),
                ms(result.preprocess_s),
                ms(result.inference_s),
                result.batch,
                result.dropped_so_far,
            ]
        )

    def close(self, summary=None) -> None:
        if self._handle.closed:
            return
        self._handle.close()
        if summary is not None:
            temporary = self.json_path.with_suffix(".json.tmp")
            temporary.write_text(json.dumps(summary.to_dict(), indent=2))
            os.replace(temporary, self.json_path)

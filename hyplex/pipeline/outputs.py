"""Outputs of the streaming engine: label maps and cubes to HDF5, an overlay MP4, statistics.

Every sink has ``write(result)`` (one :class:`~hyplex.pipeline.FrameResult`, called from the
output stage in frame order) and ``close(summary)``; ``close`` runs on every exit path of the
engine, Ctrl-C included, and is idempotent.

No output looks complete unless its run was. Each file is written under a partial name
(``clip.labels.h5`` as ``clip.labels.partial.h5``, :func:`partial_path`) while an exclusive
writer lock on the final name is held (``clip.labels.h5.lock``: a second run writing the same
output fails at once, naming the first). ``close(summary)`` then follows
``summary.outcome``: "complete" (or no summary) fsyncs the file and renames it over the final
name; "partial" (Ctrl-C after some frames) keeps it under its partial name, valid and holding
every frame processed so far; "failed" (no usable frame, a fault) deletes it. A failed run
thus leaves an earlier complete output of the same name untouched.

HDF5 file (format ``hyplex-decoded``), SWMR like the recorder: every dataset exists before
the first frame, each frame's rows are written and flushed, then ``committed`` is raised and
flushed; a killed writer leaves its first ``committed`` frames readable (:func:`read_decoded`)::

    /labels         (N, h, w) uint8/int16, chunks (1, h, w), gzip
    /confidence     (N, h, w) float16
    /cube           (N, h, w, L') float32, chunks (1, h, w, L')   (optional)
    /unknown        (N, h, w) float16: unknown-material probability of an open-set head,
                    0.5 at its 95 %-TPR threshold (optional; attrs unknown_method)
    /cube_std       (N, h, w, L') float16: posterior standard deviation of the cube, from a
                    flow reconstructor (``hyplex segment --uncertainty``; optional)
    /fake           (N, h, w) float16: fake (metamer) probability of a bundle's real/fake
                    head, 0.5 at its stored threshold (``hyplex segment --fake``; optional;
                    attrs fake_head: JSON of method, criterion, threshold_logit, real_classes,
                    fake_classes; read it on pixels labelled one of those classes)
    /frame_index    (N,) int64: index in the source;  /frame_id (N,) int64
    /committed      (1,) int64
    attrs: format, version, class_names (JSON), wavelengths_nm
"""

from __future__ import annotations

import csv
import json
import math
import os
from fractions import Fraction
from pathlib import Path

import h5py
import numpy as np

from hyplex.optics.extras import require

FORMAT_NAME = "hyplex-decoded"
FORMAT_VERSION = 1
PARTIAL_TAG = ".partial"


def partial_path(path) -> Path:
    """Where an output is written until its run completes: ``a/clip.labels.h5`` ->
    ``a/clip.labels.partial.h5`` (the suffix is kept, so tools still open it)."""
    path = Path(path)
    return path.with_name(f"{path.stem}{PARTIAL_TAG}{path.suffix}")


def outcome_of(summary) -> str:
    """The run's outcome for the outputs: ``summary.outcome``, "complete" without one."""
    return "complete" if summary is None else summary.outcome


class PendingFile:
    """One output file: written at :attr:`partial` under a writer lock on :attr:`path`, then
    renamed, kept or removed by :meth:`finish` (see the module doc).

    Raises ``hyplex.devices.errors.RecordingInUse`` when another writer holds the lock.
    """

    def __init__(self, path, what: str = "output"):
        from hyplex.devices.writer_lock import WriterLock

        self.path = Path(path)
        self.partial = partial_path(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = WriterLock(self.path, what)
        self.finished: str | None = None

    def finish(self, outcome: str) -> Path | None:
        """Apply ``outcome`` ("complete", "partial", "failed") and release the lock; returns
        where the file now is (None if removed or never written). Idempotent."""
        if self.finished is not None:
            return self._where()
        try:
            if outcome == "complete" and self.partial.exists():
                with open(self.partial, "rb") as handle:
                    os.fsync(handle.fileno())  # the data before the name (power cuts)
                os.replace(self.partial, self.path)
                _fsync_folder(self.path.parent)
            elif outcome == "failed":
                self.partial.unlink(missing_ok=True)
            elif outcome not in ("complete", "partial"):
                raise ValueError(f"outcome must be complete, partial or failed, got {outcome!r}")
        finally:
            self.finished = outcome
            self._lock.release()
        return self._where()

    def _where(self) -> Path | None:
        for path in (self.path, self.partial) if self.finished == "complete" else (self.partial,):
            if path.exists():
                return path
        return None


def _fsync_folder(folder: Path) -> None:
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def label_palette(n_classes: int) -> np.ndarray:
    """Distinct RGB colours (n_classes, 3) uint8 (class 0 dark grey)."""
    hues = (np.arange(max(n_classes, 1)) * 0.61803398875) % 1.0
    hsv = np.stack([hues * 179, np.full_like(hues, 200), np.full_like(hues, 230)], -1)
    cv2 = require("cv2", feature="overlay videos")

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


UNKNOWN_COLOUR = np.array([255, 0, 255], np.float32)  # full magenta: label_palette stops at S = 200


def overlay(intensity, labels, n_classes: int, alpha: float = 0.45, scale: int = 1, unknown=None):
    """Label colours blended over a grey image: RGB (h * scale, w * scale, 3) uint8.
    ``unknown`` (h, w) probabilities, optional: pixels above 0.5 (the open-set head's 95 %-TPR
    threshold) are marked in magenta instead of their label colour."""
    grey = to_uint8(intensity)
    colours = label_palette(n_classes)[np.clip(labels, 0, n_classes - 1)]
    if unknown is not None:
        colours = np.where((np.asarray(unknown) > 0.5)[..., None], UNKNOWN_COLOUR, colours)
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
        Final name of the file (written as its :func:`partial_path` until the run completes;
        replaced then if it exists).
    metapixels : (int, int)
        (h, w) of the label maps.
    n_classes : int
    cube_bands : int
        L' kept bands to store (0: no cube).
    wavelengths_nm, class_names : optional metadata.
    unknown_method : str, optional
        The open-set method whose ``unknown`` map to store (None: no map).
    uncertainty : bool
        Also store ``cube_std`` (needs ``cube_bands``; the results' ``cube_std``).
    fake_head : dict, optional
        JSON-able description of the real/fake head whose ``fake`` map to store (attribute
        ``fake_head``); None: no map.
    """

    def __init__(
        self,
        path,
        metapixels,
        n_classes: int,
        cube_bands: int = 0,
        wavelengths_nm=None,
        class_names=None,
        unknown_method: str | None = None,
        uncertainty: bool = False,
        fake_head: dict | None = None,
    ):
        height, width = (int(v) for v in metapixels)
        if uncertainty and not int(cube_bands):
            raise ValueError("uncertainty maps need the cube stored (cube_bands >= 1)")
        self._uncertainty = bool(uncertainty)
        if height < 1 or width < 1 or int(n_classes) < 1 or int(cube_bands) < 0:
            raise ValueError(
                f"need metapixels >= (1, 1), n_classes >= 1 and cube_bands >= 0, got "
                f"{tuple(metapixels)}, {n_classes}, {cube_bands}"
            )
        label_dtype = np.uint8 if n_classes <= 256 else np.int16
        self._pending = PendingFile(path, "decoded output")
        self.path = self._pending.path
        self._unknown_method = unknown_method
        self._fake_head = fake_head
        try:
            self._file = h5py.File(self._pending.partial, "w", libver="latest")
            self._create(
                height, width, label_dtype, n_classes, cube_bands, wavelengths_nm, class_names
            )
        except BaseException:
            if getattr(self, "_file", None):
                self._file.close()
            self._pending.finish("failed")
            raise

    def _create(
        self, height, width, label_dtype, n_classes, cube_bands, wavelengths_nm, class_names
    ):
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
        self.unknown = None
        if getattr(self, "_unknown_method", None) is not None:  # before SWMR: no new datasets
            f.attrs["unknown_method"] = str(self._unknown_method)
            self.unknown = f.create_dataset("unknown", (0, height, width), np.float16, **grow)
        self.fake = None
        if getattr(self, "_fake_head", None) is not None:  # before SWMR: no new datasets
            f.attrs["fake_head"] = json.dumps(self._fake_head)
            self.fake = f.create_dataset("fake", (0, height, width), np.float16, **grow)
        self.cube_std = None
        if getattr(self, "_uncertainty", False):  # before SWMR: no new datasets
            self.cube_std = f.create_dataset(
                "cube_std",
                (0, height, width, cube_bands),
                np.float16,
                maxshape=(None, height, width, cube_bands),
                chunks=(1, height, width, cube_bands),
            )
        f.swmr_mode = True
        self.count = 0

    def write(self, result) -> None:
        if result.labels is None and result.cube is None:
            return
        n = self.count
        datasets = [self.frame_index, self.frame_id, self.labels, self.confidence]
        if self.cube is not None:
            datasets.append(self.cube)
        if self.unknown is not None:
            datasets.append(self.unknown)
        if self.cube_std is not None:
            datasets.append(self.cube_std)
        if self.fake is not None:
            datasets.append(self.fake)
        for dataset in datasets:
            dataset.resize(n + 1, axis=0)
        self.frame_index[n], self.frame_id[n] = result.index, result.frame_id
        if result.labels is not None:
            self.labels[n] = result.labels
            self.confidence[n] = result.confidence
        if self.cube is not None and result.cube is not None:
            self.cube[n] = result.cube
        if self.unknown is not None and getattr(result, "unknown", None) is not None:
            self.unknown[n] = result.unknown
        if self.cube_std is not None and getattr(result, "cube_std", None) is not None:
            self.cube_std[n] = result.cube_std
        if self.fake is not None and getattr(result, "fake", None) is not None:
            self.fake[n] = result.fake
        for dataset in datasets:
            dataset.flush()
        self.count = n + 1
        self.committed[0] = self.count
        self.committed.flush()

    def close(self, summary=None) -> None:
        """Close the file (its ``committed`` frames are valid whatever stopped the run), then
        rename, keep or remove it by ``summary.outcome`` (module doc)."""
        if self._file:
            try:
                self._file.close()
            finally:
                self._file = None
                self._pending.finish(outcome_of(summary))


def read_decoded(path) -> dict:
    """The committed frames of a :class:`DecodedWriter` file: arrays and attributes.

    A truncated file raises ``OSError`` (HDF5 reads are retried a bounded number of times,
    :func:`hyplex.devices.swmr.open_swmr_reader`) instead of hanging."""
    from hyplex.devices.swmr import open_swmr_reader

    with open_swmr_reader(path) as f:
        if f.attrs.get("format") != FORMAT_NAME:
            raise ValueError(
                f"{path} is not a {FORMAT_NAME} file (format {f.attrs.get('format')!r})"
            )
        n = int(f["committed"][0])
        out = {name: f[name][:n] for name in ("labels", "confidence", "frame_index", "frame_id")}
        if "cube" in f:
            out["cube"] = f["cube"][:n]
        if "unknown" in f:
            out["unknown"] = f["unknown"][:n]
        if "cube_std" in f:
            out["cube_std"] = f["cube_std"][:n]
        if "fake" in f:
            out["fake"] = f["fake"][:n]
        out["attrs"] = dict(f.attrs)
        return out


class OverlayVideoWriter:
    """The segmentation overlay of every frame as an H.264 MP4 that browsers play: libx264,
    yuv420p, even width and height (an odd edge is padded by repeating the last row or
    column), the index at the front of the file (``movflags=faststart``). Written with PyAV
    (``av``, whose wheels ship FFmpeg with libx264).

    Parameters
    ----------
    path : str or Path
        Final name of the video (see the module doc for the partial name and the lock).
    n_classes : int
    fps : float
        Frame rate written into the file, Hz (> 0).
    scale : int
        Each metapixel becomes ``scale`` x ``scale`` video pixels (>= 1).
    crf : int
        x264 constant rate factor, 0-51 (lower: larger, better; 18-23 is near transparent).
    """

    def __init__(self, path, n_classes: int, fps: float = 30.0, scale: int = 4, crf: int = 20):
        if not (isinstance(fps, int | float) and 0 < fps < 1000):
            raise ValueError(f"fps must be a frame rate in (0, 1000) Hz, got {fps!r}")
        if int(scale) != scale or scale < 1:
            raise ValueError(f"scale must be an integer >= 1, got {scale!r}")
        if int(crf) != crf or not 0 <= crf <= 51:
            raise ValueError(f"crf must be an integer in 0..51, got {crf!r}")
        if int(n_classes) < 1:
            raise ValueError(f"n_classes must be >= 1, got {n_classes!r}")
        try:
            import av  # noqa: F401
        except ImportError as error:
            raise ImportError(
                "the overlay video needs PyAV: pip install av (or hyplex segment --no-video)"
            ) from error
        self.n_classes, self.fps, self.scale, self.crf = (
            int(n_classes),
            float(fps),
            int(scale),
            int(crf),
        )
        self._pending = PendingFile(path, "overlay video")
        self.path = self._pending.path
        self._container = self._stream = None
        self._size: tuple[int, int] | None = None
        self._closed = False
        self.count = 0

    def _open(self, height: int, width: int) -> None:
        import av

        self._container = av.open(
            str(self._pending.partial), mode="w", format="mp4", options={"movflags": "+faststart"}
        )
        stream = self._container.add_stream(
            "libx264",
            rate=Fraction(self.fps).limit_denominator(1001),
            options={"crf": str(self.crf), "preset": "veryfast"},
        )
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        self._stream, self._size = stream, (height, width)

    def write(self, result) -> None:
        import av

        if result.labels is None or self._closed:
            return
        intensity = result.intensity if result.intensity is not None else result.labels
        image = overlay(
            intensity,
            result.labels,
            self.n_classes,
            scale=self.scale,
            unknown=getattr(result, "unknown", None),
        )
        image = np.pad(image, ((0, image.shape[0] % 2), (0, image.shape[1] % 2), (0, 0)), "edge")
        if self._container is None:
            self._open(*image.shape[:2])
        elif image.shape[:2] != self._size:
            raise ValueError(
                f"frame {result.index}: overlay {image.shape[:2]} differs from the video's "
                f"{self._size} (every frame of one video must have the same size)"
            )
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
        frame.pts = self.count
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self.count += 1

    def close(self, summary=None) -> None:
        """Flush the encoder and close the file, then rename, keep or remove it by
        ``summary.outcome`` (module doc)."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._container is not None:
                try:
                    for packet in self._stream.encode(None):
                        self._container.mux(packet)
                finally:
                    self._container.close()
        finally:
            self._pending.finish(outcome_of(summary))


class StatsWriter:
    """Per-frame timing to CSV and the run's summary to JSON (written at close; both follow
    the run's outcome, module doc).

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
        csv_path = Path(csv_path)
        json_path = Path(json_path) if json_path else csv_path.with_suffix(".json")
        self._csv_file = PendingFile(csv_path, "statistics")
        try:
            self._json_file = PendingFile(json_path, "run summary")
            self.csv_path, self.json_path = self._csv_file.path, self._json_file.path
            self._handle = open(self._csv_file.partial, "w", newline="")  # noqa: SIM115
        except BaseException:
            self._csv_file.finish("failed")
            if hasattr(self, "_json_file"):
                self._json_file.finish("failed")
            raise
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
        """Close the CSV and write the JSON summary, then rename, keep or remove both by
        ``summary.outcome`` (module doc)."""
        if self._handle.closed:
            return
        outcome = outcome_of(summary)
        try:
            self._handle.close()
            if summary is not None and outcome != "failed":
                self._json_file.partial.write_text(json.dumps(summary.to_dict(), indent=2))
        finally:
            try:
                self._csv_file.finish(outcome)
            finally:
                self._json_file.finish(outcome)

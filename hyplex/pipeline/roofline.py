"""Where a frame's time goes: each stage's share of the frame budget and of the memory limit.

A stage that moves ``B`` bytes per frame in ``t`` seconds runs at ``B / t`` bytes/s; the
machine's copy bandwidth ``beta`` (``numpy.copyto`` of a buffer larger than the caches,
counting its read and its write) bounds what any stage can reach, so ``B / (t beta)`` is the
stage's fraction of the memory limit (the roofline of Williams, Waterman & Patterson,
"Roofline: An Insightful Visual Performance Model for Multicore Architectures", CACM 52(4),
2009, with the operational intensity left out: these stages do few operations per byte, so
they sit under the sloped, bandwidth-bound part of the roof). A fraction near 1 means the
stage is memory bound and only moving fewer bytes helps; a small one means compute,
threads or overheads dominate.

``B`` counts the compulsory bytes (each input read once, each output written once,
:func:`stage_bytes`); activations between a network's layers are not counted, so for the
inference stage the fraction is a lower bound of its memory traffic.

The frame budget is ``1 / fps_target`` (33.3 ms at 30 fps); a stage's ``budget_fraction`` is
its time per frame over it. Stages run concurrently on different threads, so the frame rate
is bound by the slowest stage and by the cores: with ``n`` cores, by the sum of the stages'
CPU time over ``n``.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np

__all__ = [
    "StageCost",
    "StageTimes",
    "copy_bandwidth_bytes_per_s",
    "format_roofline",
    "roofline",
    "stage_bytes",
]


def copy_bandwidth_bytes_per_s(n_bytes: int = 256 * 2**20, repeats: int = 5) -> float:
    """The machine's copy bandwidth, bytes/s: best of ``repeats`` ``numpy.copyto`` of a
    ``n_bytes`` float64 buffer (its read and its write both counted), after one untimed copy
    that faults the pages in. One thread (numpy's copy is single-threaded).

    Parameters
    ----------
    n_bytes : int
        Buffer size in bytes (>= 1 MiB; well above the last-level cache for a memory figure).
    repeats : int
        Timed copies (>= 1).
    """
    if int(n_bytes) < 2**20 or int(repeats) < 1:
        raise ValueError(f"need n_bytes >= 1 MiB and repeats >= 1, got {n_bytes}, {repeats}")
    source = np.ones(int(n_bytes) // 8)
    target = np.empty_like(source)
    np.copyto(target, source)
    best = float("inf")
    for _ in range(int(repeats)):
        start = time.perf_counter()
        np.copyto(target, source)
        best = min(best, time.perf_counter() - start)
    return 2.0 * source.nbytes / best


def stage_bytes(
    sensor_shape, raw_itemsize: int, metapixels, n_filters: int, n_bands: int, n_classes: int
) -> dict[str, int]:
    """Compulsory bytes per frame of each stage (see the module doc).

    Parameters
    ----------
    sensor_shape : (int, int)
        Raw frame (rows, cols), pixels.
    raw_itemsize : int
        Bytes per raw pixel (2 for uint16).
    metapixels : (int, int)
        Barcode map (h, w).
    n_filters, n_bands, n_classes : int
        Barcode length, reconstructed bands kept (0: no cube), classes (0: no segmenter).

    Returns
    -------
    dict
        ``preprocess``: the raw frame read, the float32 barcodes written; ``inference``: the
        barcodes read, the float32 cube, the labels (1 byte) and float32 confidences written.
    """
    rows, cols = (int(v) for v in sensor_shape)
    h, w = (int(v) for v in metapixels)
    barcodes = h * w * int(n_filters) * 4
    outputs = h * w * int(n_bands) * 4 + (h * w * 5 if n_classes else 0)
    return {
        "preprocess": rows * cols * int(raw_itemsize) + barcodes,
        "inference": barcodes + outputs,
    }


@dataclass(frozen=True)
class StageCost:
    """One row of the roofline table.

    Attributes
    ----------
    stage : str
    ms_per_frame : float
        Wall time the stage spends on one frame, ms.
    bytes_per_frame : int
        Compulsory bytes moved per frame (:func:`stage_bytes`).
    budget_fraction : float
        ``ms_per_frame`` over the frame budget ``1000 / fps_target`` ms.
    bandwidth_fraction : float
        The stage's bytes/s over the copy bandwidth.
    """

    stage: str
    ms_per_frame: float
    bytes_per_frame: int
    budget_fraction: float
    bandwidth_fraction: float

    def to_dict(self) -> dict:
        return asdict(self)


def roofline(
    stage_ms: dict, stage_bytes_per_frame: dict, copy_bytes_per_s: float, fps_target: float = 30.0
) -> list[StageCost]:
    """The table's rows for the stages in ``stage_ms`` (ms per frame) that have bytes.

    Parameters
    ----------
    stage_ms : dict of str to float
        Time per frame of each stage, ms (> 0).
    stage_bytes_per_frame : dict of str to int
        Bytes per frame, as :func:`stage_bytes` returns.
    copy_bytes_per_s : float
        :func:`copy_bandwidth_bytes_per_s`, bytes/s (> 0).
    fps_target : float
        The frame rate the budget is for, frames/s (> 0).
    """
    if not (copy_bytes_per_s > 0 and fps_target > 0):
        raise ValueError(
            f"copy_bytes_per_s and fps_target must be > 0, got {copy_bytes_per_s}, {fps_target}"
        )
    budget_ms = 1000.0 / fps_target
    rows = []
    for stage, ms in stage_ms.items():
        if stage not in stage_bytes_per_frame or not ms > 0:
            continue
        moved = int(stage_bytes_per_frame[stage])
        rate = moved / (ms * 1e-3)
        rows.append(StageCost(stage, float(ms), moved, ms / budget_ms, rate / copy_bytes_per_s))
    return rows


def format_roofline(rows, copy_bytes_per_s: float, fps_target: float = 30.0) -> str:
    """The rows as a text table (one line per stage, then the copy bandwidth)."""
    lines = [
        f"{'stage':<12}{'ms/frame':>10}{'of budget':>11}{'MB/frame':>10}{'GB/s':>8}"
        f"{'of copy bw':>12}"
    ]
    for row in rows:
        rate = row.bytes_per_frame / (row.ms_per_frame * 1e-3) / 1e9
        lines.append(
            f"{row.stage:<12}{row.ms_per_frame:>10.1f}{row.budget_fraction:>10.0%} "
            f"{row.bytes_per_frame / 1e6:>10.1f}{rate:>8.2f}{row.bandwidth_fraction:>11.1%} "
        )
    lines.append(
        f"frame budget {1000.0 / fps_target:.1f} ms ({fps_target:g} fps); copy bandwidth "
        f"{copy_bytes_per_s / 1e9:.2f} GB/s (numpy copyto, read + write)"
    )
    return "\n".join(lines)


class StageTimes:
    """A pipeline sink that keeps each processed frame's stage times (for the table).

    ``write(result)`` takes a :class:`~hyplex.pipeline.types.FrameResult`; ``close(summary)``
    records the run's wall time. :meth:`stage_ms` gives the mean ms per frame of
    ``preprocess``, ``inference`` and ``frame`` (the run's wall time per processed frame).
    """

    def __init__(self):
        self.preprocess_s: list[float] = []
        self.inference_s: list[float] = []
        self.seconds = 0.0
        self.processed = 0
        self.shapes: dict = {}

    def write(self, result) -> None:
        if result.error is not None:
            return
        self.preprocess_s.append(float(result.preprocess_s))
        self.inference_s.append(float(result.inference_s))
        if not self.shapes:
            self.shapes = {
                "n_bands": 0 if result.cube is None else int(result.cube.shape[-1]),
                "labels": result.labels is not None,
            }

    def close(self, summary) -> None:
        self.seconds, self.processed = float(summary.seconds), int(summary.processed)

    def stage_ms(self) -> dict[str, float]:
        """Mean ms per frame of each stage (empty before a frame was processed)."""
        if not self.preprocess_s:
            return {}
        return {
            "preprocess": float(np.mean(self.preprocess_s)) * 1e3,
            "inference": float(np.mean(self.inference_s)) * 1e3,
            "frame": self.seconds / max(self.processed, 1) * 1e3,
        }

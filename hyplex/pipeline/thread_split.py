"""How the engine's cores are split between its stages, measured rather than guessed.

The engine (:class:`hyplex.pipeline.engine.Pipeline`) runs numba preprocessing and torch
inference concurrently. Given ``N`` compute threads (:func:`compute_threads`: the cores of
``os.sched_getaffinity`` as the process's thread policy sees them, :mod:`hyplex.optics.threads`,
so ``HYPLEX_THREADS`` and ``hyplex --threads`` decide when set), a split is

* ``torch_threads``: torch's intra-op threads (``torch.set_num_threads``, set by the engine);
* ``inference_workers``: frames decoded at once, each by its own thread;
* ``preprocess_threads``: numba threads of the barcode stage.

Which split is fastest depends on the networks (small-channel convolutions scale badly over
intra-op threads, so several single-threaded workers usually win), on the frame size and on
what else runs on the machine. :func:`measure_thread_splits` runs the same frames through
the engine under each :func:`candidate_splits` split and returns their frame rates and the
fastest; ``benchmarks/video.py`` reports them under ``threads``.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass

__all__ = [
    "SplitMeasurement",
    "ThreadSplit",
    "candidate_splits",
    "compute_threads",
    "measure_thread_splits",
]


@dataclass(frozen=True)
class ThreadSplit:
    """One way to share the compute threads (see the module doc)."""

    torch_threads: int
    inference_workers: int
    preprocess_threads: int

    def __post_init__(self):
        for name, value in asdict(self).items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")

    @property
    def label(self) -> str:
        return (
            f"torch {self.torch_threads} x {self.inference_workers} workers, "
            f"preprocess {self.preprocess_threads}"
        )


def compute_threads() -> int:
    """Threads the engine may use: the process thread policy's count (explicit,
    ``HYPLEX_THREADS``, or the free cores of ``os.sched_getaffinity``), at most the
    affinity's core count."""
    from hyplex.optics.threads import thread_policy

    return max(1, min(thread_policy().threads, _affinity()))


def candidate_splits(threads: int) -> list[ThreadSplit]:
    """The splits worth measuring for ``threads`` compute threads: every ``torch_threads x
    inference_workers <= threads``, with the preprocessing given the threads left (at least 1)
    or all of them (it runs while inference waits for a frame)."""
    threads = int(threads)
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    splits = []
    for torch_threads in range(1, threads + 1):
        for workers in range(1, threads // torch_threads + 1):
            for preprocess in sorted({max(1, threads - torch_threads * workers), threads}):
                splits.append(ThreadSplit(torch_threads, workers, preprocess))
    return splits


@dataclass
class SplitMeasurement:
    """Frame rates of the splits tried.

    Attributes
    ----------
    threads : int
        The compute threads shared out.
    fps : dict of str to float
        Frames/s of each split (keyed by :attr:`ThreadSplit.label`).
    best : ThreadSplit
        The fastest.
    """

    threads: int
    fps: dict
    best: ThreadSplit

    def to_dict(self) -> dict:
        return {
            "cores_affinity": _affinity(),
            "compute_threads": self.threads,
            "best": asdict(self.best),
            "fps_by_split": {k: round(v, 3) for k, v in self.fps.items()},
        }


def _affinity() -> int:
    """Cores in this process's affinity (``os.cpu_count`` where that is not available)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def measure_thread_splits(
    preprocessor,
    reconstructor,
    segmenter,
    frames,
    inference_options: dict | None = None,
    splits=None,
    warmup: int = 1,
) -> SplitMeasurement:
    """Run ``frames`` through the engine under each split and time it.

    Parameters
    ----------
    preprocessor : hyplex.pipeline.stages.Preprocessor
    reconstructor, segmenter : torch.nn.Module or None
    frames : sequence of numpy.ndarray (H, W)
        Raw frames (a few; each split decodes all of them after ``warmup`` of them).
    inference_options : dict, optional
        Other :class:`~hyplex.pipeline.inference.InferenceConfig` fields (``input_scale_dn``).
    splits : sequence of ThreadSplit, optional
        Default: :func:`candidate_splits` of :func:`compute_threads`.
    warmup : int
        Frames decoded untimed first under each split (allocators, oneDNN kernels).

    Returns
    -------
    SplitMeasurement
        The engine's torch threads are left at the last split's; build the engine for
        ``best`` afterwards.
    """
    from hyplex.pipeline.engine import Pipeline
    from hyplex.pipeline.inference import InferenceConfig, InferenceEngine
    from hyplex.pipeline.types import PipelineConfig

    frames = list(frames)
    if not frames:
        raise ValueError("frames must hold at least one raw frame")
    threads = compute_threads()
    splits = list(splits) if splits is not None else candidate_splits(threads)
    fps = {}
    for split in splits:
        config = InferenceConfig(
            **{
                **(inference_options or {}),
                "torch_threads": split.torch_threads,
                "workers": split.inference_workers,
            }
        )
        engine = InferenceEngine(reconstructor, segmenter, config=config)
        pipeline = Pipeline(
            preprocessor,
            engine,
            PipelineConfig(
                policy="block", queue_frames=4, preprocess_threads=split.preprocess_threads
            ),
        )
        if warmup:
            pipeline.run(frames[: max(1, int(warmup))])
        start = time.perf_counter()
        summary = pipeline.run(frames)
        fps[split.label] = summary.processed / (time.perf_counter() - start)
    best = max(splits, key=lambda s: fps[s.label])
    return SplitMeasurement(threads, fps, best)

"""Configuration and results of the streaming engine (:mod:`hyplex.pipeline`)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from hyplex.devices.ring import OverflowPolicy


@dataclass
class PipelineConfig:
    """Shape of the pipeline.

    Attributes
    ----------
    policy : str
        "block" (nothing dropped; back-pressure to the source) or "drop_oldest" (live).
    queue_frames : int
        Capacity of the raw ring (>= 2) and of each queue between stages.
    max_frames : int or None
        Stop after reading this many frames from the source.
    raw_preview_px : int
        Keep a decimated copy of each raw frame, at most this many pixels wide, in the result
        (0: none; the viewer uses it).
    keep_barcodes : bool
        Keep each frame's barcodes in its result (the viewer's spectra use the cube).
    preprocess_threads : int or None
        numba threads of the preprocessing stage (None: the cores torch does not use, >= 1).
    read_timeout_s : float
        Longest wait for one frame from the source, s: a source that delivers nothing for
        this long (a hung file system, a stuck driver) fails the run with
        :class:`PipelineFailed` instead of blocking it for ever.
    first_read_timeout_s : float
        The same for the first frame, s, which may wait for one-off work (opening a camera,
        rendering the twin, numba compilation; a camera source itself gives up after 120 s).
    """

    policy: str = "block"
    queue_frames: int = 4
    max_frames: int | None = None
    raw_preview_px: int = 0
    keep_barcodes: bool = False
    preprocess_threads: int | None = None
    read_timeout_s: float = 60.0
    first_read_timeout_s: float = 300.0

    def __post_init__(self):
        policy = OverflowPolicy.parse(self.policy)
        if policy is OverflowPolicy.NEWEST_ONLY:
            raise ValueError("policy must be 'block' or 'drop_oldest', got 'newest_only'")
        self.policy = policy.value
        if int(self.queue_frames) != self.queue_frames or self.queue_frames < 2:
            raise ValueError(f"queue_frames must be an integer >= 2, got {self.queue_frames!r}")
        for name in ("read_timeout_s", "first_read_timeout_s"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and 0 < value < float("inf")):
                raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")


@dataclass
class FrameResult:
    """Everything the engine produced for one frame (arrays are the frame's own copies).

    Attributes
    ----------
    index, frame_id : int
        Position in the source and the device's counter.
    cube : numpy.ndarray, float32 (h, w, L') or None
    labels : numpy.ndarray, (h, w) or None
    confidence : numpy.ndarray, float32 (h, w) or None
    intensity : numpy.ndarray, float32 (h, w) or None
        Mean barcode per metapixel, DN (a grey image for overlays).
    barcodes : numpy.ndarray, float32 (h, w, n_filters) or None
    raw_preview : numpy.ndarray (H', W') or None
    latency_s, preprocess_s, inference_s : float
        Source read to output, the preprocessing time, and the frame's share of its batch.
    batch : int
        Frames in its forward pass.
    dropped_so_far : int
    error : str or None
        Why the frame could not be decoded (then the arrays are None).
    source_time_ns : int
        Host monotonic time when the source delivered the frame, ns.
    unknown : numpy.ndarray, float32 (h, w) or None
        Unknown-material probability of an open-set head (0.5 at its 95 %-TPR threshold).
    cube_std : numpy.ndarray, float32 (h, w, L') or None
        Posterior standard deviation of the cube (a flow reconstructor, ``--uncertainty``).
    fake : numpy.ndarray, float32 (h, w) or None
        Fake (metamer) probability of a real/fake head (0.5 at its threshold; ``--fake``).
    """

    index: int
    frame_id: int
    cube: np.ndarray | None = None
    labels: np.ndarray | None = None
    confidence: np.ndarray | None = None
    intensity: np.ndarray | None = None
    barcodes: np.ndarray | None = None
    raw_preview: np.ndarray | None = None
    latency_s: float = float("nan")
    preprocess_s: float = float("nan")
    inference_s: float = float("nan")
    batch: int = 0
    dropped_so_far: int = 0
    error: str | None = None
    source_time_ns: int = 0
    unknown: np.ndarray | None = None
    cube_std: np.ndarray | None = None
    fake: np.ndarray | None = None


@dataclass
class PipelineSummary:
    """Accounting of a run (see the engine's module doc for the balance).

    ``failure`` says why a run failed (no usable frame, a stage's exception, a stalled
    source); ``interrupted`` is True after Ctrl-C. :attr:`outcome` sums them up.
    """

    frames_read: int = 0
    processed: int = 0
    dropped: int = 0
    corrupt: int = 0
    errors: list = field(default_factory=list)
    seconds: float = 0.0
    latencies_s: list = field(default_factory=list)
    stage_dropped: dict = field(default_factory=dict)
    max_pending: dict = field(default_factory=dict)
    source_dropped: int = 0
    interrupted: bool = False
    failure: str | None = None

    @property
    def outcome(self) -> str:
        """ "failed" (no frame processed), "partial" (frames processed, then Ctrl-C or a
        failure) or "complete" (frames processed, the run ended by itself or by ``stop()``).
        File outputs are removed, kept under their partial names, or renamed into place."""
        if self.processed == 0:
            return "failed"
        return "partial" if self.interrupted or self.failure is not None else "complete"

    @property
    def fps(self) -> float:
        """Frames processed per wall-clock second."""
        return self.processed / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict:
        lat = np.asarray(self.latencies_s, float)
        pct = (lambda q: float(np.percentile(lat, q) * 1e3)) if lat.size else (lambda q: None)
        return {
            "frames_read": self.frames_read,
            "processed": self.processed,
            "dropped": self.dropped,
            "corrupt": self.corrupt,
            "source_dropped": self.source_dropped,
            "stage_dropped": self.stage_dropped,
            "max_pending": self.max_pending,
            "seconds": round(self.seconds, 4),
            "fps": round(self.fps, 3),
            "latency_ms_p50": pct(50),
            "latency_ms_p95": pct(95),
            "interrupted": self.interrupted,
            "outcome": self.outcome,
            "failure": self.failure,
            "errors": [{"index": i, "error": e} for i, e in self.errors],
        }


class PipelineFailed(RuntimeError):
    """A run that produced nothing usable or stopped on a fault: no usable frame (every one
    corrupt, or none at all), a stage's exception, or a source that stalled past its read
    timeout. Its outputs were removed, or kept under their partial names if frames had been
    processed (``summary.outcome``); ``summary`` holds the run's accounting."""

    def __init__(self, message: str, summary: PipelineSummary):
        super().__init__(message)
        self.summary = summary

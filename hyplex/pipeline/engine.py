"""The streaming decode/segment engine: raw frames in, spectral cubes and label maps out.

::

    source ──acquisition──> FrameRing (raw, preallocated; BLOCK | DROP_OLDEST)
      ──preprocess (numba)──> StageQueue (barcodes) ──inference (torch, batched)──>
      StageQueue (results) ──output (calling thread)──> sinks (HDF5, MP4, CSV/JSON, viewer)

Four stages run concurrently, three in threads and the output stage in the thread that calls
:meth:`Pipeline.run` (so Ctrl-C lands there: the threads are stopped and every sink is closed,
leaving valid files). Every hand-off is bounded: the raw ring holds ``queue_frames`` frames,
the two queues ``queue_frames`` items each, whatever the relative speeds. With
``policy="block"`` a slow stage stalls the ones before it and finally the source (a camera
then loses frames on the device side, counted by the camera); with ``"drop_oldest"`` each
hand-off discards its oldest waiting item and counts it. At any time::

    frames read == processed + dropped (all stages) + corrupt + in flight

How a run ends (``PipelineSummary.outcome``) decides what happens to file outputs (see
``outputs.py``): "complete" (frames processed; the source ended, or :meth:`Pipeline.stop`)
renames them into place; "partial" (frames processed, then Ctrl-C or a failure) keeps what
was written under ``*.partial.*`` names; "failed" (no frame processed) removes them. A run
fails, and :meth:`Pipeline.run` raises :class:`PipelineFailed`, when no frame was usable
(every one corrupt, or none at all; unless it was interrupted or stopped), when a stage
raised, or when the source delivered nothing for ``PipelineConfig.read_timeout_s`` (the
acquisition thread is then abandoned: a read stuck in the kernel cannot be interrupted from
Python).

The inference stage may run several workers (``InferenceEngine.workers``, one per core on the
CPU without a temporal model): each decodes its own batch, and results are handed on in frame
order (tickets). A frame that cannot be decoded (wrong shape or dtype, NaN, unreadable) is
reported with its index and reason in ``PipelineSummary.errors`` and the stream goes on.

Where things are, in this package: ``stages.py`` (queues, frame checks, preprocessing),
``inference.py`` (models on CPU/GPU), ``sources.py``, ``outputs.py`` (sinks), ``types.py``
(configuration and results), ``batch.py`` (files, Dask), ``models.py`` (loading and
twin-fitted models).

Examples
--------
>>> engine = InferenceEngine(reconstructor, segmenter)  # doctest: +SKIP
>>> pipeline = Pipeline(Preprocessor(layout, (3000, 4000)), engine)  # doctest: +SKIP
>>> summary = pipeline.run("clip.h5", sinks=[StatsWriter("stats.csv")])  # doctest: +SKIP
>>> summary.fps, summary.dropped, summary.errors  # doctest: +SKIP
"""

from __future__ import annotations

import threading
import time
from collections import deque

import numpy as np

from hyplex.devices.ring import FrameRing, RingClosed
from hyplex.optics.threads import thread_policy
from hyplex.pipeline.inference import DecodedBatch, InferenceConfig, InferenceEngine
from hyplex.pipeline.sources import SourceItem, open_source
from hyplex.pipeline.stages import CorruptFrame, Preprocessor, QueueClosed, StageQueue, check_frame
from hyplex.pipeline.types import FrameResult, PipelineConfig, PipelineFailed, PipelineSummary

__all__ = [
    "Pipeline",
    "PipelineConfig",
    "PipelineSummary",
    "PipelineFailed",
    "FrameResult",
    "InferenceConfig",
]

_END = object()


class Pipeline:
    """The engine (see the module doc).

    Parameters
    ----------
    preprocessor : Preprocessor
        Dark/flat and barcodes for the registered layout.
    engine : InferenceEngine
        The models.
    config : PipelineConfig, optional

    Examples
    --------
    >>> pipeline = Pipeline(Preprocessor(layout, shape), engine)  # doctest: +SKIP
    >>> summary = pipeline.run("recording.h5", sinks=[DecodedWriter(...)])  # doctest: +SKIP
    """

    def __init__(
        self,
        preprocessor: Preprocessor,
        engine: InferenceEngine,
        config: PipelineConfig | None = None,
    ):
        self.preprocessor, self.engine = preprocessor, engine
        self.config = config or PipelineConfig()
        self._stop = threading.Event()
        self._stop_requested = False
        self._reading_since: float | None = None  # monotonic s, while the source is read
        self._reads = 0
        self.latest: FrameResult | None = None
        self.summary = PipelineSummary()

    def stop(self) -> None:
        """Ask a running :meth:`run` to finish (from another thread); the run counts as
        complete if it processed a frame."""
        self._stop_requested = True
        self._stop.set()

    def _next_item(self, iterator):
        """The source's next item (or _END), timed for the stall watchdog in :meth:`run`."""
        self._reading_since = time.monotonic()
        try:
            return next(iterator, _END)
        finally:
            self._reading_since = None
            self._reads += 1

    def _stalled(self, source) -> str | None:
        """Why the source counts as stalled (a read past its timeout), or None."""
        since = self._reading_since
        if since is None:
            return None
        config = self.config
        limit = config.first_read_timeout_s if self._reads == 0 else config.read_timeout_s
        waited = time.monotonic() - since
        if waited <= limit:
            return None
        name = getattr(source, "name", type(source).__name__)
        return (
            f"the source gave no frame for {waited:.1f} s (reading item {self._reads} of "
            f"{name}; the limit is {limit:g} s, PipelineConfig."
            f"{'first_' if self._reads == 0 else ''}read_timeout_s): a hung file system, "
            "device or network?"
        )

    # stages --------------------------------------------------------------------------------

    def _acquire(self, source, ring_holder: dict, ready: threading.Event, errors: deque):
        """Source -> raw ring. Corrupt frames are reported, not queued."""
        ring = None
        try:
            self._reading_since = time.monotonic()
            iterator = iter(source)  # a camera opens here: timed with the first read
            while True:
                item: SourceItem = self._next_item(iterator)
                if item is _END or self._stop.is_set():
                    break
                max_frames = self.config.max_frames
                if max_frames is not None and self.summary.frames_read >= max_frames:
                    break
                self.summary.frames_read += 1
                try:
                    if item.error is not None:
                        raise CorruptFrame(f"frame {item.index}: {item.error}")
                    data = check_frame(item.data, self.preprocessor.sensor_shape, item.index)
                    if ring is not None and data.dtype != ring.dtype:
                        raise CorruptFrame(
                            f"frame {item.index}: dtype {data.dtype}, expected {ring.dtype} as "
                            "the earlier frames of this stream"
                        )
                except CorruptFrame as error:
                    errors.append((item.index, item.frame_id, str(error)))
                    continue
                if ring is None:
                    ring = FrameRing(
                        self.config.queue_frames, data.shape, data.dtype, self.config.policy
                    )
                    ring_holder["ring"] = ring
                    ready.set()
                while True:
                    try:
                        slot = ring.acquire(timeout=0.05)
                        break
                    except TimeoutError:
                        if self._stop.is_set():
                            return
                np.copyto(slot.array, data)
                ring.commit(slot, (item.index, item.frame_id, item.timestamp_ns))
        finally:
            if ring is not None:
                ring.close()
            ready.set()

    def _preprocess(self, ring_holder: dict, ready: threading.Event, queue: StageQueue):
        import numba
        import torch

        threads = self.config.preprocess_threads
        if threads is None:
            cores = thread_policy().threads  # the process's compute threads (optics.threads)
            threads = cores - (0 if self.engine.cuda else torch.get_num_threads())
        numba.set_num_threads(max(1, min(int(threads), numba.config.NUMBA_NUM_THREADS)))
        ready.wait()
        ring = ring_holder.get("ring")
        step = 0
        try:
            while ring is not None:
                try:
                    slot = ring.read(timeout=0.1)
                except TimeoutError:
                    if self._stop.is_set():
                        break
                    continue
                except RingClosed:
                    break
                index, frame_id, t_read = slot.info
                start = time.perf_counter()
                try:
                    barcodes = self.preprocessor(slot.array, index)
                    preview = None
                    if self.config.raw_preview_px:
                        step = max(1, -(-slot.array.shape[1] // self.config.raw_preview_px))
                        preview = slot.array[::step, ::step].copy()
                except (CorruptFrame, ValueError) as error:
                    queue.put(("error", index, frame_id, str(error)), self._stop)
                    continue
                finally:
                    ring.release(slot)
                queue.put(
                    ("ok", index, frame_id, t_read, barcodes, preview, time.perf_counter() - start),
                    self._stop,
                )
        finally:
            queue.close()

    def _infer(self, inbox: StageQueue, outbox: StageQueue, order: dict):
        """One inference worker. Several may run (``InferenceEngine.workers``): each takes a
        ticket with its batch and hands its results on in ticket order (frame order)."""
        try:
            while True:
                with order["take"]:
                    try:
                        items = inbox.get_many(self.engine.config.batch_size, timeout=0.1)
                    except TimeoutError:
                        if self._stop.is_set():
                            break
                        continue
                    except QueueClosed:
                        break
                    ticket = order["next_ticket"]
                    order["next_ticket"] += 1
                try:
                    results = self._decode(items)  # concurrently with the other workers
                    with order["turn"]:
                        order["turn"].wait_for(
                            lambda t=ticket: order["serving"] == t or self._stop.is_set()
                        )
                    for result in results:
                        outbox.put(result, self._stop)
                finally:
                    with order["turn"]:
                        order["serving"] = max(order["serving"], ticket + 1)
                        order["turn"].notify_all()
        finally:
            with order["turn"]:
                order["running"] -= 1
                if order["running"] == 0:
                    outbox.close()

    def _decode(self, items: list) -> list[FrameResult]:
        """FrameResults of one batch of preprocessed items (errors passed through)."""
        results = [
            FrameResult(item[1], item[2], error=item[3]) for item in items if item[0] == "error"
        ]
        good = [item for item in items if item[0] == "ok"]
        if not good:
            return results
        start = time.perf_counter()
        decoded: DecodedBatch = self.engine(np.stack([item[4] for item in good]))
        share = (time.perf_counter() - start) / len(good)
        for b, (_, index, frame_id, t_read, barcodes, preview, pre_s) in enumerate(good):
            results.append(
                FrameResult(
                    index,
                    frame_id,
                    cube=None if decoded.cube is None else decoded.cube[b],
                    labels=None if decoded.labels is None else decoded.labels[b],
                    confidence=None if decoded.confidence is None else decoded.confidence[b],
                    intensity=_intensity(barcodes),
                    barcodes=barcodes if self.config.keep_barcodes else None,
                    raw_preview=preview,
                    preprocess_s=pre_s,
                    inference_s=share,
                    batch=len(good),
                    source_time_ns=t_read,
                    unknown=(decoded.extra["unknown"][b] if "unknown" in decoded.extra else None),
                    cube_std=decoded.extra["cube_std"][b] if "cube_std" in decoded.extra else None,
                    fake=decoded.extra["fake"][b] if "fake" in decoded.extra else None,
                )
            )
        return results

    # driver --------------------------------------------------------------------------------

    def run(self, source, sinks=(), progress: bool = False, on_result=None) -> PipelineSummary:
        """Process ``source`` to the end (or :meth:`stop`, or Ctrl-C) and close ``sinks``.

        Parameters
        ----------
        source : str, Path, Camera or iterable of SourceItem
            See :func:`~hyplex.pipeline.sources.open_source`.
        sinks : sequence
            Objects with ``write(FrameResult)`` and ``close(summary)``.
        progress : bool
            A tqdm bar (frames, fps, drops) on stderr.
        on_result : callable, optional
            Called with every FrameResult (e.g. the live viewer).

        Returns
        -------
        PipelineSummary
            Also kept as ``self.summary``; ``interrupted`` is True after Ctrl-C.
        """
        self._stop.clear()
        self._stop_requested = False
        self._reading_since, self._reads = None, 0
        self.engine.reset()
        self.summary = summary = PipelineSummary()
        try:
            source = open_source(source)
        except BaseException as error:
            summary.failure = f"the source cannot be opened: {error}"
            _close_sinks(sinks, summary)  # removes their files
            raise
        capacity, policy = self.config.queue_frames, self.config.policy
        barcodes_q = StageQueue(capacity, policy, "barcode queue")
        results_q = StageQueue(capacity, policy, "result queue")
        errors: deque = deque()
        ring_holder: dict = {}
        ready = threading.Event()
        threads = [
            threading.Thread(
                target=self._acquire,
                args=(source, ring_holder, ready, errors),
                name="hyplex-pipeline-acquire",
                daemon=True,
            ),
            threading.Thread(
                target=self._preprocess,
                args=(ring_holder, ready, barcodes_q),
                name="hyplex-pipeline-preprocess",
                daemon=True,
            ),
        ]
        workers = self.engine.workers
        order = {
            "take": threading.Lock(),
            "turn": threading.Condition(),
            "next_ticket": 0,
            "serving": 0,
            "running": workers,
        }
        threads += [
            threading.Thread(
                target=self._infer,
                args=(barcodes_q, results_q, order),
                name=f"hyplex-pipeline-infer-{k}",
                daemon=True,
            )
            for k in range(workers)
        ]
        failures: list = []
        stalled = None
        for thread in threads:
            original = thread.run

            def guarded(original=original):
                try:
                    original()
                except BaseException as error:  # surfaced after the run
                    failures.append(error)
                    self._stop.set()

            thread.run = guarded
        bar = _progress_bar(progress, getattr(source, "__len__", None) and len(source))
        start = time.perf_counter()
        for thread in threads:
            thread.start()

        def dropped_now() -> int:
            ring = ring_holder.get("ring")
            return (
                (ring.stats.overwritten if ring else 0)
                + barcodes_q.stats.dropped
                + (results_q.stats.dropped)
            )

        def emit(result: FrameResult) -> None:
            for sink in sinks:
                sink.write(result)
            if on_result is not None:
                on_result(result)

        try:
            while True:
                while errors:
                    index, frame_id, message = errors.popleft()
                    summary.corrupt += 1
                    summary.errors.append((index, message))
                    emit(FrameResult(index, frame_id, error=message))
                try:
                    result = results_q.get(timeout=0.1)
                except TimeoutError:
                    stalled = self._stalled(source)
                    if stalled is not None:
                        break
                    continue
                except QueueClosed:
                    break
                if result.error is not None:
                    summary.corrupt += 1
                    summary.errors.append((result.index, result.error))
                    emit(result)
                    continue
                result.latency_s = (time.monotonic_ns() - result.source_time_ns) * 1e-9
                result.dropped_so_far = dropped_now()
                summary.processed += 1
                summary.latencies_s.append(result.latency_s)
                self.latest = result
                emit(result)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(
                        fps=f"{summary.processed / (time.perf_counter() - start):.1f}",
                        dropped=result.dropped_so_far,
                        refresh=False,
                    )
        except KeyboardInterrupt:
            summary.interrupted = True
        finally:
            self._stop.set()
            for thread in threads:
                # a thread stuck in the source's read is abandoned (daemon), not awaited
                thread.join(timeout=2 if stalled else 30)
            while errors:
                index, frame_id, message = errors.popleft()
                summary.corrupt += 1
                summary.errors.append((index, message))
            summary.seconds = time.perf_counter() - start
            ring = ring_holder.get("ring")
            summary.stage_dropped = {
                "raw_ring": ring.stats.overwritten if ring else 0,
                "barcode_queue": barcodes_q.stats.dropped,
                "result_queue": results_q.stats.dropped,
            }
            summary.max_pending = {
                "raw_ring": ring.stats.max_pending if ring else 0,
                "barcode_queue": barcodes_q.stats.max_pending,
                "result_queue": results_q.stats.max_pending,
            }
            summary.dropped = sum(summary.stage_dropped.values())
            summary.source_dropped = int(getattr(source, "dropped", 0) or 0)
            if bar is not None:
                bar.close()
            if stalled is not None:
                summary.failure = stalled
            elif failures and not summary.interrupted:
                summary.failure = f"a pipeline stage failed: {failures[0]!r}"
            elif summary.processed == 0 and not (summary.interrupted or self._stop_requested):
                summary.failure = _no_usable_frame(summary)
            if stalled is None:
                _close_sinks(sinks, summary)
                source.close()
            else:  # the stuck read may hold a lock the closes need (h5py's): bounded waits
                _with_deadline(lambda: _close_sinks(sinks, summary), 10.0)
                _with_deadline(source.close, 2.0)
        if summary.failure is not None:
            cause = failures[0] if failures and stalled is None else None
            kept = (
                f"; the {summary.processed} frames processed before it are kept under the "
                "outputs' .partial names"
                if summary.processed
                else ""
            )
            raise PipelineFailed(summary.failure + kept, summary) from cause
        return summary


def _no_usable_frame(summary: PipelineSummary) -> str:
    if summary.frames_read == 0:
        return "no usable frame: the source gave no frame"
    first = (
        f" (first: frame {summary.errors[0][0]}: {summary.errors[0][1]})" if summary.errors else ""
    )
    return (
        f"no usable frame: {summary.corrupt} of the {summary.frames_read} frames read were "
        f"corrupt and {summary.dropped} dropped{first}"
    )


def _close_sinks(sinks, summary: PipelineSummary) -> None:
    """Close every sink with the summary (each decides what to do with its files from
    ``summary.outcome``); the first exception is raised after all were closed."""
    errors = []
    for sink in sinks:
        try:
            sink.close(summary)
        except Exception as error:
            errors.append(error)
    if errors:
        raise errors[0]


def _with_deadline(function, seconds: float) -> None:
    """Run ``function`` in a daemon thread and wait at most ``seconds`` for it (best effort:
    the run is failing already, so its exceptions are dropped; e.g. a generator source that
    is still executing in the abandoned thread refuses to close)."""

    def attempt() -> None:
        try:
            function()
        except Exception:
            pass

    thread = threading.Thread(target=attempt, name="hyplex-pipeline-close", daemon=True)
    thread.start()
    thread.join(seconds)


def _intensity(barcodes: np.ndarray) -> np.ndarray:
    """Mean barcode per metapixel (h, w) float32, DN; 0 where every sub-filter is empty."""
    finite = np.isfinite(barcodes)
    total = np.where(finite, barcodes, 0).sum(-1)
    return (total / np.maximum(finite.sum(-1), 1)).astype(np.float32)


def _progress_bar(enabled: bool, total):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total or None, unit="frame", desc="decode", dynamic_ncols=True)

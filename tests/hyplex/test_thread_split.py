"""Splitting the engine's threads between its stages (hyplex.pipeline.thread_split)."""

import numpy as np
import pytest
import torch

from hyplex.models.reconstruction import LinearDecoder
from hyplex.pipeline.models import PixelClassifier
from hyplex.pipeline.stages import Preprocessor
from hyplex.pipeline.thread_split import (
    ThreadSplit,
    candidate_splits,
    compute_threads,
    measure_thread_splits,
)
from hyplex.simulation.layout import MosaicLayout


def test_candidates_never_oversubscribe_inference():
    splits = candidate_splits(2)
    assert ThreadSplit(1, 2, 1) in splits and ThreadSplit(2, 1, 1) in splits
    assert ThreadSplit(1, 1, 1) in splits and ThreadSplit(1, 1, 2) in splits
    assert all(s.torch_threads * s.inference_workers <= 2 for s in splits)
    assert candidate_splits(1) == [ThreadSplit(1, 1, 1)]
    assert len(candidate_splits(4)) > len(splits)
    with pytest.raises(ValueError, match="threads must be >= 1"):
        candidate_splits(0)
    with pytest.raises(ValueError, match="inference_workers must be an integer >= 1"):
        ThreadSplit(1, 0, 1)


def test_compute_threads_follows_the_policy(monkeypatch):
    import hyplex.optics.threads as threads

    monkeypatch.setattr(
        threads, "thread_policy", lambda: threads.ThreadPolicy(64, "HYPLEX_THREADS", 64)
    )
    assert compute_threads() == len(__import__("os").sched_getaffinity(0))  # capped
    monkeypatch.setattr(threads, "thread_policy", lambda: threads.ThreadPolicy(1, "explicit", 2))
    assert compute_threads() == 1


def test_measure_times_every_split_and_picks_the_fastest():
    torch.manual_seed(0)
    shape = (48, 64)
    layout = MosaicLayout.fit(shape, pitch_px=3.0)
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 4095, shape).astype(np.uint16) for _ in range(3)]
    splits = [ThreadSplit(1, 1, 1), ThreadSplit(1, 2, 1)]
    threads_before = torch.get_num_threads()
    measured = measure_thread_splits(
        Preprocessor(layout, shape), LinearDecoder(9, 8), PixelClassifier(9, 3, hidden=4),
        frames, {"input_scale_dn": 1000.0}, splits=splits,
    )  # fmt: skip
    torch.set_num_threads(threads_before)
    assert set(measured.fps) == {s.label for s in splits}
    assert all(v > 0 for v in measured.fps.values())
    assert measured.fps[measured.best.label] == max(measured.fps.values())
    record = measured.to_dict()
    assert record["best"] == {"torch_threads": measured.best.torch_threads,
                              "inference_workers": measured.best.inference_workers,
                              "preprocess_threads": 1}  # fmt: skip
    with pytest.raises(ValueError, match="at least one raw frame"):
        measure_thread_splits(Preprocessor(layout, shape), LinearDecoder(9, 8), None, [])

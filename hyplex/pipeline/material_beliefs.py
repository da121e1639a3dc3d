"""Per-object material hypotheses over frames and sessions (BeliefMem in the video pipeline).

A segmenter labels every frame anew; a single frame's label for an object is partial evidence
(shadow, a metameric fake, motion blur). :class:`MaterialBeliefSink` keeps, for every object
seen in the video, all candidate materials with Noisy-OR probabilities
(:mod:`hyplex.models.memory.belief_memory`, after "Belief Memory: Agent Memory Under Partial
Observability"), accumulated frame by frame and, through ``<stem>.beliefs.json``, across
sessions (``hyplex segment --beliefs-from`` continues an earlier file).

Objects: the connected regions of non-background labels in a frame (8-connectivity) of at
least ``min_pixels`` metapixels (specks of label noise are no objects); a region continues the
previous frame's object it overlaps most when that overlap covers at least ``min_overlap`` of
the region (a light tracker: objects that jump farther start anew).
Evidence: for an object and a material ``c``, ``reliability x share_c x confidence_c`` where
``share_c`` is the share of the object's pixels labelled ``c`` and ``confidence_c`` their
mean top-class probability; materials whose ``share_c x confidence_c`` is below
``min_evidence`` give none.

Surfaced in the run result (``hyplex segment``'s summary, ``material_beliefs``: each object's
candidates with probabilities) and in the live viewer's status (``/api/status``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hyplex.models.memory.belief_memory import BeliefMemory

__all__ = ["ObjectTracker", "MaterialBeliefSink"]


class ObjectTracker:
    """Connected regions of a label map, with ids carried over from the previous frame."""

    def __init__(
        self, min_overlap: float = 0.3, background: int = 0, first_id: int = 1, min_pixels=4
    ):
        if not 0 < min_overlap <= 1:
            raise ValueError(f"min_overlap must lie in (0, 1]; got {min_overlap}")
        if int(min_pixels) < 1:
            raise ValueError(f"min_pixels must be >= 1; got {min_pixels}")
        self.min_overlap, self.background = float(min_overlap), int(background)
        self.min_pixels = int(min_pixels)
        self._previous: np.ndarray | None = None
        self._next_id = int(first_id)

    def update(self, labels: np.ndarray) -> np.ndarray:
        """Object ids (h, w) int (0 = background) for ``labels`` (h, w) int."""
        from scipy import ndimage

        labels = np.asarray(labels)
        if labels.ndim != 2:
            raise ValueError(f"labels must be (h, w); got shape {labels.shape}")
        regions, count = ndimage.label(labels != self.background, structure=np.ones((3, 3)))
        ids = np.zeros(labels.shape, np.int64)
        previous = self._previous
        if previous is not None and previous.shape != labels.shape:
            previous = None
        for region in range(1, count + 1):
            mask = regions == region
            if mask.sum() < self.min_pixels:
                continue
            chosen = 0
            if previous is not None:
                overlap = np.bincount(previous[mask], minlength=1)
                overlap[0] = 0
                if overlap.max() >= self.min_overlap * mask.sum():
                    chosen = int(overlap.argmax())
            if chosen == 0 or (ids == chosen).any():
                chosen, self._next_id = self._next_id, self._next_id + 1
            ids[mask] = chosen
        self._previous = ids
        return ids


class MaterialBeliefSink:
    """A pipeline sink (``write(result)``, ``close(summary)``) keeping a :class:`BeliefMemory`
    of per-object material hypotheses.

    Parameters
    ----------
    class_names : names of the segmenter's classes (index = label).
    path : where :meth:`close` writes the memory (JSON, atomically); None writes nothing.
    resume : a memory file of an earlier session to continue (its object ids continue too).
    reliability : [0, 1], a frame's evidence strength for an object wholly of one material
        labelled with confidence 1.
    min_evidence : [0, 1], least ``share x confidence`` (module doc) for a material to count.
    """

    def __init__(
        self,
        class_names,
        path=None,
        resume=None,
        reliability: float = 0.2,
        min_evidence: float = 0.1,
        min_overlap: float = 0.3,
    ):
        self.class_names = [str(c) for c in class_names]
        if len(self.class_names) < 2:
            raise ValueError(f"need the names of >= 2 classes; got {self.class_names}")
        self.path = None if path is None else Path(path)
        self.memory = BeliefMemory.load(resume) if resume else BeliefMemory()
        self.reliability, self.min_evidence = reliability, min_evidence
        # objects of a new session get ids after the resumed ones
        known = [int(k) for k in self.memory.subjects if k.isdigit()]
        self.tracker = ObjectTracker(min_overlap, first_id=1 + max(known, default=0))
        self.frames = 0
        self._closed = False

    def write(self, result) -> None:
        """Add one frame's evidence (``result.labels`` (h, w), ``result.confidence``)."""
        if result.error is not None or result.labels is None:
            return
        labels = np.asarray(result.labels)
        confidence = (
            np.ones(labels.shape, np.float32)
            if result.confidence is None
            else np.asarray(result.confidence, np.float32)
        )
        ids = self.tracker.update(labels)
        n = len(self.class_names)
        probabilities = np.zeros((n, *labels.shape), np.float32)
        valid = (labels >= 0) & (labels < n)
        rows, cols = np.nonzero(valid)
        probabilities[labels[valid], rows, cols] = confidence[valid]
        self.memory.observe_frame(
            ids, probabilities, self.class_names, self.reliability, self.min_evidence
        )
        self.frames += 1

    def top(self, per_object: int = 3, max_objects: int = 20) -> dict:
        """``{object id: [[material, probability], ...]}``: each object's most probable
        candidates, objects with the most evidence first (JSON-ready)."""
        subjects = sorted(
            self.memory.subjects.items(),
            key=lambda item: -sum(b.supporting for b in item[1].values()),
        )[:max_objects]
        return {
            s: [[c, round(p, 4)] for c, p in self.memory.retrieve(s)[:per_object]]
            for s, _ in subjects
        }

    def close(self, summary=None) -> None:
        """Write the memory (unless the run failed; under the ``.partial`` name when it was
        interrupted, as the other outputs); idempotent."""
        if self._closed:
            return
        self._closed = True
        from hyplex.pipeline.outputs import outcome_of, partial_path

        outcome = outcome_of(summary)
        if self.path is not None and outcome != "failed":  # interrupted: the .partial name
            self.memory.save(partial_path(self.path) if outcome == "partial" else self.path)

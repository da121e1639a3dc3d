"""Belief memory: candidate conclusions kept with Noisy-OR probabilities, applied to video.

Paper: J. Liao, Q. Wang, J. Zhu, B. Du, R. Yan, X. Chen, "Belief Memory: Agent Memory Under
Partial Observability" (BeliefMem, arXiv 2605.05583, 2026).

A deterministic memory stores one conclusion per observation and then reinforces it. The
paper instead stores every candidate conclusion of an observation as its own entry with a
probability, updates each entry's probability with the Noisy-OR rule as new observations
arrive, and surfaces all candidates with their probabilities at retrieval. With independent
pieces of evidence of strengths ``q_1 .. q_n`` for a conclusion (each alone would make it
true with probability ``q_i``), the Noisy-OR (Pearl 1988, "Probabilistic Reasoning in
Intelligent Systems", section 4.3.2; here without a leak term) is::

    P(conclusion) = 1 - prod_i (1 - q_i)      i.e. incrementally   p <- 1 - (1 - p)(1 - q)

Counter-evidence (an observation that speaks *against* a conclusion with strength ``c``)
is applied as the same rule on the negation, ``1 - p <- 1 - p(1 - c)``, i.e. ``p <- p(1 - c)``;
this symmetric use is ours (the paper's summaries name only the Noisy-OR update).

In hyplex the "agent" is the video segmenter and its memory is per object: each tracked
object (an id in a label map of the frame) carries candidate material hypotheses. A frame
gives every material whose mean class probability over the object's pixels reaches
``min_evidence`` a piece of evidence of strength ``reliability x`` that probability; the
memory accumulates them over frames and, saved as JSON, over sessions.
:meth:`BeliefMemory.retrieve` returns all candidates of an object with their probabilities,
so an alternative material stays visible after a run of frames that favoured another.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["noisy_or", "Belief", "BeliefMemory", "material_evidence"]


def noisy_or(strengths) -> float:
    """``1 - prod(1 - q_i)`` for evidence strengths ``q_i`` in [0, 1] (empty -> 0)."""
    q = np.asarray(
        list(strengths) if not isinstance(strengths, np.ndarray) else strengths, dtype=float
    )
    if q.size and (not np.all(np.isfinite(q)) or q.min() < 0 or q.max() > 1):
        raise ValueError(f"evidence strengths must lie in [0, 1]; got {q.tolist()}")
    return float(1.0 - np.prod(1.0 - q))


def _check_strength(name: str, value: float) -> float:
    value = float(value)
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise ValueError(f"{name} must lie in [0, 1]; got {value}")
    return value


@dataclass
class Belief:
    """One candidate conclusion: its probability and how much evidence it has seen."""

    probability: float = 0.0
    supporting: int = 0
    contradicting: int = 0

    def support(self, strength: float) -> None:
        """Noisy-OR update with evidence of ``strength`` in [0, 1]."""
        q = _check_strength("strength", strength)
        self.probability = 1.0 - (1.0 - self.probability) * (1.0 - q)
        self.supporting += 1

    def contradict(self, strength: float) -> None:
        """Noisy-OR on the negation: ``p <- p (1 - strength)``."""
        c = _check_strength("strength", strength)
        self.probability = self.probability * (1.0 - c)
        self.contradicting += 1


@dataclass
class BeliefMemory:
    """Per-subject candidate conclusions with Noisy-OR probabilities.

    ``subjects`` maps a subject key (an object id, as a string) to ``{conclusion: Belief}``.
    Nothing global; save and load with :meth:`save` / :meth:`load` (JSON, atomic write).
    """

    subjects: dict[str, dict[str, Belief]] = field(default_factory=dict)

    def observe(
        self,
        subject,
        evidence: Mapping[str, float],
        against: Mapping[str, float] | None = None,
    ) -> None:
        """Add one observation: ``evidence`` maps candidate conclusions to the strength
        (0..1) with which the observation supports each; ``against`` to the strength with
        which it contradicts each. Every candidate becomes (or stays) an entry."""
        entries = self.subjects.setdefault(str(subject), {})
        for conclusion, strength in evidence.items():
            entries.setdefault(str(conclusion), Belief()).support(strength)
        for conclusion, strength in (against or {}).items():
            entries.setdefault(str(conclusion), Belief()).contradict(strength)

    def retrieve(self, subject) -> list[tuple[str, float]]:
        """All candidates of ``subject`` as ``(conclusion, probability)``, most probable first
        (empty for an unknown subject)."""
        entries = self.subjects.get(str(subject), {})
        return sorted(((c, b.probability) for c, b in entries.items()), key=lambda x: -x[1])

    def to_dict(self) -> dict:
        return {
            "format": "hyplex.belief_memory/1",
            "subjects": {
                s: {c: [b.probability, b.supporting, b.contradicting] for c, b in e.items()}
                for s, e in self.subjects.items()
            },
        }

    @classmethod
    def from_dict(cls, data: Mapping) -> BeliefMemory:
        if data.get("format") != "hyplex.belief_memory/1":
            raise ValueError(f"not a belief memory (format {data.get('format')!r})")
        memory = cls()
        for s, entries in data["subjects"].items():
            memory.subjects[s] = {}
            for c, (p, n_sup, n_con) in entries.items():
                memory.subjects[s][c] = Belief(
                    _check_strength("probability", p), int(n_sup), int(n_con)
                )
        return memory

    def save(self, path) -> None:
        """Write the memory as JSON atomically (a crash leaves the old file)."""
        from hyplex.optics.atomic_io import atomic_write

        text = json.dumps(self.to_dict(), indent=1).encode()
        atomic_write(Path(path), lambda handle: handle.write(text))

    @classmethod
    def load(cls, path) -> BeliefMemory:
        """Read a memory written by :meth:`save` (a new session continues from it)."""
        return cls.from_dict(json.loads(Path(path).read_text()))

    def observe_frame(
        self,
        object_ids: np.ndarray,
        class_probabilities: np.ndarray,
        class_names,
        reliability: float = 0.3,
        min_evidence: float = 0.2,
        background: int = 0,
    ) -> None:
        """Accumulate one video frame's material evidence per object.

        Parameters
        ----------
        object_ids : (H, W) int, object id per pixel (``background`` ids are skipped).
        class_probabilities : (C, H, W) float, the segmenter's softmax per pixel.
        class_names : C material names.
        reliability : [0, 1], strength of one frame's evidence at probability 1 (a single
            frame never makes a conclusion certain unless reliability is 1).
        min_evidence : [0, 1], a material enters an object's candidates once its mean
            probability over the object reaches this.
        """
        evidence = material_evidence(
            object_ids, class_probabilities, class_names, reliability, min_evidence, background
        )
        for obj, strengths in evidence.items():
            self.observe(obj, strengths)


def material_evidence(
    object_ids: np.ndarray,
    class_probabilities: np.ndarray,
    class_names,
    reliability: float = 0.3,
    min_evidence: float = 0.2,
    background: int = 0,
) -> dict[str, dict[str, float]]:
    """Per object: ``{material: reliability * mean probability}`` for materials whose mean
    probability over the object's pixels reaches ``min_evidence`` (see
    :meth:`BeliefMemory.observe_frame` for the shapes)."""
    ids = np.asarray(object_ids)
    probs = np.asarray(class_probabilities, dtype=float)
    names = list(class_names)
    if ids.ndim != 2 or probs.ndim != 3 or probs.shape[1:] != ids.shape:
        raise ValueError(
            f"object_ids must be (H, W) and class_probabilities (C, H, W) of the same H, W; "
            f"got {ids.shape} and {probs.shape}"
        )
    if len(names) != probs.shape[0]:
        raise ValueError(f"{len(names)} class names for {probs.shape[0]} classes")
    reliability = _check_strength("reliability", reliability)
    min_evidence = _check_strength("min_evidence", min_evidence)
    flat_ids = ids.reshape(-1)
    flat = probs.reshape(probs.shape[0], -1)
    out = {}
    for obj in np.unique(flat_ids):
        if obj == background:
            continue
        mean = flat[:, flat_ids == obj].mean(1)
        out[str(int(obj))] = {
            names[c]: float(reliability * min(mean[c], 1.0))
            for c in np.flatnonzero(mean >= min_evidence)
        }
    return out

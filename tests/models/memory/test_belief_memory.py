"""Noisy-OR belief updates by hand, retrieval of every candidate, sessions, video frames."""

import math

import numpy as np
import pytest

from hyplex.models.memory.belief_memory import BeliefMemory, material_evidence, noisy_or


def test_noisy_or_by_hand():
    assert noisy_or([]) == 0.0
    assert math.isclose(noisy_or([0.3, 0.5]), 1 - 0.7 * 0.5)
    memory = BeliefMemory()
    memory.observe("cup", {"glass": 0.3, "plastic": 0.2})
    memory.observe("cup", {"glass": 0.5})
    (top, p_top), (alt, p_alt) = memory.retrieve("cup")
    assert (top, alt) == ("glass", "plastic")
    assert math.isclose(p_top, 0.65) and math.isclose(p_alt, 0.2)  # 1 - 0.7 * 0.5
    memory.observe("cup", {}, against={"glass": 0.5})
    assert math.isclose(dict(memory.retrieve("cup"))["glass"], 0.325)  # 0.65 * 0.5
    assert memory.retrieve("unknown") == []


def test_memory_survives_sessions(tmp_path):
    memory = BeliefMemory()
    memory.observe(1, {"plant": 0.4})
    memory.save(tmp_path / "m.json")
    later = BeliefMemory.load(tmp_path / "m.json")
    later.observe(1, {"plant": 0.4})
    assert math.isclose(dict(later.retrieve(1))["plant"], 1 - 0.6**2)
    assert later.subjects["1"]["plant"].supporting == 2


def test_frames_accumulate_material_hypotheses_per_object():
    ids = np.zeros((4, 4), int)
    ids[:2] = 1
    ids[2:, :2] = 2
    probs = np.zeros((3, 4, 4))
    probs[0] = 0.7  # real plant
    probs[1] = 0.3  # fake plant
    probs[2, 2:, :2], probs[0, 2:, :2], probs[1, 2:, :2] = 1.0, 0.0, 0.0
    evidence = material_evidence(ids, probs, ["real", "fake", "metal"], reliability=0.5)
    assert evidence["1"] == pytest.approx({"real": 0.35, "fake": 0.15})
    memory = BeliefMemory()
    for _ in range(3):
        memory.observe_frame(ids, probs, ["real", "fake", "metal"], reliability=0.5)
    beliefs = dict(memory.retrieve(1))
    assert beliefs["real"] == pytest.approx(1 - 0.65**3)
    assert beliefs["fake"] == pytest.approx(1 - 0.85**3)  # the alternative stays visible
    assert dict(memory.retrieve(2)) == pytest.approx({"metal": 1 - 0.5**3})


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        noisy_or([1.5])
    with pytest.raises(ValueError, match="same H, W"):
        material_evidence(np.zeros((2, 2)), np.zeros((3, 2, 3)), "abc")
    with pytest.raises(ValueError, match="format"):
        BeliefMemory.from_dict({"format": "other"})

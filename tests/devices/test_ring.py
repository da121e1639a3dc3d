"""FrameRing: policies, accounting and thread safety (property-based with hypothesis)."""

import threading

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from hyplex.devices.ring import FrameRing, OverflowPolicy, RingClosed

# producer and consumer threads: a hang fails here, with stacks
pytestmark = pytest.mark.timeout(120)


def test_slots_are_preallocated_views_written_in_place():
    ring = FrameRing(3, (4, 5), np.uint16)
    slot = ring.acquire()
    assert slot.array.base is ring.slots or np.shares_memory(slot.array, ring.slots)
    slot.array[:] = 7
    ring.commit(slot, "info")
    read = ring.read(timeout=0)
    assert read.info == "info" and read.seq == 0 and np.all(read.array == 7)
    assert np.shares_memory(read.array, ring.slots)
    ring.release(read)
    assert ring.stats.delivered == 1 and ring.stats.pending == 0


def test_block_waits_and_times_out_instead_of_overwriting():
    ring = FrameRing(2, (2, 2), np.uint8, OverflowPolicy.BLOCK)
    for _ in range(2):
        ring.commit(ring.acquire())
    with pytest.raises(TimeoutError):
        ring.acquire(timeout=0.01)
    assert ring.stats.overwritten == 0
    ring.release(ring.read())
    ring.acquire(timeout=0.01)  # a slot is free again


def test_drop_oldest_overwrites_the_oldest_unread_frame():
    ring = FrameRing(3, (1,), np.int64, OverflowPolicy.DROP_OLDEST)
    for value in range(5):
        slot = ring.acquire()
        slot.array[0] = value
        ring.commit(slot)
    assert ring.stats.overwritten == 2
    assert [ring.read().array[0] for _ in range(3)] == [2, 3, 4]


def test_newest_only_reads_the_last_commit():
    ring = FrameRing(3, (1,), np.int64, OverflowPolicy.NEWEST_ONLY)
    for value in range(4):
        slot = ring.acquire()
        slot.array[0] = value
        ring.commit(slot)
    assert ring.stats.pending == 1 and ring.stats.overwritten == 3
    assert ring.read().array[0] == 3


def test_close_wakes_readers_after_draining():
    ring = FrameRing(2, (1,), np.uint8)
    ring.commit(ring.acquire())
    ring.close()
    ring.release(ring.read())
    with pytest.raises(RingClosed):
        ring.read(timeout=1)
    with pytest.raises(RingClosed):
        ring.acquire()


def test_misuse_is_reported():
    ring = FrameRing(2, (1,), np.uint8)
    slot = ring.acquire()
    with pytest.raises(RuntimeError, match="cannot release"):
        ring.release(slot)
    with pytest.raises(ValueError, match="n_slots"):
        FrameRing(1, (1,), np.uint8)
    with pytest.raises(ValueError, match="overflow policy"):
        FrameRing(2, (1,), np.uint8, "sometimes")


class RingMachine(RuleBasedStateMachine):
    """Random interleavings of producer and consumer against a model of the ring."""

    def __init__(self):
        super().__init__()
        self.ring = None

    @precondition(lambda self: self.ring is None)
    @rule(n_slots=st.integers(2, 5), policy=st.sampled_from(list(OverflowPolicy)))
    def create(self, n_slots, policy):
        self.ring = FrameRing(n_slots, (2,), np.int64, policy)
        self.policy, self.writing, self.reading = policy, [], []
        self.model: list[int] = []  # values committed and not read, oldest first
        self.next_value, self.last_read = 0, -1

    def _free_possible(self):
        held = len(self.writing) + len(self.reading)
        return held + len(self.model) < self.ring.n_slots or (
            self.model and self.policy is not OverflowPolicy.BLOCK
        )

    @precondition(lambda self: self.ring is not None)
    @rule()
    def acquire(self):
        if not self._free_possible():
            with pytest.raises(TimeoutError):
                self.ring.acquire(timeout=0)
            return
        free = self.ring.n_slots - len(self.writing) - len(self.reading) - len(self.model)
        slot = self.ring.acquire(timeout=0)
        if free <= 0:  # stolen from the oldest committed frame
            self.model.pop(0)
        self.writing.append(slot)

    @precondition(lambda self: self.ring is not None and self.writing)
    @rule(data=st.data())
    def commit_or_abort(self, data):
        slot = self.writing.pop(data.draw(st.integers(0, len(self.writing) - 1)))
        if data.draw(st.booleans(), label="abort") and data.draw(st.booleans()):
            self.ring.abort(slot)
            return
        slot.array[:] = self.next_value
        self.ring.commit(slot, self.next_value)
        if self.policy is OverflowPolicy.NEWEST_ONLY:
            self.model.clear()
        self.model.append(self.next_value)
        self.next_value += 1

    @precondition(lambda self: self.ring is not None)
    @rule()
    def read(self):
        if not self.model:
            with pytest.raises(TimeoutError):
                self.ring.read(timeout=0)
            return
        slot = self.ring.read(timeout=0)
        expected = self.model.pop(0)
        assert slot.info == expected and np.all(slot.array == expected)
        assert expected > self.last_read  # order kept, nothing delivered twice
        self.last_read = expected
        self.reading.append(slot)

    @precondition(lambda self: self.ring is not None and self.reading)
    @rule(data=st.data())
    def release(self, data):
        self.ring.release(self.reading.pop(data.draw(st.integers(0, len(self.reading) - 1))))

    @invariant()
    def accounting(self):
        if self.ring is None:
            return
        stats = self.ring.stats
        assert stats.committed == stats.delivered + stats.overwritten + stats.pending
        assert stats.pending == len(self.model)
        if self.policy is OverflowPolicy.BLOCK:
            assert stats.overwritten == 0
        if self.policy is OverflowPolicy.NEWEST_ONLY:
            assert stats.pending <= 1


TestRingMachine = RingMachine.TestCase
TestRingMachine.settings = settings(
    max_examples=60,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@settings(max_examples=15, deadline=None)
@given(
    n_slots=st.integers(2, 4),
    n_frames=st.integers(1, 120),
    policy=st.sampled_from(list(OverflowPolicy)),
)
def test_threads_keep_order_and_account_for_every_frame(n_slots, n_frames, policy):
    ring = FrameRing(n_slots, (8,), np.int64, policy)

    def produce():
        for value in range(n_frames):
            slot = ring.acquire(timeout=5)
            slot.array[:] = value
            ring.commit(slot, value)
        ring.close()

    producer = threading.Thread(target=produce)
    producer.start()
    seen = []
    while True:
        try:
            slot = ring.read(timeout=5)
        except RingClosed:
            break
        assert np.all(slot.array == slot.info)  # never overwritten while held
        seen.append(slot.info)
        ring.release(slot)
    producer.join()
    stats = ring.stats
    assert seen == sorted(set(seen))
    assert stats.committed == n_frames == stats.delivered + stats.overwritten
    if policy is OverflowPolicy.BLOCK:
        assert seen == list(range(n_frames))
    assert seen[-1] == n_frames - 1

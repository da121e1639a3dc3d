"""Run-length binning (``kernels.slot_runs`` + ``kernels.bin_runs``) against ``np.bincount``."""

import numba
import numpy as np
import pytest

from hyplex.simulation import kernels
from hyplex.simulation.barcodes import BarcodeExtractor
from hyplex.simulation.kernels_numpy import bin_by_slot_numpy
from hyplex.simulation.layout import MosaicLayout


def test_runs_bin_a_rotated_mosaic_exactly_like_bincount(rng):
    layout = MosaicLayout.fit((210, 330), pitch_px=7.287, rotation_deg=1.0)
    slots = layout.slot_map((210, 330), margin=0.15)
    n_slots = int(np.prod(layout.metapixels)) * 9
    raw = rng.integers(0, 4096, (210, 330)).astype(np.uint16)
    runs = kernels.slot_runs(slots, n_slots)
    means, counts = kernels.bin_runs(raw, runs)
    reference = bin_by_slot_numpy(raw, slots, n_slots)
    # integer frames: exact int64 sums, so the float32 means agree to the bit
    assert np.array_equal(counts, reference[1])
    assert np.array_equal(means, reference[0], equal_nan=True)
    assert runs.lengths.sum() == (slots >= 0).sum()


def test_long_runs_runs_at_the_frame_end_and_empty_slots(rng):
    # runs of 1..40 pixels (the masked 8-lane step and the plain loop), one ending at the last
    # pixel of the frame (no lane may read past it), and slot 5 with no pixel (NaN)
    slots = np.full((6, 50), -1, np.int32)
    slots[0, 0:40] = 0
    slots[1, 3:4] = 1
    slots[2, 10:18] = 2
    slots[3, 10:19] = 2
    slots[4, 0:7] = 3
    slots[4, 7:9] = 4
    slots[5, 44:50] = 4
    raw = rng.integers(0, 65535, (6, 50)).astype(np.uint16)
    runs = kernels.slot_runs(slots, 6)
    means, counts = kernels.bin_runs(raw, runs)
    reference = bin_by_slot_numpy(raw, slots, 6)
    assert np.array_equal(counts, [40, 1, 17, 7, 8, 0])
    assert np.array_equal(means, reference[0], equal_nan=True) and np.isnan(means[5])
    floats = raw.astype(np.float64) * 1.5
    assert np.allclose(kernels.bin_runs(floats, runs)[0], reference[0] * 1.5, equal_nan=True)


def test_run_binning_does_not_depend_on_the_thread_count(rng):
    layout = MosaicLayout.fit((240, 320), pitch_px=4.7, rotation_deg=1.5)
    runs = kernels.slot_runs(layout.slot_map((240, 320), 0.15), int(np.prod(layout.metapixels)) * 9)
    # wide dynamic range: a float64 sum in another order would show in the last bit
    raw = rng.lognormal(0.0, 4.0, (240, 320)) * rng.choice([1e-3, 1.0, 1e3], (240, 320))
    raw = raw.astype(np.float32)
    before = numba.get_num_threads()
    try:
        results = []
        for threads in (1, numba.config.NUMBA_NUM_THREADS):
            numba.set_num_threads(threads)
            results.append(kernels.bin_runs(raw, runs)[0])
    finally:
        numba.set_num_threads(before)
    assert np.array_equal(results[0], results[1], equal_nan=True)


def test_assigning_slots_re_encodes_the_runs(rng):
    layout = MosaicLayout.fit((60, 90), pitch_px=5.3)
    extractor = BarcodeExtractor(layout, (60, 90))
    raw = rng.integers(0, 4096, (60, 90)).astype(np.uint16)
    defects = np.zeros((60, 90), bool)
    defects[::7, ::5] = True
    extractor.slots = np.where(defects, -1, extractor.slots).astype(np.int32)
    reference = bin_by_slot_numpy(raw, extractor.slots, extractor.n_slots)
    means, counts = extractor(raw, return_counts=True)
    assert np.array_equal(counts.ravel(), reference[1])
    assert np.array_equal(means.ravel(), reference[0], equal_nan=True)


def test_bad_maps_and_frames_are_clear_errors():
    slots = np.zeros((4, 6), np.int32)
    slots[1, 2] = 7
    with pytest.raises(ValueError, match=r"-1\.\.3"):
        kernels.slot_runs(slots, 4)
    with pytest.raises(ValueError, match="2-D integer"):
        kernels.slot_runs(np.zeros((4, 6), np.float32), 4)
    runs = kernels.slot_runs(np.zeros((4, 6), np.int32), 1)
    with pytest.raises(ValueError, match=r"shape the runs were built for \(4, 6\)"):
        kernels.bin_runs(np.zeros((4, 7), np.uint16), runs)
    with pytest.raises(ValueError, match="C-contiguous"):
        kernels.bin_runs(np.zeros((6, 4), np.uint16).T, runs)
    with pytest.raises(ValueError, match="complex128"):
        kernels.bin_runs(np.zeros((4, 6), complex), runs)

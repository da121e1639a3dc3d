"""Mosaic geometry and the raw frame -> barcode round trip."""

import numpy as np
import pytest

from hyplex.simulation import kernels
from hyplex.simulation.barcodes import BarcodeExtractor
from hyplex.simulation.kernels_numpy import bin_by_slot_numpy
from hyplex.simulation.layout import MosaicLayout


def test_unrotated_integer_pitch_layout_has_the_expected_pattern():
    layout = MosaicLayout(metapixels=(2, 2), pitch_px=2, metapixels_per_block=(1, 1))
    codes = layout.filter_maps((16, 16))[0]
    row = [0, 0, 1, 1, 2, 2, 9, 9]  # one metapixel (3 sub-filters of 2 px), then a 2 px gap
    assert codes[0].tolist() == row + row
    assert codes[2].tolist() == [c + 3 if c < 9 else 9 for c in row] * 2
    assert np.all(codes[6:8] == 9) and codes[8].tolist() == row + row


def test_block_gaps_follow_the_hyplex_structure():
    layout = MosaicLayout(metapixels=(12, 12), pitch_px=1.0)  # blocks of 10, 1 sub-filter gap
    assert layout.extent_subfilters() == (37, 37)
    codes = layout.filter_maps((37, 37))[0]
    assert np.all(codes[:, 30] == 9) and np.all(codes[30, :] == 9)
    assert codes[0, 31] == 0 and codes[31, 31] == 0 and codes[36, 36] == 8


def test_layout_larger_than_the_sensor_is_a_clear_error():
    layout = MosaicLayout(metapixels=(20, 20), pitch_px=7.3)
    with pytest.raises(ValueError, match="larger than the sensor"):
        layout.filter_maps((100, 100))
    with pytest.raises(ValueError, match="no metapixel"):
        MosaicLayout.fit((10, 10), pitch_px=7.3)
    with pytest.raises(ValueError, match="pitch_px must be > 0"):
        MosaicLayout(pitch_px=0.0)


def test_fit_with_rotation_fits_and_counts_pixels_per_subfilter():
    layout = MosaicLayout.fit((300, 400), pitch_px=7.287, rotation_deg=1.0)
    layout.check_fits((300, 400))
    extractor = BarcodeExtractor(layout, (300, 400), margin=0.0)
    _, counts = extractor(np.zeros((300, 400), np.uint16), return_counts=True)
    assert counts.min() >= 49 and counts.max() <= 64  # 7.287^2 = 53 px on average
    assert counts.mean() == pytest.approx(7.287**2, rel=0.02)


def test_crosstalk_weight_is_one_half_at_an_edge():
    layout = MosaicLayout(
        metapixels=(3, 3), pitch_px=8.0, crosstalk_length_px=1.0, offset_px=(0.5, 0.5)
    )
    codes, neighbours, mix = layout.filter_maps((80, 80))
    # pixel centres lie exactly on sub-filter edges every 8 px (offset 0.5)
    assert mix[4, 8] == pytest.approx(0.5)
    assert mix[4, 4] == pytest.approx(0.5 * np.exp(-4.0), rel=1e-5)
    assert neighbours[4, 8] in (0, 1) and codes[4, 8] in (0, 1)


def test_barcodes_recover_per_filter_means(camera34, grid34, rng):
    """Round trip: a uniform spectrum through the mosaic, binned back per (metapixel, filter)."""
    spectrum = 0.02 + 0.01 * np.sin(grid34 / 40.0)
    cube = np.broadcast_to(spectrum.astype(np.float32), (24, 32, 34))
    electrons = camera34.expected_electrons(cube, grid34, exposure_us=1000.0)
    expected = camera34.weights(1000.0)[:9] @ spectrum  # per filter
    extractor = BarcodeExtractor(camera34.encoder.layout, camera34.sensor.shape, margin=0.0)
    barcodes = extractor(electrons)
    assert barcodes.shape == (*camera34.encoder.layout.metapixels, 9)
    assert np.allclose(barcodes, expected, rtol=1e-5)
    # with sensor noise: the means still come back within the noise
    raw = camera34.capture(electrons, 1000.0, seed=1)
    sensor = camera34.sensor
    values = BarcodeExtractor(camera34.encoder.layout, sensor.shape, margin=0.15)(raw)
    values = values.astype(np.float64)
    recovered = values.reshape(-1, 9).mean(0) - sensor.mean_dn(0.0, 1000.0)
    assert np.allclose(recovered / sensor.system_gain_dn_per_e, expected, rtol=0.01)


def reference_geometry(layout, shape):
    """(metapixel row, metapixel col, filter code, distance to the nearest sub-filter edge in
    pitches) of every pixel centre, from the layout's fields in plain numpy: an independent
    re-derivation of ``kernels.assign`` (-1, -1, n_filters where there is no filter)."""
    rows, cols = np.mgrid[: shape[0], : shape[1]] + 0.5
    theta = np.radians(layout.rotation_deg)
    dy, dx = rows - layout.offset_px[0], cols - layout.offset_px[1]
    u = (np.cos(theta) * dx + np.sin(theta) * dy) / layout.pitch_px  # along mosaic columns
    v = (np.cos(theta) * dy - np.sin(theta) * dx) / layout.pitch_px  # along mosaic rows
    edge = np.minimum.reduce([u % 1, 1 - u % 1, v % 1, 1 - v % 1])
    meta, sub, inside = [], [], np.ones(shape, bool)
    for coordinate, axis in ((v, 0), (u, 1)):
        cell = np.floor(coordinate).astype(int)
        cells, per_block = layout.grid[axis], layout.metapixels_per_block[axis]
        period = per_block * cells + layout.gap_subfilters
        block, rest = np.divmod(cell, period)
        index = block * per_block + rest // cells
        inside &= (cell >= 0) & (rest < per_block * cells) & (index < layout.metapixels[axis])
        meta.append(index)
        sub.append(rest % cells)
    code = np.where(inside, sub[0] * layout.grid[1] + sub[1], layout.n_filters)
    return np.where(inside, meta[0], -1), np.where(inside, meta[1], -1), code, edge


def test_barcodes_come_from_the_right_metapixel_and_filter():
    """Each pixel carries 100000 code + 1000 mrow + mcol from an independent geometry; every
    barcode entry must read back its own (metapixel, filter): a rotated mosaic, non-integer
    pitch, rectangular blocks with gaps, an offset."""
    layout = MosaicLayout(
        metapixels=(7, 9),
        pitch_px=4.37,
        metapixels_per_block=(3, 4),
        gap_subfilters=1,
        rotation_deg=2.5,
        offset_px=(6.3, 9.1),
    )
    shape = (120, 160)
    mrow, mcol, code, edge = reference_geometry(layout, shape)
    frame = np.where(code < 9, 100000 * code + 1000 * mrow + mcol, 65535).astype(np.float32)
    barcodes = BarcodeExtractor(layout, shape, margin=0.15)(frame)
    i, j, k = np.indices(barcodes.shape)
    assert np.array_equal(barcodes, 100000 * k + 1000 * i + j)
    # the filter map agrees with the reference away from edges (rounding decides on them)
    codes = layout.filter_maps(shape)[0]
    clear = edge > 1e-6
    assert np.array_equal(codes[clear], code[clear])


def test_numba_binning_agrees_with_numpy_bincount(rng):
    layout = MosaicLayout.fit((200, 300), pitch_px=5.3, rotation_deg=-2.0)
    slots = layout.slot_map((200, 300), margin=0.2)
    raw = rng.integers(0, 4096, (200, 300)).astype(np.uint16)
    n_slots = int(np.prod(layout.metapixels)) * 9
    ours = kernels.bin_by_slot(raw, slots, n_slots, 2)
    reference = bin_by_slot_numpy(raw, slots, n_slots)
    assert np.array_equal(ours[1], reference[1])
    assert np.allclose(ours[0], reference[0], equal_nan=True)
    with pytest.raises(ValueError, match="margin"):
        layout.slot_map((200, 300), margin=0.5)


def test_barcodes_do_not_depend_on_the_thread_count(rng):
    import numba

    from hyplex.simulation.barcodes import BarcodeExtractor

    layout = MosaicLayout.fit((240, 320), pitch_px=4.7, rotation_deg=1.5)
    extractor = BarcodeExtractor(layout, (240, 320))
    # float32 frames over a wide dynamic range: the float64 sums round, so the merge order of
    # the row bands would show in the last bit if the bands followed the thread count
    raw = rng.lognormal(0.0, 4.0, (240, 320)) * rng.choice([1e-3, 1.0, 1e3], (240, 320))
    raw = raw.astype(np.float32)
    before = numba.get_num_threads()
    try:
        results = []
        for threads in (1, numba.config.NUMBA_NUM_THREADS):
            numba.set_num_threads(threads)
            results.append(extractor(raw))
    finally:
        numba.set_num_threads(before)
    assert np.array_equal(results[0], results[1], equal_nan=True)

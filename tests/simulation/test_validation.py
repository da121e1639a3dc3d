"""Clear errors on bad input: the camera, the public numba kernels, the layout and sensor."""

import numpy as np
import pytest

from hyplex.simulation import kernels
from hyplex.simulation.camera import CameraTwin, scene_index
from hyplex.simulation.encoder import Encoder
from hyplex.simulation.grids import resample
from hyplex.simulation.layout import MosaicLayout
from hyplex.simulation.sensor import SensorModel


@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_capture_rejects_non_finite_electrons_and_bad_seeds(camera34, backend):
    electrons = np.full(camera34.sensor.shape, 100.0, np.float32)
    camera34.capture(electrons, 1000.0, seed=2**64 - 1, frame_index=0, backend=backend)
    for bad in (np.nan, np.inf):
        spoiled = electrons.copy()
        spoiled[3, 4] = bad
        with pytest.raises(ValueError, match="finite"):
            camera34.capture(spoiled, 1000.0, backend=backend)
    with pytest.raises(ValueError, match="seed must lie in 0..2\\^64 - 1"):
        camera34.capture(electrons, 1000.0, seed=-1, backend=backend)
    with pytest.raises(ValueError, match="frame_index must be an integer"):
        camera34.capture(electrons, 1000.0, frame_index=1.5, backend=backend)


def test_sensor_kernel_checks_map_shapes(camera34):
    electrons = np.ones(camera34.sensor.shape, np.float32)
    settings = camera34.sensor.settings(1000.0)
    prnu, dsnu = camera34.fixed_pattern
    key = kernels.frame_key(np.uint64(0), np.uint64(0))
    raw = kernels.sensor_frame(electrons, prnu, dsnu, settings, key, True, kernels.ZIGGURAT)
    assert raw.shape == electrons.shape
    with pytest.raises(ValueError, match="prnu must be an"):
        kernels.sensor_frame(electrons, prnu[:10], dsnu, settings, key, True, kernels.ZIGGURAT)
    with pytest.raises(ValueError, match="dsnu_e must be an"):
        kernels.sensor_frame(electrons, prnu, dsnu[:, :5], settings, key, True)
    with pytest.raises(ValueError, match="settings must have 7"):
        kernels.sensor_frame(electrons, prnu, dsnu, settings[:6], key, True)


def test_binning_kernel_checks_slots():
    raw = np.arange(12, dtype=np.float32).reshape(3, 4)
    slots = np.array([[0, 0, 1, 1], [-1, 2, 2, -1], [0, 1, 2, 3]], np.int32)
    means, counts = kernels.bin_by_slot(raw, slots, 4, 2)
    assert counts.tolist() == [3, 3, 3, 1] and means[3] == 11.0
    with pytest.raises(ValueError, match="slots must lie in -1..2"):
        kernels.bin_by_slot(raw, slots, 3, 2)  # slot 3 would be written out of bounds
    bad = slots.copy()
    bad[0, 0] = -5
    with pytest.raises(ValueError, match="slots must lie"):
        kernels.bin_by_slot(raw, bad, 4, 1)
    with pytest.raises(ValueError, match="frame's shape"):
        kernels.bin_by_slot(raw, slots[:2], 4, 1)


def test_projection_kernels_check_codes_and_scene_indices(rng):
    cube = rng.random((4, 5, 6)).astype(np.float32)
    weights = rng.random((3, 6)).astype(np.float32)
    codes = rng.integers(0, 3, (8, 10)).astype(np.int8)
    empty, none = np.zeros((0, 0), np.int8), np.zeros((0, 0), np.float32)
    rows, cols = scene_index(8, 4), scene_index(10, 5)
    out = kernels.project_mosaic(cube, weights, codes, empty, none, rows, cols)
    signals = kernels.project_all_filters(cube, weights)
    assert np.allclose(kernels.gather_mosaic(signals, codes, empty, none, rows, cols), out)
    spoiled = codes.copy()
    spoiled[2, 3] = 3
    with pytest.raises(ValueError, match="1 pixels have filter codes"):
        kernels.project_mosaic(cube, weights, spoiled, empty, none, rows, cols)
    with pytest.raises(ValueError, match="1 pixels have filter codes"):
        kernels.gather_mosaic(signals, spoiled, empty, none, rows, cols)
    with pytest.raises(ValueError, match="scene_rows must index the scene"):
        kernels.project_mosaic(cube, weights, codes, empty, none, rows + 1, cols)
    with pytest.raises(ValueError, match="scene_cols must be 10 integers"):
        kernels.project_mosaic(cube, weights, codes, empty, none, rows, cols[:5])
    with pytest.raises(ValueError, match="mix and neighbours"):
        mix = np.full((8, 9), 0.1, np.float32)
        kernels.project_mosaic(cube, weights, codes, codes[:, :9], mix, rows, cols)
    with pytest.raises(ValueError, match="weights must be"):
        kernels.project_all_filters(cube, weights[:, :5])


def test_layout_and_sensor_reject_non_integral_and_inconsistent_values():
    with pytest.raises(ValueError, match="metapixels must be an integer"):
        MosaicLayout(metapixels=(7.9, 3))
    with pytest.raises(ValueError, match="gap_subfilters must be an integer"):
        MosaicLayout(gap_subfilters=1.5)
    layout = MosaicLayout(metapixels=(4.0, 3), gap_subfilters=2.0)
    assert layout.metapixels == (4, 3) and type(layout.gap_subfilters) is int
    with pytest.raises(ValueError, match="adc_bits must be an integer"):
        SensorModel(adc_bits=12.0)
    with pytest.raises(ValueError, match="black_level_dn"):
        SensorModel(adc_bits=8, black_level_dn=255.0)
    with pytest.raises(ValueError, match="fixed_pattern_seed"):
        SensorModel(fixed_pattern_seed=-1)


def test_tabulated_qe_is_band_averaged_like_other_spectra(grid34):
    table = np.arange(380.0, 750.5, 0.5)
    qe = np.where(np.abs(table - 550.0) < 1.0, 0.0, 0.5)  # a 2 nm notch at 550 nm
    sensor = SensorModel(qe_wavelengths_nm=tuple(table), qe=tuple(qe))
    curve = sensor.quantum_efficiency(grid34)
    assert curve[15] == pytest.approx(resample(table, qe, grid34)[15]) and 0.4 < curve[15] < 0.5
    assert np.allclose(np.delete(curve, 15), 0.5)
    assert sensor.quantum_efficiency(np.array([300.0, 310.0]))[0] == 0.0  # zero outside


def test_auto_exposure_ignores_the_unpatterned_glass(grid34):
    """Dim filters and bright bare glass in the gaps: the exposure is set on filter pixels."""
    layout = MosaicLayout.fit((96, 128), pitch_px=2.0, metapixels_per_block=(2, 2))
    encoder = Encoder(grid34, np.full((9, 34), 0.05), layout, unpatterned=np.ones(34))
    twin = CameraTwin(encoder, SensorModel(shape=(96, 128)))
    codes = twin.maps[0]
    assert (codes == 9).mean() > 0.05  # gaps and margins are more than the top 1 %
    cube = np.full((24, 32, 34), 0.02, np.float32)
    exposure = twin.auto_exposure_us(cube, grid34, fill=0.7)
    electrons = twin.expected_electrons(cube, grid34, exposure)
    level = np.quantile(electrons[codes < 9], 0.99)
    assert level == pytest.approx(0.7 * twin.sensor.full_well_e, rel=1e-4)


def test_camera_caches_follow_assigned_sensor_and_encoder(camera34):
    twin = CameraTwin(camera34.encoder, camera34.sensor)
    dsnu = twin.fixed_pattern[1].copy()
    codes = twin.maps[0].copy()
    twin.sensor = SensorModel(shape=camera34.sensor.shape, fixed_pattern_seed=99)
    assert not np.array_equal(twin.fixed_pattern[1], dsnu)
    shifted = MosaicLayout.fit(camera34.sensor.shape, pitch_px=4.0)
    twin.encoder = camera34.encoder.with_layout(shifted)
    assert not np.array_equal(twin.maps[0], codes)
    assert np.array_equal(twin.maps[0], shifted.filter_maps(camera34.sensor.shape)[0])
    with pytest.raises(ValueError, match="larger than the sensor"):
        twin.sensor = SensorModel(shape=(20, 20))

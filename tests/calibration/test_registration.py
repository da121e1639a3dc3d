"""Registration recovers the mosaic geometry from a flat to sub-pixel accuracy."""

import numpy as np
import pytest

from hyplex.calibration.registration import barcode_extractor, register_mosaic

from .conftest import make_twin, white_flat


@pytest.mark.parametrize(
    "options",
    [
        dict(pitch_px=5.37, rotation_deg=1.3),
        dict(shape=(200, 190), pitch_px=4.83, rotation_deg=-2.2, per_block=(3, 5), gap=2),
    ],
    ids=["non-integer-pitch", "rotated-gap2-uneven-blocks"],
)
def test_registration_recovers_pitch_rotation_offset_and_blocks(options):
    twin = make_twin(**options)
    truth = twin.encoder.layout
    found = register_mosaic(white_flat(twin)).layout
    assert found.metapixels == truth.metapixels
    assert found.metapixels_per_block == truth.metapixels_per_block
    assert found.gap_subfilters == truth.gap_subfilters
    assert found.pitch_px == pytest.approx(truth.pitch_px, abs=0.005)
    assert found.rotation_deg == pytest.approx(truth.rotation_deg, abs=0.05)
    assert np.allclose(found.offset_px, truth.offset_px, atol=0.2)  # sub-pixel
    # the recovered layout puts (nearly) every pixel under the right filter
    shape = twin.sensor.shape
    agreement = np.mean(found.filter_maps(shape)[0] == truth.filter_maps(shape)[0])
    assert agreement > 0.98


def test_registered_barcodes_match_the_true_layout():
    twin = make_twin(pitch_px=5.37, rotation_deg=1.3)
    flat = white_flat(twin)
    found = register_mosaic(flat).layout
    shape = twin.sensor.shape
    exclude = np.zeros(shape, bool)
    exclude[0, 0] = True
    measured = barcode_extractor(found, shape, exclude=exclude)(flat)
    expected = barcode_extractor(twin.encoder.layout, shape)(flat)
    assert np.allclose(measured, expected, rtol=0.01)


def test_registration_rejects_a_featureless_frame():
    with pytest.raises(ValueError):
        register_mosaic(np.full((64, 64), 100.0) + np.random.default_rng(0).normal(0, 1, (64, 64)))

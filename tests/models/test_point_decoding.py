"""Point data through the decoders (issue 20, item 8): a spectrometer's barcodes are vectors
``(N, C)``, often float64; every decoder takes them as it takes maps ``(B, C, h, w)``, and an
encoder refuses responses that are not transmission fractions in [0, 1]."""

import numpy as np
import pytest
import torch

from hyplex.models.codesign import build_decoders
from hyplex.models.codesign_config import CodesignConfig
from hyplex.models.encoder_baselines import FixedResponseEncoder
from hyplex.models.encoder_capture import CameraCapture
from hyplex.models.reconstruction import LinearDecoder, SpectralTransformer
from hyplex.models.segmentation import SpectralAttentionSegNet, UNet, predict_labels
from hyplex.simulation.encoder import Encoder

torch.set_num_threads(1)

GRID = np.linspace(400.0, 730.0, 34)
UNIT = r"unitless fraction in \[0, 1\]"


def _decoders():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    linear = LinearDecoder(9, 34).fit(rng.random((200, 9)), rng.random((200, 34)))
    return {
        "linear": linear,
        "mst": SpectralTransformer(9, 34, width=8, n_blocks=1, n_stages=1),
        "unet": UNet(9, 5, base_channels=4, depth=2),
        "attention": SpectralAttentionSegNet(9, 5, width=8, depth=1),
    }


@pytest.mark.parametrize("name", ["linear", "mst", "unet", "attention"])
def test_points_equal_one_pixel_maps_and_float64_works(name):
    model = _decoders()[name].eval()
    points = torch.rand(7, 9, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = model(points)
        maps = model(points[:, :, None, None])
        out64 = model(points.double())
        from_numpy = model(points.double().numpy())
        maps64 = model(points.double()[:, :, None, None])
    width = maps.shape[1]
    assert maps.shape == (7, width, 1, 1)
    assert out.shape == (7, width)  # the rank of the input: (N, C) -> (N, K)
    assert torch.equal(out, maps[:, :, 0, 0])
    for other in (out64, from_numpy):  # cast at the boundary to the module's float32
        assert other.dtype == torch.float32 and other.shape == (7, width)
        torch.testing.assert_close(other, out)
    assert maps64.dtype == torch.float32 and torch.equal(maps64, maps)


def test_float64_module_takes_float32_points():
    rng = np.random.default_rng(2)
    decoder = LinearDecoder(9, 34).double().fit(rng.random((100, 9)), rng.random((100, 34)))
    points = rng.random((5, 9))
    out = decoder(torch.as_tensor(points, dtype=torch.float32))
    assert out.dtype == torch.float64 and out.shape == (5, 34)
    weight = decoder.projection.weight[:, :, 0, 0].detach().numpy()
    bias = decoder.projection.bias.detach().numpy()
    expected = points.astype(np.float32).astype(np.float64) @ weight.T + bias
    np.testing.assert_allclose(out.detach().numpy(), expected)


def test_codesign_decoders_take_points_and_labels_follow():
    config = CodesignConfig(
        reconstructor_config={"width": 8, "n_blocks": 1, "n_stages": 1},
        segmenter_config={"base_channels": 4, "depth": 2},
    )
    reconstructor, segmenter = build_decoders(config, 9, 34, 6)
    points = torch.rand(4, 9, dtype=torch.float64)
    with torch.no_grad():
        spectra, logits = reconstructor.eval()(points), segmenter.eval()(points)
    assert spectra.shape == (4, 34) and logits.shape == (4, 6)
    labels = predict_labels(logits)
    assert labels.shape == (4,) and labels.dtype == torch.int64


def test_point_input_errors_name_both_shapes():
    model = _decoders()["mst"]
    with pytest.raises(ValueError, match=r"\(B, 9, h, w\) or points \(N, 9\); got \(4, 3\)"):
        model(torch.zeros(4, 3))
    with pytest.raises(ValueError, match=r"points \(N, 9\); got \(9,\)"):
        model(torch.zeros(9))
    with pytest.raises(ValueError, match="real numbers"):
        _decoders()["unet"](torch.zeros(4, 9, dtype=torch.bool))
    with pytest.raises(ValueError, match="logits"):
        predict_labels(torch.zeros(3))


def _design(seed=0):
    """Nine smooth transmissions in [0.05, 0.9]."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(420, 710, (9, 1))
    return 0.05 + 0.85 * np.exp(-0.5 * ((GRID - centres) / 60.0) ** 2)


@pytest.mark.parametrize(
    ("scale", "offset", "why"),
    [
        (4095.0, 0.0, "another unit or scale"),  # detector counts
        (100.0, 0.0, "percent"),  # percent
        (1.0 / 340.0, 0.0, "all below 0.01"),  # divided by the 340 nm span: a per-nm value
        (1.0, -0.3, "must be finite and >= 0"),  # dark over-subtracted
        (1.2, 0.0, "cannot pass more than all the light"),  # noise above 1
    ],
)
def test_fixed_encoder_refuses_responses_in_another_unit(scale, offset, why):
    responses = _design() * scale + offset
    with pytest.raises(ValueError, match=UNIT) as error:
        FixedResponseEncoder(responses, GRID)
    assert why in str(error.value)


def test_capture_refuses_responses_in_another_unit():
    capture = CameraCapture(GRID)
    cube = torch.full((1, GRID.size, 2, 2), 0.5)
    design = torch.as_tensor(_design(), dtype=torch.float32)
    assert capture(cube, design, noise=False).shape == (1, 9, 2, 2)
    for bad in (design * 1000.0, design - 0.5, design * 1e-3, design.clone().fill_(float("nan"))):
        with pytest.raises(ValueError, match=UNIT):
            capture(cube, bad, noise=False)


def test_twin_encoder_tolerates_measurement_noise_but_not_another_unit():
    Encoder(GRID, _design() * 1.2)  # a measured curve a little above 1 stays usable
    Encoder(GRID, np.vstack([np.zeros((1, GRID.size)), _design()[1:]]))  # one opaque filter
    for bad in (_design() * 65535.0, _design() * 1e-5, -_design()):
        with pytest.raises(ValueError, match=UNIT):
            Encoder(GRID, bad)
    # a design that is transmissions passes everywhere and is stored as given
    encoder = FixedResponseEncoder(_design(), GRID)
    np.testing.assert_allclose(encoder.fixed.numpy(), _design(), atol=1e-7)

"""ZCA whitening of barcode channels (hyplex.models.whitening) and the segmenters' option."""

import pytest
import torch

from hyplex.models.segmentation import build_segmenter
from hyplex.models.whitening import BarcodeWhitening

torch.set_num_threads(1)


def _collinear(n=4, seed=0):
    """Nine nearly collinear channels: one bright component plus tiny independent ones."""
    generator = torch.Generator().manual_seed(seed)
    common = torch.rand(n, 1, 12, 12, generator=generator)
    detail = 1e-2 * torch.randn(n, 9, 12, 12, generator=generator)
    return 0.5 + common + detail


def _covariance(x):
    pixels = x.transpose(0, 1).reshape(x.shape[1], -1).double()
    centred = pixels - pixels.mean(1, keepdim=True)
    return centred @ centred.T / (pixels.shape[1] - 1)


def test_training_batches_come_out_white_and_eval_uses_running_statistics():
    x = _collinear()
    assert torch.linalg.cond(_covariance(x)) > 1e3  # the problem: collinear channels
    layer = BarcodeWhitening(9)
    white = layer(x)
    torch.testing.assert_close(_covariance(white), torch.eye(9, dtype=torch.float64),
                               atol=2e-3, rtol=0)  # fmt: skip
    assert white.mean().abs() < 1e-4
    # evaluation: the running statistics (here of one batch) give the same transform
    layer.eval()
    torch.testing.assert_close(layer(x), white, atol=1e-4, rtol=0)
    # a fresh layer in eval mode is the identity (no statistics yet)
    torch.testing.assert_close(BarcodeWhitening(9).eval()(x), x)


def test_whitening_is_a_constant_linear_map_in_the_backward_pass():
    layer = BarcodeWhitening(9)
    x = _collinear(seed=1).requires_grad_(True)
    out = layer(x)
    weights = torch.randn_like(out)
    (out * weights).sum().backward()
    matrix = layer.matrix(layer.running_cov)
    expected = torch.einsum("oc,bohw->bchw", matrix, weights)
    torch.testing.assert_close(x.grad, expected, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("name", ["unet", "attention"])
def test_segmenters_take_the_option_and_rebuild_from_their_config(name):
    sizes = {"unet": {"base_channels": 4, "depth": 1}, "attention": {"width": 8, "depth": 1}}
    model = build_segmenter(name, in_channels=9, n_classes=4, whiten=True, **sizes[name])
    assert model.config["whiten"] is True
    model(_collinear())  # training mode: statistics tracked
    model.eval()
    rebuilt = build_segmenter(name, **model.config).eval()
    rebuilt.load_state_dict(model.state_dict())
    x = _collinear(2, seed=3)
    with torch.no_grad():
        assert torch.equal(rebuilt(x), model(x))
        assert model(x[:, :, 0, 0]).shape == (2, 4)  # point barcodes too
    plain = build_segmenter(name, in_channels=9, n_classes=4, **sizes[name])
    assert plain.config["whiten"] is False and plain.whitening is None


def test_bad_settings():
    with pytest.raises(ValueError, match="momentum"):
        BarcodeWhitening(9, momentum=0.0)
    with pytest.raises(ValueError, match=r"\(B, 9, h, w\)"):
        BarcodeWhitening(9)(torch.zeros(2, 3, 4, 4))

"""Reconstruction decoders: closed-form linear fit, MST++-class transformer, registry."""

import numpy as np
import pytest
import torch

from hyplex.models.layers import SpectralAttentionBlock, SpectralMSA, crop_to, pad_to_multiple
from hyplex.models.metrics import mrae_loss
from hyplex.models.reconstruction import (
    RECONSTRUCTORS,
    LinearDecoder,
    SpectralTransformer,
    build_reconstructor,
    count_parameters,
    pca_basis,
)

torch.set_num_threads(1)


def _smooth_spectra(rng, n, n_bands):
    """Positive smooth spectra (n, L): sums of three random Gaussian bumps on [0, 1]."""
    x = np.linspace(0, 1, n_bands)
    centres, widths = rng.uniform(0, 1, (n, 3, 1)), rng.uniform(0.1, 0.3, (n, 3, 1))
    amplitudes = rng.uniform(0.1, 1.0, (n, 3, 1))
    return (amplitudes * np.exp(-((x - centres) ** 2) / (2 * widths**2))).sum(1) + 0.05


# ---------------------------------------------------------------------------- linear decoder


def test_linear_fit_recovers_exact_affine_map():
    rng = np.random.default_rng(0)
    weight, bias = rng.normal(size=(20, 9)), rng.normal(size=20)
    barcodes = rng.normal(size=(200, 9))
    spectra = barcodes @ weight.T + bias
    decoder = LinearDecoder(9, 20).double().fit(barcodes, spectra, ridge=0.0)
    np.testing.assert_allclose(decoder.projection.weight[:, :, 0, 0].detach(), weight, atol=1e-5)
    np.testing.assert_allclose(decoder.projection.bias.detach(), bias, atol=1e-5)
    # tiny default ridge: still exact to 1e-5; the fit also runs on (B, C, h, w) maps
    decoder32 = LinearDecoder(9, 20).fit(torch.from_numpy(barcodes), torch.from_numpy(spectra))
    maps = torch.from_numpy(barcodes[:12].T.reshape(1, 9, 3, 4)).float()
    out = decoder32(maps).detach().numpy().reshape(20, 12).T
    np.testing.assert_allclose(out, spectra[:12], atol=1e-4)
    np.testing.assert_allclose(
        decoder32.projection.weight[:, :, 0, 0].detach().double(), weight, atol=1e-5
    )


def test_ridge_zero_is_least_squares_and_ridge_shrinks():
    rng = np.random.default_rng(1)
    barcodes = rng.normal(size=(50, 9))
    spectra = rng.normal(size=(50, 7))  # not a linear function: a genuine least-squares problem
    design = np.hstack([barcodes, np.ones((50, 1))])
    solution = np.linalg.lstsq(design, spectra, rcond=None)[0]
    decoder = LinearDecoder(9, 7).double().fit(barcodes, spectra, ridge=0.0)
    np.testing.assert_allclose(decoder.projection.weight[:, :, 0, 0].T.detach(), solution[:9],
                               atol=1e-10)  # fmt: skip
    np.testing.assert_allclose(decoder.projection.bias.detach(), solution[9], atol=1e-10)
    norm_ls = decoder.projection.weight.norm().item()
    decoder.fit(barcodes, spectra, ridge=10.0)
    assert decoder.projection.weight.norm().item() < 0.5 * norm_ls


def test_linear_fit_validates_shapes():
    decoder = LinearDecoder(9, 5)
    with pytest.raises(ValueError, match=r"\(N, 9\)"):
        decoder.fit(np.zeros((10, 8)), np.zeros((10, 5)))
    with pytest.raises(ValueError, match="same number of samples"):
        decoder.fit(np.zeros((10, 9)), np.zeros((11, 5)))
    with pytest.raises(ValueError, match=r"\(B, 9, h, w\)"):
        decoder(torch.zeros(1, 8, 4, 4))
    with pytest.raises(ValueError, match="ridge"):
        decoder.fit(np.zeros((10, 9)), np.zeros((10, 5)), ridge=-1.0)


def test_pca_basis_orthonormal_and_reconstructs_low_rank_data():
    rng = np.random.default_rng(2)
    basis = np.linalg.qr(rng.normal(size=(30, 3)))[0].T  # 3 orthonormal spectra of 30 bands
    mean = rng.random(30)
    spectra = rng.normal(size=(100, 3)) @ basis + mean
    components, mean_fit = pca_basis(spectra, 3)
    assert components.shape == (3, 30) and mean_fit.shape == (30,)
    np.testing.assert_allclose(components @ components.T, np.eye(3), atol=1e-10)
    projected = (spectra - mean_fit) @ components.T @ components + mean_fit
    np.testing.assert_allclose(projected, spectra, atol=1e-10)
    torch_components, _ = pca_basis(torch.from_numpy(spectra).float(), 2)
    assert isinstance(torch_components, torch.Tensor) and torch_components.dtype == torch.float32
    np.testing.assert_allclose(torch_components.numpy(), components[:2], atol=1e-4)
    with pytest.raises(ValueError, match="n_components"):
        pca_basis(spectra, 31)


# ------------------------------------------------------------------------ spectral transformer


def test_spectral_attention_blocks_and_padding():
    torch.manual_seed(0)
    x = torch.rand(2, 12, 5, 7)
    assert SpectralMSA(12, n_heads=3)(x).shape == x.shape
    assert SpectralAttentionBlock(12, n_heads=2)(x).shape == x.shape
    with pytest.raises(ValueError, match="multiple of n_heads"):
        SpectralMSA(12, n_heads=5)
    padded, size = pad_to_multiple(x, 4)
    assert padded.shape == (2, 12, 8, 8) and size == (5, 7)
    assert torch.equal(crop_to(padded, size), x)
    assert torch.equal(padded[..., 7, :7], x[..., 4, :])  # edge rows replicated


def _textbook_smsa(module, x):
    """S-MSA as written in [MST++] eq. (1)-(4): normalise, attend, project (no folding)."""
    batch, channels, height, width = x.shape
    n, d = module.n_heads, channels // module.n_heads
    tokens = x.flatten(2).transpose(1, 2)
    q, k, v = module.to_qkv(tokens).chunk(3, dim=-1)
    qh, kh, vh = (t.transpose(1, 2).reshape(batch, n, d, -1) for t in (q, k, v))
    qh, kh = torch.nn.functional.normalize(qh, dim=-1), torch.nn.functional.normalize(kh, dim=-1)
    attention = ((kh @ qh.transpose(-2, -1)) * module.rescale).softmax(dim=-1)
    out = (attention @ vh).reshape(batch, channels, -1).transpose(1, 2)
    out = module.project(out).transpose(1, 2).reshape(batch, channels, height, width)
    return out + module.position(v.transpose(1, 2).reshape(batch, channels, height, width))


@pytest.mark.parametrize("channels,n_heads", [(12, 3), (32, 1), (64, 2)])
def test_spectral_msa_equals_textbook_form_in_both_memory_formats(channels, n_heads):
    torch.manual_seed(1)
    module = SpectralMSA(channels, n_heads).eval()
    block = SpectralAttentionBlock(channels, n_heads).eval()
    with torch.no_grad():
        module.rescale.uniform_(0.5, 3.0)
        x = torch.randn(2, channels, 9, 13)
        expected = _textbook_smsa(module, x)
        block_expected = block(x)
        for memory_format in (torch.contiguous_format, torch.channels_last):
            y = x.contiguous(memory_format=memory_format)
            out = module(y)
            assert out.is_contiguous(memory_format=memory_format)
            torch.testing.assert_close(out, expected, rtol=1e-5, atol=2e-6)
            torch.testing.assert_close(block(y), block_expected, rtol=1e-5, atol=2e-6)


def test_transformer_odd_sizes_and_gradient_to_input():
    torch.manual_seed(0)
    model = SpectralTransformer(9, 34)
    barcodes = torch.rand(2, 9, 13, 17, requires_grad=True)
    out = model(barcodes)
    assert out.shape == (2, 34, 13, 17)
    out.square().mean().backward()
    assert torch.isfinite(barcodes.grad).all() and barcodes.grad.abs().sum() > 0
    tiny = SpectralTransformer(9, 5, width=8, n_blocks=1, levels=2, n_stages=1, nonnegative=True)
    small = tiny(torch.rand(1, 9, 1, 3))
    assert small.shape == (1, 5, 1, 3) and (small > 0).all()


def test_default_transformer_is_small():
    assert count_parameters(SpectralTransformer(9, 34)) < 500_000


def test_transformer_rejects_bad_input():
    model = SpectralTransformer(9, 10, width=8, n_blocks=1, n_stages=1)
    with pytest.raises(ValueError, match=r"expected barcodes of shape \(B, 9, h, w\)"):
        model(torch.zeros(1, 4, 8, 8))
    with pytest.raises(ValueError, match=r"\(B, 9, h, w\)"):
        model(torch.zeros(9, 8, 8))
    with pytest.raises(ValueError, match="divisible by n_heads"):
        SpectralTransformer(9, 10, width=10, n_heads=3)
    with pytest.raises(ValueError, match="in_channels"):
        SpectralTransformer(0, 10)


def test_transformer_tiny_training_lowers_loss(adam):
    torch.manual_seed(0)
    rng = np.random.default_rng(3)
    n_bands, n_patches = 16, 16
    filters = torch.from_numpy(rng.random((9, n_bands))).float() / n_bands  # random encoder
    # Cubes (N, L, 8, 8): per-pixel mixtures of two smooth spectra with a smooth spatial ramp.
    spectra = torch.from_numpy(_smooth_spectra(rng, 2 * n_patches, n_bands)).float()
    ramp = torch.linspace(0, 1, 8)
    weight = (ramp[:, None] + ramp[None, :]) / 2  # (8, 8)
    a, b = spectra[:n_patches, :, None, None], spectra[n_patches:, :, None, None]
    cubes = weight * a + (1 - weight) * b
    barcodes = torch.einsum("cl,nlhw->nchw", filters, cubes)
    model = SpectralTransformer(9, n_bands, width=8, n_blocks=1, n_stages=1)  # U of 1 level
    optimizer = adam(model.parameters(), lr=3e-3)
    with torch.no_grad():
        start = mrae_loss(model(barcodes), cubes).item()
    for step in range(60):  # mini-batches of 4 patches
        index = torch.arange(step % 4 * 4, step % 4 * 4 + 4)
        optimizer.step(mrae_loss(model(barcodes[index]), cubes[index]))
    with torch.no_grad():
        end = mrae_loss(model(barcodes), cubes).item()
    assert end < 0.5 * start, (start, end)


# ---------------------------------------------------------------------------------- registry


@pytest.mark.parametrize(
    "name, config",
    [("linear", {"n_filters": 9, "n_bands": 12}),
     ("mst", {"in_channels": 9, "n_bands": 12, "width": 8, "n_blocks": 1, "n_stages": 1})],
)  # fmt: skip
def test_build_round_trip(name, config):
    torch.manual_seed(0)
    model = build_reconstructor(name, **config)
    assert isinstance(model, RECONSTRUCTORS[name])
    rebuilt = build_reconstructor(name, **model.config)
    rebuilt.load_state_dict(model.state_dict())
    x = torch.rand(1, 9, 5, 6)
    assert torch.equal(rebuilt(x), model(x))
    assert count_parameters(rebuilt) == count_parameters(model) > 0


def test_unknown_reconstructor():
    with pytest.raises(ValueError, match="unknown reconstructor 'foo'.*linear.*mst"):
        build_reconstructor("foo")

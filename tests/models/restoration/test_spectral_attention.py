"""SDA-GAN FFT-domain attention on known frequency patterns; the MST option."""

import math

import pytest
import torch

from hyplex.models.reconstruction import SpectralTransformer
from hyplex.models.restoration.spectral_attention import FrequencyAttention, frequency_coordinates


def _cosine(height, width, ky, kx, channels=3):
    rows = torch.arange(height, dtype=torch.float32)[:, None]
    cols = torch.arange(width, dtype=torch.float32)[None, :]
    wave = torch.cos(2 * math.pi * (ky * rows / height + kx * cols / width))
    return wave.expand(1, channels, height, width).clone()


def _block(seed=0):
    torch.manual_seed(seed)
    block = FrequencyAttention(3, hidden=8)
    with torch.no_grad():
        block.gamma.fill_(1.0)
    return block


def test_a_pure_cosine_keeps_its_frequency_and_is_gated_by_the_attention_at_that_bin():
    block = _block()
    x = _cosine(16, 12, 3, 2)
    with torch.no_grad():
        filtered = block.filtered(x)
        spectrum = torch.fft.rfft2(x, norm="ortho")
        gain = block.attention(spectrum, 12)
    out_spectrum = torch.fft.rfft2(filtered, norm="ortho")
    energy = out_spectrum.abs() ** 2
    support = spectrum.abs() > 1e-3
    assert support.sum() == 3  # (k_y, k_x) = (3, 2) per channel; (-3, -2) is its conjugate
    assert energy[~support].sum() < 1e-8 * energy.sum()  # no new frequency appears
    # at the cosine's bins the output is exactly M(k) X(k) (hand computation)
    assert torch.allclose(out_spectrum[support], (gain * spectrum)[support], atol=1e-5)
    assert ((gain > 0) & (gain < 1)).all()


def test_the_attention_can_learn_to_remove_one_of_two_frequencies():
    block = _block(1)
    low, high = _cosine(16, 16, 1, 0), _cosine(16, 16, 0, 6)
    optimizer = torch.optim.Adam(block.parameters(), lr=0.05)
    for _ in range(150):
        loss = (block.filtered(low + high) - low).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        out = torch.fft.rfft2(block.filtered(low + high), norm="ortho").abs()
    assert out[..., 1, 0].mean() > 0.8 * torch.fft.rfft2(low, norm="ortho").abs()[..., 1, 0].mean()
    assert out[..., 0, 6].mean() < 0.1 * out[..., 1, 0].mean()


def test_frequency_coordinates_and_odd_sizes():
    coords = frequency_coordinates(5, 7)
    assert coords.shape == (2, 5, 4)
    assert coords[1, 0, -1] == pytest.approx(3 / 7)
    block = _block()
    x = torch.randn(2, 3, 5, 7)
    assert block(x).shape == x.shape
    with pytest.raises(ValueError, match="shape"):
        block(torch.randn(2, 4, 5, 7))


def test_starts_as_identity_and_is_an_option_of_the_spectral_transformer():
    torch.manual_seed(0)
    assert torch.equal(FrequencyAttention(4)(torch.ones(1, 4, 3, 3)), torch.ones(1, 4, 3, 3))
    model = SpectralTransformer(9, 6, width=8, n_blocks=1, n_stages=1, fft_attention=True)
    assert model.config["fft_attention"] is True
    assert isinstance(model.frequency_attention, FrequencyAttention)
    assert model(torch.rand(2, 9, 5, 6)).shape == (2, 6, 5, 6)
    assert "fft_attention" not in SpectralTransformer(9, 6, width=8).config

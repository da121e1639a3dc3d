"""SDA-GAN unpaired translation: a decoder trained on translated twin barcodes decodes the
captured camera better than one trained on raw twin barcodes."""

import numpy as np
import pytest
import torch

from hyplex.models.adaptation.spectral_translation import (
    BarcodeTranslator,
    TranslationTraining,
    UnpairedBarcodeTranslation,
)
from hyplex.models.data import generate_scenes
from hyplex.models.encoder_baselines import FixedResponseEncoder
from hyplex.models.metrics import psnr
from hyplex.models.openset.contrastive_alignment import captured_encoder
from hyplex.models.reconstruction import LinearDecoder

GRID_NM = np.linspace(400.0, 730.0, 34)


def _ridge(barcodes, cubes):
    points = barcodes.permute(0, 2, 3, 1).reshape(-1, barcodes.shape[1])
    spectra = cubes.permute(0, 2, 3, 1).reshape(-1, cubes.shape[1])
    return LinearDecoder(barcodes.shape[1], cubes.shape[1]).fit(points, spectra, ridge=1e-4)


def test_translated_twin_data_decodes_the_captured_domain_better():
    torch.manual_seed(0)
    responses = np.exp(-0.5 * ((GRID_NM[None] - np.linspace(420, 710, 9)[:, None]) / 25.0) ** 2)
    twin = FixedResponseEncoder(responses, GRID_NM, name="twin")
    captured = captured_encoder(responses, GRID_NM, seed=0)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        cubes = generate_scenes(GRID_NM, 6, seed=0, shape=(24, 24)).tensors()[0]
        twin_codes = twin(cubes, generator)
        unpaired = captured(generate_scenes(GRID_NM, 6, seed=1, shape=(24, 24)).tensors()[0])
        test_cubes = generate_scenes(GRID_NM, 4, seed=2, shape=(24, 24)).tensors()[0]
        test_codes = captured(test_cubes, generator)
    translation = UnpairedBarcodeTranslation(9, width=8)
    settings = TranslationTraining(steps=80, batch_size=6, patch_size=12)
    history = translation.fit(twin_codes, unpaired, settings)
    with torch.no_grad():
        raw = psnr(_ridge(twin_codes, cubes)(test_codes).clamp(0, 1), test_cubes)
        translated_codes = translation.to_captured(twin_codes)
        adapted = psnr(_ridge(translated_codes, cubes)(test_codes).clamp(0, 1), test_cubes)
    assert np.isfinite([h["cycle"] for h in history]).all()
    assert adapted > raw + 3.0, (raw, adapted)


def test_generator_starts_near_identity_and_checks_its_input():
    torch.manual_seed(0)
    generator = BarcodeTranslator(9, width=8)
    codes = torch.rand(2, 9, 8, 8)
    assert torch.allclose(generator(codes), codes)
    with pytest.raises(ValueError, match="9"):
        generator(torch.rand(2, 4, 8, 8))
    with pytest.raises(ValueError, match="captured"):
        UnpairedBarcodeTranslation(9, width=8).fit(codes, torch.rand(2, 3, 8, 8))

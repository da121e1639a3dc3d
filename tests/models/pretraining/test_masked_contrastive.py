"""Structured-masking contrastive pretraining: masks, NT-Xent by hand, encoder files."""

import math

import pytest
import torch

from hyplex.models.pretraining import (
    MaskingConfig,
    PretrainConfig,
    apply_mask,
    encoder_state,
    load_encoder,
    nt_xent,
    pretrain_encoder,
    save_encoder,
    structured_mask,
)
from hyplex.models.segmentation import UNet


def test_structured_mask_hides_whole_patch_rows_columns_and_filters():
    config = MaskingConfig(patch_px=4, space_fraction=0.25, band_fraction=1 / 3)
    keep = structured_mask((3, 9, 16, 16), config, torch.Generator().manual_seed(0))
    assert keep.shape == (3, 9, 16, 16) and keep.dtype == torch.bool
    for sample in keep:
        hidden_bands = [c for c in range(9) if not sample[c].any()]
        assert len(hidden_bands) == 3  # round(9 / 3) whole filters
        visible = sample[[c for c in range(9) if c not in hidden_bands]]
        assert (visible == visible[0]).all()  # the space mask is shared by the other filters
        space = visible[0]
        hidden_rows = [r for r in range(4) if not space[4 * r : 4 * r + 4].any()]
        hidden_cols = [c for c in range(4) if not space[:, 4 * c : 4 * c + 4].any()]
        assert len(hidden_rows) == 1 and len(hidden_cols) == 1  # round(0.25 * 4)
        assert int(space.sum()) == 16 * 16 - 2 * 4 * 16 + 16  # one row + one column, 16 shared
    x = torch.arange(2 * 9 * 16 * 16, dtype=torch.float32).reshape(2, 9, 16, 16)
    masked = apply_mask(x, keep[:2])
    assert torch.equal(masked[keep[:2]], x[keep[:2]])
    assert torch.allclose(masked[0][~keep[0]], x[0].mean().expand(int((~keep[0]).sum())))


def test_nt_xent_matches_a_hand_computation():
    first = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    second = torch.tensor([[1.0, 1.0], [0.0, 2.0]])
    tau = 0.5
    c = 1 / math.sqrt(2)
    # normalised views: a=(1,0), b=(0,1), a'=(c,c), b'=(0,1); similarities with each anchor
    sims = {
        "a": {"b": 0.0, "a'": c, "b'": 0.0},
        "b": {"a": 0.0, "a'": c, "b'": 1.0},
        "a'": {"a": c, "b": c, "b'": c},
        "b'": {"a": 0.0, "b": 1.0, "a'": c},
    }
    positive = {"a": "a'", "b": "b'", "a'": "a", "b'": "b"}
    losses = []
    for anchor, row in sims.items():
        denominator = sum(math.exp(s / tau) for s in row.values())
        losses.append(-math.log(math.exp(row[positive[anchor]] / tau) / denominator))
    expected = sum(losses) / 4
    assert float(nt_xent(first, second, tau)) == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match="N >= 2"):
        nt_xent(first[:1], second[:1])


def test_pretraining_aligns_masked_views_and_the_encoder_round_trips(tmp_path):
    generator = torch.Generator().manual_seed(0)
    # unlabelled frames: four materials (spectral shapes) in blocks, plus noise
    shapes = torch.rand(4, 9, generator=generator) + 0.2
    layout = torch.randint(0, 4, (6, 1, 6, 6), generator=generator)
    layout = layout.repeat_interleave(4, 2).repeat_interleave(4, 3)[:, 0]
    frames = shapes[layout].permute(0, 3, 1, 2) + 0.02 * torch.randn(
        6, 9, 24, 24, generator=generator
    )
    torch.manual_seed(0)
    unet = UNet(9, 3, base_channels=8, depth=2)
    before = {k: v.clone() for k, v in encoder_state(unet).items()}
    masking = MaskingConfig(patch_px=4, space_fraction=0.25, band_fraction=0.3)
    config = PretrainConfig(steps=40, batch=8, crop_px=12, masking=masking)
    history = pretrain_encoder(unet, frames, config)
    assert sum(history[-8:]) / 8 < sum(history[:8]) / 8 - 0.2  # views come together
    after = encoder_state(unet)
    assert set(after) == set(before) and any(not torch.equal(before[k], after[k]) for k in after)
    assert not any(k.startswith(("head.", "decoder.", "upsample.")) for k in after)
    path = save_encoder(unet, tmp_path / "enc.safetensors")
    fresh = UNet(9, 3, base_channels=8, depth=2)
    assert load_encoder(fresh, path)["in_channels"] == 9
    for key, value in after.items():
        assert torch.equal(fresh.state_dict()[key], value)
    with pytest.raises(ValueError, match="does not fit the segmenter"):
        load_encoder(UNet(4, 3, base_channels=8, depth=2), path)
    with pytest.raises(ValueError, match="channels, the segmenter expects 9"):
        pretrain_encoder(UNet(9, 3, 8, 2), frames[:, :4], PretrainConfig(steps=1))


def test_codesign_starts_its_segmenter_from_a_pretrained_encoder(tmp_path):
    from hyplex.models.codesign import build_decoders
    from hyplex.models.codesign_config import quick_config

    torch.manual_seed(0)
    source = UNet(9, 2, base_channels=8, depth=2)
    path = save_encoder(source, tmp_path / "enc.safetensors")
    _, segmenter = build_decoders(quick_config(init_encoder=str(path)), 9, 31, 4)
    for key, value in encoder_state(source).items():
        assert torch.equal(segmenter.state_dict()[key], value)
    with pytest.raises(ValueError, match="does not fit the segmenter"):
        build_decoders(quick_config(init_encoder=str(path)), 4, 31, 4)

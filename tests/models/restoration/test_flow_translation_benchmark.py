"""The issue-16 ``flow`` and ``translation`` benchmark blocks run end to end (smoke size)."""

import pytest

from ..benchmark_scripts import load_benchmark


@pytest.fixture(scope="module")
def blocks():
    return load_benchmark("learning_flow_translation")


def test_flow_block_reports_every_figure_and_its_goals(blocks):
    out = blocks.flow_block(quick=True, seeds=1, smoke=True)
    for key in ("psnr_flow_mean", "psnr_mst", "nll_nats_per_value", "coverage_90"):
        assert isinstance(out[key], float)
    assert 0.0 <= out["coverage_90"] <= 1.0
    assert set(out["denoising_psnr"]) == {"100_electrons", "30_electrons", "10_electrons"}
    assert set(out["denoising_psnr"]["10_electrons"]) == {"noisy", "flow", "plain"}
    assert set(out["goals"]) == {"coverage_in_0.85_0.95", "psnr_within_1db"}


def test_translation_block_reports_both_arms_and_its_goal(blocks):
    out = blocks.translation_block(quick=True, seeds=1, smoke=True)
    for arm in ("raw_twin", "translated", "translated_no_fft_attention"):
        assert isinstance(out[f"captured_psnr_{arm}"], float)
        assert 0.0 <= out[f"captured_miou_{arm}"] <= 100.0
    assert set(out["goals"]) == {"gain_1db_or_3miou"}

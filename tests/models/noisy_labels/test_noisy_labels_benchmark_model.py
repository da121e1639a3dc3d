"""benchmarks/learning_methods.py's noisy-label model: standardised barcodes, one start for all."""

import importlib.util
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[3]


def _benchmark():
    path = ROOT / "benchmarks" / "learning_methods.py"
    spec = importlib.util.spec_from_file_location("learning_methods_under_test", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_pixel_classifier_standardises_barcodes_and_starts_every_method_alike():
    bench = _benchmark()
    generator = torch.Generator().manual_seed(0)
    # raw barcodes: ~0.1 with std ~0.06 per filter, as the twin's
    points = 0.1 + 0.06 * torch.randn(2000, 9, generator=generator)
    model = bench.pixel_classifier(5, 3, points)
    standardised = model[0](points)
    torch.testing.assert_close(standardised.mean(0), torch.zeros(9), atol=1e-5, rtol=0)
    torch.testing.assert_close(standardised.std(0), torch.ones(9), atol=1e-5, rtol=0)
    assert model(points).shape == (2000, 5)
    again = bench.pixel_classifier(5, 3, points)
    for a, b in zip(model.parameters(), again.parameters(), strict=True):
        torch.testing.assert_close(a, b)


def test_max_matching_trains_without_the_label_blind_group_attention_by_default():
    import inspect

    signature = inspect.signature(_benchmark().train_max_matching)
    assert signature.parameters["group_attention"].default is False

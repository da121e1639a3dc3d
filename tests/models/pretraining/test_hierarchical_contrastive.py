"""HierCon real/fake head: the margin contrastive loss by hand, and its trained EER."""

import pytest
import torch

from hyplex.models.openset.robustness_evaluation import equal_error_rate
from hyplex.models.pretraining import (
    HierConConfig,
    HierConHead,
    margin_contrastive_loss,
    train_hiercon,
)


def test_margin_loss_by_hand():
    embeddings = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 2.0]])
    labels = torch.tensor([0, 0, 1])
    c = 2**-0.5
    # same-label pair (0, 1): 1 - c; cross pairs (0, 2): cos 0, (1, 2): cos c; margin 0.2
    expected = (1 - c) + (max(0.0, 0.0 - 0.2) + max(0.0, c - 0.2)) / 2
    assert float(margin_contrastive_loss(embeddings, labels, 0.2)) == pytest.approx(expected)
    assert float(margin_contrastive_loss(embeddings[:2], labels[:2], 0.2)) == pytest.approx(1 - c)
    with pytest.raises(ValueError, match="margin"):
        margin_contrastive_loss(embeddings, labels, 2.0)


def test_head_shapes_and_input_check():
    head = HierConHead(9, band_groups=3, layers=3, layers_per_group=2, width=8)
    assert head(torch.rand(5, 9)).shape == (5,)
    with pytest.raises(ValueError, match=r"barcodes must be \(N, 9\)"):
        head(torch.rand(5, 4))


def test_training_separates_metamers_better_than_untrained():
    """Real and fake barcodes differ only in the spectral shape of one band group."""
    generator = torch.Generator().manual_seed(0)
    n = 600
    base = 1.0 + 0.3 * torch.rand(n, 1, generator=generator)
    barcodes = base * (1.0 + 0.05 * torch.randn(n, 9, generator=generator))
    is_fake = torch.arange(n) % 2 == 1
    barcodes[is_fake, 6:] *= torch.tensor([1.12, 0.9, 1.05])
    torch.manual_seed(0)
    head = HierConHead(9, width=16)
    with torch.no_grad():
        before = equal_error_rate(head(barcodes[400:]).numpy(), is_fake[400:].numpy())[0]
    history = train_hiercon(head, barcodes[:400], is_fake[:400],
                            HierConConfig(steps=150, batch=64, seed=0))  # fmt: skip
    with torch.no_grad():
        after = equal_error_rate(head(barcodes[400:]).numpy(), is_fake[400:].numpy())[0]
    assert history[-1] < history[0]
    assert after < 0.15 < before

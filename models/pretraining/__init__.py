"""hyplex.models.pretraining: contrastive learning on barcodes (issue 16, items 4-5).

=========================  ==============================================================
module                     method (paper)
=========================  ==============================================================
masked_contrastive         structured space/band masking + NT-Xent pretraining of the
                           segmenter's encoder on unlabelled frames ("AudioMosaic:
                           Contrastive Masked Audio Representation Learning", ICML 2026)
hierarchical_contrastive   attention over layers and band groups with a margin contrastive
                           loss, as the real-vs-fake head ("HierCon: Hierarchical
                           Contrastive Attention for Audio Deepfake Detection", WWW 2026)
realfake_files             a trained HierCon head inside a design bundle (``realfake.json``
                           + safetensors, hash-checked, written atomically)
realfake_fitting           fitting that head for a bundle on twin real-vs-fake (metamer)
                           pixels (``hyplex realfake fit``; ``hyplex segment --fake``)
=========================  ==============================================================
"""

from hyplex.models.pretraining.hierarchical_contrastive import (
    HierConConfig,
    HierConHead,
    margin_contrastive_loss,
    train_hiercon,
)
from hyplex.models.pretraining.masked_contrastive import (
    ContrastiveEncoder,
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

__all__ = [
    "ContrastiveEncoder",
    "HierConConfig",
    "HierConHead",
    "MaskingConfig",
    "PretrainConfig",
    "apply_mask",
    "encoder_state",
    "load_encoder",
    "margin_contrastive_loss",
    "nt_xent",
    "pretrain_encoder",
    "save_encoder",
    "structured_mask",
    "train_hiercon",
]

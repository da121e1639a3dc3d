"""hyplex.models.robustness: decoders under attack (issue 16, items 6-7).

=========================  ==============================================================
module                     method (paper)
=========================  ==============================================================
probabilistic_margin       MAIL: PGD adversarial training with instance weights from the
                           probabilistic margin, perturbations bounded by shot noise
                           ("Probabilistic Margins for Instance Reweighting in Adversarial
                           Training", NeurIPS 2021)
lightweight_blackbox       ETF: black-box attack from the shallow layers of a surrogate
                           trained on a few samples ("Towards Lightweight Black-Box Attacks
                           against Deep Neural Networks", NeurIPS 2022)
=========================  ==============================================================

The red-team CLI is ``hyplex redteam --bundle B`` (:mod:`hyplex.cli.redteam`).

``hyplex.models.robustness.probabilistic_margin`` is the module: its margin function of the
same name is not re-exported here (the re-export used to shadow the submodule, so the dotted
name resolved to a function); import it from the module,
``from hyplex.models.robustness.probabilistic_margin import probabilistic_margin``.
"""

from hyplex.models.robustness.lightweight_blackbox import (
    ETFConfig,
    ShallowSurrogate,
    attack_success_rate,
    etf_attack,
    few_sample_pixels,
    train_surrogate,
)
from hyplex.models.robustness.probabilistic_margin import (
    MAILConfig,
    adversarial_train_segmenter,
    mail_weights,
    pgd_attack,
    reconstruction_margin,
    shot_noise_budget,
    white_electrons_of,
)

__all__ = [
    "ETFConfig",
    "MAILConfig",
    "ShallowSurrogate",
    "adversarial_train_segmenter",
    "attack_success_rate",
    "etf_attack",
    "few_sample_pixels",
    "mail_weights",
    "pgd_attack",
    "reconstruction_margin",
    "shot_noise_budget",
    "train_surrogate",
    "white_electrons_of",
]

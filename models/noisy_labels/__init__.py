"""hyplex.models.noisy_labels: learning from coarse and wrong labels (issue 16, items 8-9).

=====================  ==================================================================
module                 method (paper)
=====================  ==================================================================
group_noise            Max-Matching: a region carries one label that fits only some of
                       its pixels; learn from its best-matching member ("Learning with
                       Group Noise", AAAI 2021)
instance_dependent     confusing / unconfusing instances with a per-instance noise model,
                       alternating optimisation ("Tackling Instance-Dependent Label Noise
                       via a Universal Probabilistic Model", AAAI 2021)
auto_labels            labels a lab makes without annotations: k-means of spectral shapes
                       named by a few clicked pixels or library spectra, band-ratio
                       (NDVI-like) thresholds; their noise depends on the spectrum
noise_generation       the standard instance-dependent noise generator: per-instance flip
                       rates, flip directions by random projections of the features
                       ("Part-dependent Label Noise: Towards Instance-dependent Label
                       Noise", NeurIPS 2020)
=====================  ==================================================================
"""

from hyplex.models.noisy_labels.auto_labels import (
    AutoLabels,
    band_ratio_index,
    box_mean_barcodes,
    cluster_auto_labels,
    reference_barcodes,
    threshold_auto_labels,
)
from hyplex.models.noisy_labels.group_noise import (
    check_group_ids,
    coarse_region_labels,
    matching_scores,
    max_matching_loss,
    max_matching_mask,
    polygon_group_ids,
    region_labels,
    superpixel_group_ids,
)
from hyplex.models.noisy_labels.instance_dependent import (
    IDLNConfig,
    confusing_probability_step,
    noisy_label_probability,
    spectral_label_noise,
    train_cross_entropy,
    train_idln,
    true_label_posterior,
)
from hyplex.models.noisy_labels.noise_generation import (
    InstanceDependentNoise,
    instance_dependent_label_noise,
)

__all__ = [
    "AutoLabels",
    "IDLNConfig",
    "InstanceDependentNoise",
    "band_ratio_index",
    "box_mean_barcodes",
    "check_group_ids",
    "cluster_auto_labels",
    "coarse_region_labels",
    "confusing_probability_step",
    "instance_dependent_label_noise",
    "matching_scores",
    "max_matching_loss",
    "max_matching_mask",
    "noisy_label_probability",
    "polygon_group_ids",
    "reference_barcodes",
    "region_labels",
    "spectral_label_noise",
    "superpixel_group_ids",
    "threshold_auto_labels",
    "train_cross_entropy",
    "train_idln",
    "true_label_posterior",
]

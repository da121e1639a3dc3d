"""hyplex.models.openset: unknown materials, anomalies and sim-to-real adaptation (issue 15).

Contract shared by every method of this family
----------------------------------------------
* **Score**: ``score(model, barcodes (B, F, H, W)) -> (B, H, W)`` float32, **higher = more
  unknown** (pytorch-ood's convention). Post-hoc baselines :func:`msp_score`,
  :func:`energy_score` work on logits ``(B, K, H, W)``.
* **Detector** (:class:`OpenSetDetector`, pytorch-ood shape): ``Detector(model, **options)``
  around a segmenter; ``fit(data: OpenSetData, *, seed=0, progress=False, **kwargs) -> self``;
  ``predict(barcodes) -> (B, H, W)``; ``segment(barcodes) -> (logits, scores)`` in one pass
  (what ``hyplex segment`` calls). Override ``scores_from(logits, barcodes)`` for a new score,
  ``head_modules() -> {name: nn.Module}`` for weights of your own (saved as ``name.*``), and set
  ``trains_segmenter = True`` when ``fit`` changes the segmenter's weights (then they are saved
  as ``segmenter.*`` in the head). ``calibrate(heldout_barcodes, valid)`` sets the threshold at
  95 % TPR on held-out ID pixels; ``config()`` (JSON) + ``tensors()`` (safetensors) are what a
  bundle stores; ``restore(config, tensors)`` loads them. Options must be JSON scalars.
* **Registry**: :data:`METHODS` (``scores.py``) maps ``MSP, energy, OE, DOE, DAL, ATOL,
  Watermarking, CEDL, NSReg, BCE, ACT`` to ``"module:Class"``; :func:`build_detector` resolves
  it lazily. The entries of CEDL, NSReg, BCE and ACT point at engineer B's modules
  (``centre_discriminative:CentreDiscriminativeDetector`` and ``:BCEAnomalyDetector``,
  ``normal_structure:NormalStructureDetector``,
  ``contrastive_alignment:ContrastiveAlignmentDetector``); change the string if a class lives
  elsewhere. ACT's ``fit`` receives the unlabelled target barcodes as ``data.target``
  ``(N, F, H, W)`` (``hyplex openset fit --target-frames DIR`` fills it).
* **Data** (:mod:`.auxiliary`): :class:`OpenSetSplit` (known classes / auxiliary outlier
  categories / disjoint test-unknown categories), :func:`make_openset_scenes` (twin scenes with
  planted unknown objects, label :data:`UNKNOWN` = -1), :func:`build_openset_data` ->
  :class:`OpenSetData` (``train``, ``auxiliary``, ``heldout``, ``test`` as
  :class:`LabelledBarcodes`, all through one encoder). GenIAS plugs in as ``generated=`` (an
  ``(N, L)`` array or an object with ``sample(count, rng)``).
* **Metrics** (:mod:`.metrics`): :func:`ood_metrics` (AUROC, AUPR, FPR@95TPR with
  scikit-learn), :func:`threshold_at_tpr`, :class:`OpenSetMetrics` (update/compute).
* **Training** (:mod:`.outlier_exposure`): :func:`train_with_outliers` is the one entry point
  of the outlier-exposure family (OE, DOE, DAL, ATOL): the ID cross-entropy plus a pluggable
  outlier regulariser; with ``outlier_weight=0`` it is plain cross-entropy training
  (:func:`train_segmenter`).

==================================  ==============================================================
module                              method
==================================  ==============================================================
``scores``                          MSP, energy, detector base class, registry
``metrics``                         AUROC / AUPR / FPR@95TPR, 95 %-TPR threshold
``auxiliary``                       the open-set split of the twin, planted unknowns, outliers
``outlier_exposure``                OE (Hendrycks et al., ICLR 2019) and the shared training loop
``implicit_outlier_transformation`` DOE (Wang et al., ICLR 2023)
``distribution_augmentation``       DAL (Wang et al., NeurIPS 2023)
``unreliable_sources``              ATOL (Zheng et al., NeurIPS 2023)
``watermarking``                    Watermarking (Wang et al., NeurIPS 2022)
``coverage``                        convex-hull coverage of captured data (Mixture Data ...)
``head_files``                      a head inside a bundle: openset.json + safetensors (atomic)
``bundle_fitting``                  fit + calibrate + store a head for a bundle (CLI, design)
==================================  ==============================================================
"""

from __future__ import annotations

from hyplex.models.openset.auxiliary import (
    UNKNOWN,
    LabelledBarcodes,
    OpenSetData,
    OpenSetScenes,
    OpenSetSplit,
    build_openset_data,
    make_openset_scenes,
)
from hyplex.models.openset.metrics import OpenSetMetrics, ood_metrics, threshold_at_tpr
from hyplex.models.openset.scores import (
    METHODS,
    EnergyDetector,
    MaxSoftmaxDetector,
    OpenSetDetector,
    build_detector,
    detector_class,
    energy_score,
    msp_score,
    score,
)

__all__ = [
    "UNKNOWN",
    "METHODS",
    "LabelledBarcodes",
    "OpenSetData",
    "OpenSetScenes",
    "OpenSetSplit",
    "OpenSetDetector",
    "MaxSoftmaxDetector",
    "EnergyDetector",
    "OpenSetMetrics",
    "build_detector",
    "build_openset_data",
    "detector_class",
    "energy_score",
    "make_openset_scenes",
    "msp_score",
    "ood_metrics",
    "score",
    "threshold_at_tpr",
]

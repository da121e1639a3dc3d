"""hyplex.models: learning — the differentiable encoder, decoders, co-design and metrics.

==========================  ===========================================================
module                      what
==========================  ===========================================================
``encoder_capture``         ``CameraCapture``: scene -> filters -> EMVA 1288 noise ->
                            white-normalised barcodes, differentiable
``encoder``                 realizable encoders: library selection (Gumbel-softmax),
                            geometry through the surrogate; unconstrained upper bound
``encoder_baselines``       fixed responses, RGB, full cube, Hyplex PCA targets
``reconstruction``          linear (ridge) projector and the MST++-class transformer
``segmentation``            hyperspectral U-Net and the spectral-attention net
``decoder_input``           what decoders take: maps (B, C, h, w) or points (N, C), any dtype
``layers``                  spectral-wise attention (S-MSA), squeeze-excitation, helpers
``temporal``                gated logit smoothing for consistent video segmentation
``metrics``                 PSNR, SSIM, SAM, MRAE and their losses
``label_metrics``           IoU, mIoU, real/fake accuracy (re-exported by ``metrics``)
``data``                    synthetic labelled scenes from the twin, patch datasets
``codesign``, ``..._config`` end-to-end training of encoder and decoders
``codesign_library``        a small RCWA response library for quick runs
``bundle``, ``report``      design bundles on disk (safetensors) and their PNG report
``distributed``             DistributedDataParallel under torchrun (gloo / NCCL)
==========================  ===========================================================

Names below are importable from ``hyplex.models`` directly; modules load on first use.
This wing imports ``hyplex.optics`` and ``hyplex.simulation`` only.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "CaptureSettings": "encoder_capture",
    "CameraCapture": "encoder_capture",
    "SpectralEncoder": "encoder",
    "LibrarySelectionEncoder": "encoder",
    "SurrogateGeometryEncoder": "encoder",
    "UnconstrainedEncoder": "encoder",
    "FixedResponseEncoder": "encoder_baselines",
    "rgb_encoder": "encoder_baselines",
    "identity_encoder": "encoder_baselines",
    "pca_target_encoder": "encoder_baselines",
    "LinearDecoder": "reconstruction",
    "SpectralTransformer": "reconstruction",
    "build_reconstructor": "reconstruction",
    "UNet": "segmentation",
    "SpectralAttentionSegNet": "segmentation",
    "build_segmenter": "segmentation",
    "GatedLogitSmoother": "temporal",
    "psnr": "metrics",
    "ssim": "metrics",
    "sam": "metrics",
    "mrae": "metrics",
    "mean_iou": "label_metrics",
    "real_fake_accuracy": "label_metrics",
    "generate_scenes": "data",
    "CodesignConfig": "codesign_config",
    "quick_config": "codesign_config",
    "train_codesign": "codesign",
    "evaluate": "codesign",
    "save_bundle": "bundle",
    "load_bundle": "bundle",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

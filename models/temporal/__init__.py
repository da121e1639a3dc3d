"""hyplex.models.temporal: temporal consistency of video segmentation (drop-in modules).

=================  ===================================================================
module             method
=================  ===================================================================
gated_smoother     :class:`GatedLogitSmoother`: occlusion-aware exponential smoothing of
                   class log-probabilities (the baseline; ``hyplex segment --temporal gated``)
event_learning     :class:`TemporalEventModule`: temporal token merging by density-peak kNN
                   clustering plus contextual attention over the clip ("Temporal-contextual
                   Event Learning for Pedestrian Crossing Intent Prediction", ICONIP 2024;
                   ``hyplex segment --temporal tcl``)
module_files       a fitted module inside a design bundle (``temporal-<kind>.json`` +
                   safetensors, hash-checked, written atomically)
twin_fitting       fitting either module for a bundle on labelled twin video
                   (``hyplex temporal fit``)
=================  ===================================================================

Both take ``(logits (B, K, h, w), features (B, C, h, w), state)`` per frame and return
``(log_probabilities (B, K, h, w), state)``, so :func:`smooth_sequence`, :func:`fit_temporal`
and the video engine run either.
"""

from hyplex.models.temporal.event_learning import (
    EventMerge,
    TemporalEventModule,
    density_peak_merge,
)
from hyplex.models.temporal.gated_smoother import (
    GatedLogitSmoother,
    fit_temporal,
    fit_temporal_clips,
    label_flip_rate,
    mean_iou,
    smooth_sequence,
)

__all__ = [
    "TEMPORAL_MODULES",
    "EventMerge",
    "GatedLogitSmoother",
    "TemporalEventModule",
    "build_temporal",
    "density_peak_merge",
    "fit_temporal",
    "fit_temporal_clips",
    "label_flip_rate",
    "mean_iou",
    "smooth_sequence",
]

#: ``hyplex segment --temporal`` choices.
TEMPORAL_MODULES = ("none", "gated", "tcl")


def build_temporal(name: str, n_classes: int, in_channels: int = 9, **options):
    """The temporal module named ``name`` for ``n_classes`` logits and ``in_channels`` features.

    Parameters
    ----------
    name : str
        ``"none"`` (returns None), ``"gated"`` (:class:`GatedLogitSmoother`) or ``"tcl"``
        (:class:`TemporalEventModule`).
    n_classes, in_channels : int
        Channels of the segmenter's logits and of the frame features.
    **options
        Further constructor arguments of the module (e.g. ``window`` for TCL, ``hidden``
        for either; a fitted module's stored options, :mod:`.module_files`). None for
        ``"none"``.

    Returns
    -------
    torch.nn.Module or None
    """
    if name not in TEMPORAL_MODULES:
        raise ValueError(f"unknown temporal module {name!r}; expected one of {TEMPORAL_MODULES}")
    if name == "none":
        if options:
            raise ValueError(f"the 'none' temporal module takes no options, got {options}")
        return None
    if name == "gated":
        return GatedLogitSmoother(n_classes, **options)
    return TemporalEventModule(n_classes, in_channels, **options)

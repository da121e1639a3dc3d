"""A fitted temporal module inside a design bundle: JSON record + safetensors, written atomically.

A bundle directory (:mod:`hyplex.models.bundle`) may carry one fitted module per kind
(``gated``: :class:`~hyplex.models.temporal.GatedLogitSmoother`, ``tcl``:
:class:`~hyplex.models.temporal.TemporalEventModule`) beside its decoders::

    temporal-<kind>.json                        format "hyplex-temporal-module" v1: module
                                                kind, options (constructor arguments that
                                                set its structure), class_names, n_filters,
                                                the bundle segmenter's SHA-256 (its logits
                                                are what the module was fitted on), the
                                                tensors' file name and SHA-256, training
                                                settings, held-out metrics, creation time
    temporal-<kind>-<sha256[:16]>.safetensors   the module's state dict (float32)

Writing follows :mod:`hyplex.models.openset.head_files`: the tensors go to a content-named file
(atomic rename), then the JSON (atomic rename), then the previous tensors file is removed. A
crash leaves the old module or the new one, never a mix: the JSON names the exact tensors file
and its hash, checked on load. Reading never unpickles (safetensors), the options are checked
against the constructor's caps (:func:`hyplex.optics.untrusted.check_config_limits`) and the
tensors' names and shapes against a meta-device build of the same module before loading.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from torch import nn

from hyplex.models.bundle_records import read_hashed_tensors, read_record, write_hashed_record
from hyplex.models.temporal import build_temporal
from hyplex.models.temporal.event_learning import TemporalEventModule
from hyplex.models.temporal.gated_smoother import GatedLogitSmoother
from hyplex.optics.untrusted import check_config_limits, check_state_shapes

__all__ = [
    "TEMPORAL_FORMAT",
    "FITTED_KINDS",
    "TemporalModuleError",
    "has_temporal_module",
    "load_temporal_module",
    "module_options",
    "read_temporal_record",
    "save_temporal_module",
    "segmenter_sha256",
    "temporal_for_run",
    "temporal_record_path",
]

TEMPORAL_FORMAT = "hyplex-temporal-module"
TEMPORAL_VERSION = 1
#: The module kinds that carry fitted weights (``"none"`` has none).
FITTED_KINDS = ("gated", "tcl")
#: Constructor arguments stored per kind (the rest are learned parameters or class counts).
_OPTIONS = {
    "gated": {"hidden": int},
    "tcl": {
        "window": int,
        "n_events": int,
        "neighbours": int,
        "bandwidth": float,
        "mix": float,
        "hidden": int,
        "learn_projection": bool,
        "white_balance": bool,
    },
}


class TemporalModuleError(ValueError):
    """A missing, foreign, corrupt or mismatched fitted temporal module."""


def _check_kind(kind: str) -> str:
    if kind not in FITTED_KINDS:
        raise TemporalModuleError(
            f"temporal module kind must be one of {FITTED_KINDS} (fitted weights), got {kind!r}"
        )
    return kind


def temporal_record_path(bundle_path, kind: str) -> Path:
    """``<bundle>/temporal-<kind>.json``."""
    return Path(bundle_path) / f"temporal-{_check_kind(kind)}.json"


def has_temporal_module(bundle_path, kind: str) -> bool:
    """Whether the bundle directory holds a fitted module of ``kind`` (``"gated"``/``"tcl"``)."""
    return kind in FITTED_KINDS and temporal_record_path(bundle_path, kind).is_file()


def segmenter_sha256(segmenter: nn.Module) -> str:
    """SHA-256 (hex) of a segmenter's state dict: names, shapes, dtypes and float32 values in
    sorted name order. A fitted temporal module records it, because it was fitted on that
    segmenter's logits."""
    digest = hashlib.sha256()
    for name, tensor in sorted(segmenter.state_dict().items()):
        value = tensor.detach().to("cpu")
        value = value.float() if value.is_floating_point() else value
        digest.update(f"{name}:{tuple(value.shape)}:{value.dtype}".encode())
        digest.update(value.contiguous().numpy().tobytes())
    return digest.hexdigest()


def module_options(module: nn.Module) -> tuple[str, dict]:
    """``(kind, options)`` of a temporal module: the constructor arguments that
    :func:`load_temporal_module` needs to rebuild it (structure; learned values come from
    the tensors)."""
    hidden = int(module.refine[0].out_channels)
    if isinstance(module, TemporalEventModule):
        config = module.config
        options = {key: config[key] for key in _OPTIONS["tcl"] if key != "hidden"}
        return "tcl", {**options, "hidden": hidden}
    if isinstance(module, GatedLogitSmoother):
        return "gated", {"hidden": hidden}
    raise TemporalModuleError(
        f"expected a GatedLogitSmoother or a TemporalEventModule, got {type(module).__name__}"
    )


def save_temporal_module(
    bundle_path,
    module: nn.Module,
    class_names,
    n_filters: int,
    segmenter_hash: str,
    training: dict | None = None,
    metrics: dict | None = None,
) -> Path:
    """Write ``module`` as the bundle's fitted temporal module of its kind, replacing any old one.

    Parameters
    ----------
    bundle_path : the bundle directory (must exist).
    module : a (fitted) :class:`GatedLogitSmoother` or :class:`TemporalEventModule`.
    class_names : list of str, the segmenter's ``K`` classes (checked on load).
    n_filters : int, ``C``, channels of the barcodes the module reads (checked on load).
    segmenter_hash : :func:`segmenter_sha256` of the segmenter whose logits it was fitted on.
    training, metrics : JSON-able settings and figures to keep with it.

    Returns
    -------
    Path of ``temporal-<kind>.json``.
    """
    folder = Path(bundle_path)
    if not folder.is_dir():
        raise TemporalModuleError(f"{folder}: no such bundle directory")
    kind, options = module_options(module)
    if int(module.n_classes) != len(class_names):
        raise TemporalModuleError(
            f"the module has {module.n_classes} classes, class_names {len(class_names)}"
        )
    tensors = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in
               module.state_dict().items()}  # fmt: skip
    record = {
        "format": TEMPORAL_FORMAT,
        "format_version": TEMPORAL_VERSION,
        "module": kind,
        "options": options,
        "class_names": [str(c) for c in class_names],
        "n_filters": int(n_filters),
        "segmenter_sha256": str(segmenter_hash),
        "training": training or {},
        "metrics": metrics or {},
    }
    return write_hashed_record(
        temporal_record_path(folder, kind),
        f"temporal-{kind}",
        tensors,
        record,
        metadata={"format": TEMPORAL_FORMAT, "module": kind},
    )


def read_temporal_record(bundle_path, kind: str) -> dict:
    """The validated ``temporal-<kind>.json`` of a bundle (:class:`TemporalModuleError` if
    absent, foreign or malformed)."""
    folder = Path(bundle_path)
    path = temporal_record_path(folder, kind)
    kinds = {
        "module": str,
        "options": dict,
        "class_names": list,
        "n_filters": int,
        "segmenter_sha256": str,
    }
    record = read_record(
        path,
        record_format=TEMPORAL_FORMAT,
        version=TEMPORAL_VERSION,
        fields=kinds,
        error=TemporalModuleError,
        missing=(
            f"{folder} has no fitted {kind} temporal module; fit one with "
            f"'hyplex temporal fit --bundle {folder} --module {kind}'"
        ),
        what="a fitted temporal module",
    )
    if record["module"] != kind:
        raise TemporalModuleError(f"{path}: holds a {record['module']!r} module, not {kind!r}")
    allowed = _OPTIONS[kind]
    for key, value in record["options"].items():
        expected = allowed.get(key)
        ok = expected is not None and (
            isinstance(value, bool)
            if expected is bool
            else isinstance(value, int | float) and not isinstance(value, bool)
            if expected is float
            else isinstance(value, int) and not isinstance(value, bool)
        )
        if not ok:
            raise TemporalModuleError(
                f"{path}: option {key}={value!r} is not one of the {kind} module's "
                f"({', '.join(f'{k}: {v.__name__}' for k, v in allowed.items())})"
            )
    return record


def load_temporal_module(
    bundle_path,
    kind: str,
    class_names=None,
    n_filters: int | None = None,
    segmenter: nn.Module | None = None,
    device="cpu",
) -> tuple[nn.Module, dict]:
    """The bundle's fitted temporal module of ``kind`` and its record.

    Parameters
    ----------
    bundle_path : the bundle directory.
    kind : ``"gated"`` or ``"tcl"``.
    class_names : list of str or None
        The segmenter's classes; a module fitted for others is an error.
    n_filters : int or None
        Channels of the barcodes the engine feeds it; another count is an error.
    segmenter : torch.nn.Module or None
        The segmenter whose logits it will smooth; one other than the one it was fitted on
        (:func:`segmenter_sha256`) is an error.
    device : where the module goes.

    Returns
    -------
    (module in eval mode, record dict)

    Raises
    ------
    TemporalModuleError
        No such module; a corrupt or foreign file; tensors whose hash, names or shapes do not
        match; classes, filter count or segmenter other than the ones given.
    """
    folder = Path(bundle_path)
    record = read_temporal_record(folder, kind)
    where = temporal_record_path(folder, kind)
    if class_names is not None and [str(c) for c in class_names] != record["class_names"]:
        raise TemporalModuleError(
            f"{where} was fitted for classes {record['class_names']}, the segmenter has "
            f"{list(class_names)}: mismatched classes; refit it with 'hyplex temporal fit "
            f"--bundle {folder} --module {kind}'"
        )
    if n_filters is not None and int(n_filters) != record["n_filters"]:
        raise TemporalModuleError(
            f"{where} was fitted for {record['n_filters']} filters, the frames have "
            f"{n_filters}: mismatched channel counts"
        )
    if segmenter is not None and segmenter_sha256(segmenter) != record["segmenter_sha256"]:
        raise TemporalModuleError(
            f"{where} was fitted on the logits of another segmenter than the one in use (the "
            f"bundle's decoders changed since, or another --segmenter); refit it with "
            f"'hyplex temporal fit --bundle {folder} --module {kind}'"
        )
    tensors = read_hashed_tensors(folder, record, where.name, TemporalModuleError, "module")
    tensors_path = folder / record["tensors_file"]
    try:
        options = dict(record["options"])
        check_config_limits(options, str(where))
        n_classes = len(record["class_names"])
        with torch.device("meta"):
            skeleton = build_temporal(kind, n_classes, record["n_filters"], **options)
        check_state_shapes(skeleton.state_dict(), tensors, str(tensors_path))
        module = build_temporal(kind, n_classes, record["n_filters"], **options)
        module.load_state_dict({k: v.float() for k, v in tensors.items()})
    except (TypeError, ValueError, RuntimeError, KeyError) as error:
        raise TemporalModuleError(f"{where}: the fitted module does not load: {error}") from None
    for name, value in module.state_dict().items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise TemporalModuleError(f"{tensors_path}: {name} holds non-finite values")
    return module.to(device).eval(), record


def temporal_for_run(
    kind: str,
    n_classes: int,
    n_filters: int,
    bundle_path=None,
    class_names=None,
    segmenter: nn.Module | None = None,
    untrained_reason: str | None = None,
) -> tuple[nn.Module | None, dict | None]:
    """The temporal module a video run uses: the bundle's fitted one when it has one, else an
    untrained module with a warning.

    Parameters
    ----------
    kind : ``"none"``, ``"gated"`` or ``"tcl"``.
    n_classes, n_filters : int
        ``K`` channels of the segmenter's logits and ``C`` channels of the barcodes.
    bundle_path : the design bundle directory or None.
    class_names : the segmenter's classes (None: not checked).
    segmenter : the segmenter whose logits will be smoothed; checked against the one the module
        was fitted on (None: not checked, e.g. an open-set head's fine-tuned copy).
    untrained_reason : a reason not to use the bundle's fitted module (e.g. another
        ``--segmenter``); the module then runs untrained and the note says why.

    Returns
    -------
    (module or None, note or None)
        ``note``: ``{"module", "fitted", "message"}`` plus ``file`` and ``training`` for a
        fitted module; None when no module runs (``"none"``, or fewer than 2 classes).

    Raises
    ------
    TemporalModuleError
        The bundle's fitted module is corrupt, or was fitted for other classes, another
        filter count or another segmenter (see :func:`load_temporal_module`).
    """
    if kind == "none" or n_classes < 2:
        return None, None
    if kind not in FITTED_KINDS:
        raise TemporalModuleError(f"unknown temporal module {kind!r}; expected one of "
                                  f"{('none', *FITTED_KINDS)}")  # fmt: skip
    if (
        bundle_path is not None
        and untrained_reason is None
        and has_temporal_module(bundle_path, kind)
    ):
        module, record = load_temporal_module(bundle_path, kind, class_names, n_filters, segmenter)
        if module.n_classes != int(n_classes):
            raise TemporalModuleError(
                f"{temporal_record_path(bundle_path, kind)} was fitted for {module.n_classes} "
                f"classes, the segmenter gives {n_classes}: mismatched classes"
            )
        training = record.get("training", {})
        held = record.get("metrics", {})
        summary = ""
        if isinstance(held.get("untrained"), dict) and isinstance(held.get("fitted"), dict):
            summary = (
                f"; held-out twin clip: flip rate {held['untrained'].get('flip_rate')} -> "
                f"{held['fitted'].get('flip_rate')}, mIoU {held['untrained'].get('miou')} -> "
                f"{held['fitted'].get('miou')} untrained -> fitted"
            )
        path = temporal_record_path(bundle_path, kind)
        message = (
            f"temporal {kind}: fitted module {path} ({training.get('clips', '?')} twin clips, "
            f"{training.get('steps', '?')} steps, {record.get('created_utc', '?')}{summary})"
        )
        note = {"module": kind, "fitted": True, "file": str(path), "training": training,
                "message": message}  # fmt: skip
        return module, note
    if untrained_reason is not None:
        why = untrained_reason
    elif bundle_path is None:
        why = "no --bundle holds a fitted module"
    else:
        why = f"bundle {bundle_path} has no fitted {kind} module"
    fit = f"--bundle {bundle_path or 'B'} --module {kind}"
    message = (
        f"WARNING: temporal {kind} runs UNTRAINED (its hand-set gate; the learned part is "
        f"zero): {why}. Fit one with 'hyplex temporal fit {fit}'."
    )
    module = build_temporal(kind, int(n_classes), int(n_filters)).eval()
    return module, {"module": kind, "fitted": False, "message": message}

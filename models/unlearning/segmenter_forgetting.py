"""Forgetting in hyplex's segmenters: a class or a set of training scenes, and the retrain.

A bundle's segmenter reads barcodes ``(B, F, H, W)`` (the encoder's output) and gives logits
``(B, K, H, W)``. Its training scenes are the twin's (:func:`hyplex.models.data.
generate_scenes`: scene ``k`` of a set is drawn from ``default_rng([seed, k])``), so they can
be rebuilt exactly from the bundle's config and named ``scene-0000``, ``scene-0001``, ...
(:func:`scene_ids`; a bundle records them in ``bundle.json["training_scenes"]``).

Two requests:

* **class** ``c``: the forget elements are the pixels labelled ``c`` (in every scene); the
  retain elements the rest. The retrained gold standard never sees ``c`` as a target (its
  pixels are ignored), so it cannot name ``c``.
* **scenes** ``S_u``: the forget elements are every pixel of the scenes ``S_u``; the retain
  data are the other training scenes; the gold standard is trained on those alone.

:func:`retrain_segmenter` is that gold standard: the same architecture, freshly initialised
from ``seed``, trained on the retain data only with the toolkit's Adam.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from hyplex.models.unlearning.toolkit import IGNORE_INDEX, Adam, Batch, progress_bar

__all__ = [
    "SceneBarcodes",
    "scene_ids",
    "encode_scenes",
    "class_request",
    "scene_request",
    "ForgetRequest",
    "retrain_segmenter",
    "heldout_batches",
    "evaluate_segmenter",
    "scene_index",
    "training_and_heldout",
]


def scene_ids(count: int) -> list[str]:
    """Names of the ``count`` training scenes: ``scene-0000`` ... (index ``k`` = the scene
    drawn from ``default_rng([seed, k])``)."""
    return [f"scene-{k:04d}" for k in range(int(count))]


def scene_index(name: str) -> int:
    """``"scene-0007" -> 7``; anything else is a ValueError."""
    prefix, _, number = str(name).partition("-")
    if prefix != "scene" or not number.isdigit():
        raise ValueError(f"scene ids look like 'scene-0007'; got {name!r}")
    return int(number)


def training_and_heldout(wavelengths_nm, ids, forgotten=(), heldout_count: int = 8, seed=0,
                         **options):  # fmt: skip
    """The training scenes named ``ids`` and ``heldout_count`` scenes never trained on, both
    from the *same* generator run (seed ``seed``, one spectral library): scene ``k`` is the
    set's ``k``-th scene, and the held-out ones follow the highest index ever used (``ids``
    and ``forgotten``). A held-out set of another seed draws another spectral library, which
    a membership-inference attack would detect instead of membership (every model, even one
    retrained without the scenes, scored AUC 0.94 in the benchmark before this split).

    Returns
    -------
    (training SceneSet in the order of ``ids``, held-out SceneSet)
    """
    from hyplex.models.data import SceneSet, generate_scenes

    indices = [scene_index(i) for i in ids]
    used = max(indices + [scene_index(i) for i in forgotten]) + 1
    pool = generate_scenes(wavelengths_nm, used + int(heldout_count), seed, **options)

    def subset(rows):
        rows = np.asarray(rows)
        return SceneSet(pool.wavelengths_nm, pool.cubes[rows], pool.class_maps[rows],
                        pool.fake_maps[rows], pool.class_names)  # fmt: skip

    return subset(indices), subset(np.arange(used, used + int(heldout_count)))


@dataclass
class SceneBarcodes:
    """Encoded scenes: ``barcodes (S, F, H, W)`` float32, ``labels (S, H, W)`` int64 class
    ids, ``ids`` the ``S`` scene names."""

    barcodes: torch.Tensor
    labels: torch.Tensor
    ids: list[str]

    def __post_init__(self):
        if self.barcodes.ndim != 4 or tuple(self.labels.shape) != (
            self.barcodes.shape[0],
            *self.barcodes.shape[2:],
        ):
            raise ValueError(
                f"barcodes must be (S, F, H, W) and labels (S, H, W); got "
                f"{tuple(self.barcodes.shape)} and {tuple(self.labels.shape)}"
            )
        if len(self.ids) != self.barcodes.shape[0]:
            raise ValueError(f"{len(self.ids)} ids for {self.barcodes.shape[0]} scenes")


def encode_scenes(encoder, scenes, seed: int = 0, ids=None, batch_size: int = 4) -> SceneBarcodes:
    """Barcodes of a :class:`~hyplex.models.data.SceneSet` through ``encoder`` (``cube (B, L,
    H, W) -> (B, F, H, W)``, e.g. ``bundle.encoder()``), sensor noise drawn from ``seed``."""
    cubes, labels, _ = scenes.tensors()
    generator = torch.Generator().manual_seed(int(seed))
    codes = []
    with torch.no_grad():
        for start in range(0, len(cubes), batch_size):
            codes.append(encoder(cubes[start : start + batch_size], generator=generator).float())
    ids = scene_ids(len(cubes)) if ids is None else list(ids)
    return SceneBarcodes(torch.cat(codes), labels.long(), ids)


@dataclass
class ForgetRequest:
    """What to forget, as batches for :func:`~hyplex.models.unlearning.toolkit.unlearn`.

    ``forget``/``retain`` hold :class:`~hyplex.models.unlearning.toolkit.Batch` es with
    masks; ``retrain_data`` is what the gold standard trains on (targets of the forgotten
    class set to ``IGNORE_INDEX``); ``kind`` is ``"class"`` or ``"scenes"``."""

    kind: str
    forget: list
    retain: list
    retrain_data: list
    forgotten_class: int | None = None
    forgotten_scenes: tuple = ()


def _batches(barcodes, labels, mask, batch_size):
    out = []
    for start in range(0, len(barcodes), batch_size):
        part = slice(start, start + batch_size)
        m = None if mask is None else mask[part]
        if m is not None and not bool(m.any()):
            continue
        out.append(Batch(barcodes[part], labels[part], m))
    return out


def class_request(data: SceneBarcodes, class_id: int, batch_size: int = 4) -> ForgetRequest:
    """Forget class ``class_id`` (its pixels in every scene)."""
    if not bool((data.labels == class_id).any()):
        raise ValueError(f"class {class_id} labels no pixel of the training scenes")
    forget_mask = data.labels == class_id
    ignored = torch.where(forget_mask, torch.full_like(data.labels, IGNORE_INDEX), data.labels)
    return ForgetRequest(
        kind="class",
        forget=_batches(data.barcodes, data.labels, forget_mask, batch_size),
        retain=_batches(data.barcodes, data.labels, ~forget_mask, batch_size),
        retrain_data=_batches(data.barcodes, ignored, None, batch_size),
        forgotten_class=int(class_id),
    )


def scene_request(data: SceneBarcodes, names, batch_size: int = 4) -> ForgetRequest:
    """Forget the scenes named in ``names`` (whole scenes). Names not among ``data.ids`` are
    a ValueError naming them and the valid ones."""
    names = list(dict.fromkeys(names))
    unknown = [n for n in names if n not in data.ids]
    if unknown:
        raise ValueError(
            f"not training scenes of this bundle: {', '.join(unknown)} (it was trained on "
            f"{data.ids[0]} ... {data.ids[-1]})"
        )
    chosen = torch.tensor([i in names for i in data.ids])
    if bool(chosen.all()):
        raise ValueError("forgetting every training scene leaves nothing to retain")
    keep = ~chosen
    return ForgetRequest(
        kind="scenes",
        forget=_batches(data.barcodes[chosen], data.labels[chosen], None, batch_size),
        retain=_batches(data.barcodes[keep], data.labels[keep], None, batch_size),
        retrain_data=_batches(data.barcodes[keep], data.labels[keep], None, batch_size),
        forgotten_scenes=tuple(names),
    )


def retrain_segmenter(
    build, data: list, steps: int, lr: float = 3e-3, seed: int = 0, progress: bool = False
):
    """The gold standard: ``build()`` (a fresh segmenter, initialised under ``seed``) trained
    on ``data`` (batches) for ``steps`` Adam steps of cross-entropy (``IGNORE_INDEX`` targets
    skipped). Returns ``(model in eval mode, seconds)``."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1; got {steps!r}")
    start = time.perf_counter()
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(int(seed))
        model: nn.Module = build()
        model.train()
        optimizer = Adam([p for p in model.parameters() if p.requires_grad], lr)
        order = np.random.default_rng(seed)
        bar = progress_bar(steps, "retrain", progress)
        device = next(model.parameters()).device
        for _ in range(steps):
            batch = data[int(order.integers(len(data)))]
            logits = model(batch.inputs.to(device))
            loss = nn.functional.cross_entropy(
                logits, batch.targets.to(device), ignore_index=IGNORE_INDEX
            )
            optimizer.step(loss)
            bar.update(1)
        bar.close()
    finally:
        torch.random.set_rng_state(state)
    return model.eval(), time.perf_counter() - start


def heldout_batches(data: SceneBarcodes, forgotten_class=None, batch_size: int = 4) -> list:
    """Held-out batches; with ``forgotten_class`` its pixels are masked out (they have no
    right answer once the class is forgotten)."""
    mask = None if forgotten_class is None else data.labels != forgotten_class
    return _batches(data.barcodes, data.labels, mask, batch_size)


def _tiles(batches, tile: int) -> list:
    """One single-scene batch per ``tile x tile`` tile of every scene, masked to the tile
    (and to the batch's own mask); tiles with no counted pixel are left out."""
    out = []
    for batch in batches:
        for i in range(len(batch.targets)):
            labels = batch.targets[i : i + 1]
            base = torch.ones_like(labels, dtype=torch.bool)
            if batch.mask is not None:
                base = batch.mask[i : i + 1].bool()
            height, width = labels.shape[-2:]
            for top in range(0, height, tile):
                for left in range(0, width, tile):
                    mask = torch.zeros_like(base)
                    mask[..., top : top + tile, left : left + tile] = True
                    mask &= base
                    if bool(mask.any()):
                        out.append(Batch(batch.inputs[i : i + 1], labels, mask))
    return out


def evaluate_segmenter(model, request: ForgetRequest, heldout: SceneBarcodes, n_classes: int,
                       retrained=None, tile: int = 8) -> dict:  # fmt: skip
    """The shared evaluation (:mod:`.evaluation`) of one segmenter for one request.

    Returns
    -------
    dict of floats: ``forget_accuracy`` (share of the forget pixels still given their label),
    ``mia_auc`` (LOSS attack on ``tile x tile`` pixel tiles, forget scenes vs held-out
    scenes; 0.5 = chance; None when the held-out scenes have no pixel of the forgotten class),
    ``retain_miou`` (held-out scenes, the forgotten class excluded) and, with ``retrained``,
    ``kl_to_retrain`` (mean KL(retrained || model) over held-out pixels, nats).
    """
    from hyplex.models.unlearning.evaluation import (
        element_accuracy,
        mean_iou,
        mia_auc,
        output_kl,
    )

    c = request.forgotten_class
    kept = heldout_batches(heldout, c)
    # non-members of the attack: held-out scenes (their pixels of the class, in the class
    # case); every scene is scored per tile of tile x tile pixels (the model sees the whole
    # scene): 2 forget scenes against 10 held-out ones gave 20 pairs and an AUC spread of 0.3
    same_kind = None if c is None else heldout.labels == c
    single = _tiles(_batches(heldout.barcodes, heldout.labels, same_kind, 1), tile)
    members = _tiles(request.forget, tile)
    classes = [k for k in range(n_classes) if k != c]
    result = {
        "forget_accuracy": element_accuracy(model, request.forget),
        # None when the held-out scenes hold no pixel of a forgotten class (nothing to compare)
        "mia_auc": mia_auc(model, members, single) if members and single else None,
        "retain_miou": mean_iou(model, kept, n_classes, classes),
    }
    if retrained is not None:
        result["kl_to_retrain"] = output_kl(retrained, model, heldout_batches(heldout))
    return result

"""``hyplex forget``: a new bundle whose segmenter has forgotten a class or training scenes.

::

    hyplex forget --bundle B (--scenes scene-0003,scene-0007 | --class paint) --method WGA --out B2

The bundle's training scenes are rebuilt from its record (``bundle.json["training_scenes"]``:
generator, seed, ids; older bundles: ``config.json``'s seed and scene count) and encoded with
its own encoder. The segmenter is unlearned with the chosen method of
:mod:`hyplex.models.unlearning` (``--steps``, ``--lr``); unless ``--no-retrain``, the gold
standard, the same segmenter retrained from scratch on the retain data, is trained too and
timed. ``B2`` is written atomically (a staging folder renamed into place) and holds:

* the original files, with ``decoders.safetensors``'s ``segmenter.*`` replaced (the
  reconstructor is kept: it is a regression net and is not unlearned here), ``bundle.json``
  with an ``unlearning`` record and the ``training_scenes`` ids less the forgotten ones;
* ``unlearning.json`` and ``unlearning.png``: forget accuracy, MIA AUC (LOSS attack,
  forget vs held-out scenes), retain mIoU on held-out scenes, KL to the retrained model,
  seconds of unlearning and of retraining, for the original, unlearned and retrained models.

An open-set head of ``B`` is *not* copied (it was fitted to, and may hold a copy of, the old
segmenter): refit it with ``hyplex openset fit --bundle B2``. The input bundle is never written:
``--out`` must be a new path outside it. Refused: an unknown class (or ``background``), a
scene list naming no training scene of the bundle, an unknown method.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Annotated

import typer

__all__ = ["register", "forget_command"]

BACKGROUND = "background"


def register(app: typer.Typer) -> None:
    """Add ``forget`` to ``app``."""
    app.command("forget")(forget_command)


def _bad(message: str, hint: str):
    return typer.BadParameter(message, param_hint=hint)


def _training_ids(bundle_path: Path, config: dict) -> tuple[list[str], int, str, list[str]]:
    """``(ids, seed, source, forgotten ids)`` of the bundle's training scenes."""
    from hyplex.models.unlearning.segmenter_forgetting import scene_ids

    record = json.loads((bundle_path / "bundle.json").read_text())
    manifest = record.get("training_scenes")
    if isinstance(manifest, dict) and isinstance(manifest.get("ids"), list):
        seed = int(manifest.get("seed", config["seed"]))
        forgotten = [str(i) for i in manifest.get("forgotten", [])]
        return [str(i) for i in manifest["ids"]], seed, "bundle.json training_scenes", forgotten
    return scene_ids(int(config["n_train_scenes"])), int(config["seed"]), "config.json", []


def _check_out(bundle: Path, out: Path) -> None:
    source, target = bundle.resolve(), out.resolve()
    if target == source or source in target.parents:
        raise _bad(f"{out} is the input bundle or inside it; the input is never written", "--out")
    if out.exists():
        raise _bad(f"{out} exists; forget writes a new bundle (choose another --out)", "--out")


def forget_command(
    bundle: Annotated[Path, typer.Option("--bundle", help="Design bundle directory (read only).")],
    out: Annotated[Path, typer.Option("--out", help="The new bundle (must not exist).")],
    scenes: Annotated[
        str | None,
        typer.Option("--scenes", help="Comma-separated training scene ids (scene-0003,...)."),
    ] = None,
    class_name: Annotated[
        str | None, typer.Option("--class", help="Class name to forget (one of the bundle's).")
    ] = None,
    method: Annotated[
        str,
        typer.Option(
            help="Unlearning method: GA, GD, NPO, WGA, TNPO, WTNPO, GRU, SatImp, MOX, EUA, BS."
        ),
    ] = ("WGA"),
    steps: Annotated[int, typer.Option(min=1, help="Unlearning steps.")] = 60,
    lr: Annotated[float, typer.Option(min=1e-8, help="Adam learning rate.")] = 1e-3,
    retrain: Annotated[
        bool, typer.Option(help="Also retrain from scratch (the gold standard) and time it.")
    ] = True,
    retrain_steps: Annotated[
        int | None, typer.Option(min=1, help="Retrain steps (default: the bundle's steps).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of noise, retrain initialisation, order.")] = 0,
    progress: Annotated[bool, typer.Option(help="Progress bars.")] = True,
) -> None:
    """Forget a class or training scenes from a bundle's segmenter into a new bundle."""
    from hyplex.models.bundle import BundleError, load_bundle
    from hyplex.models.unlearning import METHODS

    if (scenes is None) == (class_name is None):
        raise _bad("give exactly one of --scenes and --class", "--scenes/--class")
    if method not in METHODS:
        raise _bad(f"unknown method {method!r}; expected one of {sorted(METHODS)}", "--method")
    _check_out(bundle, out)
    try:
        loaded = load_bundle(bundle)
    except BundleError as error:
        raise _bad(str(error), "--bundle") from None
    config = loaded.config
    ids, scene_seed, source, forgotten = _training_ids(bundle, config)
    names = loaded.class_names
    if class_name is not None:
        if class_name not in names or class_name == BACKGROUND:
            valid = [n for n in names if n != BACKGROUND]
            raise _bad(
                f"unknown class {class_name!r}; this bundle's classes are {valid}", "--class"
            )
    else:
        asked = [s.strip() for s in scenes.split(",") if s.strip()]
        unknown = [s for s in asked if s not in ids]
        if not asked or unknown:
            raise _bad(
                f"{', '.join(unknown) or 'an empty list'}: not training scenes of this bundle "
                f"(it was trained on {len(ids)} scenes, {ids[0]} ... {ids[-1]}, per {source})",
                "--scenes",
            )
        if len(set(asked)) == len(ids):
            raise _bad("forgetting every training scene leaves nothing to retain", "--scenes")
    report = _run(loaded, config, ids, forgotten, scene_seed, source, class_name, scenes,
                  method, steps, lr, retrain, retrain_steps, seed, progress)  # fmt: skip
    _write(bundle, out, loaded, report)
    typer.echo(json.dumps({k: report[k] for k in ("request", "method", "models")}, indent=1))
    typer.echo(f"wrote {out} (unlearning.json, unlearning.png); {bundle} unchanged")


def _run(loaded, config, ids, forgotten, scene_seed, source, class_name, scenes, method, steps,
         lr, retrain, retrain_steps, seed, progress) -> dict:  # fmt: skip
    from hyplex.models.codesign import scene_options
    from hyplex.models.codesign_config import CodesignConfig
    from hyplex.models.segmentation import build_segmenter
    from hyplex.models.unlearning import unlearn
    from hyplex.models.unlearning.segmenter_forgetting import (
        class_request,
        encode_scenes,
        evaluate_segmenter,
        retrain_segmenter,
        scene_request,
        training_and_heldout,
    )

    codesign = CodesignConfig.from_dict(config)
    options = scene_options(codesign)
    grid = loaded.wavelengths_nm
    encoder = loaded.encoder()
    # held-out = never-trained scenes of the same generator run (the same spectral library)
    train, heldout = training_and_heldout(grid, ids, forgotten, max(2, codesign.n_val_scenes),
                                          scene_seed, **options)  # fmt: skip
    data = encode_scenes(encoder, train, seed=seed, ids=ids)
    heldout_codes = encode_scenes(encoder, heldout, seed=seed + 1)
    if class_name is not None:
        request = class_request(data, loaded.class_names.index(class_name))
    else:
        request = scene_request(data, [s.strip() for s in scenes.split(",") if s.strip()])
    start = time.perf_counter()
    unlearned = unlearn(loaded.segmenter, request.forget, request.retain, method, steps, lr=lr,
                        seed=seed, progress=progress)  # fmt: skip
    unlearn_seconds = time.perf_counter() - start
    retrained, retrain_seconds = None, None
    if retrain:
        spec = json.loads((loaded.path / "bundle.json").read_text())["segmenter"]
        count = retrain_steps or int(codesign.steps + codesign.finetune_steps)
        retrained, retrain_seconds = retrain_segmenter(
            lambda: build_segmenter(spec["name"], **spec["config"]),
            request.retrain_data, count, seed=seed, progress=progress,
        )  # fmt: skip
    n_classes = len(loaded.class_names)
    models = {"original": loaded.segmenter, "unlearned": unlearned}
    if retrained is not None:
        models["retrained"] = retrained
    figures = {
        name: evaluate_segmenter(model, request, heldout_codes, n_classes, retrained)
        for name, model in models.items()
    }
    figures["unlearned"]["seconds"] = unlearn_seconds
    if retrained is not None:
        figures["retrained"]["seconds"] = retrain_seconds
    return {
        "format": "hyplex-unlearning-report",
        "request": {
            "kind": request.kind,
            "class": class_name,
            "scenes": list(request.forgotten_scenes),
            "training_scenes_from": source,
        },
        "method": {"name": method, "steps": steps, "lr": lr, "seed": seed},
        "models": figures,
        "speedup_vs_retrain": None
        if retrain_seconds is None
        else float(retrain_seconds / max(unlearn_seconds, 1e-9)),
        "notes": [
            "the reconstructor is kept as it was (a regression net; not unlearned)",
            "MIA: LOSS attack, per-scene mean log-likelihood, forget vs held-out scenes",
            "an open-set head of the input bundle is not carried over; refit it",
        ],
        "segmenter": unlearned,
    }


def _write(bundle: Path, out: Path, loaded, report: dict) -> None:
    from safetensors.torch import load_file, save_file

    from hyplex.models.bundle import FORMAT
    from hyplex.optics.atomic_io import atomic_directory

    segmenter = report.pop("segmenter")
    skip = {"openset.json", "unlearning.json", "unlearning.png"}
    with atomic_directory(out) as staging:
        for item in bundle.iterdir():
            if item.name in skip or item.name.startswith("openset-") or not item.is_file():
                continue
            shutil.copy2(item, staging / item.name)
        tensors = load_file(bundle / "decoders.safetensors", device="cpu")
        tensors = {k: v for k, v in tensors.items() if not k.startswith("segmenter.")}
        for name, value in segmenter.state_dict().items():
            tensors[f"segmenter.{name}"] = value.detach().cpu().contiguous()
        save_file(tensors, staging / "decoders.safetensors", metadata={"format": FORMAT})
        record = json.loads((bundle / "bundle.json").read_text())
        scenes = record.get("training_scenes")
        forgotten = report["request"]["scenes"]
        if isinstance(scenes, dict) and forgotten:
            scenes["ids"] = [i for i in scenes.get("ids", []) if i not in forgotten]
            scenes["forgotten"] = sorted(set(scenes.get("forgotten", [])) | set(forgotten))
        history = record.setdefault("unlearning", [])
        history.append({k: report[k] for k in ("request", "method", "models")})
        (staging / "bundle.json").write_text(json.dumps(record, indent=1))
        (staging / "unlearning.json").write_text(json.dumps(report, indent=1))
        _figure(staging / "unlearning.png", report)


def _figure(path: Path, report: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = report["models"]
    metrics = [m for m in ("forget_accuracy", "mia_auc", "retain_miou") if m in models["original"]]
    figure, axes = plt.subplots(1, len(metrics) + 1, figsize=(3.2 * (len(metrics) + 1), 3.2))
    for axis, metric in zip(axes, metrics, strict=False):
        values = [models[m][metric] or 0.0 for m in models]  # a None MIA is drawn as 0
        axis.bar(list(models), values, color=["0.6", "C0", "C2"][: len(models)])
        axis.set_title(metric)
        axis.set_ylim(0, 1)
    seconds = {m: models[m].get("seconds") for m in models if models[m].get("seconds")}
    axes[-1].bar(list(seconds), list(seconds.values()), color=["C0", "C2"][: len(seconds)])
    axes[-1].set_title("seconds")
    request = report["request"]
    what = request["class"] or ", ".join(request["scenes"])
    figure.suptitle(f"hyplex forget {request['kind']} {what} with {report['method']['name']}")
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    plt.close(figure)

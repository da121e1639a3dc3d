"""Benchmark: unlearning in hyplex's segmenter (issue 17) against retraining from scratch,
plus the tiny-GPT and alignment blocks of engineer B's modules.

Setting (one per seed; every method starts from the same trained segmenter)::

    encoder     9 Gaussian band-pass filters (40 nm standard deviation, centres 420-980 nm)
                on a 31-band 400-1000 nm grid, the EMVA 1288 camera noise of the co-design
                capture model (the stand-in for a co-designed encoder, as in
                benchmarks/openset.py)
    scenes      twin scenes (hyplex.models.data.generate_scenes), classes vegetation, soil,
                paint, metal and fake vegetation; training scenes seed s, held-out seed s + 1
    segmenter   U-Net (hyplex.models.segmentation.UNet, base 8, depth 2) trained from scratch
                with Adam for `train_steps` steps: the original
    class case  forget "paint": forget elements = its pixels; the gold standard is retrained
                with those pixels ignored
    scene case  forget 10 % of the training scenes; the gold standard is retrained on the rest

Per method (means and standard deviations over seeds; every figure from the one shared
evaluator, hyplex.models.unlearning.evaluation):

* ``forget``: class case, the share of forget pixels still labelled "paint"; scene case, the
  AUC of the LOSS membership-inference attack, forget scenes vs held-out scenes (0.5 = chance);
* ``retain_miou``: held-out mIoU over the other classes (the forgotten class's pixels masked);
* ``kl_to_retrain``: mean KL(retrained || model) over held-out pixels (nats);
* ``seconds``: wall time of the unlearning (the retrain's in ``retrain_seconds``).

``goals_met`` per case: the best method (the one closest to the retrained forget metric among
those within 2 mIoU points of the original) keeps retain mIoU within 2 points of the original,
brings the forget metric within 5 points of the retrained model's, and is >= 10x faster.

Reproduce (last stdout line: one JSON object; progress on stderr)::

    .venv/bin/python benchmarks/unlearning.py --quick            # 3 seeds, small scenes
    .venv/bin/python benchmarks/unlearning.py                    # 3 seeds, more scenes/steps
    .venv/bin/python benchmarks/unlearning.py --quick --out benchmarks/results/unlearning_quick.json
    .venv/bin/python benchmarks/unlearning.py --smoke --seeds 1  # the machinery only
    .venv/bin/python benchmarks/unlearning.py --quick --only federated,concept   # items 8, 9

Timings depend on the machine's load; the team's 2 cores are shared (say so when quoting).
"""
# ruff: noqa: E402  (thread settings must precede the imports that read them)

from __future__ import annotations

import os

for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

GRID_NM = np.linspace(400.0, 1000.0, 31)
FORGET_CLASS = "paint"
CLASSES = ("vegetation", "soil", "paint", "metal")
#: per method: unlearning options (lr, steps factor, method options); one setting for all cases
#: (from one seed-0 quick run at 1e-3..2e-3: GA, GD, BS, TNPO, MOX and EUA fell to a retain
#: mIoU <= 0.18 of the original's 0.43, so they get smaller steps; none is tuned per case)
METHOD_SETTINGS = {
    "GA": {"lr": 3e-4},
    "GD": {"lr": 3e-4},
    "NPO": {"lr": 1e-3},
    "WGA": {"lr": 2e-3},
    "TNPO": {"lr": 5e-4},
    "WTNPO": {"lr": 2e-3},
    "GRU": {"lr": 2e-3},
    "SatImp": {"lr": 2e-3},
    "MOX": {"lr": 5e-4},
    "EUA": {"lr": 5e-4},
    "BS": {"lr": 3e-4},
}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def settings(quick: bool, smoke: bool) -> dict:
    if smoke:
        return {"train": 6, "heldout": 3, "size": 24, "train_steps": 20, "unlearn_steps": 3}
    if quick:
        return {"train": 20, "heldout": 10, "size": 32, "train_steps": 500, "unlearn_steps": 15}
    return {"train": 40, "heldout": 20, "size": 48, "train_steps": 1000, "unlearn_steps": 30}


def build_segmenter(n_classes: int):
    from hyplex.models.segmentation import build_segmenter as build

    return build("unet", in_channels=9, n_classes=n_classes, base_channels=8, depth=2)


def run_case(request, original, heldout, n_classes, config, seed, retrain_data) -> dict:
    from hyplex.models.unlearning import METHODS, unlearn
    from hyplex.models.unlearning.segmenter_forgetting import (
        evaluate_segmenter,
        retrain_segmenter,
    )

    builder = lambda: build_segmenter(n_classes)  # noqa: E731
    retrained, retrain_seconds = retrain_segmenter(
        builder, retrain_data, config["train_steps"], seed=seed
    )
    key = "forget_accuracy" if request.kind == "class" else "mia_auc"
    rows = {}

    def row(model, seconds):
        figures = evaluate_segmenter(model, request, heldout, n_classes, retrained)
        return {
            "forget": figures[key],
            "retain_miou": figures["retain_miou"],
            "kl_to_retrain": figures["kl_to_retrain"],
            "seconds": seconds,
        }

    rows["original"] = row(original, 0.0)
    rows["retrain"] = row(retrained, retrain_seconds)
    for name in METHODS:
        options = dict(METHOD_SETTINGS.get(name, {}))
        lr = options.pop("lr", 1e-3)
        start = time.perf_counter()
        model = unlearn(original, request.forget, request.retain, name,
                        config["unlearn_steps"], lr=lr, seed=seed, **options)  # fmt: skip
        rows[name] = row(model, time.perf_counter() - start)
        log(f"  seed {seed} {request.kind:6s} {name:7s} " + json.dumps(rows[name], default=float))
    return {"rows": rows, "retrain_seconds": retrain_seconds}


def run_seed(seed: int, config: dict, encoder) -> dict:
    from hyplex.models.unlearning.segmenter_forgetting import (
        class_request,
        encode_scenes,
        retrain_segmenter,
        scene_ids,
        scene_request,
        training_and_heldout,
    )

    shape = (config["size"], config["size"])
    # held-out scenes from the same generator run (one spectral library; see
    # training_and_heldout): the MIA must compare members with their own distribution
    train, held = training_and_heldout(
        GRID_NM, scene_ids(config["train"]), (), config["heldout"], seed, shape=shape,
        classes=CLASSES,
    )  # fmt: skip
    data = encode_scenes(encoder, train, seed=seed)
    heldout = encode_scenes(encoder, held, seed=seed + 1)
    n_classes = train.n_classes
    from hyplex.models.unlearning.segmenter_forgetting import heldout_batches

    everything = heldout_batches(data)
    original, original_seconds = retrain_segmenter(
        lambda: build_segmenter(n_classes), everything, config["train_steps"], seed=seed + 7
    )
    log(f"seed {seed}: original trained in {original_seconds:.1f} s")
    cases = {}
    by_class = class_request(data, train.class_names.index(FORGET_CLASS))
    cases["class"] = run_case(
        by_class, original, heldout, n_classes, config, seed, by_class.retrain_data
    )
    rng = np.random.default_rng(seed)
    count = max(1, round(0.1 * len(data.ids)))
    names = sorted(rng.choice(data.ids, size=count, replace=False).tolist())
    by_scene = scene_request(data, names)
    cases["scenes"] = run_case(
        by_scene, original, heldout, n_classes, config, seed, by_scene.retrain_data
    )
    return cases


def summarise(runs: list[dict]) -> dict:
    out = {}
    for case in ("class", "scenes"):
        methods = runs[0][case]["rows"].keys()
        table = {}
        for method in methods:
            values = {
                k: [r[case]["rows"][method][k] for r in runs]
                for k in ("forget", "retain_miou", "kl_to_retrain", "seconds")
            }
            table[method] = {k: float(np.mean(v)) for k, v in values.items()}
            table[method].update({f"{k}_std": float(np.std(v)) for k, v in values.items()})
        out[case] = {
            "methods": table,
            "retrain_seconds": float(np.mean([r[case]["retrain_seconds"] for r in runs])),
        }
    return out


def goals(case: dict) -> dict:
    """The issue's goals for one case, judged on the best method (see the docstring)."""
    table = case["methods"]
    original, retrain = table["original"], table["retrain"]
    candidates = [m for m in table if m not in ("original", "retrain")]
    keeping = [m for m in candidates if table[m]["retain_miou"] >= original["retain_miou"] - 0.02]
    pool = keeping or candidates
    best = min(pool, key=lambda m: abs(table[m]["forget"] - retrain["forget"]))
    row = table[best]
    speedup = case["retrain_seconds"] / max(row["seconds"], 1e-9)
    checks = {
        "retain_within_2_points": row["retain_miou"] >= original["retain_miou"] - 0.02,
        "forget_within_5_points_of_retrain": abs(row["forget"] - retrain["forget"]) <= 0.05,
        "at_least_10x_faster": speedup >= 10.0,
    }
    return {"best": best, "speedup": float(speedup), **checks, "all": all(checks.values())}


def federated_block(config: dict, seeds: int, encoder) -> dict:
    """Four simulated labs (clients) with a quarter of the training scenes each; FedAvg; lab
    3 withdraws: projected ascent + recovery (hyplex.models.unlearning.federated) against
    federated retraining without it. Forget metric: tile MIA AUC of lab 3's scenes."""
    from hyplex.models.unlearning.federated import (
        federated_retrain,
        federated_train,
        remove_client,
    )
    from hyplex.models.unlearning.segmenter_forgetting import (
        encode_scenes,
        evaluate_segmenter,
        scene_ids,
        scene_request,
        training_and_heldout,
    )

    rounds, local = (12, 25) if config["train_steps"] >= 500 else (2, 5)
    rows = []
    for seed in range(seeds):
        shape = (config["size"], config["size"])
        train, held = training_and_heldout(GRID_NM, scene_ids(config["train"]), (),
                                           config["heldout"], seed, shape=shape,
                                           classes=CLASSES)  # fmt: skip
        data = encode_scenes(encoder, train, seed=seed)
        heldout = encode_scenes(encoder, held, seed=seed + 1)
        n_classes = train.n_classes
        labs = np.array_split(np.arange(len(data.ids)), 4)
        clients = [scene_request(data, [data.ids[i] for i in lab]).forget for lab in labs]
        removed_names = [data.ids[i] for i in labs[3]]
        request = scene_request(data, removed_names)
        build = lambda k=n_classes: build_segmenter(k)  # noqa: E731
        model, train_seconds = federated_train(build, clients, rounds, local, seed=seed)
        unlearned, seconds = remove_client(model, clients, 3, steps=config["unlearn_steps"],
                                           lr=1e-3, recovery_rounds=1, local_steps=local // 2,
                                           seed=seed)  # fmt: skip
        retrained, retrain_seconds = federated_retrain(build, clients, 3, rounds, local,
                                                       seed=seed)  # fmt: skip
        row = {}
        for name, m, t in (("federated", model, train_seconds), ("removed", unlearned, seconds),
                           ("retrained", retrained, retrain_seconds)):  # fmt: skip
            figures = evaluate_segmenter(m, request, heldout, n_classes, retrained)
            row[name] = {"forget": figures["mia_auc"], "retain_miou": figures["retain_miou"],
                         "kl_to_retrain": figures["kl_to_retrain"], "seconds": t}  # fmt: skip
        log(f"  seed {seed} federated " + json.dumps(row, default=float))
        rows.append(row)
    return {
        name: {k: float(np.mean([r[name][k] for r in rows])) for k in rows[0][name]}
        for name in rows[0]
    }


def concept_block(seeds: int) -> dict:
    """AEGIS-style erasure of "paint" from GenIAS (hyplex.models.unlearning.concept_erasure),
    with the plain ablation (fixed erasure inputs, no projection): concept rate of the
    concept's own latents and under a latent PGD attack (radius 1, 20 steps), and the
    reconstruction RMSE of the other materials' spectra (reflectance)."""
    from hyplex.models.openset.anomaly_generator import GenIAS, GenIASTraining
    from hyplex.models.unlearning.concept_erasure import (
        AEGISSettings,
        ConceptProbe,
        adversarial_latents,
        concept_rate,
        erase_concept,
    )
    from hyplex.simulation.spectra import load_earthlib

    rows = []
    for seed in range(seeds):
        library = load_earthlib(GRID_NM, list(CLASSES), max_per_class=80, seed=seed)
        spectra = np.clip(library.reflectance, 0, 1).astype(np.float32)
        labels = np.array(library.labels)
        genias = GenIAS(len(GRID_NM))
        genias.fit(spectra, GenIASTraining(steps=600, seed=seed))
        probe = ConceptProbe(spectra, list(labels))
        c = probe.classes.index(FORGET_CLASS)
        concept = torch.tensor(spectra[labels == FORGET_CLASS])
        others = torch.tensor(spectra[labels != FORGET_CLASS])

        def measure(model, probe=probe, c=c, concept=concept, others=others):
            with torch.no_grad():
                z_c, _, _ = model.encode(concept)
                z_o, _, _ = model.encode(others)
                rmse = float(((model.decoder(z_o) - others) ** 2).mean().sqrt())
            attacked = adversarial_latents(model.decoder, probe, c, z_c, 1.0, 20)
            return {
                "concept_rate": concept_rate(model.decoder, probe, c, z_c),
                "attacked_concept_rate": concept_rate(model.decoder, probe, c, attacked),
                "others_rmse": rmse,
            }

        row = {"original": measure(genias)}
        settings = AEGISSettings(steps=200, seed=seed)
        for name, adversarial in (("AEGIS", True), ("plain", False)):
            start = time.perf_counter()
            erased, _ = erase_concept(genias, probe, concept.numpy(), FORGET_CLASS, settings,
                                      adversarial=adversarial, projection=adversarial)  # fmt: skip
            row[name] = {**measure(erased), "seconds": time.perf_counter() - start}
        log(f"  seed {seed} concept " + json.dumps(row, default=float))
        rows.append(row)
    return {
        name: {k: float(np.mean([r[name][k] for r in rows])) for k in rows[0][name]}
        for name in rows[0]
    }


def language_blocks(quick: bool, seeds: int) -> dict:
    """``gpt`` and ``alignment``: the tiny-GPT blocks of
    :mod:`hyplex.models.alignment.benchmark_blocks`."""
    from hyplex.models.alignment.benchmark_blocks import alignment_block, gpt_block

    blocks = {}
    for key, function in (("gpt", gpt_block), ("alignment", alignment_block)):
        try:
            blocks[key] = function(quick, seeds)
        except Exception as error:  # a failing block must not hide the segmenter results
            blocks[key] = {"status": f"failed: {type(error).__name__}: {error}"}
    return blocks


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small scenes, short training")
    parser.add_argument("--smoke", action="store_true", help="tiny run: the machinery only")
    parser.add_argument("--seeds", type=int, default=3, help="number of seeds (>= 1)")
    parser.add_argument("--no-language", action="store_true", help="skip the gpt/alignment")
    parser.add_argument("--out", type=Path, help="also write the JSON here (atomically)")
    parser.add_argument(
        "--only",
        type=lambda text: set(text.split(",")),
        default=None,
        help="run only these extra blocks (comma-separated: federated, concept, language)",
    )
    args = parser.parse_args(argv)
    if args.seeds < 1:
        parser.error("--seeds must be >= 1")
    torch.set_num_threads(1)
    from hyplex.models.encoder_baselines import FixedResponseEncoder

    config = settings(args.quick, args.smoke)
    wall = time.perf_counter()
    centres = np.linspace(420.0, 980.0, 9)
    responses = np.exp(-0.5 * ((GRID_NM[None] - centres[:, None]) / 40.0) ** 2)
    encoder = FixedResponseEncoder(responses, GRID_NM, name="gaussian band-pass")
    if args.only:
        result = {}
        if "federated" in args.only:
            result["federated"] = federated_block(config, args.seeds, encoder)
        if "concept" in args.only:
            result["concept_erasure"] = concept_block(args.seeds)
        if "language" in args.only:
            result.update(language_blocks(args.quick or args.smoke, args.seeds))
        result["config"] = {**config, "seeds": args.seeds}
        result["wall_seconds"] = time.perf_counter() - wall
        print(json.dumps(result, default=float))
        return result
    runs = [run_seed(seed, config, encoder) for seed in range(args.seeds)]
    summary = summarise(runs)
    result = {
        "segmenter": {
            case: {
                m: {k: v for k, v in row.items() if not k.endswith("_std")}
                for m, row in summary[case]["methods"].items()
            }
            for case in summary
        },
        "segmenter_std": {
            case: {
                m: {k: v for k, v in row.items() if k.endswith("_std")}
                for m, row in summary[case]["methods"].items()
            }
            for case in summary
        },
        "retrain_seconds": {case: summary[case]["retrain_seconds"] for case in summary},
        "forget_metric": {"class": "forget-pixel accuracy", "scenes": "MIA AUC (LOSS)"},
        "goals": {case: goals(summary[case]) for case in summary},
        "config": {**config, "seeds": args.seeds, "forget_class": FORGET_CLASS},
        "machine": {"cores": os.cpu_count(), "load": os.getloadavg()[0]},
    }
    if not args.no_language:
        result.update(language_blocks(args.quick or args.smoke, args.seeds))
    result["goals_met"] = all(g["all"] for g in result["goals"].values())
    result["wall_seconds"] = time.perf_counter() - wall
    text = json.dumps(result, default=float)
    if args.out is not None:
        from hyplex.optics.atomic_io import atomic_write

        atomic_write(args.out, lambda handle: handle.write((text + "\n").encode()))
    log(json.dumps({k: result[k] for k in ("goals", "retrain_seconds")}, indent=1))
    print(text)
    return result


if __name__ == "__main__":
    main()

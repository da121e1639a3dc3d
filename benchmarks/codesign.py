"""Benchmark: a co-designed metasurface encoder against the Hyplex PCA-target baseline, RGB and
the full cube, on held-out synthetic scenes (project issue 6).

Rows (one shared :class:`~hyplex.models.codesign_config.CodesignConfig`; every learned row trains
with the same steps, data, decoder sizes and seed; all rows are scored by
:func:`~hyplex.models.codesign.evaluate` on the same held-out scenes, seed ``seed + 1``, with the
same sensor-noise seed ``seed + 2`` and the same exposure, set by a white reflector through a
unit-transmission filter)::

    rgb            RGB camera (colour-science sensitivities, 3 ch)  + learned decoders
    pca_linear     PCA targets -> nearest library designs (9 ch)    + linear projector, fitted
                   in closed form on noisy barcodes of training pixels (the Hyplex reference;
                   Makarenko et al., CVPR 2022). Segmentation: the pca_learned row's segmenter
                   (same encoder, same barcodes); it has no segmenter of its own.
    pca_learned    the same 9 realizable PCA-target filters           + learned decoders
    codesign       library selection by noisy-barcode class separability, chosen before
                   training (greedy Bhattacharyya forward selection on training pixels,
                   hyplex.models.encoder.separability_selection)    + learned decoders
    codesign_gumbel  library selection learned end to end (Gumbel-softmax, hardened, the
                   codesign row up to issue 16)                      + learned decoders
    unconstrained  free responses sigmoid(z) (9 ch, not realizable)   + learned decoders
    identity       one ideal filter per band (34 ch, the full cube)  + learned decoders

"Learned decoders" are the config's reconstructor (MST++-class spectral transformer) and
segmenter (U-Net), trained jointly (:func:`~hyplex.models.codesign.train_codesign`); the fixed
encoders simply have no trainable parameters. Goals (issue 6): co-designed PSNR >= PCA + linear
PSNR + 3 dB; co-designed (9-channel) mIoU >= RGB mIoU + 5 points and >= 0.90 x full-cube mIoU.

Reproduce (the last stdout line is one JSON object; the table goes to stderr)::

    .venv/bin/python benchmarks/codesign.py             # 7-13 min on 2 shared cores (measured)
    .venv/bin/python benchmarks/codesign.py --quick     # ~5 min
    .venv/bin/python benchmarks/codesign.py --smoke     # seconds (tests/models/...)

The realizable rows choose among the designs of a response library: by default a quick RCWA
library (:func:`~hyplex.models.codesign_library.quick_library`, 384 cSi rectangles, built once
under ``out/``); ``--library PATH`` uses another (e.g. ``out/library_rectangle_10k.h5``).

``--refine-pool R`` (multi-fidelity, for a library solved at a low, unconverged order such as
``hyplex library build``'s M = 2): the ``codesign`` row screens ``R x 9`` designs on the
library's spectra (R rounds of the separability selection), re-solves them at
``--refine-harmonics`` (M = 8, 128 px, complex64; cached under ``CACHE_DIR/multifidelity``) and
chooses its nine on the re-solved spectra only, which it also trains and is scored on
(:mod:`hyplex.models.multifidelity_selection`). The other rows keep ``--library`` as it is::

    .venv/bin/python benchmarks/codesign.py --library out/library_rectangle_4000.h5 \
        --refine-pool 3 --seed 0 --plot ''
"""
# ruff: noqa: E402  (BLAS thread settings must precede the imports that read them)

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from hyplex.models.codesign import CodesignModel, evaluate, train_codesign
from hyplex.models.codesign_config import CodesignConfig
from hyplex.models.comparison import fit_linear_projector
from hyplex.models.data import generate_scenes

PEER = "Hyplex PCA-target + linear projector, CVPR 2022"
GOALS = {
    "codesign_psnr_minus_pca_linear_db": 3.0,
    "miou_9ch_minus_rgb_points": 5.0,
    "miou_9ch_over_full_cube": 0.90,
}
OUT = Path(__file__).resolve().parents[1] / "out"
METRICS = ("psnr", "sam", "mrae", "miou", "real_fake_accuracy")


@dataclass(frozen=True)
class Row:
    """One line of the table: an encoder (a ``CodesignConfig.encoder`` name) and its decoders."""

    key: str
    label: str
    encoder: str
    decoder: str  # "learned" (trained with the encoder) or "linear" (closed-form fit)
    changes: tuple = ()  # (name, value) pairs: this row's settings beside the shared config


ROWS = (
    Row("rgb", "RGB (Nikon 5100 sensitivities) + learned decoders", "rgb", "learned"),
    Row("pca_linear", "Hyplex PCA targets (nearest library designs) + linear", "pca", "linear"),
    Row(
        "pca_learned", "PCA targets (nearest library designs) + learned decoders", "pca", "learned"
    ),
    Row(
        "codesign",
        "co-designed library selection (class separability) + learned decoders",
        "library",
        "learned",
        (("selection", "separability"), ("distinct_designs", True)),
    ),
    Row(
        "codesign_gumbel",
        "co-designed library selection (Gumbel-softmax) + learned decoders",
        "library",
        "learned",
        (("selection", "gumbel"),),
    ),
    Row(
        "unconstrained",
        "unconstrained responses (upper bound) + learned decoders",
        "unconstrained",
        "learned",
    ),  # fmt: skip
    Row("identity", "full cube (identity, upper bound) + learned decoders", "identity", "learned"),
)


def benchmark_config(mode: str = "full", steps: int | None = None, **changes) -> CodesignConfig:
    """The shared base config of all rows (``mode``: ``full``, ``quick`` or ``smoke``).

    ``full``: 34 bands, 32 training and 8 held-out 48 x 48 scenes, batches of 8 patches of
    16 x 16 px, 1500 relaxed steps + 300 decoder fine-tuning steps (~3-4 min a row, one thread,
    on a loaded 2-core machine). ``quick``: 16 training and 6 held-out scenes, 300 + 60 steps.
    ``smoke``: a few steps on tiny scenes. ``steps`` overrides the relaxed steps (fine-tuning
    stays one fifth of them). Measured (full): 787 s for the seven rows on seed 0, 390 s and
    454 s on seeds 1 and 2 (2026-12-06, 2 shared cores).

    Every row's U-Net segmenter whitens its input channels (ZCA,
    :mod:`hyplex.models.whitening`), as ``hyplex design --quick`` does: metasurface barcodes
    are nearly collinear (mean channel correlation 0.99 for the chosen designs), which the
    plain U-Net learns from slowly. Measured on the development seed 1 (``--seed 1``, rows
    trained alone): full cube 0.626 -> 0.674 mIoU with whitening, the separability-selected
    9 designs 0.448 -> 0.609.
    """
    settings = {
        "bands": 34,
        "scene_size": 48,
        "n_train_scenes": 32,
        "n_val_scenes": 8,
        "patch_size": 16,
        "batch_size": 8,
        "steps": 1500,
        "evaluate_initial": False,
        "segmenter_config": {"base_channels": 8, "depth": 2, "whiten": True},
    }
    if mode == "quick":
        settings.update(n_train_scenes=16, n_val_scenes=6, steps=300)
    elif mode == "smoke":
        settings.update(
            scene_size=24, n_train_scenes=3, n_val_scenes=2, n_objects=3, steps=6,
            reconstructor_config={"width": 8, "n_blocks": 1, "n_stages": 1},
            segmenter_config={"base_channels": 4, "depth": 1, "whiten": True},
        )  # fmt: skip
    elif mode != "full":
        raise ValueError(f"mode must be 'full', 'quick' or 'smoke', got {mode!r}")
    if steps is not None:
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        settings["steps"] = int(steps)
    settings["finetune_steps"] = max(1, settings["steps"] // 5)
    settings["checkpoint_every"] = settings["steps"]
    return CodesignConfig(**{**settings, **changes})


def scene_set(config: CodesignConfig, scene_cache, held_out: bool = False):
    """The training (or held-out) scenes that :func:`train_codesign` draws for ``config``
    (seed ``seed``, held out ``seed + 1``), read from its cache."""
    return generate_scenes(
        config.wavelengths_nm,
        config.n_val_scenes if held_out else config.n_train_scenes,
        config.seed + int(held_out),
        shape=(config.scene_size, config.scene_size),
        n_objects=config.n_objects,
        classes=config.classes,
        fake_classes=config.fake_classes,
        fake_fraction=config.fake_fraction,
        cache_dir=scene_cache,
    )


def _design_summary(result) -> dict:
    design = result.design
    summary = {"n_filters": int(design["responses"].shape[0])}
    if "library_indices" in design:
        indices = np.asarray(design["library_indices"])
        summary.update(
            library_indices=indices.tolist(), distinct_designs=len(set(indices.tolist()))
        )
    return summary


def run_rows(
    config: CodesignConfig, library, scene_cache, rows=ROWS, log=print, row_libraries=None
) -> dict:
    """Train and score ``rows`` with ``config``; ``{key: figures}``. ``row_libraries`` (row key
    -> library) gives a row its own library instead of ``library`` (the multi-fidelity pool of
    the ``codesign`` row)."""
    results, trained = {}, {}
    row_libraries = row_libraries or {}
    for row in rows:
        if row.decoder != "learned":
            continue
        began = time.perf_counter()
        log(f"[{row.key}] training ({config.steps} + {config.finetune_steps} steps) ...")
        result = train_codesign(
            config.replace(encoder=row.encoder, **dict(row.changes)), None,
            library=row_libraries.get(row.key, library), progress=False,
            scene_cache=scene_cache,
        )  # fmt: skip
        if row.key not in row_libraries:
            trained.setdefault(row.encoder, result)
        figures = {name: float(result.metrics["final"][name]) for name in METRICS}
        figures.update(
            label=row.label, encoder=row.encoder, decoder=row.decoder,
            segmentation="own learned segmenter", seconds=round(time.perf_counter() - began, 1),
            design=_design_summary(result),
        )  # fmt: skip
        if row.encoder == "library":
            figures["selection"] = result.config.selection
        if row.encoder in ("library", "unconstrained"):
            figures["phases"] = {
                phase: {name: float(result.metrics[phase][name]) for name in METRICS}
                for phase in ("relaxed", "hardened")
            }
        results[row.key] = figures
        log(f"[{row.key}] {_brief(figures)} ({figures['seconds']:.0f} s)")
    for row in rows:
        if row.decoder != "linear":
            continue
        began = time.perf_counter()
        if row.encoder not in trained:
            raise ValueError(f"row {row.key!r} needs the learned row of encoder {row.encoder!r}")
        learned = trained[row.encoder]
        encoder, segmenter = learned.model.encoder, learned.model.segmenter
        projector = fit_linear_projector(encoder, scene_set(config, scene_cache), config.seed + 3)
        model = CodesignModel(encoder, projector, segmenter)
        metrics = evaluate(model, learned.validation, config.seed + 2)
        figures = {name: float(metrics[name]) for name in METRICS}
        figures.update(
            label=row.label, encoder=row.encoder, decoder=row.decoder,
            segmentation=f"reused from row {row.encoder!r} + learned (same encoder)",
            seconds=round(time.perf_counter() - began, 1), design=_design_summary(learned),
        )  # fmt: skip
        results[row.key] = figures
        log(f"[{row.key}] {_brief(figures)}")
    return {row.key: results[row.key] for row in rows}


def converged_pool(config: CodesignConfig, library, args):
    """The ``codesign`` row's multi-fidelity pool
    (:func:`hyplex.models.multifidelity_selection.multifidelity_pool`): ``args.refine_pool``
    screening rounds on the training scenes of ``config`` (seed ``config.seed``), re-solved at
    order ``args.refine_harmonics`` on ``args.refine_grid`` px (complex64, the shipped quick
    library's fidelity), cached under ``args.cache_dir / "multifidelity"``."""
    from hyplex.models.encoder_capture import CameraCapture, CaptureSettings
    from hyplex.models.multifidelity_selection import multifidelity_pool
    from hyplex.optics.library import SolverSettings

    if args.refine_pool < 0 or args.refine_harmonics < 1 or args.refine_grid < 8:
        raise SystemExit("--refine-pool must be >= 0, --refine-harmonics >= 1, --refine-grid >= 8")
    order, grid = int(args.refine_harmonics), int(args.refine_grid)
    solver = SolverSettings(harmonics=(order, order), grid=(grid, grid), precision="complex64")
    cubes, labels, _ = scene_set(config, args.cache_dir / "scenes").tensors()
    capture = CameraCapture(config.wavelengths_nm, CaptureSettings.from_dict(config.capture))
    return multifidelity_pool(
        library, capture, cubes, labels, args.refine_pool, solver, config.n_filters,
        config.seed, args.cache_dir / "multifidelity", progress=True,
    )  # fmt: skip


def real_fake_chance(scenes) -> float:
    """Plain real/fake accuracy of a segmenter that never says "fake" (or always does), on the
    object pixels of ``scenes``: why ``evaluate`` scores the balanced accuracy instead (whose
    floor is 0.5 for any such constant answer)."""
    objects = scenes.class_maps != 0
    fake_share = float(scenes.fake_maps[objects].mean()) if objects.any() else 0.0
    return max(fake_share, 1.0 - fake_share)


def _brief(figures: dict) -> str:
    return (
        f"PSNR {figures['psnr']:.2f} dB, SAM {figures['sam']:.2f} deg, "
        f"mIoU {figures['miou']:.3f}, real/fake {figures['real_fake_accuracy']:.3f}"
    )


def goal_checks(rows: dict) -> dict:
    """The three goals of issue 6 and whether each is met."""
    codesign = rows["codesign"]
    values = {
        "codesign_psnr_minus_pca_linear_db": codesign["psnr"] - rows["pca_linear"]["psnr"],
        "miou_9ch_minus_rgb_points": 100.0 * (codesign["miou"] - rows["rgb"]["miou"]),
        "miou_9ch_over_full_cube": codesign["miou"] / max(rows["identity"]["miou"], 1e-12),
    }
    checks = {}
    for name, value in values.items():
        checks[name] = round(float(value), 4)
        checks[f"{name}_goal"] = GOALS[name]
        checks[f"{name}_met"] = bool(value >= GOALS[name])
    return checks


def markdown_table(rows: dict) -> str:
    lines = [
        "| encoder | ch | PSNR (dB) / SAM (deg) | MRAE | mIoU | real/fake acc | segmentation |",
        "|---|---|---|---|---|---|---|",
    ]
    for figures in rows.values():
        lines.append(
            f"| {figures['label']} | {figures['design']['n_filters']} | "
            f"{figures['psnr']:.2f} / {figures['sam']:.2f} | {figures['mrae']:.3f} | "
            f"{figures['miou']:.3f} | {figures['real_fake_accuracy']:.3f} | "
            f"{figures['segmentation']} |"
        )
    return "\n".join(lines)


def plot_rows(rows: dict, path: Path) -> Path:
    """Bar charts of held-out PSNR and mIoU per row (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = list(rows)
    figure, axes = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    for axis, name, unit in zip(axes, ("psnr", "miou"), ("PSNR (dB)", "mIoU"), strict=True):
        values = [rows[key][name] for key in keys]
        colors = ["tab:red" if key == "codesign" else "tab:gray" for key in keys]
        axis.bar(range(len(keys)), values, color=colors)
        axis.set_xticks(range(len(keys)), keys, rotation=30, ha="right")
        axis.set_ylabel(f"held-out {unit}")
        for index, value in enumerate(values):
            axis.text(index, value, f"{value:.2f}" if name == "psnr" else f"{value:.3f}",
                      ha="center", va="bottom", fontsize=8)  # fmt: skip
    axes[0].set_ylim(bottom=min(rows[key]["psnr"] for key in keys) - 3.0)
    figure.suptitle("hyplex co-design benchmark (held-out synthetic scenes)")
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    modes = parser.add_mutually_exclusive_group()
    modes.add_argument("--quick", action="store_true", help="300 + 60 steps a row (~5 min)")
    modes.add_argument("--smoke", action="store_true", help="a few steps on tiny scenes (test)")
    parser.add_argument("--steps", type=int, help="relaxed steps a row (fine-tuning: 1/5)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--library", type=Path, help="response library HDF5 (default: quick)")
    parser.add_argument("--distinct-designs", action="store_true",
                        help="harden the co-designed encoder with 9 different designs")  # fmt: skip
    parser.add_argument("--cache-dir", type=Path, default=OUT / "codesign_bench",
                        help="scene cache and the default quick library")  # fmt: skip
    parser.add_argument("--plot", default=str(OUT / "codesign_table.png"),
                        help="bar chart PNG ('' to skip)")  # fmt: skip
    parser.add_argument("--refine-pool", type=int, default=0, metavar="ROUNDS",
                        help="multi-fidelity codesign row: screen ROUNDS x 9 designs on the "
                        "library's spectra, re-solve them at --refine-harmonics and choose "
                        "the nine on those only (0: off; 3 in the README)")  # fmt: skip
    parser.add_argument(
        "--refine-harmonics",
        type=int,
        default=8,
        help="RCWA order M of the re-solve (grid --refine-grid, complex64)",
    )
    parser.add_argument(
        "--refine-grid", type=int, default=128, help="cell raster of the re-solve, px a side"
    )
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads (1: on a shared 2-core machine, 2 threads "
                        "ran 8x slower, measured)")  # fmt: skip
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, args.threads))
    mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    config = benchmark_config(
        mode, args.steps, seed=args.seed, distinct_designs=args.distinct_designs
    )

    began = time.perf_counter()
    log = lambda message: print(message, file=sys.stderr, flush=True)  # noqa: E731
    from hyplex.models.codesign_library import quick_library
    from hyplex.optics.library import read_library

    if args.library is not None:
        library, library_name = read_library(args.library), str(args.library)
    else:
        count = 32 if args.smoke else 384
        path = args.cache_dir / f"quick_library_{count}.h5"
        path.parent.mkdir(parents=True, exist_ok=True)
        log(f"quick library ({count} designs) at {path} ...")
        library, library_name = quick_library(path, count=count), str(path)
    torch.set_num_threads(max(1, args.threads))  # the library build leaves torch at 1 thread
    pool = None
    if args.refine_pool:
        pool = converged_pool(config, library, args)
        log(f"multi-fidelity pool: {pool.summary()}")
    rows = run_rows(
        config, library, args.cache_dir / "scenes", log=log,
        row_libraries=None if pool is None else {"codesign": pool.library},
    )  # fmt: skip
    if pool is not None:
        design = rows["codesign"]["design"]
        design["pool_library_indices"] = design["library_indices"]
        design["library_indices"] = pool.source_indices[design["library_indices"]].tolist()
        rows["codesign"]["label"] += " (multi-fidelity: screened at the library's order, chosen "
        rows["codesign"]["label"] += f"on the pool re-solved at M = {pool.solver.harmonics[0]})"
    checks = goal_checks(rows)
    validation = scene_set(config, args.cache_dir / "scenes", held_out=True)
    seconds = time.perf_counter() - began

    log("\n" + markdown_table(rows) + "\n")
    for name in GOALS:
        verdict = "met" if checks[f"{name}_met"] else "MISSED"
        log(f"{name} = {checks[name]:.3f} (goal >= {GOALS[name]}): {verdict}")
    plot = None
    if args.plot:
        plot = str(plot_rows(rows, Path(args.plot)))
    result = {
        "benchmark": "codesign",
        "mode": mode,
        "rows": rows,
        **checks,
        "peer": PEER,
        "real_fake_plain_chance": round(real_fake_chance(validation), 4),
        "real_fake_balanced_chance": 0.5,
        "library": library_name,
        "library_designs": int(np.count_nonzero(library.done)),
        "multifidelity": None if pool is None else pool.summary(),
        "plot": plot,
        "seconds": round(seconds, 1),
        "torch_threads": torch.get_num_threads(),
        "config": config.to_dict(),
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()

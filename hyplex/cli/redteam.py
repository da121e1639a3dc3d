"""``hyplex redteam``: how a bundle's decoders hold up under physically bounded attacks.

::

    hyplex redteam --bundle B [--barcodes scenes.npz] [--epsilon 3] [--samples 1,10] [--json R]

Evaluation data: by default, twin scenes drawn for the bundle's grid (seed ``--seed``, not the
training seed) and encoded with the bundle's own encoder; or ``--barcodes``, an ``.npz``
(read with ``allow_pickle=False``) holding ``barcodes (S, F, H, W)`` float, ``labels (S, H, W)``
int and optionally ``cubes (S, L, H, W)`` for PSNR. Attacks, all inside ``--epsilon``
shot-noise standard deviations per barcode value (the budget of
:mod:`hyplex.models.robustness.probabilistic_margin`, scaled by the bundle's encoder):
white-box PGD on the segmenter (on CUDA when present), and the black-box ETF from a surrogate
trained on ``--samples`` labelled pixels per class
(:mod:`hyplex.models.robustness.lightweight_blackbox`); where the bundle has a reconstructor
and the data have cubes, also white-box PGD on the reconstructor's own L1
(:func:`hyplex.models.robustness.evaluation.reconstructor_psnr_under_attack`).
Printed (and with ``--json`` written atomically): clean and attacked mIoU, each attack's
success rate (right pixels turned wrong) and the reconstructor's PSNR clean
(``psnr_clean``), under the attacks aimed at the segmenter (``psnr_pgd``, ``psnr_etf_<k>``:
what a perturbation against the segmenter does to the cube) and under the attack aimed at the
reconstructor (``psnr_pgd_reconstructor``, the reconstructor's own worst case).

Refused: a bundle without segmenter weights, barcodes whose channel count is not the
bundle's filter count, an ``.npz`` without ``barcodes``/``labels``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

__all__ = ["register", "redteam_command"]


def register(app: typer.Typer) -> None:
    """Add ``redteam`` to ``app``."""
    app.command("redteam")(redteam_command)


def _bad(message: str, hint: str):
    return typer.BadParameter(message, param_hint=hint)


def _has_segmenter(bundle: Path) -> bool:
    from safetensors import safe_open

    try:
        with safe_open(str(bundle / "decoders.safetensors"), framework="pt") as handle:
            return any(key.startswith("segmenter.") for key in handle.keys())
    except Exception:  # unreadable: load_bundle will say why
        return True


def _load_barcodes(path: Path, n_filters: int):
    import numpy as np
    import torch

    try:
        with np.load(path, allow_pickle=False) as stored:
            arrays = {name: stored[name] for name in stored.files}
    except (OSError, ValueError) as error:
        raise _bad(f"{path} is not a readable .npz: {error}", "--barcodes") from None
    missing = [k for k in ("barcodes", "labels") if k not in arrays]
    if missing:
        raise _bad(f"{path} lacks {', '.join(missing)} (expected barcodes (S, F, H, W) and "
                   "labels (S, H, W))", "--barcodes")  # fmt: skip
    barcodes, labels = arrays["barcodes"], arrays["labels"]
    if barcodes.ndim != 4 or barcodes.shape[1] != n_filters:
        raise _bad(
            f"barcodes have shape {barcodes.shape}; the bundle's encoder has {n_filters} "
            f"filters, so (S, {n_filters}, H, W) was expected",
            "--barcodes",
        )
    if labels.shape != (barcodes.shape[0], *barcodes.shape[2:]):
        raise _bad(f"labels {labels.shape} do not match barcodes {barcodes.shape}", "--barcodes")
    cubes = arrays.get("cubes")
    return (
        torch.as_tensor(barcodes, dtype=torch.float32),
        torch.as_tensor(labels.astype(np.int64)),
        None if cubes is None else torch.as_tensor(cubes, dtype=torch.float32),
    )


def _twin_barcodes(bundle, count: int, size: int, seed: int):
    import torch

    from hyplex.models.data import generate_scenes
    from hyplex.models.unlearning.segmenter_forgetting import encode_scenes

    classes = tuple(
        n for n in bundle.class_names if n != "background" and not n.startswith("fake_")
    )
    fakes = tuple(n[len("fake_") :] for n in bundle.class_names if n.startswith("fake_"))
    scenes = generate_scenes(bundle.wavelengths_nm, count, seed, (size, size), classes=classes,
                             fake_classes=fakes)  # fmt: skip
    if scenes.class_names != bundle.class_names:
        raise _bad(
            f"the twin's classes {scenes.class_names} differ from the bundle's "
            f"{bundle.class_names}; pass --barcodes",
            "--bundle",
        )
    coded = encode_scenes(bundle.encoder(), scenes, seed=seed)
    cubes = torch.as_tensor(scenes.cubes).permute(0, 3, 1, 2).contiguous()
    return coded.barcodes, coded.labels, cubes


def redteam_command(
    bundle: Annotated[Path, typer.Option("--bundle", help="Design bundle directory (read only).")],
    barcodes: Annotated[
        Path | None,
        typer.Option("--barcodes", help=".npz with barcodes (S,F,H,W), labels, optional cubes."),
    ] = None,
    epsilon: Annotated[
        float, typer.Option("--epsilon", min=0.0, help="Budget, shot-noise std per value.")
    ] = 3.0,
    samples: Annotated[
        str, typer.Option("--samples", help="ETF surrogate sizes, labelled pixels per class.")
    ] = "1,10",
    scenes: Annotated[int, typer.Option("--scenes", min=1, help="Twin scenes to attack.")] = 4,
    size: Annotated[int, typer.Option("--size", min=8, help="Twin scene size, pixels.")] = 32,
    seed: Annotated[int, typer.Option("--seed", help="Scenes, attack starts, surrogate.")] = 1,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Also write the report here (atomic).")
    ] = None,
) -> None:
    """Attack a bundle's segmenter (PGD white-box, ETF black-box) and its reconstructor (PGD
    white-box) in a shot-noise budget."""
    import torch

    from hyplex.models.bundle import BundleError, load_bundle
    from hyplex.models.robustness import white_electrons_of
    from hyplex.models.robustness.evaluation import red_team_report

    if not (bundle / "bundle.json").is_file():
        raise _bad(f"{bundle} is not a design bundle (no bundle.json)", "--bundle")
    if not _has_segmenter(bundle):
        raise _bad(
            f"{bundle} has no segmenter weights (segmenter.* in decoders.safetensors); the "
            "red team attacks a segmenter: use a bundle from `hyplex design`",
            "--bundle",
        )
    try:
        sizes = [int(s) for s in samples.split(",") if s.strip()]
    except ValueError:
        message = f"--samples must be comma-separated integers; got {samples!r}"
        raise _bad(message, "--samples") from None
    if not sizes or min(sizes) < 1:
        raise _bad(f"--samples needs positive counts; got {samples!r}", "--samples")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        loaded = load_bundle(bundle, device=device)
    except BundleError as error:
        raise _bad(str(error), "--bundle") from None
    torch.manual_seed(seed)
    encoder = loaded.encoder()
    if barcodes is not None:
        x, y, cubes = _load_barcodes(barcodes, encoder.n_filters)
    else:
        x, y, cubes = _twin_barcodes(loaded, scenes, size, seed)
    if cubes is not None and cubes.shape[1] != loaded.wavelengths_nm.size:
        cubes = None  # another grid: no PSNR
    x, y = x.to(device), y.to(device)
    cubes = None if cubes is None else cubes.to(device)
    report = red_team_report(
        loaded.segmenter, x, y, white_electrons_of(encoder), epsilon,
        reconstructor=loaded.reconstructor if cubes is not None else None, cubes=cubes,
        samples_per_class=sizes, seed=seed,
    )  # fmt: skip
    report["bundle"] = str(bundle)
    report["scenes"] = int(x.shape[0])
    for key, value in report.items():
        text = f"{value:.4f}" if isinstance(value, float) else str(value)
        typer.echo(f"{key:>22}  {text}")
    if json_out is not None:
        from hyplex.optics.atomic_io import atomic_write

        payload = json.dumps(report, indent=1).encode()
        atomic_write(json_out, lambda handle: handle.write(payload))

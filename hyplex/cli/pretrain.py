"""``hyplex pretrain``: structured-masking contrastive pretraining of the segmenter's encoder
on unlabelled frames (:mod:`hyplex.models.pretraining.masked_contrastive`).

::

    hyplex pretrain --frames DIR --out enc.safetensors [--steps 200] [--base-channels 8 --depth 2]
    hyplex design --init-encoder enc.safetensors ...

``DIR`` holds unlabelled barcode maps as ``.npy`` files, each ``(h, w, C)`` (one frame, e.g.
the barcodes ``hyplex segment`` decodes, or the twin's) or ``(N, h, w, C)`` (several), read
without pickles. The encoder file is safetensors with the U-Net's config in its header; it is
written atomically (an interrupted run leaves no file).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def read_frames(folder: Path, channels: int):
    """Barcode maps ``(N, C, h, w)`` float32 from the ``.npy`` files of ``folder``.

    Raises
    ------
    typer.BadParameter
        No folder, no ``.npy`` file, a file of the wrong shape or channel count, or frames of
        different sizes.
    """
    import numpy as np

    if not folder.is_dir():
        raise typer.BadParameter(f"{folder} is not a folder", param_hint="'--frames'")
    files = sorted(folder.glob("*.npy"))
    if not files:
        raise typer.BadParameter(
            f"no frames in {folder}: expected .npy barcode maps (h, w, C) or (N, h, w, C)",
            param_hint="'--frames'",
        )
    frames = []
    for path in files:
        try:
            array = np.load(path, allow_pickle=False)
        except ValueError as error:
            raise typer.BadParameter(f"{path}: {error}", param_hint="'--frames'") from None
        if array.ndim == 3:
            array = array[None]
        if array.ndim != 4 or not np.issubdtype(array.dtype, np.number):
            raise typer.BadParameter(
                f"{path} holds a {array.dtype} array of shape {array.shape}; expected numbers "
                f"(h, w, C) or (N, h, w, C)",
                param_hint="'--frames'",
            )
        if array.shape[-1] != channels:
            raise typer.BadParameter(
                f"{path} has {array.shape[-1]} channels per metapixel; the segmenter expects "
                f"{channels} (--in-channels)",
                param_hint="'--frames'",
            )
        frames.append(np.asarray(array, dtype=np.float32).transpose(0, 3, 1, 2))
    sizes = {f.shape[2:] for f in frames}
    if len(sizes) > 1:
        raise typer.BadParameter(
            f"frames of different sizes {sorted(sizes)} in {folder}", param_hint="'--frames'"
        )
    return np.concatenate(frames)


def pretrain(
    frames: Annotated[
        Path, typer.Option(help="Folder of unlabelled barcode maps (.npy, (h, w, C)).")
    ],
    out: Annotated[Path, typer.Option(help="Encoder file to write (.safetensors).")],
    in_channels: Annotated[int, typer.Option(min=1, help="Filters per barcode, C.")] = 9,
    base_channels: Annotated[int, typer.Option(min=1, help="U-Net width (as design).")] = 8,
    depth: Annotated[int, typer.Option(min=1, help="U-Net depth (as design).")] = 2,
    steps: Annotated[int, typer.Option(min=1, help="Contrastive steps.")] = 200,
    batch: Annotated[int, typer.Option(min=2, help="Crops per step.")] = 16,
    crop: Annotated[int, typer.Option(min=4, help="Crop side, metapixels.")] = 16,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    device: Annotated[str | None, typer.Option(help="cpu or cuda (default: CUDA if any).")] = None,
) -> None:
    """Pretrain the segmenter's encoder on unlabelled frames (NT-Xent on masked views)."""
    import torch
    from tqdm import tqdm

    from hyplex.models.pretraining import PretrainConfig, pretrain_encoder, save_encoder
    from hyplex.models.segmentation import UNet

    if out.suffix != ".safetensors":
        raise typer.BadParameter(f"{out} must end in .safetensors", param_hint="'--out'")
    if not out.parent.is_dir():
        raise typer.BadParameter(f"folder {out.parent} does not exist", param_hint="'--out'")
    data = read_frames(frames, in_channels)
    if min(data.shape[2:]) < crop:
        raise typer.BadParameter(
            f"frames of {data.shape[2]} x {data.shape[3]} metapixels are smaller than --crop "
            f"{crop}",
            param_hint="'--crop'",
        )
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(seed)
    unet = UNet(in_channels, 2, base_channels=base_channels, depth=depth).to(device)
    config = PretrainConfig(steps=steps, batch=batch, crop_px=crop, seed=seed)
    typer.echo(
        f"pretraining on {data.shape[0]} frames of {data.shape[2]} x {data.shape[3]}", err=True
    )
    try:
        with tqdm(total=steps, desc="NT-Xent", unit="step") as bar:

            def progress(step, loss):
                bar.set_postfix(loss=f"{loss:.3f}")
                bar.update(1)

            history = pretrain_encoder(unet, data, config, progress)
    except KeyboardInterrupt:
        typer.echo("interrupted: no encoder file written")
        raise typer.Exit(130) from None
    save_encoder(unet.cpu(), out, {"steps": steps, "frames": int(data.shape[0]), "seed": seed})
    typer.echo(f"NT-Xent {history[0]:.3f} -> {history[-1]:.3f}; wrote {out}")


def register(app: typer.Typer) -> None:
    """Add ``pretrain`` as a command of ``app``."""
    app.command("pretrain")(pretrain)

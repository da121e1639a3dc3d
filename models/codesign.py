"""End-to-end co-design of a metasurface encoder with its reconstruction and segmentation decoders.

One run (Hyplex, Makarenko et al., CVPR 2022, sec. 3; the 1.2 Tb/s platform, Nat. Commun. 2024)::

    scenes (make_scene) --patches--> cube R (B, L, p, p), labels (B, p, p)
    encoder (relaxed, tau annealed) + noisy camera --> barcodes (B, F, p, p)
    reconstructor --> R_hat (B, L, p, p)        segmenter --> logits (B, n_classes, p, p)
    loss = w_mrae MRAE + w_l1 L1 + w_sam SAM  (R_hat vs R)  +  w_ce cross-entropy
    ... ``steps`` Adam steps, checkpoints ...
    harden the encoder (one design per filter; surrogate geometries: RCWA spectra)
    --> fine-tune the decoders ``finetune_steps``
    --> held-out scenes: PSNR, SAM (deg), MRAE, mIoU, real/fake accuracy

Determinism: the batch and the noise of step ``k`` on rank ``r`` are pure functions of
``(seed, k, r)`` and the model is initialised from ``seed``, so on CPU a run resumed from a
checkpoint ends bitwise equal to the uninterrupted run (tested). Checkpoints are written to a
uniquely named temporary file beside it, flushed and fsynced, then renamed (``os.replace``): an
interrupted run (Ctrl-C, a kill) leaves the last
complete checkpoint. They hold state dicts and plain numbers only and are read with
``torch.load(weights_only=True)``. Data-parallel runs: :mod:`hyplex.models.distributed`; a
checkpoint records the world size and resumes only under the same one (rank ``r`` of ``N``
draws the patches ``(k N + r) B/N ...`` of step ``k``, so another ``N`` is another run).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from hyplex.models import distributed
from hyplex.models.codesign_config import CodesignConfig, learning_rate_factor
from hyplex.models.data import PatchDataset, SceneSet, generate_scenes, sample_spectra
from hyplex.models.encoder import (
    LibrarySelectionEncoder,
    SpectralEncoder,
    SurrogateGeometryEncoder,
    UnconstrainedEncoder,
    identity_encoder,
    pca_target_encoder,
    rgb_encoder,
    separability_selection,
    temperature_schedule,
)
from hyplex.models.encoder_capture import CameraCapture, CaptureSettings
from hyplex.optics.atomic_io import atomic_write
from hyplex.optics.threads import apply_thread_policy

__all__ = [
    "CodesignModel",
    "CodesignResult",
    "build_encoder",
    "build_decoders",
    "codesign_loss",
    "evaluate",
    "select_by_separability",
    "train_codesign",
    "CHECKPOINT_NAME",
]

CHECKPOINT_NAME = "checkpoint.pt"
CHECKPOINT_FORMAT = "hyplex-codesign-checkpoint"


class CodesignModel(nn.Module):
    """Encoder + reconstructor + segmenter: cube ``(B, L, H, W)`` -> ``(barcodes, spectra,
    logits)`` of shapes ``(B, F, H, W)``, ``(B, L, H, W)``, ``(B, n_classes, H, W)``."""

    def __init__(self, encoder: SpectralEncoder, reconstructor: nn.Module, segmenter: nn.Module):
        super().__init__()
        self.encoder, self.reconstructor, self.segmenter = encoder, reconstructor, segmenter

    def forward(self, cube, generator=None, noise: bool = True):
        barcodes = self.encoder(cube, generator, noise)
        return barcodes, self.reconstructor(barcodes), self.segmenter(barcodes)


@dataclass
class CodesignResult:
    """Outcome of :func:`train_codesign`.

    ``history`` holds per-step ``loss`` and ``temperature`` lists; ``metrics`` maps a phase
    (``initial``, ``relaxed``, ``hardened``, ``final``) to held-out figures; ``design`` is the
    hardened encoder's :meth:`~hyplex.models.encoder.SpectralEncoder.design` (for a surrogate
    encoder, with RCWA spectra; ``notes["rms_surrogate_vs_rcwa"]`` says how far they moved).
    """

    model: CodesignModel
    config: CodesignConfig
    wavelengths_nm: np.ndarray
    class_names: list[str]
    history: dict
    metrics: dict
    design: dict
    validation: SceneSet
    train_seconds: float
    checkpoint_path: Path | None = None
    notes: dict = field(default_factory=dict)


def build_encoder(config, wavelengths_nm, scenes: SceneSet, library=None, surrogate=None):
    """The encoder named by ``config.encoder`` (library and surrogate loaded from the config's
    paths when not given)."""
    capture = CameraCapture(wavelengths_nm, CaptureSettings.from_dict(config.capture))
    kind = config.encoder
    if kind in ("library", "pca") and library is None and config.library_path:
        from hyplex.optics.library import read_library

        library = read_library(config.library_path)
    if kind == "library":
        if library is None:
            raise ValueError("encoder 'library' needs a response library (library_path)")
        return LibrarySelectionEncoder(
            library, wavelengths_nm, config.n_filters, capture, config.gumbel,
            config.temperature_start, seed=config.seed,
        )  # fmt: skip
    if kind == "surrogate":
        if surrogate is None:
            if not config.surrogate_path:
                raise ValueError("encoder 'surrogate' needs a trained surrogate (surrogate_path)")
            from hyplex.optics.surrogate import load_surrogate

            surrogate = load_surrogate(config.surrogate_path)
        return SurrogateGeometryEncoder(
            surrogate, wavelengths_nm, config.n_filters, capture, seed=config.seed
        )
    if kind == "unconstrained":
        return UnconstrainedEncoder(wavelengths_nm, config.n_filters, capture, seed=config.seed)
    if kind == "pca":
        spectra = sample_spectra(scenes, 4096, config.seed)
        return pca_target_encoder(spectra, wavelengths_nm, library, config.n_filters, capture)
    if kind == "rgb":
        return rgb_encoder(wavelengths_nm, capture=capture)
    return identity_encoder(wavelengths_nm, capture)


def build_decoders(config, n_filters: int, n_bands: int, n_classes: int):
    """``(reconstructor, segmenter)`` from the config's names and keyword arguments."""
    from hyplex.models.reconstruction import build_reconstructor
    from hyplex.models.segmentation import build_segmenter

    sizes = (
        {"n_filters": n_filters} if config.reconstructor == "linear" else {"in_channels": n_filters}
    )
    reconstructor = build_reconstructor(
        config.reconstructor, **{**config.reconstructor_config, **sizes, "n_bands": n_bands}
    )
    segmenter = build_segmenter(
        config.segmenter,
        **{**config.segmenter_config, "in_channels": n_filters, "n_classes": n_classes},
    )
    if getattr(config, "init_encoder", None):  # hyplex pretrain's encoder (masked NT-Xent)
        from hyplex.models.pretraining import load_encoder

        if config.segmenter != "unet":
            raise ValueError(
                f"init_encoder is a U-Net encoder; the segmenter is {config.segmenter!r}"
            )
        load_encoder(segmenter, config.init_encoder)
    return reconstructor, segmenter


def codesign_loss(config, spectra, target, logits, labels) -> tuple[torch.Tensor, dict]:
    """Weighted MRAE + L1 + SAM (spectra vs target, ``(B, L, H, W)``) + cross-entropy
    (logits ``(B, C, H, W)`` vs labels ``(B, H, W)``); returns ``(total, parts)``."""
    from hyplex.models.metrics import mrae_loss, sam_loss

    parts = {
        "mrae": mrae_loss(spectra, target, config.mrae_eps),
        "l1": (spectra - target).abs().mean(),
        "sam": sam_loss(spectra, target),
        "ce": nn.functional.cross_entropy(logits, labels),
    }
    weights = {"mrae": config.weight_mrae, "l1": config.weight_l1}
    weights.update(sam=config.weight_sam, ce=config.weight_ce)
    total = sum(weights[name] * value for name, value in parts.items())
    return total, {name: float(value.detach()) for name, value in parts.items()}


def likelihood_term(reconstructor, barcodes, cube) -> torch.Tensor | float:
    """The negative log-likelihood per value of a probabilistic reconstructor (one with
    ``nll``: the conditional flow, :mod:`hyplex.models.restoration.conditional_flow`, whose
    training objective is NLL + reconstruction [HIDFlowNet]); 0 for any other decoder.
    ``barcodes (B, F, H, W)``, ``cube (B, L, H, W)``."""
    nll = getattr(reconstructor, "nll", None)
    return 0.0 if nll is None else nll(barcodes, cube)


@torch.no_grad()
def evaluate(model: CodesignModel, scenes: SceneSet, seed: int = 0, batch_size: int = 4) -> dict:
    """Held-out figures of ``model`` on whole scenes, with sensor noise drawn from ``seed``:
    ``psnr`` (dB), ``sam`` (degrees), ``mrae``, ``miou``, ``real_fake_accuracy`` (balanced
    over object pixels: the mean of the real and fake recalls; NaN when the scenes hold no
    fake) and ``fake_pixels`` (how many fake pixels it rests on)."""
    from hyplex.models.metrics import mean_iou, mrae, psnr, real_fake_accuracy, sam
    from hyplex.models.segmentation import fake_class_ids, predict_labels

    modes = {module: module.training for module in model.modules()}
    model.eval()
    device = next(iter(model.state_dict().values())).device
    cubes, labels, fakes = scenes.tensors()
    generator = torch.Generator(device).manual_seed(int(seed))
    spectra, predicted = [], []
    for start in range(0, len(cubes), batch_size):
        cube = cubes[start : start + batch_size].to(device)
        _, estimate, logits = model(cube, generator)
        spectra.append(estimate.clamp(0.0, 1.0).cpu())
        predicted.append(predict_labels(logits).cpu())
    spectra, predicted = torch.cat(spectra), torch.cat(predicted)
    for module, mode in modes.items():  # every submodule as it was (shared decoders too)
        module.training = mode
    return {
        "psnr": psnr(spectra, cubes),
        "sam": sam(spectra, cubes),
        "mrae": mrae(spectra, cubes),
        "miou": mean_iou(predicted, labels, scenes.n_classes),
        "real_fake_accuracy": real_fake_accuracy(
            predicted, fakes, fake_class_ids(scenes.class_names), mask=labels != 0, balanced=True
        ),
        "fake_pixels": float(fakes.sum()),
    }


def scene_options(config: CodesignConfig, cache_dir=None) -> dict:
    """Keyword arguments of :func:`~hyplex.models.data.generate_scenes` for the scenes of a
    run: size, objects, classes and fakes from ``config`` (the grid, count and seed apart)."""
    return {
        "shape": (config.scene_size, config.scene_size),
        "n_objects": config.n_objects,
        "classes": config.classes,
        "fake_classes": config.fake_classes,
        "fake_fraction": config.fake_fraction,
        "cache_dir": cache_dir,
    }


def _step_seed(seed: int, step: int, rank: int) -> int:
    return int(np.random.SeedSequence([seed, step, rank]).generate_state(1, np.uint64)[0] >> 1)


def _save_checkpoint(path: Path, state: dict) -> None:
    """Write ``state`` to ``path`` atomically and durably: a uniquely named temporary file in
    the same directory (no two writers share it), flushed and fsynced, then renamed over
    ``path``; a crash at any point leaves the previous checkpoint intact."""
    atomic_write(path, lambda handle: torch.save(state, handle))


def _load_checkpoint(path: Path, config: CodesignConfig, world_size: int = 1) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any unpickling error means a bad file
        raise ValueError(f"{path}: not a readable co-design checkpoint: {error}") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not a hyplex co-design checkpoint")
    stored = json.loads(state["config"])
    current = config.to_dict()
    differ = sorted(k for k in current if k != "device" and stored.get(k) != current[k])
    if differ:
        raise ValueError(
            f"{path} was written by a run with other settings ({', '.join(differ)}); resume "
            "with the same config or write to another directory"
        )
    written = int(state.get("world_size", 1))  # checkpoints before the field: one process
    if written != int(world_size):
        raise ValueError(
            f"{path} was written by a run of {written} process(es), this run has "
            f"{world_size}; the batches of every step depend on the number of processes, so "
            f"resume with {written} (torchrun --nproc_per_node {written}) or write to another "
            "directory"
        )
    return state


def train_codesign(
    config: CodesignConfig,
    out_dir=None,
    resume: bool = False,
    library=None,
    surrogate=None,
    progress: bool = True,
    stop_after: int | None = None,
    scene_cache=None,
) -> CodesignResult:
    """Co-design an encoder with its decoders (see the module docstring).

    Parameters
    ----------
    config : the run's settings.
    out_dir : directory of the checkpoint (``checkpoint.pt``) and the scene cache; None keeps
        nothing on disk.
    resume : continue from ``out_dir``'s checkpoint (same config required); starts afresh
        when there is none.
    library, surrogate : a :class:`~hyplex.optics.library.ResponseLibrary` and a
        :class:`~hyplex.optics.surrogate.SpectralSurrogate`, instead of the config's paths.
    progress : tqdm bar (rank 0 only).
    stop_after : return after this step without hardening (simulates an interrupted run;
        the checkpoint holds the step).
    scene_cache : directory of the scene cache (default ``out_dir/scene_cache``).
    """
    apply_thread_policy()  # one thread count for torch, numba and BLAS (optics.threads)
    context = distributed.init_distributed(config.device)
    device = context.device
    grid = config.wavelengths_nm
    cache = scene_cache
    if cache is None and out_dir is not None:
        cache = Path(out_dir) / "scene_cache"
    options = scene_options(config, cache if context.is_main else None)
    train = generate_scenes(grid, config.n_train_scenes, config.seed, **options)
    validation = generate_scenes(grid, config.n_val_scenes, config.seed + 1, **options)
    torch.manual_seed(config.seed)
    encoder = build_encoder(config, grid, train, library, surrogate)
    if config.selection == "separability" and isinstance(encoder, LibrarySelectionEncoder):
        select_by_separability(encoder, config, train, progress and context.is_main)
    decoders = build_decoders(config, encoder.n_filters, grid.size, train.n_classes)
    model = CodesignModel(encoder, *decoders).to(device)
    groups = [{"params": [p for p in m.parameters() if p.requires_grad]} for m in decoders]
    trainable = [p for p in encoder.parameters() if p.requires_grad]
    if trainable:
        groups.append({"params": trainable, "lr": config.encoder_learning_rate})
    optimizer = torch.optim.Adam(groups, lr=config.learning_rate)
    base_rates = [group["lr"] for group in optimizer.param_groups]
    history = {"loss": [], "temperature": []}
    metrics, start = {}, 0
    checkpoint = None if out_dir is None else Path(out_dir) / CHECKPOINT_NAME
    if resume and checkpoint is not None and checkpoint.exists():
        state = _load_checkpoint(checkpoint, config, context.world_size)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start, history, metrics = int(state["step"]), state["history"], state["metrics"]
    elif config.evaluate_initial:
        metrics["initial"] = evaluate(model, validation, config.seed + 2)
    wrapped = distributed.wrap_model(model, context)
    patches = PatchDataset(train, config.patch_size, seed=config.seed)
    per_rank = max(1, config.batch_size // context.world_size)

    def batch_for(step: int):
        first = (step * context.world_size + context.rank) * per_rank
        data = patches.batch(range(first, first + per_rank), device)
        generator = torch.Generator(device).manual_seed(_step_seed(config.seed, step, context.rank))
        return data, generator

    def save(step: int) -> None:
        if checkpoint is None or not context.is_main:
            return
        checkpoint.parent.mkdir(parents=True, exist_ok=True)
        state = {"format": CHECKPOINT_FORMAT, "step": step, "config": json.dumps(config.to_dict())}
        state["world_size"] = context.world_size
        state.update(model=model.state_dict(), optimizer=optimizer.state_dict())
        _save_checkpoint(checkpoint, state | {"history": history, "metrics": metrics})

    from tqdm.auto import tqdm

    began = time.perf_counter()
    end = config.steps if stop_after is None else min(config.steps, int(stop_after))
    bar = tqdm(total=config.steps, initial=start, desc="co-design", unit="step",
               disable=not (progress and context.is_main))  # fmt: skip
    model.train()
    try:
        for step in range(start, end):
            temperature = temperature_schedule(
                step, config.steps, config.temperature_start, config.temperature_end
            )
            if hasattr(encoder, "set_temperature"):
                encoder.set_temperature(temperature)
            _set_rates(optimizer, base_rates, config, step, config.steps)
            data, generator = batch_for(step)
            barcodes, spectra, logits = wrapped(data["cube"], generator)
            loss, _ = codesign_loss(config, spectra, data["cube"], logits, data["labels"])
            loss = loss + likelihood_term(model.reconstructor, barcodes, data["cube"])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            history["loss"].append(float(loss.detach()))
            history["temperature"].append(temperature)
            bar.update(1)
            bar.set_postfix(loss=f"{float(loss.detach()):.4f}", tau=f"{temperature:.3f}")
            if (step + 1) % config.checkpoint_every == 0 or step + 1 == config.steps:
                save(step + 1)
    finally:
        bar.close()
    seconds = time.perf_counter() - began
    if stop_after is not None and end < config.steps:
        if end > start:
            save(end)
        return CodesignResult(model, config, grid, train.class_names, history, metrics,
                              {}, validation, seconds, checkpoint)  # fmt: skip
    if hasattr(encoder, "set_temperature"):
        encoder.set_temperature(config.temperature_end)
    metrics["relaxed"] = evaluate(model, validation, config.seed + 2)
    distinct = config.distinct_designs and isinstance(encoder, LibrarySelectionEncoder)
    design = encoder.harden(distinct=True) if distinct else encoder.harden()
    notes = {}
    if isinstance(encoder, SurrogateGeometryEncoder) and config.refine_with_rcwa:
        grid_px = (config.refine_grid, config.refine_grid)
        refined = encoder.refine_with_rcwa(config.refine_harmonics, grid_px)
        notes["rms_surrogate_vs_rcwa"] = refined["rms_surrogate_vs_rcwa"]
        design = encoder.design()
    metrics["hardened"] = evaluate(model, validation, config.seed + 2)
    _finetune(model, config, context, batch_for, history)
    # BatchNorm statistics: rank 0's everywhere, as DDP does before a forward. Needed even
    # without fine-tuning: each rank's last relaxed step updated them from its own batch.
    distributed.broadcast_buffers(model, context)
    if hasattr(model.reconstructor, "band_scale"):
        notes["flow_band_scale"] = calibrate_flow(model, config, grid, options, device)
    metrics["final"] = evaluate(model, validation, config.seed + 2)
    seconds = time.perf_counter() - began
    return CodesignResult(model, config, grid, train.class_names, history, metrics, design,
                          validation, seconds, checkpoint, notes)  # fmt: skip


def select_by_separability(encoder, config, scenes: SceneSet, progress: bool = False) -> dict:
    """Harden a library encoder (not yet hardened) onto the designs that
    :func:`~hyplex.models.encoder.separability_selection` picks on the training ``scenes``
    (pixels and sensor noise drawn from ``config.seed``; one design per filter at most when
    ``config.distinct_designs``). A pure function of the config and the scenes, so every rank
    and a resumed run choose the same designs. Returns the encoder's design."""
    if encoder.hardened:
        return encoder.design()
    cubes, labels, _ = scenes.tensors()
    chosen = separability_selection(
        encoder.library_spectra.detach().cpu(), encoder.capture, cubes, labels,
        encoder.n_filters, distinct=config.distinct_designs, seed=config.seed, progress=progress,
    )  # fmt: skip
    return encoder.fix_selection(chosen)


@torch.no_grad()
def calibrate_flow(model: CodesignModel, config, grid, options: dict, device) -> list[float]:
    """Fit a conditional-flow reconstructor's per-band interval scale by split conformal
    prediction (:func:`~hyplex.models.restoration.posterior_calibration.calibrate_band_scale`)
    on calibration scenes of their own (seed ``config.seed + 3``; training is ``seed``, the
    held-out validation ``seed + 1``, its noise ``seed + 2``), through the trained encoder
    with sensor noise; a flow fitted to training residuals is over-confident on new scenes.
    Returns the fitted scale per band."""
    from hyplex.models.restoration.posterior_calibration import calibrate_band_scale

    scenes = generate_scenes(grid, config.n_val_scenes, config.seed + 3, **options)
    cubes = scenes.tensors()[0].to(device)
    modes = {module: module.training for module in model.modules()}
    model.eval()
    generator = torch.Generator(device).manual_seed(config.seed + 3)
    barcodes = torch.cat(
        [model.encoder(cubes[k : k + 4], generator) for k in range(0, len(cubes), 4)]
    )
    scale = calibrate_band_scale(model.reconstructor, barcodes, cubes, generator=generator)
    for module, mode in modes.items():
        module.training = mode
    return [round(float(v), 4) for v in scale.flatten()]


def _set_rates(optimizer, base_rates, config, step: int, total_steps: int) -> None:
    """Each parameter group's step size at ``step``: a pure function of the step, so a
    resumed run follows the same schedule without scheduler state in the checkpoint."""
    factor = learning_rate_factor(
        step, total_steps, config.learning_rate_decay, config.learning_rate_floor
    )
    for group, base in zip(optimizer.param_groups, base_rates, strict=True):
        group["lr"] = base * factor


def _finetune(model, config, context, batch_for, history) -> None:
    """Decoder-only Adam steps on the hardened (frozen) encoder; gradients all-reduced by hand
    under torchrun (the DDP wrapper was built for the relaxed phase). The caller then
    broadcasts rank 0's buffers (:func:`~hyplex.models.distributed.broadcast_buffers`)."""
    parameters = [
        p for m in (model.reconstructor, model.segmenter) for p in m.parameters() if p.requires_grad
    ]
    if not config.finetune_steps or not parameters:
        return
    optimizer = torch.optim.Adam(parameters, lr=0.5 * config.learning_rate)
    history.setdefault("finetune_loss", [])
    model.train()
    for offset in range(config.finetune_steps):
        _set_rates(optimizer, [0.5 * config.learning_rate], config, offset, config.finetune_steps)
        data, generator = batch_for(config.steps + offset)
        barcodes, spectra, logits = model(data["cube"], generator)
        loss, _ = codesign_loss(config, spectra, data["cube"], logits, data["labels"])
        loss = loss + likelihood_term(model.reconstructor, barcodes, data["cube"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        distributed.average_gradients(parameters, context)
        optimizer.step()
        history["finetune_loss"].append(float(loss.detach()))

"""Benchmark blocks ``flow`` and ``translation`` of issue 16 (called by learning_methods.py).

Setting (one per seed; twin scenes of :func:`hyplex.models.data.generate_scenes`, 34 bands
400-730 nm, classes vegetation/soil/paint/metal and fake vegetation)::

    twin        9 Gaussian band-pass filters (25 nm standard deviation, centres 420-710 nm)
                through the co-design camera (EMVA 1288 noise, D65)
    captured    the same design as fabricated (hyplex.simulation.fabrication: 10 nm shift,
                8 nm broadening, 20 % scale spread), CIE A light at 2000 lx (more shot noise),
                normalised with the twin's white reference
                (hyplex.models.openset.contrastive_alignment.captured_encoder)

flow: the HIDFlowNet-style conditional flow (hyplex.models.restoration.conditional_flow)
against the MST-class decoder (hyplex.models.reconstruction.SpectralTransformer), trained on
twin barcodes of the training scenes.  Budget: the MST decoder gets ``decoder_steps`` L1 Adam
steps; the flow's estimator mu (the same architecture, seeded alike) gets the same steps on the
same patches with the same L1 loss (so it ends with the MST decoder's weights: the JSON's
``max_abs_mu_minus_mst`` checks it), and the flow's invertible blocks and feature branch train
by NLL + L1 of the mode in those same steps (extra compute: ``train_seconds``).  The flow's
per-band scale is then calibrated (split conformal, 32 samples; restoration.
posterior_calibration) on a separate *calibration* split of twin scenes (seed 1000 s + 5),
never the test scenes.  On held-out scenes: PSNR of the posterior mean (32 samples) and of
the MST decoder, NLL (nats per value), and the empirical coverage of the 90 % per-band interval
(5-95 % sample quantiles), averaged over bands (the worst band is reported too), before and
after calibration.  Goals: coverage in [0.85, 0.95]; PSNR within 1 dB of MST.
Denoising table: low-light cubes (shot + 2 e- read noise, 3 light levels) denoised by the flow
(condition = the noisy cube; posterior mean) and by a DnCNN-style plain denoiser trained for
the same steps, against the noisy input.

translation: the SDA-GAN translator (hyplex.models.adaptation.spectral_translation) is fitted
on twin barcodes of the training scenes and captured barcodes of *other* scenes (unpaired);
decoders trained on raw twin barcodes vs on translated ones are scored on captured barcodes
of held-out scenes: PSNR of a ridge decoder (hyplex's linear projector) and mIoU of a per-pixel
MLP segmenter.  Goal: >= +1 dB or >= +3 mIoU points.  An ablation without the FFT attention
(plain CycleGAN generator) is reported beside it.

Reproduce::

    .venv/bin/python benchmarks/learning_flow_translation.py --quick --seeds 3
    .venv/bin/python benchmarks/learning_methods.py --quick --only flow,translation

Timings depend on the machine's load (the team's 2 cores are shared; say so when quoting).
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

import numpy as np
import torch

GRID_NM = np.linspace(400.0, 730.0, 34)
CLASSES = ("vegetation", "soil", "paint", "metal")
LIGHT_LEVELS = (100.0, 30.0, 10.0)  # photo-electrons of a white reflector per band


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def settings(quick: bool, smoke: bool = False) -> dict:
    if smoke:  # the machinery only (tests): tiny scenes, a few steps; the figures mean nothing
        return {
            "train": 2, "heldout": 1, "calibration": 1, "size": 16, "decoder_steps": 2,
            "denoise_steps": 2,
            "translation_steps": 2, "translation_width": 4, "pixel_steps": 2,
        }  # fmt: skip
    if quick:
        return {
            "train": 12, "heldout": 5, "calibration": 5, "size": 32, "decoder_steps": 300,
            "denoise_steps": 80,
            "translation_steps": 120, "translation_width": 8, "pixel_steps": 400,
        }  # fmt: skip
    return {
        "train": 32, "heldout": 12, "calibration": 12, "size": 48, "decoder_steps": 1200,
        "denoise_steps": 400,
        "translation_steps": 600, "translation_width": 16, "pixel_steps": 1500,
    }  # fmt: skip


def twin_encoder():
    from hyplex.models.encoder_baselines import FixedResponseEncoder

    centres = np.linspace(420.0, 710.0, 9)
    responses = np.exp(-0.5 * ((GRID_NM[None] - centres[:, None]) / 25.0) ** 2)
    return FixedResponseEncoder(responses, GRID_NM, name="gaussian band-pass"), responses


def scenes(count: int, seed: int, size: int):
    """``(cubes (S, L, H, W), labels (S, H, W), n_classes)`` of twin scenes."""
    from hyplex.models.data import generate_scenes

    made = generate_scenes(GRID_NM, count, seed, (size, size), classes=CLASSES)
    cubes, labels, _ = made.tensors()
    return cubes, labels, made.n_classes


def train_regressor(model, inputs, targets, steps: int, seed: int, size: int = 16) -> None:
    """L1 training of a barcode -> cube decoder on random patches (Adam, 2e-3)."""
    from hyplex.models.data import random_crops

    rng = np.random.default_rng(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    model.train()
    for _ in range(steps):
        x, y = random_crops(rng, (inputs, targets), 8, size)
        loss = (model(x) - y).abs().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    model.eval()


def flow_seed(seed: int, config: dict) -> dict:
    from hyplex.models.metrics import psnr
    from hyplex.models.reconstruction import SpectralTransformer
    from hyplex.models.restoration.conditional_flow import (
        ConditionalFlowDecoder,
        FlowTraining,
        train_flow,
    )
    from hyplex.models.restoration.denoising import (
        DenoiserTraining,
        PlainDenoiser,
        flow_denoiser,
        low_light_cube,
        train_denoiser,
    )
    from hyplex.models.restoration.posterior_calibration import (
        calibrate_band_scale,
        interval_coverage,
    )

    encoder, _ = twin_encoder()
    generator = torch.Generator().manual_seed(seed)
    train_cubes, _, _ = scenes(config["train"], 1000 * seed, config["size"])
    test_cubes, _, _ = scenes(config["heldout"], 1000 * seed + 1, config["size"])
    calibration_cubes, _, _ = scenes(config["calibration"], 1000 * seed + 5, config["size"])
    with torch.no_grad():
        train_codes = encoder(train_cubes, generator)
        test_codes = encoder(test_cubes, generator)
        calibration_codes = encoder(calibration_cubes, generator)
    steps = config["decoder_steps"]
    mst_config = {"width": 16, "n_blocks": 1, "n_stages": 1}
    torch.manual_seed(seed)
    started = time.perf_counter()
    mst = SpectralTransformer(9, GRID_NM.size, **mst_config)
    train_regressor(mst, train_codes, train_cubes, steps, seed)
    mst_seconds = time.perf_counter() - started
    torch.manual_seed(seed)  # the flow's estimator starts from the MST decoder's weights
    started = time.perf_counter()
    flow = ConditionalFlowDecoder(
        9, GRID_NM.size, width=16, hidden=32, n_blocks=2, reconstruction_weight=10.0,
        mean_width=16, mean_blocks=1, mean_stages=1,  # = mst_config
    )  # fmt: skip
    train_flow(flow, train_codes, train_cubes, FlowTraining(steps=steps, seed=seed))
    flow_seconds = time.perf_counter() - started
    with torch.no_grad():
        latents = torch.Generator().manual_seed(seed + 7)
        raw = flow.posterior(test_codes, 32, latents)
        started = time.perf_counter()
        scale = calibrate_band_scale(flow, calibration_codes, calibration_cubes, 0.9, 32,
                                     torch.Generator().manual_seed(seed + 11))  # fmt: skip
        calibration_seconds = time.perf_counter() - started
        summary = flow.posterior(test_codes, 32, latents.manual_seed(seed + 7))
        coverage = interval_coverage(test_cubes, summary.lower, summary.upper)
        uncalibrated = interval_coverage(test_cubes, raw.lower, raw.upper)
        mst_test = mst(test_codes)
        mu_test = flow.estimate(flow.condition(test_codes))
        out = {
            "psnr_flow_mean": psnr(summary.mean.clamp(0, 1), test_cubes),
            "psnr_flow_mode": psnr(flow(test_codes).clamp(0, 1), test_cubes),
            "psnr_flow_estimate": psnr(mu_test.clamp(0, 1), test_cubes),
            "psnr_mst": psnr(mst_test.clamp(0, 1), test_cubes),
            "max_abs_mu_minus_mst": float((mu_test - mst_test).abs().max()),
            "nll_nats_per_value": float(flow.nll(test_codes, test_cubes)),
            "coverage_90": coverage["mean"],
            "coverage_90_worst_band": coverage["worst_band"],
            "coverage_90_uncalibrated": uncalibrated["mean"],
            "coverage_90_worst_band_uncalibrated": uncalibrated["worst_band"],
            "band_scale_mean": float(scale.mean()),
            "mean_std": float(summary.std.mean()),
            "train_seconds": {
                "flow": flow_seconds,
                "mst": mst_seconds,
                "flow_calibration": calibration_seconds,
            },  # fmt: skip
        }
    denoising = {}
    for level in LIGHT_LEVELS:
        noisy = low_light_cube(train_cubes, level, 2.0, generator)
        noisy_test = low_light_cube(test_cubes, level, 2.0, generator)
        torch.manual_seed(seed)
        flow_model = flow_denoiser(GRID_NM.size, width=16, hidden=32, n_blocks=1,
                                   mean_width=16, mean_blocks=1, mean_stages=1)  # fmt: skip
        train_flow(flow_model, noisy, train_cubes,
                   FlowTraining(steps=config["denoise_steps"], seed=seed))  # fmt: skip
        plain = PlainDenoiser(GRID_NM.size, width=32, depth=4)
        train_denoiser(plain, noisy, train_cubes,
                       DenoiserTraining(steps=config["denoise_steps"], seed=seed))  # fmt: skip
        with torch.no_grad():
            flow_mean = flow_model.posterior(noisy_test, 16, generator).mean
            denoising[f"{level:g}_electrons"] = {
                "noisy": psnr(noisy_test.clamp(0, 1), test_cubes),
                "flow": psnr(flow_mean.clamp(0, 1), test_cubes),
                "plain": psnr(plain(noisy_test).clamp(0, 1), test_cubes),
            }
    out["denoising_psnr"] = denoising
    log(
        f"flow seed {seed}: PSNR flow {out['psnr_flow_mean']:.2f} vs MST {out['psnr_mst']:.2f}"
        f" dB, NLL {out['nll_nats_per_value']:.3f}, coverage {out['coverage_90']:.3f}"
    )
    return out


def _mean(runs, *keys):
    values = []
    for run in runs:
        value = run
        for key in keys:
            value = value[key]
        values.append(value)
    return float(np.mean(values)), float(np.std(values))


def flow_block(quick: bool = True, seeds: int = 3, smoke: bool = False) -> dict:
    """The ``flow`` block: see the module docstring; ``seeds`` runs, mean and std
    (``smoke``: the machinery only, in seconds)."""
    config = settings(quick, smoke)
    runs = [flow_seed(seed, config) for seed in range(int(seeds))]
    out = {"seeds": int(seeds), "quick": bool(quick), "per_seed": runs}
    for key in ("psnr_flow_mean", "psnr_flow_mode", "psnr_flow_estimate", "psnr_mst",
                "max_abs_mu_minus_mst", "nll_nats_per_value", "coverage_90",
                "coverage_90_worst_band", "coverage_90_uncalibrated",
                "coverage_90_worst_band_uncalibrated"):  # fmt: skip
        out[key], out[f"{key}_std"] = _mean(runs, key)
    out["denoising_psnr"] = {
        level: {name: _mean(runs, "denoising_psnr", level, name)[0] for name in row}
        for level, row in runs[0]["denoising_psnr"].items()
    }
    out["goals"] = {
        "coverage_in_0.85_0.95": bool(0.85 <= out["coverage_90"] <= 0.95),
        "psnr_within_1db": bool(out["psnr_flow_mean"] >= out["psnr_mst"] - 1.0),
    }
    return out


def train_pixel_segmenter(codes, labels, n_classes: int, steps: int, seed: int):
    """Per-pixel MLP 9-64-64-K on barcodes (cross-entropy, Adam)."""
    torch.manual_seed(seed)
    model = torch.nn.Sequential(
        torch.nn.Linear(codes.shape[1], 64), torch.nn.ReLU(),
        torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, n_classes),
    )  # fmt: skip
    points = codes.permute(0, 2, 3, 1).reshape(-1, codes.shape[1])
    targets = labels.reshape(-1)
    rng = np.random.default_rng(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(steps):
        pick = torch.as_tensor(rng.integers(0, points.shape[0], 512))
        loss = torch.nn.functional.cross_entropy(model(points[pick]), targets[pick])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return model.eval()


def translation_seed(seed: int, config: dict) -> dict:
    from hyplex.models.adaptation.spectral_translation import (
        TranslationTraining,
        UnpairedBarcodeTranslation,
    )
    from hyplex.models.label_metrics import mean_iou
    from hyplex.models.metrics import psnr
    from hyplex.models.openset.contrastive_alignment import captured_encoder
    from hyplex.models.reconstruction import LinearDecoder

    torch.manual_seed(seed)
    encoder, responses = twin_encoder()
    captured = captured_encoder(responses, GRID_NM, seed=seed)
    generator = torch.Generator().manual_seed(seed)
    train_cubes, train_labels, n_classes = scenes(config["train"], 1000 * seed + 2, config["size"])
    other_cubes, _, _ = scenes(config["train"], 1000 * seed + 3, config["size"])
    test_cubes, test_labels, _ = scenes(config["heldout"], 1000 * seed + 4, config["size"])
    with torch.no_grad():
        twin_codes = encoder(train_cubes, generator)
        captured_unpaired = captured(other_cubes, generator)
        test_codes = captured(test_cubes, generator)

    def score(codes) -> dict:
        points = codes.permute(0, 2, 3, 1).reshape(-1, 9)
        spectra = train_cubes.permute(0, 2, 3, 1).reshape(-1, GRID_NM.size)
        decoder = LinearDecoder(9, GRID_NM.size).fit(points, spectra, ridge=1e-4)
        segmenter = train_pixel_segmenter(codes, train_labels, n_classes,
                                          config["pixel_steps"], seed)  # fmt: skip
        with torch.no_grad():
            predicted = segmenter(test_codes.permute(0, 2, 3, 1)).argmax(-1)
            return {
                "psnr": psnr(decoder(test_codes).clamp(0, 1), test_cubes),
                "miou": 100.0 * mean_iou(predicted.numpy(), test_labels.numpy(), n_classes),
            }

    out = {"raw_twin": score(twin_codes)}
    for name, attention in (("translated", True), ("translated_no_fft_attention", False)):
        torch.manual_seed(seed)
        translator = UnpairedBarcodeTranslation(9, config["translation_width"], attention)
        started = time.perf_counter()
        training = TranslationTraining(steps=config["translation_steps"], seed=seed)
        translator.fit(twin_codes, captured_unpaired, training)
        with torch.no_grad():
            translated = translator.to_captured(twin_codes)
        out[name] = score(translated)
        out[name]["train_seconds"] = time.perf_counter() - started
    log(
        f"translation seed {seed}: captured PSNR raw {out['raw_twin']['psnr']:.2f} -> "
        f"{out['translated']['psnr']:.2f} dB, mIoU {out['raw_twin']['miou']:.1f} -> "
        f"{out['translated']['miou']:.1f}"
    )
    return out


def translation_block(quick: bool = True, seeds: int = 3, smoke: bool = False) -> dict:
    """The ``translation`` block: see the module docstring; ``seeds`` runs, mean and std
    (``smoke``: the machinery only, in seconds)."""
    config = settings(quick, smoke)
    runs = [translation_seed(seed, config) for seed in range(int(seeds))]
    out = {"seeds": int(seeds), "quick": bool(quick), "per_seed": runs}
    for arm in ("raw_twin", "translated", "translated_no_fft_attention"):
        for metric in ("psnr", "miou"):
            mean, spread = _mean(runs, arm, metric)
            out[f"captured_{metric}_{arm}"] = mean
            out[f"captured_{metric}_{arm}_std"] = spread
    gain_db = out["captured_psnr_translated"] - out["captured_psnr_raw_twin"]
    gain_miou = out["captured_miou_translated"] - out["captured_miou_raw_twin"]
    out["psnr_gain_db"], out["miou_gain_points"] = gain_db, gain_miou
    out["goals"] = {"gain_1db_or_3miou": bool(gain_db >= 1.0 or gain_miou >= 3.0)}
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small scenes (~4 min, 3 seeds)")
    parser.add_argument("--smoke", action="store_true", help="the machinery only (seconds)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--only", default="flow,translation")
    parser.add_argument("--out", help="also write the JSON here (atomically)")
    args = parser.parse_args(argv)
    if args.seeds < 1:
        parser.error("--seeds must be >= 1")
    torch.set_num_threads(1)
    result = {}
    for name, block in (("flow", flow_block), ("translation", translation_block)):
        if name in args.only.split(","):
            started = time.perf_counter()
            result[name] = block(quick=args.quick, seeds=args.seeds, smoke=args.smoke)
            result[name]["seconds"] = time.perf_counter() - started
            log(f"{name}: {result[name]['seconds']:.0f} s")
    text = json.dumps(result, default=float)
    if args.out:
        from pathlib import Path

        from hyplex.optics.atomic_io import atomic_write

        path = Path(args.out)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda handle: handle.write(text.encode()))
    print(text)
    return result


if __name__ == "__main__":
    main()

"""The real-time decoder profile (hyplex.models.realtime) and its bundles."""

import json

import numpy as np
import pytest
import torch

from hyplex.models.bundle import BundleError, load_bundle, save_bundle
from hyplex.models.realtime import (
    REALTIME_SEGMENTER,
    SeparableSegNet,
    fuse_conv_bn,
    profile_of,
    realtime_codesign_settings,
)
from hyplex.models.segmentation import UNet, build_segmenter

torch.set_num_threads(1)


def _trained_statistics(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every BatchNorm and the whitening non-trivial running statistics and affine
    parameters (as training would), so that a fold that ignored them would show."""
    generator = torch.Generator().manual_seed(seed)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            mixing = torch.randn(9, 9, generator=generator)
            x = torch.einsum("oc,bchw->bohw", mixing, torch.rand(2, 9, 24, 20, generator=generator))
            model(x + 3.0)
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5, generator=generator)
                module.bias.uniform_(-0.5, 0.5, generator=generator)
    return model.eval()


def test_conv_bn_fold_is_the_same_function():
    generator = torch.Generator().manual_seed(1)
    conv = torch.nn.Conv2d(4, 4, 3, padding=1, groups=4, bias=False)
    norm = torch.nn.BatchNorm2d(4)
    with torch.no_grad():
        norm.running_mean.uniform_(-1, 1, generator=generator)
        norm.running_var.uniform_(0.2, 3, generator=generator)
        norm.weight.uniform_(0.5, 2, generator=generator)
        norm.bias.uniform_(-1, 1, generator=generator)
    norm.eval()
    x = torch.randn(2, 4, 7, 9, generator=generator)
    fused = fuse_conv_bn(conv, norm)
    torch.testing.assert_close(fused(x), norm(conv(x)), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="conv has 4 output channels, the BatchNorm 5"):
        fuse_conv_bn(conv, torch.nn.BatchNorm2d(5))


@pytest.mark.parametrize("shape", [(24, 20), (23, 17)])
def test_fused_segmenter_computes_the_same_logits(shape):
    """BatchNorm and the ZCA whitening are folded into the convolutions: no normalisation
    layer is left and the logits agree (odd sizes: padded context, cropped back)."""
    model = _trained_statistics(SeparableSegNet(9, 5, width=8, n_blocks=2, factor=4, whiten=True))
    fused = model.fused()
    kinds = {type(m).__name__ for m in fused.modules()}
    assert "BatchNorm2d" not in kinds and "BarcodeWhitening" not in kinds and fused.is_fused
    x = torch.rand(2, 9, *shape, generator=torch.Generator().manual_seed(2)) + 3.0
    with torch.no_grad():
        expected, got = model(x), fused(x)
    assert got.shape == (2, 5, *shape)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    points = torch.rand(6, 9, generator=torch.Generator().manual_seed(3)) + 3.0
    with torch.no_grad():
        torch.testing.assert_close(fused(points), model(points), rtol=1e-4, atol=1e-4)
    assert fused(points).shape == (6, 5)


def test_segmenter_is_far_cheaper_than_the_full_profile():
    """The point of the profile: multiply-adds per metapixel, counted from the layers, are a
    small fraction of the full profile's U-Net (base 8, depth 2)."""

    def macs_per_pixel(model, size=64):
        total = 0

        def hook(module, inputs, output):
            nonlocal total
            kernel = module.weight[0].numel()  # (C_in / groups) * k * k
            total += kernel * output.numel()

        handles = [
            m.register_forward_hook(hook)
            for m in model.modules()
            if isinstance(m, torch.nn.Conv2d | torch.nn.ConvTranspose2d)
        ]
        with torch.no_grad():
            model(torch.rand(1, 9, size, size))
        for handle in handles:
            handle.remove()
        return total / size**2

    options = {k: v for k, v in REALTIME_SEGMENTER[1].items() if k != "whiten"}
    realtime = SeparableSegNet(9, 6, **options).eval().fused()
    full = UNet(9, 6, base_channels=8, depth=2).eval()
    assert macs_per_pixel(realtime) < 0.1 * macs_per_pixel(full)  # 540 against 6968


def test_segmenter_learns_a_spatial_rule_the_pixel_branch_cannot(adam):
    """The context branch matters: a class defined by a neighbourhood (a pixel is class 1
    where the mean of its 8 x 8 block is high, whatever its own value) is learnt by the net
    and not by its per-pixel branch alone."""
    generator = torch.Generator().manual_seed(4)
    blocks = torch.rand(8, 1, 4, 4, generator=generator)
    labels = (blocks > 0.5).long().repeat_interleave(8, 2).repeat_interleave(8, 3)[:, 0]
    x = torch.rand(8, 9, 32, 32, generator=generator)  # pixel values: noise
    x[:, :1] += 0.6 * (labels[:, None].float() - 0.5) + 0.8 * torch.rand(
        8, 1, 32, 32, generator=generator
    )
    scores = {}
    for name, blocks_used in (("context", 2), ("pixel only", 0)):
        torch.manual_seed(0)
        model = SeparableSegNet(9, 2, width=8, n_blocks=max(blocks_used, 1), factor=4)
        if blocks_used == 0:
            model.context_head.weight.data.zero_()
            model.context_head.bias.data.zero_()
            parameters = list(model.pixel_head.parameters())
        else:
            parameters = list(model.parameters())
        optimiser = adam(parameters, 0.02)
        for _ in range(150):
            model.train()
            optimiser.step(torch.nn.functional.cross_entropy(model(x), labels))
        model.eval()
        with torch.no_grad():
            scores[name] = float((model(x).argmax(1) == labels).float().mean())
    assert scores["context"] > scores["pixel only"] + 0.1, scores


def test_profile_names_and_settings():
    from hyplex.models.codesign_config import CodesignConfig

    config = realtime_codesign_settings(CodesignConfig(steps=7))
    assert config.steps == 7 and config.segmenter == "separable"
    assert profile_of(config.reconstructor, config.segmenter) == "realtime"
    assert profile_of("mst", "unet") == "full"
    assert profile_of("separable_projector", "unet") == "full"
    model = build_segmenter(config.segmenter, in_channels=9, n_classes=4, **config.segmenter_config)
    assert isinstance(model, SeparableSegNet)
    with pytest.raises(ValueError, match="width must be a positive int"):
        SeparableSegNet(9, 3, width=0)


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    """A full and a real-time bundle from the same small co-design run settings."""
    from hyplex.models.codesign import train_codesign
    from hyplex.models.codesign_config import CodesignConfig
    from hyplex.models.codesign_library import quick_library

    root = tmp_path_factory.mktemp("profiles")
    library = quick_library(root / "lib.h5", count=24)
    full = CodesignConfig(
        bands=8, wavelength_range_nm=(420.0, 700.0), scene_size=24, n_train_scenes=2,
        n_val_scenes=1, n_objects=3, patch_size=16, batch_size=2, steps=3, finetune_steps=1,
        evaluate_initial=False, reconstructor_config={"width": 8, "n_blocks": 1, "n_stages": 1},
        segmenter_config={"base_channels": 4, "depth": 1}, device="cpu",
    )  # fmt: skip
    paths = {}
    for name, config in (("full", full), ("realtime", realtime_codesign_settings(full))):
        result = train_codesign(config, None, library=library, progress=False)
        paths[name] = save_bundle(root / name, result, report=False)
    return paths


def test_bundle_records_its_profile_and_refuses_the_other(bundles):
    for name, path in bundles.items():
        assert json.loads((path / "bundle.json").read_text())["profile"] == name
        assert load_bundle(path).profile == name
        assert load_bundle(path, profile=name).profile == name
    realtime = load_bundle(bundles["realtime"])
    assert realtime.segmenter.config == {**REALTIME_SEGMENTER[1], "in_channels": 9,
                                         "n_classes": len(realtime.class_names)}  # fmt: skip
    names = r"separable_projector \+ separable"
    with pytest.raises(BundleError, match=rf"is a realtime bundle .*{names}.*a full"):
        load_bundle(bundles["realtime"], profile="full")
    with pytest.raises(BundleError, match="is a full bundle .*--profile realtime"):
        load_bundle(bundles["full"], profile="realtime")
    with pytest.raises(ValueError, match="profile must be one of"):
        load_bundle(bundles["full"], profile="fast")


def test_bundle_without_profile_is_full_and_a_bad_one_is_refused(bundles, tmp_path):
    import shutil

    copy = tmp_path / "old"
    shutil.copytree(bundles["full"], copy)
    record = json.loads((copy / "bundle.json").read_text())
    del record["profile"]
    (copy / "bundle.json").write_text(json.dumps(record))
    assert load_bundle(copy, profile="full").profile == "full"
    record["profile"] = "turbo"
    (copy / "bundle.json").write_text(json.dumps(record))
    with pytest.raises(BundleError, match="profile must be one of.*'turbo'"):
        load_bundle(copy)


def test_realtime_bundle_decodes_like_its_training_model(bundles):
    """The loaded real-time decoders, fused for inference, give the logits of the trained
    (unfused) modules."""
    bundle = load_bundle(bundles["realtime"])
    x = torch.rand(1, 9, 20, 20, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        np.testing.assert_allclose(
            bundle.segmenter.fused()(x).numpy(), bundle.segmenter(x).numpy(), atol=1e-4
        )


def test_command_line_refuses_the_other_profile(bundles, tmp_path):
    """``hyplex segment --profile`` checks the bundle before any input is opened, and
    ``hyplex design --profile`` takes full or realtime only."""
    import typer
    from typer.testing import CliRunner

    from hyplex.cli import design, video

    app = typer.Typer()
    video.register(app)
    design.register(app)
    missing = str(tmp_path / "nothing.h5")  # never opened: the profile is checked first
    result = CliRunner().invoke(
        app, ["segment", missing, "--bundle", str(bundles["realtime"]), "--profile", "full"]
    )
    assert result.exit_code != 0 and "realtime bundle" in result.output
    assert "Traceback" not in result.output
    result = CliRunner().invoke(
        app, ["design", "--out", str(tmp_path / "d"), "--profile", "fast", "--steps", "1"]
    )
    assert result.exit_code != 0 and "full or realtime" in result.output


def test_reconstructor_starts_linear_and_folds_its_batchnorm():
    """The correction starts at zero (the projector alone), and once trained statistics are
    in, the fused copy computes the same spectra without a BatchNorm."""
    from hyplex.models.realtime import SeparableReconstructor
    from hyplex.models.reconstruction import build_reconstructor

    model = build_reconstructor("separable_projector", in_channels=9, n_bands=12, width=8)
    assert isinstance(model, SeparableReconstructor)
    x = torch.rand(2, 9, 11, 13, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x), model.linear(x))
    model = _trained_statistics(model)
    with torch.no_grad():
        model.out.weight.normal_(generator=torch.Generator().manual_seed(7))
        expected = model(x)
        fused = model.fused()
        got = fused(x)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
    assert not torch.allclose(expected, model.linear(x))  # the correction is in play
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    assert fused(torch.rand(4, 9)).shape == (4, 12)


def test_engine_runs_the_fused_decoders_with_the_reference_result():
    """The streaming engine folds the real-time decoders' BatchNorm (its models are fused
    copies; the caller's modules are left trainable) and decodes as the plain reference."""
    from hyplex.models.realtime import SeparableReconstructor
    from hyplex.pipeline.inference import InferenceConfig, InferenceEngine, decode_reference

    reconstructor = _trained_statistics(SeparableReconstructor(9, 6, width=8))
    segmenter = _trained_statistics(SeparableSegNet(9, 4, width=8, whiten=True))
    threads = torch.get_num_threads()
    engine = InferenceEngine(
        reconstructor, segmenter, config=InferenceConfig(torch_threads=1, workers=1)
    )
    torch.set_num_threads(threads)
    assert engine.models["segmenter"].is_fused and engine.models["reconstructor"].is_fused
    assert not segmenter.is_fused and not reconstructor.is_fused
    barcodes = np.random.default_rng(8).uniform(2, 4, (1, 13, 17, 9)).astype(np.float32)
    decoded = engine(barcodes)
    reference = decode_reference(barcodes[0], reconstructor, segmenter)
    np.testing.assert_allclose(decoded.cube[0], reference.cube, atol=1e-4)
    assert np.mean(decoded.labels[0] == reference.labels) > 0.99


def _noisy_barcodes(seed: int, n: int = 2048, n_bands: int = 12, noise: float = 0.01):
    """Smooth spectra ``(n, n_bands)`` and their barcodes ``(n, 9)`` through nine broad,
    overlapping filters normalised to a white reference (as the training camera's), plus
    Gaussian read-out noise: decoding is noise-limited, as in the co-design runs."""
    generator = torch.Generator().manual_seed(seed)
    grid = torch.linspace(0, 1, n_bands)
    centres = torch.rand(n, 3, generator=generator)
    amplitudes = torch.rand(n, 3, generator=generator)
    bumps = torch.exp(-(((grid - centres[:, :, None]) / 0.2) ** 2))
    spectra = (amplitudes[:, :, None] * bumps).sum(1) / 2
    filters = 0.3 + torch.exp(-(((grid - torch.linspace(0.1, 0.9, 9)[:, None]) / 0.3) ** 2))
    filters = filters / filters.sum(1, keepdim=True)
    barcodes = spectra @ filters.T + noise * torch.randn(n, 9, generator=generator)
    return barcodes, spectra


def _train_on_noisy_barcodes(model, steps: int = 600, learning_rate: float = 3e-2) -> float:
    """Adam at a constant step size (as the co-design), L1 loss; returns the held-out MSE of
    the model in evaluation mode."""
    barcodes, spectra = _noisy_barcodes(0)
    held_out_barcodes, held_out_spectra = _noisy_barcodes(1)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(trainable, lr=learning_rate)
    generator = torch.Generator().manual_seed(2)
    model.train()
    for _ in range(steps):
        batch = torch.randint(0, len(barcodes), (32,), generator=generator)
        loss = (model(barcodes[batch]) - spectra[batch]).abs().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        return float(((model.eval()(held_out_barcodes) - held_out_spectra) ** 2).mean())


def test_profile_reconstructor_averages_below_the_constant_step_noise_floor():
    """The real-time reconstructor decodes with the Polyak average of its weights
    (``average_decay``). Why: its decoding is noise-limited and, trained at the co-design's
    constant step size, its weights end on the noise floor of the stochastic gradients
    (quick co-design, seed 1: 37.84 dB against 38.43 dB averaged; seed 2: 38.90 against
    39.56). Here the profile's network and the same one without the average, trained alike on
    a fixed-seed noisy regression at a step size where the plain one sits on that floor: the
    average ends well below it."""
    from hyplex.models.realtime import REALTIME_RECONSTRUCTOR, SeparableReconstructor

    settings = dict(REALTIME_RECONSTRUCTOR[1], width=8)
    assert settings["average_decay"] > 0
    torch.manual_seed(0)
    averaged = _train_on_noisy_barcodes(SeparableReconstructor(9, 12, **settings))
    torch.manual_seed(0)
    plain = _train_on_noisy_barcodes(SeparableReconstructor(9, 12, width=8))
    assert averaged < 0.75 * plain, (averaged, plain)


def test_average_is_passive_and_is_what_inference_decodes():
    """The average draws no random numbers and receives no gradient (a run trains exactly as
    without it); evaluation, the fused inference copy and a copy rebuilt from ``config`` and
    the state dict all decode with it; a bad decay is refused."""
    from hyplex.models.realtime import SeparableReconstructor

    torch.manual_seed(3)
    plain = SeparableReconstructor(9, 6, width=8)
    after_plain = torch.rand(1)
    torch.manual_seed(3)
    model = SeparableReconstructor(9, 6, width=8, average_decay=0.9)
    assert torch.equal(torch.rand(1), after_plain)  # the average drew nothing
    assert all(not p.requires_grad for p in model.average.parameters())
    optimizers = [
        torch.optim.Adam([p for p in m.parameters() if p.requires_grad], lr=1e-2)
        for m in (plain, model)
    ]
    x = torch.rand(3, 9, 7, 6, generator=torch.Generator().manual_seed(4))
    for _ in range(5):
        for m, optimizer in zip((plain, model), optimizers, strict=True):
            loss = m.train()(x).square().mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    torch.testing.assert_close(model.linear.weight, plain.linear.weight)  # trained alike
    with torch.no_grad():
        averaged = model.eval()(x)
        assert not torch.allclose(averaged, plain.eval()(x))  # evaluation uses the average
        torch.testing.assert_close(model.fused()(x), averaged, rtol=1e-5, atol=1e-5)
        rebuilt = SeparableReconstructor(**model.config)
        rebuilt.load_state_dict(model.state_dict())
        torch.testing.assert_close(rebuilt.eval()(x), averaged)
    assert int(model.average_updates) == 5
    with pytest.raises(ValueError, match="average_decay must be in"):
        SeparableReconstructor(9, 6, average_decay=1.0)

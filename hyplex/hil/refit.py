"""Decoder refit: retrain a design's decoders on what the fabricated camera actually measures.

A fabricated metasurface never matches its design (:mod:`hyplex.simulation.fabrication`): its
resonances shift and broaden. A decoder trained on the designed responses then decodes the
wrong code. Hyplex (Makarenko et al., CVPR 2022, Sec. 5) measured each channel's response and
retrained the decoder on it; this module does that from a calibration file::

    calibration.h5 /spectral/response  R_f(lambda)   DN s^-1 per W of reference power
        --hyplex.hil.measured_response.measured_transmissions--> T_f(lambda)
    design bundle + T_measured + synthetic scenes
        --ridge--> linear decoder (the Hyplex reference projector, refitted in closed form)
        --Adam---> learned reconstructor and segmenter, fine-tuned from the design's weights

A calibrated camera normalises each barcode by the electrons a white reference gives through
the same filter (the per-channel flat field; :class:`hyplex.models.encoder_capture.
CameraCapture`), so ``b_f = sum R T_f w / sum T_f w``: a scale error of one filter then
cancels and only the shape of its response, and the SNR, count.

Before calibration the pipeline knows only the design, so it normalises by the design's
white levels (:class:`UncalibratedCamera`): every scale error and every throughput change of a
shifted or broadened filter reaches the decoder as a wrong barcode. The figures of
:func:`refit` separate the two steps of the cure: ``flat_only`` (the per-channel white level
measured, the design decoders kept) and ``after`` (white level and refitted decoders).

On the twin the camera's true transmissions are known (``camera_responses``) and every
figure is scored on them. On hardware they are not: the measured transmissions stand in for
the camera, so ``after`` is then the refitted decoders on the *measured* camera (flagged as
``metrics["camera"] == "measured"``), an in-sample figure for the responses.
"""

from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from hyplex.models.encoder import FixedResponseEncoder

__all__ = [
    "RefitSettings",
    "RefitResult",
    "refit",
    "refit_bundle",
    "UncalibratedCamera",
]


@dataclass(frozen=True)
class RefitSettings:
    """How a refit trains.

    Attributes
    ----------
    steps : Adam steps of the learned reconstructor and segmenter (>= 0).
    learning_rate : Adam step size.
    batch_size, patch_size : patches per step and their side, pixels.
    n_train_scenes : synthetic scenes (the bundle's classes and size) to train on, drawn from
        a seed stream of their own (never the design's training or held-out scenes).
    n_val_scenes : held-out scenes to score on: the bundle's own held-out set (its config
        seed + 1); None takes the bundle's ``n_val_scenes``.
    linear_samples : pixels drawn for the closed-form linear refit.
    ridge : ridge penalty of the linear decoder (barcode units squared).
    seed : scenes, patches and sensor noise.
    """

    steps: int = 150
    learning_rate: float = 1e-3
    batch_size: int = 6
    patch_size: int = 16
    n_train_scenes: int = 12
    n_val_scenes: int | None = None
    linear_samples: int = 4096
    ridge: float = 1e-5
    seed: int = 7

    def __post_init__(self):
        for name in ("batch_size", "patch_size", "n_train_scenes", "n_val_scenes"):
            if getattr(self, name) is not None and int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.steps < 0 or not self.learning_rate > 0 or self.ridge < 0:
            raise ValueError("steps must be >= 0, learning_rate > 0 and ridge >= 0")
        if self.linear_samples < 16:
            raise ValueError(f"linear_samples must be >= 16, got {self.linear_samples}")


@dataclass
class RefitResult:
    """Outcome of :func:`refit`.

    Attributes
    ----------
    model : CodesignModel
        Measured-response encoder with the refitted reconstructor and segmenter.
    linear : LinearDecoder
        Ridge projector fitted on the measured responses.
    responses : numpy.ndarray, (F, L)
        The measured transmissions the refit trained on.
    metrics : dict
        ``{name: {psnr, sam, mrae, miou, real_fake_accuracy}}`` on held-out scenes seen by the
        evaluation camera: ``design`` (design decoders, design camera: what was promised),
        ``before`` (design decoders, the camera uncalibrated: normalised by the design's
        white levels), ``flat_only`` (design decoders, the camera's own white levels),
        ``after`` (refitted decoders, calibrated camera), and ``linear_before`` /
        ``linear_after`` (the Hyplex linear projector fitted on the designed responses, on the
        uncalibrated camera / refitted on the measured responses, on the calibrated camera;
        spectral figures only); ``camera`` says which camera scored them: ``"true"`` (given
        ``camera_responses``) or ``"measured"``.
    history : dict
        Per-step fine-tuning ``loss``.
    seconds : float
    """

    model: torch.nn.Module
    linear: torch.nn.Module
    responses: np.ndarray
    metrics: dict
    history: dict = field(default_factory=dict)
    seconds: float = 0.0


class UncalibratedCamera(torch.nn.Module):
    """A camera whose filters are ``responses`` but whose barcodes are normalised by the white
    levels of ``reference`` (the design): what the pipeline sees before a flat field.

    ``forward(cube (B, L, H, W), generator, noise) -> (B, F, H, W)``, like every encoder.
    """

    def __init__(self, responses, reference, wavelengths_nm, capture):
        super().__init__()
        self.camera = FixedResponseEncoder(responses, wavelengths_nm, capture, name="camera")
        self.reference = FixedResponseEncoder(
            reference, wavelengths_nm, self.camera.capture, name="design"
        )
        if self.reference.fixed.shape != self.camera.fixed.shape:
            raise ValueError("responses and reference must both be (F, L)")

    @property
    def n_filters(self) -> int:
        return self.camera.n_filters

    def forward(self, cube, generator=None, noise: bool = True):
        barcodes = self.camera(cube, generator, noise)
        capture = self.camera.capture
        true_white = capture.white_electrons(self.camera.fixed).clamp_min(1.0)
        assumed_white = capture.white_electrons(self.reference.fixed).clamp_min(1.0)
        return barcodes * (true_white / assumed_white)[None, :, None, None]


def _scenes(bundle, count: int, seed: int):
    """``count`` scenes like the bundle's (its grid, size, classes), drawn with ``seed``."""
    from hyplex.models.codesign import scene_options
    from hyplex.models.codesign_config import CodesignConfig
    from hyplex.models.data import generate_scenes

    options = scene_options(CodesignConfig.from_dict(bundle.config))
    return generate_scenes(bundle.wavelengths_nm, count, seed, **options)


def _train_seed(refit_seed: int) -> int:
    """A seed stream of the refit's own: scene k of a set is drawn from ``[seed, k]``, so
    reusing the design's seed (or seed + 1) would train on its training (held-out) scenes."""
    return int(np.random.SeedSequence([int(refit_seed), 0x5EF17]).generate_state(1)[0])


@torch.no_grad()
def _linear_decoder(encoder, scenes, samples: int, ridge: float, seed: int):
    """Ridge projector from noisy barcodes of ``encoder`` to spectra (Hyplex's linear
    decoder), fitted on ``samples`` random pixels of ``scenes``."""
    from hyplex.models.data import sample_spectra
    from hyplex.models.reconstruction import LinearDecoder

    spectra = sample_spectra(scenes, samples, seed)
    device = encoder.capture.white_weights.device
    cube = torch.as_tensor(spectra.T[None, :, :, None], dtype=torch.float32, device=device)
    generator = torch.Generator(device).manual_seed(seed)
    barcodes = encoder(cube, generator)[0, :, :, 0].T  # (N, F), cube is (1, L, N, 1)
    decoder = LinearDecoder(encoder.n_filters, spectra.shape[1]).to(device)
    return decoder.fit(barcodes, spectra, ridge=ridge).eval()


def refit(bundle, responses, settings: RefitSettings | None = None, camera_responses=None,
          progress: bool = True) -> RefitResult:  # fmt: skip
    """Refit a bundle's decoders to measured responses and score them.

    Parameters
    ----------
    bundle : DesignBundle
        From :func:`hyplex.models.bundle.load_bundle`.
    responses : array_like, (F, L)
        Measured transmissions on the bundle's grid
        (:func:`hyplex.hil.measured_response.measured_transmissions`).
    settings : RefitSettings, optional
    camera_responses : array_like, (F, L), optional
        The transmissions the evaluation camera really has. On the twin these are the
        fabricated truth; on hardware they are unknown and the measured ones stand in.
    progress : tqdm bar over the fine-tuning steps.
    """
    from tqdm.auto import tqdm

    from hyplex.models.codesign import CodesignModel, codesign_loss, evaluate
    from hyplex.models.codesign_config import CodesignConfig
    from hyplex.models.data import PatchDataset

    settings = settings or RefitSettings()
    began = time.perf_counter()
    grid, capture = bundle.wavelengths_nm, bundle.capture
    responses = np.asarray(responses, dtype=np.float64)
    if responses.shape != bundle.responses.shape:
        raise ValueError(
            f"measured responses {responses.shape} do not match the bundle's "
            f"{bundle.responses.shape} (F filters x L bands)"
        )
    truth = responses if camera_responses is None else np.asarray(camera_responses, float)
    if truth.shape != responses.shape:
        raise ValueError(f"camera_responses must have shape {responses.shape}, got {truth.shape}")
    config = CodesignConfig.from_dict(bundle.config)
    device = next(bundle.reconstructor.parameters(), torch.empty(0)).device
    designed = FixedResponseEncoder(bundle.responses, grid, capture, name="design").to(device)
    measured = FixedResponseEncoder(responses, grid, capture, name="measured").to(device)
    camera = FixedResponseEncoder(truth, grid, capture, name="camera").to(device)
    n_val = config.n_val_scenes if settings.n_val_scenes is None else settings.n_val_scenes
    held_out = _scenes(bundle, n_val, int(config.seed) + 1)
    train = _scenes(bundle, settings.n_train_scenes, _train_seed(settings.seed))
    evaluation_seed = settings.seed + 1

    def score(encoder, reconstructor, segmenter):
        return evaluate(CodesignModel(encoder, reconstructor, segmenter), held_out, evaluation_seed)

    uncalibrated = UncalibratedCamera(truth, bundle.responses, grid, designed.capture).to(device)
    metrics = {
        "camera": "measured" if camera_responses is None else "true",
        "design": score(designed, bundle.reconstructor, bundle.segmenter),
        "before": score(uncalibrated, bundle.reconstructor, bundle.segmenter),
        "flat_only": score(camera, bundle.reconstructor, bundle.segmenter),
    }
    spectral = ("psnr", "sam", "mrae")
    for name, fitted_on, seen_by in (
        ("linear_before", designed, uncalibrated),
        ("linear_after", measured, camera),
    ):
        linear = _linear_decoder(fitted_on, train, settings.linear_samples, settings.ridge,
                                 settings.seed)  # fmt: skip
        figures = score(seen_by, linear, bundle.segmenter)
        metrics[name] = {key: figures[key] for key in spectral}
    reconstructor = copy.deepcopy(bundle.reconstructor).train()
    segmenter = copy.deepcopy(bundle.segmenter).train()
    model = CodesignModel(measured, reconstructor, segmenter)
    parameters = [p for m in (reconstructor, segmenter) for p in m.parameters()]
    optimizer = torch.optim.Adam(parameters, lr=settings.learning_rate)
    patches = PatchDataset(train, settings.patch_size, seed=settings.seed)
    history = {"loss": []}
    for step in tqdm(range(settings.steps), desc="refit", unit="step", disable=not progress):
        first = step * settings.batch_size
        data = patches.batch(range(first, first + settings.batch_size), device)
        generator = torch.Generator(device).manual_seed(settings.seed * 100_003 + step)
        _, spectra, logits = model(data["cube"], generator)
        loss, _ = codesign_loss(config, spectra, data["cube"], logits, data["labels"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        history["loss"].append(float(loss.detach()))
    model.eval()
    metrics["after"] = score(camera, reconstructor, segmenter)
    return RefitResult(model, linear.eval(), responses, metrics, history,
                       time.perf_counter() - began)  # fmt: skip


def refit_bundle(bundle_path, calibration_path, out, settings: RefitSettings | None = None,
                 overwrite: bool = False, progress: bool = True):  # fmt: skip
    """``hyplex refit``: load a bundle and a calibration, refit, and write a new bundle.

    The new bundle holds the measured responses (``design.npz``), the registered mosaic
    layout of the calibration, the refitted decoders and, in ``bundle.json`` ``metrics``,
    the figures as phases ``refit_design``, ``refit_before``, ``refit_after``, ...
    Returns ``(RefitResult, path)``.
    """
    from hyplex.calibration.store import load_calibration
    from hyplex.hil.measured_response import check_channel_order, measured_transmissions
    from hyplex.models.bundle import load_bundle, save_bundle
    from hyplex.models.codesign import CodesignResult
    from hyplex.models.codesign_config import CodesignConfig
    from hyplex.models.encoder_capture import CameraCapture

    bundle = load_bundle(bundle_path)
    calibration = load_calibration(calibration_path)
    spectral = calibration.sections.get("spectral")
    if spectral is None:
        raise ValueError(
            f"{calibration_path} has no spectral response (status {calibration.status!r}); "
            "finish the monochromator sweep first (hyplex calibrate --resume)"
        )
    # an imported calibration (hyplex calibrate import) has responses but no registered
    # mosaic: its channel count is the number of response rows, its layout the design's
    if calibration.layout is not None:
        layout, n_channels, what = calibration.layout, calibration.layout.n_filters, "mosaic"
    else:
        layout, what = bundle.layout, "imported response"
        n_channels = int(spectral["response"].shape[0])
    if n_channels != bundle.responses.shape[0]:
        raise ValueError(
            f"the calibration's {what} has {n_channels} channels, the design "
            f"{bundle.responses.shape[0]} filters: this calibration is of another encoder"
        )
    capture = CameraCapture(bundle.wavelengths_nm, bundle.capture)
    responses = measured_transmissions(
        spectral["response"], spectral["wavelengths_nm"], capture, bundle.responses
    )
    check_channel_order(responses, bundle.responses)
    result = refit(bundle, responses, settings, progress=progress)
    config = CodesignConfig.from_dict(bundle.config)
    settings = settings or RefitSettings()
    design = {
        "kind": "measured",
        "responses": responses,
        "designed_from": str(bundle.path),
        "calibration": str(calibration_path),
        "camera_id": calibration.provenance.camera_id,
        "refit_settings": asdict(settings),
    }
    # one flat phase per figure set, beside the design's own (initial, relaxed, ..., final)
    figures = {f"refit_{k}": v for k, v in result.metrics.items() if isinstance(v, dict)}
    metrics = {**bundle.metrics, **figures}
    n_val = config.n_val_scenes if settings.n_val_scenes is None else settings.n_val_scenes
    held_out = _scenes(bundle, n_val, int(config.seed) + 1)
    record = CodesignResult(result.model, config, bundle.wavelengths_nm, bundle.class_names,
                            result.history, metrics, design, held_out, result.seconds)  # fmt: skip
    path = save_bundle(out, record, layout=layout, overwrite=overwrite)
    return result, path

"""Decoder refit: retrain a design's decoders on what the fabricated camera actually measures.

A fabricated metasurface never matches its design (:mod:`hyplex.simulation.fabrication`): its
resonances shift and broaden. A decoder trained on the designed responses then decodes the
wrong code. Hyplex (Makarenko et al., CVPR 2022, Sec. 5) measured each channel's response and
retrained the decoder on it; this module does that from a calibration file::

    calibration.h5 /spectral/response  R_f(lambda)   DN s^-1 per W of reference power
        / unit-filter photoelectron weights w(lambda) (QE, photon energy, lens, pixel)
        = T_f(lambda) up to one scale per filter               (measured_transmissions)
    design bundle + T_measured + synthetic scenes
        --ridge--> linear decoder (the Hyplex reference projector, refitted in closed form)
        --Adam---> learned reconstructor and segmenter, fine-tuned from the design's weights

Why a scale per filter does not matter to the decoder: a calibrated camera normalises each
barcode by the electrons a white reference gives through the same filter (the per-channel
flat field; :class:`hyplex.models.encoder_capture.CameraCapture`), so ``b_f = sum R T_f w /
sum T_f w`` is invariant to scaling ``T_f``; only the shape of each response, and the SNR,
count. The scale is still set by least squares against the designed response (the best prior
for the absolute transmission, which sets the simulated SNR).

Before calibration the pipeline knows only the design, so it normalises by the design's
white levels (:class:`UncalibratedCamera`): every scale error and every throughput change of a
shifted or broadened filter reaches the decoder as a wrong barcode. The figures of
:func:`refit` separate the two steps of the cure: ``flat_only`` (the per-channel white level
measured, the design decoders kept) and ``after`` (white level and refitted decoders).

The QE and lens model used to divide out ``w(lambda)`` are those of the bundle's capture
settings (the camera data sheet); an error there is common to all filters.
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
    "measured_transmissions",
    "unit_filter_weights",
    "refit",
    "refit_bundle",
    "design_twin",
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
    n_train_scenes, n_val_scenes : synthetic scenes (bundle's classes and size) to train and
        score on; the held-out set is the bundle's own (its config seed + 1).
    linear_samples : pixels drawn for the closed-form linear refit.
    ridge : ridge penalty of the linear decoder (barcode units squared).
    seed : scenes, patches and sensor noise.
    """

    steps: int = 150
    learning_rate: float = 1e-3
    batch_size: int = 6
    patch_size: int = 16
    n_train_scenes: int = 12
    n_val_scenes: int = 3
    linear_samples: int = 4096
    ridge: float = 1e-5
    seed: int = 7

    def __post_init__(self):
        for name in ("batch_size", "patch_size", "n_train_scenes", "n_val_scenes"):
            if int(getattr(self, name)) < 1:
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
        spectral figures only).
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


def unit_filter_weights(capture) -> np.ndarray:
    """Photoelectrons per second per band of unit spectral radiance through a filter of unit
    transmission, ``(L,)`` (e- s^-1 per W m^-2 sr^-1 nm^-1, times the band width):
    the capture's white-reflector weights divided by the white radiance ``E(lambda) / pi``."""
    from hyplex.simulation.illuminants import get_illuminant

    settings = capture.settings
    irradiance = get_illuminant(
        settings.illuminant, capture.wavelengths_nm, settings.illuminance_lux
    ).spectral_irradiance
    white = capture.white_weights.detach().cpu().double().numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        weights = np.where(irradiance > 0, white / (irradiance / np.pi), 0.0)
    return weights


def measured_transmissions(response, response_wavelengths_nm, capture, designed=None) -> np.ndarray:
    """Filter transmissions ``(F, L)`` in [0, 1] on the capture's grid from a measured
    spectral response (see the module docstring).

    Parameters
    ----------
    response : array_like, (F, Lc)
        Measured response of each filter channel (any unit proportional to DN per unit
        spectral power, e.g. ``/spectral/response`` of a calibration file).
    response_wavelengths_nm : array_like, (Lc,)
        Its wavelengths, nm; must cover the capture's grid.
    capture : CameraCapture
        The bundle's training camera (grid, QE, lens, illuminant).
    designed : array_like, (F, L), optional
        Designed transmissions; each measured row is scaled to them by least squares.
        Without them each row is scaled to a peak of 1.
    """
    grid = np.asarray(capture.wavelengths_nm, dtype=np.float64)
    measured = np.asarray(response, dtype=np.float64)
    source = np.asarray(response_wavelengths_nm, dtype=np.float64).reshape(-1)
    if measured.ndim != 2 or measured.shape[1] != source.size:
        raise ValueError(
            f"response must have shape (F, Lc={source.size}) on its wavelengths, got "
            f"{measured.shape}"
        )
    if not np.all(np.isfinite(measured)):
        raise ValueError("the measured response holds NaN or inf")
    if grid[0] < source.min() - 1e-6 or grid[-1] > source.max() + 1e-6:
        raise ValueError(
            f"the calibration covers {source.min():g}-{source.max():g} nm but the design "
            f"needs {grid[0]:g}-{grid[-1]:g} nm; sweep the whole design range"
        )
    order = np.argsort(source)
    on_grid = np.stack([np.interp(grid, source[order], row[order]) for row in measured])
    weights = unit_filter_weights(capture)
    with np.errstate(divide="ignore", invalid="ignore"):
        shape = np.where(weights > 0, on_grid / weights, 0.0)
    shape = np.clip(shape, 0.0, None)
    if designed is not None:
        designed = np.asarray(designed, dtype=np.float64)
        if designed.shape != shape.shape:
            raise ValueError(
                f"designed responses {designed.shape} do not match the measured {shape.shape}"
            )
        scale = np.sum(shape * designed, 1) / np.maximum(np.sum(shape * shape, 1), 1e-300)
    else:
        scale = 1.0 / np.maximum(shape.max(1), 1e-300)
    return np.clip(shape * scale[:, None], 0.0, 1.0)


def _scenes(bundle, count: int, seed: int):
    from hyplex.models.data import generate_scenes

    config = bundle.config
    size = int(config["scene_size"])
    return generate_scenes(
        bundle.wavelengths_nm,
        count,
        seed,
        shape=(size, size),
        n_objects=int(config["n_objects"]),
        classes=tuple(config["classes"]),
        fake_classes=tuple(config["fake_classes"]),
        fake_fraction=float(config["fake_fraction"]),
    )


@torch.no_grad()
def _linear_decoder(encoder, scenes, samples: int, ridge: float, seed: int):
    """Ridge projector from noisy barcodes of ``encoder`` to spectra (Hyplex's linear
    decoder), fitted on ``samples`` random pixels of ``scenes``."""
    from hyplex.models.data import sample_spectra
    from hyplex.models.reconstruction import LinearDecoder

    spectra = sample_spectra(scenes, samples, seed)
    cube = torch.as_tensor(spectra.T[None, :, :, None], dtype=torch.float32)  # (1, L, N, 1)
    generator = torch.Generator().manual_seed(seed)
    barcodes = encoder(cube, generator)[0, :, :, 0].T  # (N, F)
    decoder = LinearDecoder(encoder.n_filters, spectra.shape[1])
    return decoder.fit(barcodes, spectra, ridge=ridge).eval()


def refit(bundle, responses, settings: RefitSettings | None = None, camera_responses=None,
          progress: bool = True) -> RefitResult:  # fmt: skip
    """Refit a bundle's decoders to measured responses and score them.

    Parameters
    ----------
    bundle : DesignBundle
        From :func:`hyplex.models.bundle.load_bundle`.
    responses : array_like, (F, L)
        Measured transmissions on the bundle's grid (:func:`measured_transmissions`).
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
    designed = FixedResponseEncoder(bundle.responses, grid, capture, name="design")
    measured = FixedResponseEncoder(responses, grid, capture, name="measured")
    camera = FixedResponseEncoder(truth, grid, capture, name="camera")
    held_out = _scenes(bundle, settings.n_val_scenes, int(config.seed) + 1)
    train = _scenes(bundle, settings.n_train_scenes, settings.seed)
    evaluation_seed = settings.seed + 1

    def score(encoder, reconstructor, segmenter):
        return evaluate(CodesignModel(encoder, reconstructor, segmenter), held_out, evaluation_seed)

    uncalibrated = UncalibratedCamera(truth, bundle.responses, grid, designed.capture)
    metrics = {
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
        data = patches.batch(range(first, first + settings.batch_size))
        generator = torch.Generator().manual_seed(settings.seed * 100_003 + step)
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
    if calibration.layout.n_filters != bundle.responses.shape[0]:
        raise ValueError(
            f"the calibration's mosaic has {calibration.layout.n_filters} filters, the design "
            f"{bundle.responses.shape[0]}: this calibration is of another encoder"
        )
    capture = CameraCapture(bundle.wavelengths_nm, bundle.capture)
    responses = measured_transmissions(
        spectral["response"], spectral["wavelengths_nm"], capture, bundle.responses
    )
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
    metrics = {**bundle.metrics, **{f"refit_{k}": v for k, v in result.metrics.items()}}
    held_out = _scenes(bundle, settings.n_val_scenes, int(config.seed) + 1)
    record = CodesignResult(result.model, config, bundle.wavelengths_nm, bundle.class_names,
                            result.history, metrics, design, held_out, result.seconds)  # fmt: skip
    path = save_bundle(out, record, layout=calibration.layout, overwrite=overwrite)
    return result, path


def design_twin(bundle, sensor_shape=(240, 256), pitch_px: float = 5.3, rotation_deg=1.0,
                fabrication=None, seed: int = 0):  # fmt: skip
    """A camera twin carrying a bundle's filters, as designed or as fabricated.

    Parameters
    ----------
    bundle : DesignBundle
    sensor_shape : (rows, cols) pixels; pitch_px, rotation_deg : the mosaic on it.
    fabrication : FabricationError or None
        None: the designed responses; otherwise errors drawn with ``seed``
        (:func:`hyplex.simulation.fabrication.fabricate`).

    Returns
    -------
    (CameraTwin, numpy.ndarray (F, L))
        The twin (its sensor, lens and QE models are the bundle's capture settings) and the
        transmissions it really has.
    """
    from dataclasses import replace

    from hyplex.simulation.camera import CameraTwin
    from hyplex.simulation.encoder import Encoder
    from hyplex.simulation.fabrication import fabricate
    from hyplex.simulation.layout import MosaicLayout
    from hyplex.simulation.radiometry import LensModel

    responses = np.asarray(bundle.responses, dtype=np.float64)
    if fabrication is not None:
        responses = fabricate(responses, bundle.wavelengths_nm, fabrication, seed).responses
    grid = bundle.layout.grid
    if grid[0] * grid[1] != responses.shape[0]:
        raise ValueError(f"the bundle's layout grid {grid} does not hold {len(responses)} filters")
    layout = MosaicLayout.fit(sensor_shape, grid=grid, pitch_px=pitch_px, rotation_deg=rotation_deg)
    capture = bundle.capture
    sensor = replace(capture.sensor, shape=tuple(int(v) for v in sensor_shape))
    lens = LensModel(capture.f_number, capture.lens_transmission)
    name = "fabricated" if fabrication is not None else "design"
    encoder = Encoder(bundle.wavelengths_nm, responses, layout, name=name)
    return CameraTwin(encoder, sensor, lens), responses

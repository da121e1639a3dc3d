"""The inference stage of the streaming engine: barcodes -> spectral cube and labels (torch).

::

    barcodes (B, h, w, n_filters) float32 numpy, DN
        --/ input_scale_dn, NaN -> 0--> x (B, n_filters, h, w) torch   [pinned, non_blocking]
        --reconstructor--> cube (B, L, h, w) --bands--> (B, h, w, L') numpy float32
        --segmenter (x, or the cube)--> logits (B, K, h, w)
        --temporal module (optional, frame by frame)--> labels (B, h, w) uint8/int16

Any ``nn.Module`` with the forward ``(B, C, h, w) -> (B, out, h, w)`` serves as reconstructor
or segmenter (``hyplex.models.reconstruction`` / ``segmentation``, a design bundle's decoders,
a TorchScript file). On CUDA: a pinned host buffer and a side stream for the upload,
channels_last, bf16/fp16 autocast and optional ``torch.compile``; on the CPU: fp32, eager or
compiled, channels_last (NHWC: the barcodes already are, oneDNN's depthwise and 3x3
convolutions are several times faster than in NCHW, and the ``hyplex.models`` blocks keep the
layout without copies), ``torch.set_num_threads`` sized to the cores left by preprocessing.
:func:`decode_reference` is the plain per-frame path the engine must agree with.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from hyplex.optics.threads import thread_policy

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@dataclass
class InferenceConfig:
    """How the models run.

    Attributes
    ----------
    device : str
        "auto" (CUDA when available), "cpu", "cuda" or "cuda:N".
    batch_size : int
        Frames per forward pass at most (the engine batches what is waiting, never waits).
    precision : str
        "auto" (bf16 on CUDA, fp32 on CPU), "fp32", "bf16" or "fp16" (autocast).
    channels_last : bool
        NHWC memory format for the models and their input (CUDA: tensor cores; CPU: oneDNN's
        NHWC convolutions, same function up to float rounding).
    compile : bool
        ``torch.compile`` the models (first frames are slow while it compiles).
    input_scale_dn : float or numpy.ndarray (n_filters,)
        Barcodes are divided by this (DN) before the models: the scale they were trained at
        (per filter: the white-reference level of each filter, as the design bundles' decoders
        expect, ``hyplex.models.encoder_capture``).
    bands : tuple of int or None
        Indices of the reconstructed bands to keep (None: all).
    segment_from : str
        "barcodes" (the segmenter reads the barcodes) or "cube" (the reconstructed cube).
    torch_threads : int or None
        CPU threads for torch (None: the thread policy's count minus one for preprocessing,
        at least one; see :mod:`hyplex.optics.threads`).
    workers : int or None
        Frames (batches) decoded concurrently by separate threads, each with
        ``torch_threads``; results keep the frame order. None: the cores // ``torch_threads``
        (inter-frame parallelism scales better than intra-op threads on these small-channel
        networks). Always 1 with a temporal module (its state
        is sequential) and on CUDA.
    uncertainty_samples : int
        Posterior samples per frame for the per-pixel, per-band standard deviation of a
        reconstructor that has ``posterior`` (the conditional flow,
        :mod:`hyplex.models.restoration.conditional_flow`): ``extra["cube_std"]``
        (B, h, w, L') float32.  0 (default): none.
    """

    device: str = "auto"
    batch_size: int = 1
    precision: str = "auto"
    channels_last: bool = True
    compile: bool = False
    input_scale_dn: float = 1.0
    bands: tuple[int, ...] | None = None
    segment_from: str = "barcodes"
    torch_threads: int | None = None
    workers: int | None = None
    uncertainty_samples: int = 0

    def __post_init__(self):
        if int(self.batch_size) != self.batch_size or self.batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {self.batch_size!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        scale = np.asarray(self.input_scale_dn, np.float32)
        if scale.ndim > 1 or not (np.all(np.isfinite(scale)) and np.all(scale > 0)):
            raise ValueError(
                "input_scale_dn must be > 0 DN, one number or one per filter, got "
                f"{self.input_scale_dn!r}"
            )
        self.input_scale_dn = float(scale) if scale.ndim == 0 else scale
        if self.segment_from not in ("barcodes", "cube"):
            raise ValueError(
                f"segment_from must be 'barcodes' or 'cube', got {self.segment_from!r}"
            )
        if self.bands is not None:
            self.bands = tuple(int(b) for b in self.bands)
        if int(self.uncertainty_samples) != self.uncertainty_samples or not (
            self.uncertainty_samples == 0 or self.uncertainty_samples >= 2
        ):
            raise ValueError(
                "uncertainty_samples must be 0 or an integer >= 2, got "
                f"{self.uncertainty_samples!r}"
            )


def resolve_device(name: str = "auto") -> torch.device:
    """``torch.device`` for "auto" | "cpu" | "cuda[:N]"; ValueError for CUDA without a GPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but torch sees no CUDA GPU")
    return device


@dataclass
class DecodedBatch:
    """Outputs of one forward pass over B frames.

    Attributes
    ----------
    cube : numpy.ndarray, float32 (B, h, w, L') or None
        Reconstructed spectra of the kept bands.
    labels : numpy.ndarray, (B, h, w) uint8 (K <= 256) or int16, or None
    confidence : numpy.ndarray, float32 (B, h, w) or None
        Probability of the chosen class.
    """

    cube: np.ndarray | None = None
    labels: np.ndarray | None = None
    confidence: np.ndarray | None = None
    extra: dict = field(default_factory=dict)


def _label_dtype(n_classes: int):
    return np.uint8 if n_classes <= 256 else np.int16


def _prepare(barcodes: np.ndarray, scale: float) -> np.ndarray:
    """(B, h, w, n) DN -> (B, h, w, n) float32 scaled, NaN (empty sub-filter) -> 0."""
    x = np.asarray(barcodes, np.float32) / np.asarray(scale, np.float32)
    return np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)


def decode_reference(
    barcodes,
    reconstructor=None,
    segmenter=None,
    input_scale_dn=1.0,
    bands=None,
    segment_from="barcodes",
) -> DecodedBatch:
    """The plain path: one frame's barcodes (h, w, n_filters), eager fp32 NCHW torch on the CPU,
    no batching, no temporal model. The streaming engine must reproduce it."""
    x = torch.from_numpy(_prepare(barcodes[None], input_scale_dn)).permute(0, 3, 1, 2)
    x = x.contiguous()  # NCHW, as a per-frame script would hold it
    out = DecodedBatch()
    with torch.no_grad():
        cube = None
        if reconstructor is not None:
            cube = reconstructor(x)
            kept = cube if bands is None else cube[:, list(bands)]
            out.cube = kept.permute(0, 2, 3, 1).float().numpy()[0]
        if segmenter is not None:
            source = cube if segment_from == "cube" else x
            probabilities = torch.softmax(segmenter(source).float(), 1)
            confidence, labels = probabilities.max(1)
            out.labels = labels.numpy()[0].astype(_label_dtype(probabilities.shape[1]))
            out.confidence = confidence.numpy()[0]
    return out


class InferenceEngine:
    """Runs the reconstructor, segmenter and temporal module on batches (see the module doc).

    Parameters
    ----------
    reconstructor, segmenter : torch.nn.Module or None
        At least one. Forward ``(B, C, h, w) -> (B, out, h, w)``.
    temporal : nn.Module or None
        ``forward(logits, features, state) -> (log_probabilities, state)``, e.g.
        :class:`hyplex.models.temporal.GatedLogitSmoother`; applied frame by frame in order.
    config : InferenceConfig
    openset : hyplex.models.openset.OpenSetDetector or None
        An open-set head around ``segmenter`` (its ``model``): each batch then also gives
        ``extra["unknown"]`` (B, h, w) float32, the unknown-material probability.
    fake_head : hyplex.models.pretraining.realfake_files.RealFakeHead or None
        A real-vs-fake (metamer) head on the barcodes: each batch then also gives
        ``extra["fake"]`` (B, h, w) float32, the fake probability (0.5 at its threshold),
        computed in fp32 whatever ``precision``.
    """

    def __init__(
        self,
        reconstructor=None,
        segmenter=None,
        temporal=None,
        config: InferenceConfig | None = None,
        openset=None,
        fake_head=None,
    ):
        if reconstructor is None and segmenter is None:
            raise ValueError("give a reconstructor, a segmenter or both")
        for name, module in (
            ("reconstructor", reconstructor),
            ("segmenter", segmenter),
            ("temporal", temporal),
        ):
            if module is not None and not callable(module):
                raise TypeError(f"{name} must be a torch.nn.Module, got {type(module).__name__}")
        self.config = config or InferenceConfig()
        if self.config.workers is not None and (
            int(self.config.workers) != self.config.workers or self.config.workers < 1
        ):
            raise ValueError(f"workers must be an integer >= 1, got {self.config.workers!r}")
        if self.config.segment_from == "cube" and reconstructor is None:
            raise ValueError("segment_from='cube' needs a reconstructor")
        self.device = resolve_device(self.config.device)
        self.cuda = self.device.type == "cuda"
        cores = thread_policy().threads  # the process's compute threads (optics.threads)
        threads = self.config.torch_threads or max(1, cores - 1)
        if not self.cuda:
            torch.set_num_threads(int(threads))
        workers = self.config.workers or (1 if self.cuda else max(1, cores // int(threads)))
        # one worker on CUDA: its pinned buffer and upload stream are per engine
        self.workers = 1 if temporal is not None or self.cuda else int(workers)
        precision = self.config.precision
        if precision == "auto":
            precision = "bf16" if self.cuda else "fp32"
        self.autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
        self.models = {}
        for name, module in (
            ("reconstructor", reconstructor),
            ("segmenter", segmenter),
            ("temporal", temporal),
        ):
            if module is None:
                continue
            if isinstance(module, nn.Module):
                module = module.to(self.device).eval()
                if callable(getattr(module, "fused", None)):  # BatchNorm folded (realtime)
                    module = module.fused()
                # CPU: the input's layout decides the convolutions' (oneDNN), the weights stay
                # as given (the caller's modules are not changed)
                if self.cuda and self.config.channels_last and name != "temporal":
                    module = module.to(memory_format=torch.channels_last)
            if self.config.compile and name != "temporal":
                module = torch.compile(module, dynamic=False)
            self.models[name] = module
        self.openset = None if openset is None else openset.to(self.device)
        if self.openset is not None and segmenter is None:
            raise ValueError("an open-set head needs the segmenter it scores")
        self.fake_head = None if fake_head is None else fake_head.to(self.device).eval()
        self._state = None
        self._pinned: torch.Tensor | None = None
        self._upload_stream = torch.cuda.Stream(self.device) if self.cuda else None

    def reset(self) -> None:
        """Forget the temporal state (a new stream or a cut)."""
        self._state = None

    def parameter_counts(self) -> dict[str, int]:
        """Trainable parameters of each model."""
        counts = {}
        for name, module in self.models.items():
            params = getattr(module, "parameters", None)
            counts[name] = sum(p.numel() for p in params()) if params else 0
        return counts

    def _upload(self, x: np.ndarray) -> torch.Tensor:
        """(B, h, w, n) float32 numpy -> (B, n, h, w) tensor on the device."""
        host = torch.from_numpy(x)
        if not self.cuda:
            # (B, h, w, n) storage viewed as (B, n, h, w): already channels_last, no copy
            nchw = host.permute(0, 3, 1, 2)
            return nchw if self.config.channels_last else nchw.contiguous()
        if self._pinned is None or self._pinned.shape != host.shape:
            self._pinned = torch.empty(host.shape, dtype=torch.float32, pin_memory=True)
        self._pinned.copy_(host)
        with torch.cuda.stream(self._upload_stream):
            device_x = self._pinned.to(self.device, non_blocking=True)
        torch.cuda.current_stream(self.device).wait_stream(self._upload_stream)
        device_x = device_x.permute(0, 3, 1, 2)  # NHWC storage: already channels_last
        if not self.config.channels_last:
            device_x = device_x.contiguous()
        return device_x

    def _autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def __call__(self, barcodes: np.ndarray) -> DecodedBatch:
        """Decode a batch of barcodes (B, h, w, n_filters) DN (see the module doc)."""
        barcodes = np.asarray(barcodes)
        if barcodes.ndim != 4:
            raise ValueError(f"barcodes must be (B, h, w, n_filters), got {barcodes.shape}")
        x = self._upload(_prepare(barcodes, self.config.input_scale_dn))
        out = DecodedBatch()
        with torch.inference_mode(), self._autocast():
            if self.fake_head is not None:  # per pixel of the barcodes, in fp32
                with torch.autocast(self.device.type, enabled=False):
                    out.extra["fake"] = self.fake_head(x.float()).float().cpu().numpy()
            cube = None
            if "reconstructor" in self.models:
                cube = self.models["reconstructor"](x)
                kept = cube if self.config.bands is None else cube[:, list(self.config.bands)]
                out.cube = kept.float().permute(0, 2, 3, 1).contiguous().cpu().numpy()
                if self.config.uncertainty_samples:  # posterior std of a flow decoder
                    latents = torch.Generator(x.device).manual_seed(0)  # the same draws each frame
                    std = (
                        self.models["reconstructor"]
                        .posterior(x, self.config.uncertainty_samples, latents)
                        .std
                    )
                    std = std if self.config.bands is None else std[:, list(self.config.bands)]
                    out.extra["cube_std"] = std.float().permute(0, 2, 3, 1).cpu().numpy()
            if "segmenter" in self.models:
                source = cube if self.config.segment_from == "cube" else x
                logits = self.models["segmenter"](source).float()
                if self.openset is not None:  # from the frame's own logits, before smoothing
                    scores = self.openset.scores_from(logits, source.float())
                    unknown = self.openset.unknown_probability(scores)
                    out.extra["unknown"] = unknown.float().cpu().numpy()
                if "temporal" in self.models:
                    features = x.float()
                    frames = []
                    for b in range(logits.shape[0]):
                        smoothed, self._state = self.models["temporal"](
                            logits[b : b + 1], features[b : b + 1], self._state
                        )
                        frames.append(smoothed)
                    logits = torch.cat(frames, 0)
                probabilities = torch.softmax(logits, 1)
                confidence, labels = probabilities.max(1)
                out.labels = (
                    labels.to(torch.int16).cpu().numpy().astype(_label_dtype(logits.shape[1]))
                )
                out.confidence = confidence.cpu().numpy()
        return out

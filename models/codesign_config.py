"""Settings of a co-design run (:func:`hyplex.models.codesign.train_codesign`), from TOML.

A TOML file holds the fields of :class:`CodesignConfig` at the top level or in a
``[codesign]`` table; tables ``[reconstructor_config]``, ``[segmenter_config]`` and
``[capture]`` are passed on as keyword arguments. Example::

    seed = 0
    bands = 34
    encoder = "library"            # library | surrogate | unconstrained | pca | rgb | identity
    library_path = "lib.h5"
    steps = 400
    [reconstructor_config]
    width = 16
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

__all__ = ["ENCODERS", "LEARNING_RATE_DECAYS", "SELECTIONS", "CodesignConfig",
           "learning_rate_factor", "quick_config"]  # fmt: skip

ENCODERS = ("library", "surrogate", "unconstrained", "pca", "rgb", "identity")
LEARNING_RATE_DECAYS = ("cosine", "constant")
SELECTIONS = ("gumbel", "separability")


def learning_rate_factor(step: int, total_steps: int, decay: str, floor: float) -> float:
    """Multiplier of the base step size at ``step`` of ``total_steps``: 1 for ``"constant"``;
    for ``"cosine"``, ``floor + (1 - floor) (1 + cos(pi step / total)) / 2`` (Loshchilov &
    Hutter, SGDR, ICLR 2017, eq. 5 with one cycle), from 1 down to ``floor``."""
    if decay == "constant":
        return 1.0
    if decay != "cosine":
        raise ValueError(f"decay must be one of {LEARNING_RATE_DECAYS}, got {decay!r}")
    fraction = min(max(step / max(total_steps, 1), 0.0), 1.0)
    return float(floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * fraction)))


@dataclass(frozen=True)
class CodesignConfig:
    """Everything a co-design run depends on (a run is a pure function of it and its inputs).

    Attributes
    ----------
    seed : seeds scenes (train: ``seed``, held out: ``seed + 1``), initialisation, batches and
        noise.
    bands, wavelength_range_nm : training grid ``linspace(*range, bands)`` nm (34 bands
        400-730 nm: the prototype grid).
    encoder : parametrisation (see :data:`ENCODERS` and :mod:`hyplex.models.encoder`).
    n_filters : filters per metapixel (9 = 3 x 3); the RGB encoder has 3, identity ``bands``.
    library_path, surrogate_path : response library (HDF5) and surrogate (``.pt``/``.json``)
        for the ``library``/``pca`` and ``surrogate`` encoders.
    temperature_start, temperature_end, gumbel : Gumbel-softmax relaxation, annealed
        exponentially over ``steps`` (Jang et al., ICLR 2017).
    distinct_designs : hardening never picks one library design for two filters.
    selection : how the ``library`` encoder chooses its designs: ``"gumbel"`` learns the
        choice end to end (Gumbel-softmax over ``steps``, then hardened); ``"separability"``
        chooses before training by greedy forward selection on the noisy-barcode Bhattacharyya
        separability of the training pixels' classes
        (:func:`hyplex.models.encoder.separability_selection`), then trains the decoders on
        the fixed designs for ``steps`` + ``finetune_steps``.
    refine_with_rcwa, refine_harmonics, refine_grid : after hardening a surrogate encoder,
        recompute its spectra with the RCWA (orders ``-M..M``, an ``N x N`` cell raster, the
        normal-vector factorisation) before the decoders are fine-tuned and scored. The
        defaults, M = 8 on 128 px, are the order ``hyplex library build --target-accuracy
        0.01`` chose for the quick c-Si stack (rms 0.007 from the converged M = 10; M = 2 was
        off by up to 0.6); the probe measured 22 s per design at 18 wavelengths on one core.
    capture : :class:`~hyplex.models.encoder_capture.CaptureSettings` fields.
    classes, fake_classes, fake_fraction, n_objects, scene_size : scenes (``make_scene``).
    n_train_scenes, n_val_scenes : scene counts of the training and held-out sets.
    patch_size, batch_size : training patches (pixels) and patches per step (over all ranks).
    steps : optimisation steps with the relaxed encoder.
    learning_rate, encoder_learning_rate : Adam step sizes of the decoders and the encoder.
    learning_rate_decay, learning_rate_floor : ``"cosine"`` anneals every step size from its
        value to ``floor`` x its value over ``steps`` (and again over ``finetune_steps``,
        from half the decoder rate; Loshchilov & Hutter, ICLR 2017, without restarts);
        ``"constant"`` (the default) keeps them. Measured with the 400-step quick config of
        the time (``hyplex design --quick --config``) on one quick library, seeds 0/1/2:
        final PSNR 35.1/34.1/33.8 dB constant against 34.0/33.5/31.7 dB cosine (mIoU
        0.17/0.32/0.36 against 0.14/0.21/0.28): a 400-step run is still under-trained and
        needs its full step size.
    reconstructor, reconstructor_config : :func:`hyplex.models.reconstruction.
        build_reconstructor` name and keyword arguments (channels and bands are filled in).
    segmenter, segmenter_config : :func:`hyplex.models.segmentation.build_segmenter` likewise.
    init_encoder : path of a pretrained U-Net encoder (``hyplex pretrain``, safetensors) loaded
        into the segmenter before training (:func:`hyplex.models.pretraining.load_encoder`);
        None: random initialisation.
    weight_mrae, weight_l1, weight_sam, weight_ce : loss weights (MRAE, L1, SAM, cross-entropy).
    mrae_eps : denominator floor of the MRAE loss.
    finetune_steps : decoder-only steps after hardening the encoder.
    checkpoint_every : steps between checkpoints (the last step is always saved).
    evaluate_initial : also score the untrained model on the held-out scenes.
    device : ``"cpu"``, ``"cuda"``; None picks CUDA when present.
    """

    seed: int = 0
    bands: int = 34
    wavelength_range_nm: tuple[float, float] = (400.0, 730.0)
    encoder: str = "library"
    n_filters: int = 9
    library_path: str | None = None
    surrogate_path: str | None = None
    temperature_start: float = 1.0
    temperature_end: float = 0.03
    gumbel: bool = True
    distinct_designs: bool = False
    selection: str = "gumbel"
    refine_with_rcwa: bool = True
    refine_harmonics: int = 8
    refine_grid: int = 128
    capture: dict = field(default_factory=dict)
    classes: tuple[str, ...] = ("vegetation", "soil", "paint", "metal")
    fake_classes: tuple[str, ...] = ("vegetation",)
    fake_fraction: float = 0.4
    n_objects: int = 4
    scene_size: int = 48
    n_train_scenes: int = 24
    n_val_scenes: int = 8
    patch_size: int = 16
    batch_size: int = 8
    steps: int = 400
    learning_rate: float = 3e-3
    encoder_learning_rate: float = 5e-2
    learning_rate_decay: str = "constant"
    learning_rate_floor: float = 0.05
    reconstructor: str = "mst"
    reconstructor_config: dict = field(
        default_factory=lambda: {"width": 16, "n_blocks": 1, "n_stages": 1}
    )
    segmenter: str = "unet"
    segmenter_config: dict = field(default_factory=lambda: {"base_channels": 8, "depth": 2})
    init_encoder: str | None = None
    weight_mrae: float = 1.0
    weight_l1: float = 1.0
    weight_sam: float = 0.1
    weight_ce: float = 0.5
    mrae_eps: float = 0.05
    finetune_steps: int = 50
    checkpoint_every: int = 50
    evaluate_initial: bool = True
    device: str | None = None

    def __post_init__(self):
        set_ = object.__setattr__
        set_(self, "wavelength_range_nm", tuple(float(v) for v in self.wavelength_range_nm))
        set_(self, "classes", tuple(self.classes))
        set_(self, "fake_classes", tuple(self.fake_classes))
        if self.encoder not in ENCODERS:
            raise ValueError(f"encoder must be one of {ENCODERS}, got {self.encoder!r}")
        if self.selection not in SELECTIONS:
            raise ValueError(f"selection must be one of {SELECTIONS}, got {self.selection!r}")
        positive = ("bands", "n_filters", "scene_size", "n_train_scenes", "n_val_scenes")
        for name in (*positive, "patch_size", "batch_size", "checkpoint_every"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.bands < 2:
            raise ValueError(f"bands must be >= 2, got {self.bands}")
        low, high = self.wavelength_range_nm
        if not (len(self.wavelength_range_nm) == 2 and 0 < low < high and math.isfinite(high)):
            raise ValueError(f"wavelength_range_nm must be (low, high) nm, got {(low, high)}")
        if self.patch_size > self.scene_size:
            raise ValueError(f"patch_size {self.patch_size} exceeds scene_size {self.scene_size}")
        if self.steps < 0 or self.finetune_steps < 0:
            raise ValueError("steps and finetune_steps must be >= 0")
        if not (self.temperature_start > 0 and self.temperature_end > 0):
            raise ValueError("temperatures must be > 0")
        if not (self.learning_rate > 0 and self.encoder_learning_rate >= 0):
            raise ValueError("learning_rate must be > 0 and encoder_learning_rate >= 0")
        if self.learning_rate_decay not in LEARNING_RATE_DECAYS:
            raise ValueError(
                f"learning_rate_decay must be one of {LEARNING_RATE_DECAYS}, "
                f"got {self.learning_rate_decay!r}"
            )
        if not 0 <= self.learning_rate_floor <= 1:
            floor = self.learning_rate_floor
            raise ValueError(f"learning_rate_floor must be in [0, 1], got {floor}")
        if self.refine_harmonics < 0 or self.refine_grid < 8:
            raise ValueError(
                f"refine_harmonics must be >= 0 and refine_grid >= 8 pixels, got "
                f"{self.refine_harmonics} and {self.refine_grid}"
            )
        if min(self.weight_mrae, self.weight_l1, self.weight_sam, self.weight_ce) < 0:
            raise ValueError("loss weights must be >= 0")

    @property
    def wavelengths_nm(self) -> np.ndarray:
        """The training grid ``(bands,)`` nm."""
        return np.linspace(*self.wavelength_range_nm, self.bands)

    def to_dict(self) -> dict:
        """JSON-ready dict (tuples as lists); :meth:`from_dict` inverts it."""
        values = asdict(self)
        for key, value in values.items():
            if isinstance(value, tuple):
                values[key] = list(value)
        return values

    def replace(self, **changes) -> CodesignConfig:
        return CodesignConfig(**{**asdict(self), **changes})

    @classmethod
    def from_dict(cls, values: dict) -> CodesignConfig:
        """Build from a dict; unknown keys are an error naming the known ones."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown co-design settings {unknown}; known: {sorted(known)}")
        return cls(**values)

    @classmethod
    def from_toml(cls, path) -> CodesignConfig:
        """Read a TOML file (top-level keys or a ``[codesign]`` table)."""
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"config file {path} does not exist")
        try:
            values = tomllib.loads(path.read_text())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
            raise ValueError(f"{path}: not valid TOML: {error}") from None
        values = values.get("codesign", values)
        try:
            return cls.from_dict(values)
        except (TypeError, ValueError) as error:
            raise ValueError(f"{path}: {error}") from None


def quick_config(**changes) -> CodesignConfig:
    """The run of ``hyplex design --quick`` and ``make demo``: about a minute a training on one
    CPU thread (34 bands, 32 + 8 scenes of 48 x 48 px, 1500 + 300 steps, small decoders).

    It is sized so that the demo's claims hold on held-out scenes
    (:func:`hyplex.models.comparison.compare_rows`), and its segmenter whitens the barcodes
    (:mod:`hyplex.models.whitening`). Measured on the 384-design quick library of M = 1
    (Li's rule), every row trained with this config, seeds 0/1/2: co-designed mIoU
    0.578/0.583/0.549 against RGB 0.475/0.454/0.416 (+10 to +13 points); without whitening
    0.520/0.529/0.398 against 0.373/0.470/0.474, and the 400-step quick run of before reached
    0.17/0.32/0.36. PSNR 39.5/38.8/37.6 dB against 33.9/33.2/33.7 dB for the Hyplex PCA +
    linear baseline.
    """
    settings = {
        "bands": 34,
        "scene_size": 48,
        "n_train_scenes": 32,
        "n_val_scenes": 8,
        "patch_size": 16,
        "batch_size": 8,
        "steps": 1500,
        "finetune_steps": 300,
        "checkpoint_every": 250,
        "segmenter_config": {"base_channels": 8, "depth": 2, "whiten": True},
    }
    return CodesignConfig(**{**settings, **changes})

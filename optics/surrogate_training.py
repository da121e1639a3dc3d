"""Training and scoring a :class:`~hyplex.optics.surrogate.SpectralSurrogate` on a library.

The library's finished designs are split (seeded) into train, validation and test sets. Adam
minimises the MSE of the transmittance with a one-cycle learning-rate schedule (Smith &
Topin 2019); the weights of the best validation epoch are kept, and training stops early after
``patience`` epochs without improvement. An ensemble's members are trained side by side, each
on its own loss and batch order; the validation MSE that selects the epoch is the ensemble's.
The test split is used only for the final figures.

The figure of merit is ALFRED's (Peng et al., Light Sci. Appl. 2021): the fraction of held-out
designs whose spectrum MSE (mean over wavelengths and TE/TM) is below 0.005; they reached
98.1 %. The mean training spectrum is the baseline.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from .library import LibraryError, ResponseLibrary
from .library_spec import LibrarySpec
from .surrogate import SpectralSurrogate, describe

__all__ = [
    "MSE_THRESHOLD",
    "SurrogateConfig",
    "TrainingReport",
    "train_surrogate",
    "fit_members",
    "fit_and_score",
    "network_options",
    "resolve_splits",
    "split",
    "spectrum_mse",
    "fraction_below",
    "mean_spectrum_baseline",
]

#: ALFRED's criterion: a predicted spectrum is good if its MSE is below this
MSE_THRESHOLD = 0.005


@dataclass(frozen=True)
class SurrogateConfig:
    """Architecture and training settings (see :class:`SpectralSurrogate` for the first six).

    Attributes
    ----------
    epochs : most passes over the training designs (sets the one-cycle schedule).
    batch_size, learning_rate, weight_decay : AdamW (Adam when ``weight_decay == 0``).
    patience : stop after this many epochs without a better validation MSE.
    validation_fraction, test_fraction : held-out shares of the finished designs.
    train_fraction : share of the remaining (training) designs used, for learning curves;
        the validation and test splits do not change with it.
    seed : seeds the split, the initialisation, the Fourier frequencies and the batch order.
    device : ``"cpu"``, ``"cuda"``, ...; default CUDA when available.
    """

    hidden: int = 256
    blocks: int = 4
    fourier_features: int = 64
    fourier_scale: float = 1.0
    symmetric: bool = True
    members: int = 3
    epochs: int = 60
    batch_size: int = 128
    learning_rate: float = 2e-3
    weight_decay: float = 0.0
    patience: int = 20
    validation_fraction: float = 0.1
    test_fraction: float = 0.1
    train_fraction: float = 1.0
    seed: int = 0
    device: str | None = None

    def __post_init__(self):
        for name in ("hidden", "members", "epochs", "batch_size", "patience"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.blocks < 0 or self.fourier_features < 0 or not self.learning_rate > 0:
            raise ValueError("blocks and fourier_features must be >= 0, learning_rate > 0")
        if not 0 < self.train_fraction <= 1:
            raise ValueError(f"train_fraction must be in (0, 1], got {self.train_fraction}")
        shares = (self.validation_fraction, self.test_fraction)
        if min(shares) <= 0 or sum(shares) >= 1:
            raise ValueError(
                f"validation and test fractions must be > 0 with sum < 1, got {shares}"
            )

    def to_dict(self) -> dict:
        return asdict(self)


# --------------------------------------------------------------------------- metrics


def spectrum_mse(predicted, target) -> np.ndarray:
    """Per-design mean squared error over wavelengths and polarisations: ``(N,)``."""
    diff = np.asarray(predicted, dtype=np.float64) - np.asarray(target, dtype=np.float64)
    return (diff**2).reshape(diff.shape[0], -1).mean(axis=1)


def fraction_below(mse, threshold: float = MSE_THRESHOLD) -> float:
    """Share of designs with ``mse < threshold`` (ALFRED's figure of merit at 0.005)."""
    mse = np.asarray(mse)
    return float(np.mean(mse < threshold)) if mse.size else float("nan")


def mean_spectrum_baseline(train_T, test_T) -> np.ndarray:  # noqa: N803
    """Per-design MSE ``(N_test,)`` of predicting every test design as the mean training one."""
    if np.shape(test_T)[0] == 0:
        return np.zeros(0)
    mean = np.asarray(train_T, dtype=np.float64).mean(axis=0, keepdims=True)
    return spectrum_mse(np.broadcast_to(mean, np.shape(test_T)), test_T)


# --------------------------------------------------------------------------- training


@dataclass
class TrainingReport:
    """Splits, learning curve and held-out figures of one training run.

    ``train_index``, ``validation_index``, ``test_index`` index the library's finished designs
    (``library.completed()``); ``history`` holds ``(train_mse, validation_mse)`` per epoch;
    ``test_mse`` and ``baseline_mse`` are per-design MSE on the test split.
    """

    train_index: np.ndarray
    validation_index: np.ndarray
    test_index: np.ndarray
    history: list = field(default_factory=list)
    best_epoch: int = 0
    seconds: float = 0.0
    test_mse: np.ndarray | None = None
    baseline_mse: np.ndarray | None = None

    def summary(self) -> dict:
        """JSON-ready held-out figures."""
        return {
            "train_designs": int(self.train_index.size),
            "validation_designs": int(self.validation_index.size),
            "test_designs": int(self.test_index.size),
            "epochs": len(self.history),
            "best_epoch": self.best_epoch,
            "train_seconds": round(self.seconds, 2),
            "fraction_mse_below_0.005": fraction_below(self.test_mse),
            "median_mse": float(np.median(self.test_mse)) if self.test_mse.size else None,
            "mean_mse": float(np.mean(self.test_mse)) if self.test_mse.size else None,
            "baseline_fraction_mse_below_0.005": fraction_below(self.baseline_mse),
            "baseline_mean_mse": (
                float(np.mean(self.baseline_mse)) if self.baseline_mse.size else None
            ),
        }


def split(count: int, config: SurrogateConfig):
    """Seeded train, validation and test index arrays over ``count`` designs."""
    order = np.random.default_rng(config.seed).permutation(count)
    n_test = max(1, round(config.test_fraction * count))
    n_val = max(1, round(config.validation_fraction * count))
    n_train = round(config.train_fraction * (count - n_test - n_val))
    if n_train < 1:
        raise ValueError(f"a library of {count} finished designs is too small to split")
    train = order[n_test + n_val : n_test + n_val + n_train]
    return train, order[n_test : n_test + n_val], order[:n_test]


def train_surrogate(
    library: ResponseLibrary,
    config: SurrogateConfig | None = None,
    progress: bool = False,
    splits: tuple | None = None,
) -> tuple[SpectralSurrogate, TrainingReport]:
    """Fit a :class:`SpectralSurrogate` to the finished designs of ``library``.

    ``splits``: ``(train, validation, test)`` index arrays into ``library.completed()`` to use
    instead of the config's seeded split (a comparison that must hold the same designs out of
    several models); ``test`` may be empty.

    Returns the model at its best validation epoch (in eval mode, on ``config.device``) and a
    report with the test split's per-design MSE and the mean-spectrum baseline's (empty arrays
    for an empty test split).
    """
    config = config or SurrogateConfig()
    library = library.completed()
    train, val, test = resolve_splits(len(library), config, splits)
    device = torch.device(config.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.manual_seed(config.seed)
    low, high = _input_box(library)
    model = SpectralSurrogate(describe(library), low, high, **network_options(config))
    return model, fit_and_score(model.to(device), library, (train, val, test), config, progress)


def resolve_splits(count: int, config: SurrogateConfig, splits: tuple | None = None) -> tuple:
    """``(train, validation, test)`` index arrays over ``count`` finished designs: the given
    ``splits`` (checked: a training and a validation design at least, indices in range) or
    the config's seeded :func:`split`."""
    if splits is None:
        return split(count, config)
    train, val, test = (np.asarray(part, dtype=np.int64).reshape(-1) for part in splits)
    if train.size < 1 or val.size < 1:
        raise ValueError("splits need at least one training and one validation design")
    if max(int(part.max(initial=-1)) for part in (train, val, test)) >= count:
        raise ValueError(f"split indices must be < {count} (the finished designs)")
    return train, val, test


def network_options(config: SurrogateConfig) -> dict:
    """The constructor arguments of a surrogate's (or a correction's) networks in ``config``."""
    names = ("hidden", "blocks", "fourier_features", "fourier_scale", "symmetric", "members")
    return {name: getattr(config, name) for name in names} | {"seed": config.seed}


def fit_and_score(model, library, splits: tuple, config, progress: bool = False):
    """:func:`fit_members` on ``splits = (train, val, test)``, then the test designs' MSE and
    the mean-spectrum baseline's: the :class:`TrainingReport`."""
    train, val, test = splits
    report = TrainingReport(train, val, test)
    fit_members(model, library, train, val, config, report, progress)
    predicted = model.predict(library.params_nm[test], library.thickness_nm[test])
    report.test_mse = spectrum_mse(predicted, library.T[test]) if test.size else np.zeros(0)
    report.baseline_mse = mean_spectrum_baseline(library.T[train], library.T[test])
    return report


def fit_members(model, library, train, val, config, report, progress: bool = False) -> None:
    """Train every member of ``model`` on its own loss and batch order; keep the best epoch.

    ``model`` has ``forward(params, thickness)`` (the ensemble) and ``member_spectra(params,
    thickness, [k])`` (member ``k``), and ``config.members`` members; ``library`` gives
    ``params_nm``, ``thickness_nm`` and the target ``T`` (N, L, 2); ``train`` and ``val`` index
    it. Adam (AdamW with weight decay) under a one-cycle schedule minimises the MSE; the epoch
    with the best validation MSE of the ensemble is kept and training stops after
    ``config.patience`` epochs without improvement. Fills ``report.history``,
    ``report.best_epoch`` and ``report.seconds``; leaves ``model`` in eval mode.
    """
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(config.seed)
    params = torch.as_tensor(library.params_nm, dtype=torch.float32, device=device)
    thickness = torch.as_tensor(library.thickness_nm, dtype=torch.float32, device=device)
    target = torch.as_tensor(library.T, dtype=torch.float32, device=device)

    def loss_of(index):
        return torch.mean((model(params[index], thickness[index]) - target[index]) ** 2)

    def member_loss(k, index):  # each member fits the data on its own (not their mean)
        spectra = model.member_spectra(params[index], thickness[index], [k])[0]
        return torch.mean((spectra - target[index]) ** 2)

    trainable = [p for p in model.parameters() if p.requires_grad]
    optimiser_class = torch.optim.AdamW if config.weight_decay > 0 else torch.optim.Adam
    optimiser = optimiser_class(
        trainable, lr=config.learning_rate, weight_decay=config.weight_decay
    )
    steps_per_epoch = math.ceil(train.size / config.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimiser, config.learning_rate, total_steps=config.epochs * steps_per_epoch, pct_start=0.1
    )
    best, best_state, stale = math.inf, copy.deepcopy(model.state_dict()), 0
    train_t, val_t = torch.as_tensor(train, device=device), torch.as_tensor(val, device=device)
    began = time.perf_counter()
    for epoch in range(config.epochs):
        model.train()
        total = 0.0
        orders = [  # each member its own batch order
            train_t[torch.randperm(train.size, generator=generator).to(device)].split(
                config.batch_size
            )
            for _ in range(config.members)
        ]
        for batches in zip(*orders, strict=True):
            losses = [member_loss(k, batch) for k, batch in enumerate(batches)]
            optimiser.zero_grad(set_to_none=True)
            sum(losses).backward()
            optimiser.step()
            schedule.step()
            total += float(sum(losses).detach()) / len(losses) * batches[0].numel()
        model.eval()
        with torch.no_grad():
            val_mse = float(loss_of(val_t))
        report.history.append((total / train.size, val_mse))
        if val_mse < best:
            best, best_state, stale = val_mse, copy.deepcopy(model.state_dict()), 0
            report.best_epoch = epoch
        else:
            stale += 1
        if progress and epoch % 10 == 0:
            print(f"epoch {epoch}: train {total / train.size:.2e} val {val_mse:.2e}", flush=True)
        if stale >= config.patience:
            break
    report.seconds = time.perf_counter() - began
    model.load_state_dict(best_state)
    model.eval()


def _input_box(library: ResponseLibrary):
    """Normalisation box ``(P + 1,)`` x 2: the generation's box when recorded, else the data's."""
    try:
        spec = LibrarySpec.from_library(library)
    except (LibraryError, KeyError, TypeError, ValueError):
        spec = None
    if spec is not None:
        (low, high), (t_low, t_high) = spec.parameter_bounds(), spec.thickness_range_nm
        return np.append(low, t_low), np.append(high, t_high)
    data = np.column_stack([library.params_nm, library.thickness_nm])
    low, high = data.min(axis=0), data.max(axis=0)
    return low, np.where(high > low, high, low + 1.0)

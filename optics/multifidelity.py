"""A multi-fidelity surrogate: a surrogate of many cheap low-order spectra, corrected towards
converged spectra by a network trained on few of them.

Low-order RCWA spectra are cheap (a c-Si rectangle at M = 2 costs ~1/100 of one at M = 8) but
wrong by a large, smooth-ish amount; converged ones are right but too dear to compute by the
ten thousand. The autoregressive multi-fidelity scheme of Kennedy & O'Hagan (Biometrika 87, 1
(2000)), ``T_high(v) = rho T_low(v) + delta(v)``, in the neural form of Meng & Karniadakis
(J. Comput. Phys. 401, 109020 (2020)), where the correction may depend nonlinearly on the
low-fidelity output, is here::

    f_low(v)          a SpectralSurrogate (hyplex.optics.surrogate) trained on the low-order
                      library, then frozen                                        (L, 2)
    x                 v mapped from the parameter box onto [-1, 1]                 (P + 1,)
    z                 [x, sin(pi x B), cos(pi x B), f_low(v) flattened]           Fourier
                      features as in the surrogate
    delta_k(v)        Linear(ResidualBlock^blocks(Linear(z))), last layer zero at start, so
                      the model starts as f_low                                    (L, 2)
    T(v)              f_low(v) + mean_k delta_k(v)

With ``symmetric`` (families with a 90-degree rotation, like the surrogate) each ``delta_k`` is
averaged with its TE/TM-swapped value at the rotated design, so ``T_TE(v) = T_TM(perm v)``
holds exactly (``f_low`` already obeys it). The correction is trained (``train_multifidelity``)
on the converged designs with the surrogate's loop (:func:`~.surrogate_training.fit_members`),
the low-order model fixed.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .library import LibraryError, ResponseLibrary
from .surrogate import (
    ResidualBlock,
    SpectralSurrogate,
    architecture_record,
    fourier_encode,
    predict_in_batches,
    seeded_frequencies,
    surrogate_from_record,
    surrogate_record,
)
from .surrogate_training import (
    SurrogateConfig,
    TrainingReport,
    fit_and_score,
    network_options,
    resolve_splits,
)
from .untrusted import check_config_limits, check_state_shapes

__all__ = [
    "MultiFidelitySurrogate",
    "train_multifidelity",
    "save_multifidelity",
    "load_multifidelity",
]

FORMAT = "hyplex-multifidelity-surrogate"
FORMAT_VERSION = 1


class _Correction(nn.Module):
    """One member: ``(x (..., P + 1), low (..., 2L))`` -> correction ``(..., 2L)``."""

    def __init__(self, inputs, outputs, hidden, blocks, fourier_features, fourier_scale, seed):
        super().__init__()
        frequencies = seeded_frequencies(inputs, fourier_features, fourier_scale, seed)
        self.register_buffer("frequencies", frequencies)
        self.stem = nn.Linear(inputs + 2 * int(fourier_features) + outputs, int(hidden))
        self.body = nn.Sequential(*(ResidualBlock(int(hidden)) for _ in range(int(blocks))))
        self.norm = nn.LayerNorm(int(hidden))
        self.head = nn.Linear(int(hidden), outputs)
        nn.init.zeros_(self.head.weight)  # start as the low-order model
        nn.init.zeros_(self.head.bias)

    def forward(self, x, low):
        h = self.body(self.stem(torch.cat([fourier_encode(x, self.frequencies), low], -1)))
        return self.head(self.norm(h))


class MultiFidelitySurrogate(nn.Module):
    """``T (..., L, 2)`` = frozen low-order surrogate + learned correction (module docstring).

    Parameters
    ----------
    low : the trained low-order :class:`SpectralSurrogate` (its weights are frozen).
    hidden, blocks, fourier_features, fourier_scale, members, seed : the correction networks
        (as in :class:`SpectralSurrogate`); member ``k`` draws its frequencies with ``seed + k``.
    symmetric : enforce the family's rotation symmetry on the correction too.
    """

    def __init__(
        self,
        low: SpectralSurrogate,
        hidden: int = 128,
        blocks: int = 2,
        fourier_features: int = 32,
        fourier_scale: float = 1.0,
        symmetric: bool = True,
        members: int = 1,
        seed: int = 0,
    ):
        super().__init__()
        if int(members) < 1:
            raise ValueError(f"members must be >= 1, got {members}")
        self.low = low.eval()
        for parameter in self.low.parameters():
            parameter.requires_grad_(False)
        self.description = low.description
        self.wavelengths_nm = low.wavelengths_nm
        self.architecture = architecture_record(
            hidden, blocks, fourier_features, fourier_scale, symmetric, members, seed=seed
        )
        inputs, outputs = low.low.numel(), 2 * self.wavelengths_nm.size
        self.permutation = low.permutation if symmetric else None
        self.networks = nn.ModuleList(
            _Correction(inputs, outputs, hidden, blocks, fourier_features, fourier_scale, seed + k)
            for k in range(int(members))
        )

    def train(self, mode: bool = True):
        super().train(mode)
        self.low.eval()  # frozen: always in eval mode
        return self

    def forward(self, params_nm, thickness_nm) -> torch.Tensor:
        return self.member_spectra(params_nm, thickness_nm).mean(0)

    def member_spectra(self, params_nm, thickness_nm, members=None) -> torch.Tensor:
        """``T (K, ..., L, 2)`` of each member (all, or the indices ``members``)."""
        device = self.low.low.device
        params_nm = torch.as_tensor(params_nm, dtype=torch.float32, device=device)
        thickness_nm = torch.as_tensor(thickness_nm, dtype=torch.float32, device=device)
        base = self.low(params_nm, thickness_nm)  # (..., L, 2), checks the shapes
        x = self.low.normalise(params_nm, thickness_nm)
        if self.permutation is not None:
            x_rotated = self.low.normalise(params_nm[..., self.permutation], thickness_nm)
            base_rotated = base.flip(-1)  # f_low is symmetric: f_low(perm v) = swap(f_low(v))
        members = range(len(self.networks)) if members is None else members
        spectra = []
        for k in members:
            delta = self.networks[k](x, base.flatten(-2)).unflatten(-1, base.shape[-2:])
            if self.permutation is not None:
                turned = self.networks[k](x_rotated, base_rotated.flatten(-2))
                delta = 0.5 * (delta + turned.unflatten(-1, base.shape[-2:]).flip(-1))
            spectra.append(base + delta)
        return torch.stack(spectra)

    def predict(self, params_nm, thickness_nm, batch_size: int = 4096) -> np.ndarray:
        """Numpy convenience: ``T (N, L, 2)`` float64, clipped to [0, 1] (the correction is
        not bounded as the sigmoid of the low-order surrogate is)."""
        T = predict_in_batches(self, params_nm, thickness_nm, self.low.low.device, batch_size)  # noqa: N806
        return np.clip(T, 0.0, 1.0)


def train_multifidelity(
    low: SpectralSurrogate,
    library: ResponseLibrary,
    config: SurrogateConfig | None = None,
    splits: tuple | None = None,
    progress: bool = False,
) -> tuple[MultiFidelitySurrogate, TrainingReport]:
    """Train the correction of ``low`` on the converged spectra of ``library``.

    Parameters
    ----------
    low : a trained low-order surrogate of the same stack and wavelength grid.
    library : the converged (high-fidelity) designs; its finished designs are used.
    config : the correction's architecture (``hidden``, ``blocks``, ``fourier_features``,
        ``fourier_scale``, ``symmetric``, ``members``) and training settings.
    splits : ``(train, validation, test)`` indices into ``library.completed()``; default the
        config's seeded split.

    Returns the model (eval mode) and a report with the test designs' MSE against the
    converged spectra (and the mean-spectrum baseline's).
    """
    config = config or SurrogateConfig(hidden=128, blocks=2, fourier_features=32, members=1)
    library = library.completed()
    low.check_library(library)
    splits = resolve_splits(len(library), config, splits)
    device = torch.device(config.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.manual_seed(config.seed)
    model = MultiFidelitySurrogate(low.to(device), **network_options(config)).to(device)
    return model, fit_and_score(model, library, splits, config, progress)


def save_multifidelity(model: MultiFidelitySurrogate, path) -> tuple[Path, Path]:
    """Write ``name.safetensors`` (both networks' tensors) and ``name.json``; returns both."""
    from safetensors.torch import save_file

    from .atomic_io import atomic_path, atomic_write

    path = Path(path)
    weights, config = path.with_suffix(".safetensors"), path.with_suffix(".json")
    state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    weights.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(weights) as temporary:
        save_file(state, temporary, metadata={"format": FORMAT})
    record = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "correction": model.architecture,
        "low": surrogate_record(model.low),
    }
    atomic_write(config, lambda handle: handle.write(json.dumps(record, indent=1).encode()))
    return weights, config


def load_multifidelity(path, device: str | torch.device = "cpu") -> MultiFidelitySurrogate:
    """Load what :func:`save_multifidelity` wrote; :class:`LibraryError` for a bad file."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    weights, config = path.with_suffix(".safetensors"), path.with_suffix(".json")
    try:
        record = json.loads(config.read_text())
        if record.get("format") != FORMAT or record.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"not a {FORMAT} version {FORMAT_VERSION} config")
        state = load_file(weights, device="cpu")
        # sizes checked before anything is allocated (hyplex.optics.untrusted)
        check_config_limits(record["low"], f"{config} (low)")
        check_config_limits(record["correction"], f"{config} (correction)")
        with torch.device("meta"):
            skeleton = MultiFidelitySurrogate(
                surrogate_from_record(record["low"]), **record["correction"]
            ).state_dict()
        check_state_shapes(skeleton, state, str(weights))
        model = MultiFidelitySurrogate(surrogate_from_record(record["low"]), **record["correction"])
        model.load_state_dict(state)
    except (
        OSError, ValueError, KeyError, TypeError, RuntimeError, OverflowError, SafetensorError
    ) as error:  # fmt: skip
        raise LibraryError(f"{path}: not a loadable multi-fidelity surrogate: {error}") from None
    return model.to(device).eval()

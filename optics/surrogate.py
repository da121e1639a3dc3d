"""A neural surrogate of the RCWA: shape parameters and thickness -> T(lambda) for TE and TM.

Network (a residual MLP, the fully connected form of the ResNet surrogate of ALFRED: Peng et
al., Light Sci. Appl. 2021, who report 98.1 % of test spectra with MSE < 0.005)::

    v = (params_nm, thickness_nm)               (P + 1,)
    x = 2 (v - low) / (high - low) - 1          the library's parameter box -> [-1, 1]
    z = [x, sin(pi x B), cos(pi x B)]           Fourier features, B ~ N(0, scale^2)
                                                (Tancik et al., NeurIPS 2020): resonances
                                                move fast with thickness and size
    h = Linear(z)                               (hidden,)
    h = h + Linear(SiLU(Linear(LayerNorm(h))))  ``blocks`` times (He et al., CVPR 2016)
    g_k(v) = sigmoid(Linear(LayerNorm(h)))      (L, 2), in [0, 1] like a transmittance
    g(v) = mean_k g_k(v)                        an ensemble of ``members`` such networks

Ensemble. The members differ in their initialisation, Fourier frequencies and batch order
(Lakshminarayanan et al., NeurIPS 2017); averaging them removes part of the variance. On the
10,000-design rectangle library (validation split, 60 epochs each) one network reached a mean
MSE of 2.6e-3 and two averaged 2.4e-3. Frequencies of standard deviation 1 (cycles per half
box) generalised better there than 2 or 4 (which overfit) and 0.5 or none (which underfit).

Symmetry. At normal incidence a 90-degree rotation of the cell maps TE (E along y) onto TM
(E along x). For families whose rotated (and, for the L, mirrored) shape is the same family
with permuted parameters (:data:`ROTATION_PERMUTATIONS`), ``T_TE(v) = T_TM(perm v)``, and the
surrogate enforces it exactly: ``T(v) = (g(v) + swap_TE_TM(g(perm v))) / 2``.

It is a torch module, differentiable in its inputs, so it can stand in for
:func:`hyplex.optics.rcwa.solve` inside a design optimisation. It carries the library's
wavelengths and stack and refuses a library on another wavelength grid or stack. Training:
:mod:`hyplex.optics.surrogate_training`. Saved as ``name.safetensors`` (the state dict:
tensors only, reading it runs no code) and ``name.json`` (architecture and library); surrogates
saved before safetensors, as ``name.pt``, are read with ``torch.load(weights_only=True)``
(torch's restricted unpickler: tensors and plain containers). Nothing is unpickled freely.
"""

from __future__ import annotations

import json
import pickle
import re
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .atomic_io import atomic_path, atomic_write
from .library import LibraryError, ResponseLibrary, check_same_grid
from .untrusted import check_config_limits, check_state_shapes

__all__ = [
    "ROTATION_PERMUTATIONS",
    "ResidualBlock",
    "architecture_record",
    "fourier_encode",
    "predict_in_batches",
    "seeded_frequencies",
    "surrogate_from_record",
    "surrogate_record",
    "SpectralSurrogate",
    "UnpolarisedSpectrum",
    "describe",
    "save_surrogate",
    "load_surrogate",
    "surrogate_paths",
]

FORMAT = "hyplex-surrogate"
FORMAT_VERSION = 2  # 2: ensembles (``members``); version 1 files (one network) still load
_READABLE_VERSIONS = (1, 2)
_DESCRIPTION_KEYS = ("family", "parameter_names", "period_nm", "material", "substrate")

#: Families whose 90-degree rotation is the same family with permuted parameters:
#: rectangle and ellipse swap their x and y sizes; the L swaps its extents (rotation then a
#: mirror, which leaves T of x- and y-polarised light unchanged). Disks, squares and crosses
#: map onto themselves (TE = TM already); the H rotates out of its family.
ROTATION_PERMUTATIONS: dict[str, tuple[int, ...]] = {
    "rectangle": (1, 0),
    "ellipse": (1, 0),
    "L": (1, 0, 2),
}


class ResidualBlock(nn.Module):
    """``h + Linear(SiLU(Linear(LayerNorm(h))))`` (pre-norm residual block, He et al. 2016)."""

    def __init__(self, width: int):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.inner = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))

    def forward(self, h):
        return h + self.inner(self.norm(h))


def seeded_frequencies(inputs: int, features: int, scale: float, seed: int) -> torch.Tensor:
    """``(inputs, features)`` random Fourier frequencies ~ N(0, scale^2), drawn with ``seed``
    (Tancik et al., NeurIPS 2020); a member's network and its correction each own one."""
    generator = torch.Generator().manual_seed(int(seed))
    return torch.randn(int(inputs), int(features), generator=generator) * float(scale)


def fourier_encode(x: torch.Tensor, frequencies: torch.Tensor) -> torch.Tensor:
    """``[x, sin(pi x B), cos(pi x B)]`` for inputs ``x (..., P + 1)`` in [-1, 1] and
    frequencies ``B (P + 1, F)``; ``x`` alone when ``F = 0``."""
    if not frequencies.shape[1]:
        return x
    phase = torch.pi * (x @ frequencies)
    return torch.cat([x, torch.sin(phase), torch.cos(phase)], -1)


def architecture_record(
    hidden, blocks, fourier_features, fourier_scale, symmetric, members, **extra
) -> dict:
    """The JSON-ready architecture of a surrogate (or of a correction, with its ``seed``)."""
    return {
        "hidden": int(hidden),
        "blocks": int(blocks),
        "fourier_features": int(fourier_features),
        "fourier_scale": float(fourier_scale),
        "symmetric": bool(symmetric),
        "members": int(members),
        **{key: int(value) for key, value in extra.items()},
    }


@torch.no_grad()
def predict_in_batches(model: nn.Module, params_nm, thickness_nm, device, batch_size=4096):
    """``model(params, thickness)`` over ``(N, P)`` and ``(N,)`` in nm, ``batch_size`` designs
    at a time on ``device``: ``T (N, L, 2)`` float64 numpy (the model set to eval mode)."""
    model.eval()
    params = torch.as_tensor(np.asarray(params_nm, dtype=np.float32))
    thickness = torch.as_tensor(np.asarray(thickness_nm, dtype=np.float32))
    parts = [
        model(p.to(device), d.to(device)).cpu()
        for p, d in zip(params.split(batch_size), thickness.split(batch_size), strict=True)
    ]
    return torch.cat(parts).double().numpy()


class _Network(nn.Module):
    """One member: normalised inputs ``x (..., P + 1)`` in [-1, 1] -> ``sigmoid`` outputs."""

    def __init__(self, inputs, outputs, hidden, blocks, fourier_features, fourier_scale, seed):
        super().__init__()
        frequencies = seeded_frequencies(inputs, fourier_features, fourier_scale, seed)
        self.register_buffer("frequencies", frequencies)
        self.stem = nn.Linear(inputs + 2 * int(fourier_features), int(hidden))
        self.body = nn.Sequential(*(ResidualBlock(int(hidden)) for _ in range(int(blocks))))
        self.head = nn.Sequential(nn.LayerNorm(int(hidden)), nn.Linear(int(hidden), outputs))

    def forward(self, x):
        x = fourier_encode(x, self.frequencies)
        return torch.sigmoid(self.head(self.body(self.stem(x))))


class SpectralSurrogate(nn.Module):
    """Predicts ``T (..., L, 2)`` [TE, TM] from ``params_nm (..., P)``, ``thickness_nm (...)``.

    Parameters
    ----------
    description : the library it stands for (:func:`describe`): ``family, parameter_names,
        period_nm, material, substrate, superstrate, wavelengths_nm``.
    low, high : ``(P + 1,)`` box of (parameters, thickness) in nm, mapped to [-1, 1].
    hidden, blocks : width and number of residual blocks.
    fourier_features, fourier_scale : number of random frequencies (0: none) and their
        standard deviation, in cycles per half box.
    symmetric : enforce the rotation symmetry where the family has one.
    seed : draws the Fourier frequencies (stored in the state dict); member ``k`` uses
        ``seed + k``.
    members : networks averaged (an ensemble; 1: a single network).
    """

    def __init__(
        self,
        description: dict,
        low,
        high,
        hidden: int = 256,
        blocks: int = 4,
        fourier_features: int = 64,
        fourier_scale: float = 1.0,
        symmetric: bool = True,
        seed: int = 0,
        members: int = 1,
    ):
        super().__init__()
        if int(members) < 1:
            raise ValueError(f"members must be >= 1, got {members}")
        self.description = dict(description)
        self.wavelengths_nm = np.asarray(description["wavelengths_nm"], dtype=np.float64)
        self.architecture = architecture_record(
            hidden, blocks, fourier_features, fourier_scale, symmetric, members
        )
        inputs, outputs = len(description["parameter_names"]) + 1, 2 * self.wavelengths_nm.size
        # checked in numpy, so that the network can also be built on torch's meta device
        low, high = (np.asarray(v, dtype=np.float32) for v in (low, high))
        if low.shape != (inputs,) or high.shape != (inputs,) or not (high - low > 0).all():
            raise ValueError(f"low < high must both have shape ({inputs},) (parameters, thickness)")
        self.register_buffer("low", torch.as_tensor(low))
        self.register_buffer("span", torch.as_tensor(high - low))
        permutation = ROTATION_PERMUTATIONS.get(description.get("family")) if symmetric else None
        self.permutation = list(permutation) if permutation else None
        self.networks = nn.ModuleList(
            _Network(inputs, outputs, hidden, blocks, fourier_features, fourier_scale, seed + k)
            for k in range(int(members))
        )

    def forward(self, params_nm: torch.Tensor, thickness_nm: torch.Tensor) -> torch.Tensor:
        return self.member_spectra(params_nm, thickness_nm).mean(0)

    def member_spectra(self, params_nm, thickness_nm, members=None) -> torch.Tensor:
        """``T (K, ..., L, 2)`` of each member (all, or the indices ``members``), each one
        symmetrised; :meth:`forward` is their mean. Training fits each member on its own."""
        params_nm = torch.as_tensor(params_nm, dtype=self.low.dtype, device=self.low.device)
        thickness_nm = torch.as_tensor(thickness_nm, dtype=self.low.dtype, device=self.low.device)
        if params_nm.shape[-1:] != (self.low.numel() - 1,):
            raise ValueError(
                f"params_nm must have shape (..., {self.low.numel() - 1}) for "
                f"{tuple(self.description['parameter_names'])}, got {tuple(params_nm.shape)}"
            )
        members = range(len(self.networks)) if members is None else members
        x = self.normalise(params_nm, thickness_nm)
        if self.permutation is not None:
            rotated = self.normalise(params_nm[..., self.permutation], thickness_nm)
        spectra = []
        for k in members:
            T = self._spectrum(self.networks[k], x)  # noqa: N806
            if self.permutation is not None:
                T = 0.5 * (T + self._spectrum(self.networks[k], rotated).flip(-1))  # noqa: N806
            spectra.append(T)  # flip: [TE, TM] -> [TM, TE]
        return torch.stack(spectra)

    def normalise(self, params_nm, thickness_nm):
        """Inputs ``(..., P + 1)`` mapped from the parameter box onto [-1, 1]."""
        inputs = torch.cat([params_nm, thickness_nm.unsqueeze(-1)], -1)
        return 2 * (inputs - self.low) / self.span - 1

    def _spectrum(self, network, x):
        return network(x).unflatten(-1, (self.wavelengths_nm.size, 2))

    def predict(self, params_nm, thickness_nm, batch_size: int = 4096) -> np.ndarray:
        """Numpy convenience: ``T (N, L, 2)`` float64 for ``(N, P)`` and ``(N,)`` in nm."""
        return predict_in_batches(self, params_nm, thickness_nm, self.low.device, batch_size)

    def check_library(self, library: ResponseLibrary) -> None:
        """Raise :class:`LibraryError` unless ``library`` has this surrogate's grid and stack."""
        check_same_grid(self.wavelengths_nm, library.wavelengths_nm, "the library")
        theirs = describe(library)
        differ = [
            f"{key}: surrogate {self.description[key]!r}, library {theirs[key]!r}"
            for key in _DESCRIPTION_KEYS
            if self.description[key] != theirs[key]
        ]
        if differ:
            raise LibraryError(f"the library does not match the surrogate: {'; '.join(differ)}")


class UnpolarisedSpectrum(nn.Module):
    """A surrogate as the forward model of inverse design: designs ``(..., P + 1)`` in nm
    (shape parameters, then thickness) -> unpolarised ``T (..., L)``, the mean of the TE and TM
    of ``surrogate`` at ``surrogate.wavelengths_nm[indices]`` (``wavelengths_nm``), the form
    :func:`hyplex.optics.inverse.design` takes."""

    def __init__(self, surrogate: SpectralSurrogate, indices):
        super().__init__()
        indices = [int(i) for i in np.asarray(indices).reshape(-1)]
        size = surrogate.wavelengths_nm.size
        if not indices or min(indices) < 0 or max(indices) >= size:
            raise ValueError(f"indices must be a non-empty list in [0, {size}), got {indices}")
        self.surrogate = surrogate.eval()
        self.indices = indices
        self.wavelengths_nm = surrogate.wavelengths_nm[indices]

    def forward(self, params: torch.Tensor) -> torch.Tensor:
        T = self.surrogate(params[..., :-1], params[..., -1])  # noqa: N806 - (..., L_all, 2)
        return T[..., self.indices, :].mean(-1)


def describe(library: ResponseLibrary) -> dict:
    """The JSON-ready description of a library that a surrogate carries."""
    if library.density is not None:
        raise LibraryError(
            "free-form libraries (with a density grid) are not supported by this surrogate "
            "yet: it takes shape parameters and thickness only"
        )
    return {
        "family": library.family,
        "parameter_names": list(library.parameter_names),
        "period_nm": library.period_nm,
        "material": library.material,
        "substrate": library.substrate,
        "superstrate": library.superstrate,
        "wavelengths_nm": library.wavelengths_nm.tolist(),
    }


def surrogate_paths(path) -> tuple[Path, Path, Path]:
    """``(name.safetensors, name.pt, name.json)`` for ``path`` = ``name`` or ``name.<any suffix>``
    (``.pt`` is the weights file of surrogates saved before safetensors, still read)."""
    path = Path(path)
    return path.with_suffix(".safetensors"), path.with_suffix(".pt"), path.with_suffix(".json")


def surrogate_record(model: SpectralSurrogate) -> dict:
    """The JSON config of ``model`` (architecture, box and library) that :func:`save_surrogate`
    writes and :func:`surrogate_from_record` reads."""
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        **model.architecture,
        "low": model.low.cpu().tolist(),
        "high": (model.low + model.span).cpu().tolist(),
        "library": model.description,
    }


def surrogate_from_record(record: dict) -> SpectralSurrogate:
    """An untrained :class:`SpectralSurrogate` shaped as ``record`` describes (KeyError,
    TypeError or ValueError for an incomplete one)."""
    architecture = {
        key: record[key]
        for key in ("hidden", "blocks", "fourier_features", "fourier_scale", "symmetric")
    }
    architecture["members"] = record.get("members", 1)  # version 1: one network
    return SpectralSurrogate(record["library"], record["low"], record["high"], **architecture)


def save_surrogate(model: SpectralSurrogate, path) -> tuple[Path, Path]:
    """Write ``name.safetensors`` (state dict) and ``name.json`` (config) for ``path`` = ``name``
    (with or without a suffix); returns both paths. An older ``name.pt`` beside them is
    removed, so the pair read back is the one written."""
    from safetensors.torch import save_file

    weights, legacy, config = surrogate_paths(path)
    weights.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    with atomic_path(weights) as temporary:  # a crash leaves the old pair, never half a file
        save_file(state, temporary, metadata={"format": FORMAT})
    legacy.unlink(missing_ok=True)
    text = json.dumps(surrogate_record(model), indent=1).encode()
    atomic_write(config, lambda handle: handle.write(text))
    return weights, config


def load_surrogate(path, device: str | torch.device = "cpu") -> SpectralSurrogate:
    """Load a surrogate written by :func:`save_surrogate`: ``name.json`` plus
    ``name.safetensors`` or, from before safetensors, ``name.pt`` (a state dict, read with
    ``torch.load(weights_only=True)``). ``path`` is ``name`` with or without a suffix.

    Raises
    ------
    LibraryError
        If the config or both weight files are missing, the JSON is not a hyplex surrogate
        config, or the weights are not a state dict that fits the configured network (a
        pickle of anything but tensors is refused by the restricted unpickler).
    """
    safetensors_path, legacy, config = surrogate_paths(path)
    weights = safetensors_path if safetensors_path.exists() or not legacy.exists() else legacy
    for item in (weights, config):
        if not item.exists():
            raise LibraryError(
                f"{item}: no such surrogate file (need name.json and name.safetensors)"
            )
    try:
        record = json.loads(config.read_bytes().decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise LibraryError(f"{config}: not a JSON surrogate config: {error}") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise LibraryError(f"{config}: not a hyplex surrogate config (format != {FORMAT!r})")
    version = record.get("format_version")
    if version not in _READABLE_VERSIONS:
        raise LibraryError(
            f"{config}: surrogate format_version {version!r}, expected one of {_READABLE_VERSIONS}"
        )
    state = _read_weights(weights)
    if version == 1:  # one network, its modules at the top level
        state = {
            key if key in ("low", "span") else f"networks.0.{key}": value
            for key, value in state.items()
        }
    model = _build_checked(record, state, config)
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        raise LibraryError(
            f"{weights}: weights do not fit the configured network: {error}"
        ) from None
    return model.to(device).eval()


def _build_checked(record: dict, state: dict, where) -> SpectralSurrogate:
    """The network ``record`` describes, built only after its sizes are checked: the config's
    integers against :mod:`hyplex.optics.untrusted`'s caps, then a ``meta``-device build
    (no memory) against the stored tensors' names and shapes. A config asking for more than
    its file holds is a :class:`LibraryError`, not gigabytes of allocation."""
    try:
        check_config_limits(record, str(where))
        with torch.device("meta"):
            skeleton = surrogate_from_record(record).state_dict()
        check_state_shapes(skeleton, state)
        return surrogate_from_record(record)
    except (KeyError, TypeError, ValueError, RuntimeError, OverflowError) as error:
        raise LibraryError(
            f"{where}: the weights do not fit the configured network: {error}"
        ) from None


def _read_weights(path: Path) -> dict:
    """The state dict in ``path``: safetensors, or an older ``.pt`` through torch's restricted
    unpickler (``weights_only=True``: tensors and plain containers, no other globals).
    Anything else is a :class:`LibraryError` saying what the file is not."""
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(path, device="cpu")
        except (SafetensorError, OSError) as error:
            raise LibraryError(f"{path}: not a readable safetensors file ({error})") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        named = re.search(r"Unsupported global: GLOBAL (\S+)", str(error))
        raise LibraryError(
            f"{path}: not a state dict of tensors; torch's restricted unpickler refused it"
            + (f" (it names {named.group(1)}, which a state dict never does)" if named else "")
        ) from None
    except Exception as error:  # noqa: BLE001 - zip, pickle or storage errors: a bad file
        raise LibraryError(
            f"{path}: not a readable torch.save state dict ({type(error).__name__}: "
            f"{str(error).strip().splitlines()[0] if str(error).strip() else ''})"
        ) from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise LibraryError(
            f"{path}: expected a state dict of tensors, got a {type(state).__name__}"
        )
    return state

"""Decoder files a user hands in: safetensors weights plus a JSON config; nothing is unpickled.

Format ``hyplex-decoder``, version 1: two files side by side, named alike::

    NAME.safetensors   the decoder's state dict (safetensors: a JSON header and raw tensor
                       bytes; reading it builds tensors and never runs code)
    NAME.json          {"format": "hyplex-decoder", "format_version": 1,
                        "role": "reconstructor" | "segmenter",
                        "name": the architecture (a key of :func:`architectures`),
                        "config": the constructor's keyword arguments,
                        "provenance": {...}  (optional, not read)}

Either file (or ``NAME`` alone) names the pair. The architectures are those of
``hyplex.models`` (reconstructors ``linear`` and ``mst``, segmenters ``unet`` and
``attention``, the same ``name`` + ``config`` that a design bundle's ``bundle.json`` records)
and the engine's own ``pixel_classifier``; the network is built from its registered class,
never from code in the file. Before any weight is allocated the architecture is built on
torch's ``meta`` device and its state dict compared, name by name and shape by shape, with the
safetensors header, so a config cannot ask for more memory than the file holds.

Formats that are refused, and why (torch 2.13):

- ``torch.save`` files (``.pt``/``.pth``, a pickle in a zip or bare): unpickling a whole
  module runs whatever the pickle names (an object's ``__reduce__`` can call ``os.system``).
- ``torch.export`` programs (``.pt2``): :func:`torch.export.load` reads every weight or
  constant that the archive's own JSON marks ``use_pickle`` with ``torch.load`` and its
  restriction switched off, opaque constants with ``pickle.loads``, and the example inputs
  with an unrestricted ``torch.load`` fallback when the restricted one fails; a crafted
  ``.pt2`` therefore runs code on load (checked: a ``__reduce__`` payload as
  ``sample_inputs/model.pt`` runs; tests/hyplex/test_untrusted_files.py).
- TorchScript archives: PyTorch's security policy treats a TorchScript model as a program
  ("only run TorchScript models if you trust the provider"), :func:`torch.jit.load` has no
  safe mode, and crashes of its C++ unpickler on crafted files are closed as "trusted inputs
  only" (pytorch/pytorch#77573).

A ``torch.save`` file you made yourself (a module or a state dict; for TorchScript or ``.pt2``
save the model's ``state_dict()`` first) is converted once, on purpose, with
``hyplex convert-weights IN OUT --trust``
(:func:`hyplex.pipeline.trusted_pickles.read_trusted_torch_file` + :func:`save_decoder`).
"""

from __future__ import annotations

import json
import os
import zipfile
from datetime import UTC, datetime
from pathlib import Path

import torch
from torch import nn

from hyplex.optics.untrusted import check_config_limits, check_state_shapes

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "ROLES",
    "ModelFileError",
    "architectures",
    "as_known_decoder",
    "decoder_from_state",
    "decoder_paths",
    "describe_file",
    "load_decoder",
    "read_decoder_config",
    "refusal",
    "save_decoder",
]

FORMAT = "hyplex-decoder"
FORMAT_VERSION = 1
ROLES = ("reconstructor", "segmenter")
WEIGHTS_SUFFIX, CONFIG_SUFFIX = ".safetensors", ".json"
_MAX_CONFIG_BYTES = 1 << 20  # a decoder config is a few hundred bytes
_FORMATS = "NAME.safetensors + NAME.json (format hyplex-decoder)"


class ModelFileError(ValueError):
    """A model file is missing, in a refused format, corrupt, or does not fit its config."""


def architectures() -> dict[str, tuple[str, type[nn.Module]]]:
    """``{name: (role, class)}`` of every architecture a decoder file may name."""
    from hyplex.models.reconstruction import RECONSTRUCTORS
    from hyplex.models.segmentation import SEGMENTERS
    from hyplex.pipeline.models import PixelClassifier

    table = {name: ("reconstructor", cls) for name, cls in RECONSTRUCTORS.items()}
    for name, cls in {**SEGMENTERS, "pixel_classifier": PixelClassifier}.items():
        if name in table:  # the name alone must say which network to build
            raise RuntimeError(f"architecture name {name!r} is registered twice")
        table[name] = ("segmenter", cls)
    return table


def decoder_paths(path) -> tuple[Path, Path]:
    """``(NAME.safetensors, NAME.json)`` for ``NAME``, ``NAME.safetensors`` or ``NAME.json``."""
    path = Path(path)
    stem = path.with_suffix("") if path.suffix in (WEIGHTS_SUFFIX, CONFIG_SUFFIX) else path
    return stem.with_name(stem.name + WEIGHTS_SUFFIX), stem.with_name(stem.name + CONFIG_SUFFIX)


def describe_file(path) -> str:
    """What the first bytes of ``path`` say it is, in words (reads at most the zip directory;
    never unpickles). ``"a missing file"`` if it does not exist."""
    path = Path(path)
    try:
        with path.open("rb") as handle:
            head = handle.read(16)
    except FileNotFoundError:
        return "a missing file"
    except IsADirectoryError:
        return "a directory"
    except OSError as error:
        return f"an unreadable file ({error.strerror or error})"
    if not head:
        return "an empty file"
    if head.startswith(b"PK\x03\x04"):
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except (zipfile.BadZipFile, OSError):
            names = []
        if any(name.endswith("archive_format") for name in names):
            return "a torch.export .pt2 archive"
        if any("/code/" in name for name in names):
            return "a TorchScript archive"
        if any(name.endswith("data.pkl") for name in names):
            return "a torch.save file (a pickle)"
        return "a zip archive"
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "a Python pickle (torch.save's legacy format)"
    if head.startswith(b"\x89HDF"):
        return "an HDF5 file"
    if head.startswith(b"\x93NUMPY"):
        return "a numpy .npy file"
    if len(head) >= 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") > 1:
        return "a safetensors file"
    if head.lstrip()[:1] in (b"{", b"["):
        return "a JSON file"
    return "not a file format hyplex knows (unrecognised bytes)"


def refusal(path, what: str | None = None) -> ModelFileError:
    """The one-line error for a model file in a refused or unknown format: what it is, what is
    accepted, and how to convert a file of one's own."""
    what = what or describe_file(path)
    if "torch.save" in what:
        how = f"convert a file you made yourself with: hyplex convert-weights {path} OUT --trust"
    elif "TorchScript" in what or ".pt2" in what:
        how = (
            "for a model you made yourself, torch.save(model.state_dict(), 'state.pt') and run: "
            "hyplex convert-weights state.pt OUT --trust --name ARCH --config '{...}'"
        )
    else:
        how = "hyplex convert-weights turns a torch.save file you made yourself into one"
    return ModelFileError(
        f"{path}: {what}; hyplex reads decoders only as {_FORMATS}, because loading pickles, "
        f"TorchScript or torch.export .pt2 archives can run code ({how})"
    )


def _check_config(path: Path, record) -> dict:
    """The validated record of a decoder JSON (``path`` names it in messages)."""
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        found = record.get("format") if isinstance(record, dict) else type(record).__name__
        raise ModelFileError(f"{path}: format is {found!r}, expected {FORMAT!r} ({_FORMATS})")
    if record.get("format_version") != FORMAT_VERSION:
        raise ModelFileError(
            f"{path}: format_version {record.get('format_version')!r}; this hyplex reads "
            f"version {FORMAT_VERSION}"
        )
    table = architectures()
    name, role, config = record.get("name"), record.get("role"), record.get("config")
    if not isinstance(name, str) or name not in table:
        raise ModelFileError(
            f"{path}: name {name!r} is not a known architecture; expected one of {sorted(table)}"
        )
    if role != table[name][0]:
        raise ModelFileError(
            f"{path}: role {role!r} does not fit architecture {name!r}, which is a {table[name][0]}"
        )
    if not isinstance(config, dict) or not all(
        isinstance(v, bool | int | float | str) or v is None for v in config.values()
    ):
        raise ModelFileError(
            f"{path}: config must be an object of constructor arguments (numbers, strings, "
            f"booleans), got {config!r}"
        )
    try:
        check_config_limits(config, str(path))
    except ValueError as error:
        raise ModelFileError(str(error)) from None
    return {"role": role, "name": name, "config": dict(config)}


def read_decoder_config(path) -> dict:
    """``{"role", "name", "config"}`` from the JSON of a decoder pair (see the module doc).

    Raises
    ------
    ModelFileError
        Missing file, not UTF-8 JSON, not a ``hyplex-decoder`` record of a known architecture.
    """
    _, config_path = decoder_paths(path)
    if not config_path.is_file():
        raise ModelFileError(f"{config_path}: no such file (a decoder is {_FORMATS})")
    if config_path.stat().st_size > _MAX_CONFIG_BYTES:
        raise ModelFileError(
            f"{config_path}: {config_path.stat().st_size} bytes is too large for a decoder "
            f"config (at most {_MAX_CONFIG_BYTES}); is it the right file?"
        )
    try:
        record = json.loads(config_path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelFileError(
            f"{config_path}: {describe_file(config_path)}, not a JSON decoder config "
            f"({type(error).__name__}: {error})"
        ) from None
    return _check_config(config_path, record)


def _build(record: dict, path, device=None) -> nn.Module:
    role, cls = architectures()[record["name"]]
    try:
        if device is None:
            return cls(**record["config"])
        with torch.device(device):
            return cls(**record["config"])
    except (TypeError, ValueError, RuntimeError, OverflowError) as error:
        raise ModelFileError(
            f"{path}: config {record['config']!r} does not build a {record['name']!r} "
            f"{role}: {error}"
        ) from None


def decoder_from_state(state: dict, name: str, config: dict) -> nn.Module:
    """Architecture ``name`` built with ``config`` and given the tensors of ``state`` (a state
    dict whose names and shapes must match exactly), in eval mode.

    Raises
    ------
    ModelFileError
        Unknown ``name``, a ``config`` its constructor refuses, or tensors that do not fit.
    """
    record = _check_config(
        "the state dict",
        {"format": FORMAT, "format_version": FORMAT_VERSION, "name": name, "config": config,
         "role": architectures().get(name, ("?",))[0]},
    )  # fmt: skip
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelFileError("a state dict maps parameter names to tensors")
    module = _build(record, f"architecture {name!r}")
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as error:
        first = str(error).strip().splitlines()
        raise ModelFileError(
            f"the state dict does not fit {name!r} with config {config!r}: "
            + " ".join(line.strip() for line in first[:3])
        ) from None
    return module.eval()


def _check_header(weights: Path, expected: dict) -> None:
    """The safetensors header against a meta-built state dict: same names, shapes and kinds."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(weights, framework="pt", device="cpu") as stored:
            header = {
                key: (tuple(stored.get_slice(key).get_shape()), stored.get_slice(key).get_dtype())
                for key in stored.keys()  # noqa: SIM118 - safe_open has keys(), no iteration
            }
    except (SafetensorError, OSError, ValueError) as error:
        raise ModelFileError(
            f"{weights}: {describe_file(weights)}, not a readable safetensors file ({error})"
        ) from None
    try:
        check_state_shapes(expected, {key: shape for key, (shape, _) in header.items()})
    except ValueError as error:
        raise ModelFileError(f"{weights}: {error}") from None
    for key, tensor in expected.items():
        dtype = header[key][1]
        floating = dtype.startswith(("F", "BF"))
        if floating != tensor.is_floating_point():
            raise ModelFileError(
                f"{weights}: tensor {key} is {dtype}, expected a "
                f"{'floating' if tensor.is_floating_point() else 'integer'} tensor"
            )


def load_decoder(path, role: str | None = None, device="cpu") -> nn.Module:
    """A decoder from a ``hyplex-decoder`` pair (see the module doc), in eval mode.

    Parameters
    ----------
    path : ``NAME.safetensors``, ``NAME.json`` or ``NAME``.
    role : ``"reconstructor"`` or ``"segmenter"`` to insist on (the option it was given to),
        or None for either.
    device : where the module goes.

    Returns
    -------
    torch.nn.Module
        The registered architecture with the file's weights: a reconstructor maps barcodes
        ``(B, C, h, w)`` to spectra ``(B, L, h, w)``, a segmenter to class logits
        ``(B, K, h, w)``.

    Raises
    ------
    ModelFileError
        A file in another format (:func:`refusal`: pickles, TorchScript and ``.pt2`` are never
        opened), a missing half of the pair, random bytes, a config of an unknown
        architecture, the wrong role, or weights that do not fit the config.
    """
    if role is not None and role not in ROLES:
        raise ValueError(f"role must be one of {ROLES} or None, got {role!r}")
    path = Path(os.fspath(path))
    if path.suffix not in (WEIGHTS_SUFFIX, CONFIG_SUFFIX) and path.exists():
        raise refusal(path)  # never opened beyond its first bytes
    weights, config_path = decoder_paths(path)
    what = describe_file(weights)
    if weights.is_file() and what != "a safetensors file":
        raise refusal(weights, f"{what} named .safetensors")
    for item in (weights, config_path):
        if not item.is_file():
            raise ModelFileError(f"{item}: no such file (a decoder is {_FORMATS})")
    record = read_decoder_config(config_path)
    if role is not None and record["role"] != role:
        raise ModelFileError(
            f"{config_path} describes a {record['role']} ({record['name']!r}), but it was given "
            f"as the {role}"
        )
    _check_header(weights, _build(record, config_path, "meta").state_dict())
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        tensors = load_file(weights, device="cpu")
    except (SafetensorError, OSError) as error:
        raise ModelFileError(f"{weights}: not a readable safetensors file ({error})") from None
    module = _build(record, config_path)
    try:
        module.load_state_dict(tensors, strict=True)
    except RuntimeError as error:
        raise ModelFileError(f"{weights}: weights do not fit the config: {error}") from None
    return module.to(device).eval()


def as_known_decoder(module: nn.Module) -> tuple[str, dict, dict]:
    """``(name, config, state_dict)`` of ``module`` as a registered architecture.

    An instance of a class of :func:`architectures` gives its own ``config``; a plain 1x1
    ``nn.Conv2d`` with a bias (what :func:`hyplex.pipeline.models.fit_linear_reconstructor`
    returns) is the ``linear`` reconstructor. Anything else is a :class:`ModelFileError`.
    """
    for name, (_, cls) in architectures().items():
        if type(module) is cls:
            config = getattr(module, "config", None)
            if not isinstance(config, dict):
                raise ModelFileError(f"this {cls.__name__} carries no constructor config")
            return name, dict(config), module.state_dict()
    if (
        type(module) is nn.Conv2d
        and module.kernel_size == (1, 1)
        and module.bias is not None
        and module.groups == 1
        and module.stride == (1, 1)
        and module.padding in ((0, 0), "valid")
        and module.dilation == (1, 1)
    ):
        state = {"projection.weight": module.weight, "projection.bias": module.bias}
        return "linear", {"n_filters": module.in_channels, "n_bands": module.out_channels}, state
    known = ", ".join(f"{cls.__name__} ({name})" for name, (_, cls) in architectures().items())
    raise ModelFileError(
        f"a {type(module).__module__}.{type(module).__name__} is not a known architecture; "
        f"hyplex can rebuild only {known}, or a 1x1 nn.Conv2d with bias (linear)"
    )


def _provenance() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    try:
        hyplex_version = version("hyplex")
    except PackageNotFoundError:
        hyplex_version = "0.0.0+unknown"
    created = datetime.now(UTC).isoformat(timespec="seconds")
    return {"hyplex_version": hyplex_version, "torch_version": torch.__version__,
            "created_utc": created}  # fmt: skip


def save_decoder(module: nn.Module, path, overwrite: bool = False) -> tuple[Path, Path]:
    """Write ``module`` (a registered architecture, :func:`as_known_decoder`) as a decoder pair.

    ``path`` is ``NAME``, ``NAME.safetensors`` or ``NAME.json``; an existing pair is replaced
    only with ``overwrite``. Returns ``(NAME.safetensors, NAME.json)``. The pair is written to
    temporary names and renamed, weights first, so a reader never sees a new config beside
    old weights.
    """
    from safetensors.torch import save as safetensors_bytes

    name, config, state = as_known_decoder(module)
    role = architectures()[name][0]
    record = _check_config(
        Path(path),
        {"format": FORMAT, "format_version": FORMAT_VERSION, "role": role, "name": name,
         "config": config},
    )  # fmt: skip
    weights, config_path = decoder_paths(path)
    existing = [str(p) for p in (weights, config_path) if p.exists()]
    if existing and not overwrite:
        raise ModelFileError(f"{', '.join(existing)} exist(s); pass overwrite=True to replace")
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in state.items()}
    payload = safetensors_bytes(tensors, metadata={"format": FORMAT, "name": name})
    text = json.dumps({**record, "format": FORMAT, "format_version": FORMAT_VERSION,
                       "provenance": _provenance()}, indent=1)  # fmt: skip
    weights.parent.mkdir(parents=True, exist_ok=True)
    for target, data in ((weights, payload), (config_path, text.encode())):
        partial = target.with_name(f".{target.name}.partial")
        partial.write_bytes(data)
        os.replace(partial, target)
    return weights, config_path

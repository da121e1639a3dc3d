"""Reading one's own ``torch.save`` file for ``hyplex convert-weights --trust``, restricted anyway.

The user vouches for the file, yet it is read with torch's restricted unpickler
(``torch.load(weights_only=True)``) with only the decoder classes hyplex can rebuild added to
its allowlist (:func:`allowed_module_classes`). A zip-format file's globals are listed first
(:func:`torch.serialization.get_unsafe_globals_in_checkpoint`, which parses the pickle's
opcodes without running them), so a file that names anything else is refused before any
object is built; a legacy-format file is left to the restricted unpickler, which refuses the
same globals as it meets them.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import torch
from torch import nn

from hyplex.pipeline.model_files import ModelFileError, architectures, describe_file

__all__ = ["allowed_module_classes", "read_trusted_torch_file"]


def allowed_module_classes() -> dict[str, type]:
    """``{"module.QualName": class}`` of the classes a trusted conversion may unpickle: the
    registered architectures, the ``hyplex.models`` layers they are made of, and torch's own
    ``torch.nn.modules`` layers (their constructors allocate tensors and run no user code)."""
    import hyplex.models.layers as layers
    import hyplex.models.reconstruction as reconstruction
    import hyplex.models.segmentation as segmentation

    candidates = [cls for _, cls in architectures().values()]
    for module in (layers, reconstruction, segmentation, nn):
        candidates += [v for v in vars(module).values() if isinstance(v, type)]
    allowed = {}
    for cls in candidates:
        if issubclass(cls, nn.Module) and cls.__module__.startswith(
            ("torch.nn.modules.", "hyplex.models.", "hyplex.pipeline.models")
        ):
            allowed[f"{cls.__module__}.{cls.__qualname__}"] = cls
    return allowed


def read_trusted_torch_file(path):
    """The object in a ``torch.save`` file the caller vouches for (convert-weights ``--trust``):
    an ``nn.Module`` of a known architecture, or a state dict.

    Even so, the file is read with torch's restricted unpickler (``weights_only=True``), with
    only the classes of :func:`allowed_module_classes` added; a pickle that names any other
    global (``os.system``, ``pathlib.Path.touch``, a class of another package) is refused
    before anything is unpickled. TorchScript and ``.pt2`` archives are refused.

    Raises
    ------
    ModelFileError
        Missing file, another format, or a pickle naming globals outside the allowlist.
    """
    path = Path(path)
    what = describe_file(path)
    if what not in ("a torch.save file (a pickle)", "a Python pickle (torch.save's legacy format)"):
        raise ModelFileError(
            f"{path}: {what}; convert-weights reads torch.save files (a module or a state dict)"
            + (
                ". For TorchScript or .pt2, save model.state_dict() with torch.save where you "
                "trust the model, and convert that with --name and --config"
                if "TorchScript" in what or ".pt2" in what
                else ""
            )
        )
    allowed = allowed_module_classes()
    permitted = list(allowed.values())
    if what == "a torch.save file (a pickle)":  # the zip format: its globals can be listed first
        try:
            named = torch.serialization.get_unsafe_globals_in_checkpoint(path)
        except Exception as error:  # noqa: BLE001 - any parse error means a bad file
            raise ModelFileError(f"{path}: not a readable torch.save file ({error})") from None
        foreign = sorted(set(named) - set(allowed))
        if foreign:
            raise ModelFileError(
                f"{path} names {', '.join(foreign[:6])}{' ...' if len(foreign) > 6 else ''}, "
                "outside the decoder classes hyplex can rebuild; refused without unpickling"
            )
        permitted = [allowed[name] for name in named]
    try:
        with torch.serialization.safe_globals(permitted):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(error))
        raise ModelFileError(
            f"{path} names {found.group(1) if found else 'a global'}, outside the decoder "
            "classes hyplex can rebuild; torch's restricted unpickler refused it"
        ) from None
    except Exception as error:  # noqa: BLE001 - zip, storage or parse errors: a bad file
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise ModelFileError(
            f"{path}: not a readable torch.save file ({type(error).__name__}: {first})"
        ) from None

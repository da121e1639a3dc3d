"""``hyplex convert-weights IN OUT --trust``: one's own ``torch.save`` file -> safetensors + JSON.

hyplex reads decoders only as ``NAME.safetensors`` + ``NAME.json`` (format ``hyplex-decoder``,
:mod:`hyplex.pipeline.model_files`), never pickles. This command converts a ``.pt``/``.pth``
that one made oneself: a ``torch.save``-d module of a known architecture (``LinearDecoder``,
``SpectralTransformer``, ``UNet``, ``SpectralAttentionSegNet``, the engine's
``PixelClassifier``, or a 1x1 ``nn.Conv2d``), or a state dict of one given ``--name`` and
``--config``. It refuses to start without ``--trust``, and even then reads the file with
torch's restricted unpickler, allowing only those classes.

Registered in ``hyplex.cli`` by ``register(app)``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

__all__ = ["WARNING", "convert_weights", "register"]

WARNING = (
    "WARNING: convert-weights unpickles IN. Unpickling a file can run any code it names, so "
    "convert only model files you made yourself, never ones you downloaded or were sent. "
    "(hyplex still reads it with torch's restricted unpickler, allowing only tensors and the "
    "known decoder classes.)"
)

In = Annotated[
    Path,
    typer.Argument(
        help="Your own torch.save file (.pt/.pth): a decoder module, or a state dict.",
        metavar="IN",
        exists=True,
        dir_okay=False,
    ),
]
Out = Annotated[
    Path,
    typer.Argument(help="NAME, NAME.safetensors or NAME.json: writes both files.", metavar="OUT"),
]
Trust = Annotated[
    bool, typer.Option("--trust", help="Confirm IN is your own file (required: it is unpickled).")
]
Name = Annotated[
    str | None,
    typer.Option(
        help="Architecture of a state dict: linear, mst, unet, attention, pixel_classifier."
    ),  # fmt: skip
]
Config = Annotated[
    str | None,
    typer.Option(
        help="Constructor arguments of a state dict: a JSON object or a .json file, e.g. "
        '\'{"n_filters": 9, "n_bands": 34}\'.'
    ),
]
Overwrite = Annotated[bool, typer.Option(help="Replace an existing OUT pair.")]


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def _config(text: str) -> dict:
    """``--config``: a JSON object, or the path of a file holding one."""
    source = text
    if not text.lstrip().startswith("{"):
        path = Path(text)
        if not path.is_file():
            _fail(f"--config must be a JSON object or a .json file; {text!r} is neither")
        try:
            source = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            _fail(f"--config {path}: not a readable JSON text file ({error})")
    try:
        config = json.loads(source)
    except json.JSONDecodeError as error:
        _fail(f"--config is not valid JSON: {error}")
    if not isinstance(config, dict):
        _fail(f"--config must be a JSON object of constructor arguments, got {config!r}")
    return config


def _module_from(loaded, name: str | None, config_text: str | None):
    """The decoder module for what the file held (see the module doc)."""
    from torch import nn

    from hyplex.pipeline.model_files import as_known_decoder, decoder_from_state

    if isinstance(loaded, nn.Module):
        if name is not None or config_text is not None:
            _fail("IN holds a whole module, which carries its own architecture and config; "
                  "drop --name and --config")  # fmt: skip
        known, config, state = as_known_decoder(loaded)
        return decoder_from_state(dict(state), known, config), loaded
    if isinstance(loaded, dict):
        for key in ("state_dict", "model_state_dict"):
            if isinstance(loaded.get(key), dict) and len(loaded) <= 3:
                loaded = loaded[key]
                break
        if name is None or config_text is None:
            _fail(
                "IN holds a state dict, which does not say which network it belongs to; give "
                "--name (linear, mst, unet, attention, pixel_classifier) and --config "
                "(its constructor arguments as JSON)"
            )
        return decoder_from_state(loaded, name, _config(config_text)), None
    _fail(f"IN holds a {type(loaded).__name__}, expected a decoder module or a state dict")


def convert_weights(
    source: In,
    out: Out,
    trust: Trust = False,
    name: Name = None,
    config: Config = None,
    overwrite: Overwrite = False,
) -> None:
    """Convert your own torch.save'd decoder (module or state dict) to NAME.safetensors +
    NAME.json, the only model format segment and view read."""
    typer.echo(WARNING, err=True)
    if not trust:
        _fail(f"not converting {source}: pass --trust to confirm it is a file you made yourself")
    import torch

    from hyplex.pipeline.model_files import ModelFileError, load_decoder, save_decoder
    from hyplex.pipeline.trusted_pickles import read_trusted_torch_file

    try:
        module, original = _module_from(read_trusted_torch_file(source), name, config)
        weights, config_path = save_decoder(module, out, overwrite=overwrite)
        back = load_decoder(config_path)
    except ModelFileError as error:
        _fail(str(error))
    message = ""
    if original is not None:  # the same outputs as the module that was converted
        channels = back.config.get("in_channels", back.config.get("n_filters"))
        probe = torch.rand(1, int(channels), 16, 16, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            difference = float((original.eval()(probe) - back(probe)).abs().max())
        message = f"; max output difference {difference:.1e} on a random 16x16 input"
    count = sum(p.numel() for p in back.parameters())
    typer.echo(
        f"wrote {weights} and {config_path}: {type(back).__name__}, {count} parameters{message}"
    )


def register(app: typer.Typer) -> None:
    """Add ``convert-weights`` as a command of ``app``."""
    app.command("convert-weights")(convert_weights)

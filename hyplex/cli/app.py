"""The ``hyplex`` command line: the root app, with one module per command group.

============================  ===========================================  ==================
command                       job                                          module
============================  ===========================================  ==================
``demo``, ``optics``          one metasurface's spectrum, materials         :mod:`.optics`
``library``, ``inverse``      response libraries, inverse design            :mod:`.library`,
                                                                           :mod:`.inverse`
``simulate``                  synthetic scenes and video (the twin)         :mod:`.simulate`
``design``                    co-design of encoder and decoders             :mod:`.design`
``devices``, ``stream``,      cameras, recording, simulated instruments     :mod:`.devices`
``sim-device``
``calibrate``, ``refit``      calibration, decoders refitted to it          :mod:`.calibrate`,
                                                                           :mod:`.refit`
``segment``, ``view``         the video engine and the live viewer          :mod:`.video`
``convert-weights``           one's own torch.save decoder -> safetensors   :mod:`.convert`
``openset fit``, ``coverage`` open-set heads in bundles, hull coverage     :mod:`.openset`
``forget``                    unlearning a class or scenes from a bundle    :mod:`.forget`
``redteam``                   attacks on a bundle's decoders (PGD, ETF)     :mod:`.redteam`
``temporal fit``              a fitted temporal module (TCL) in a bundle    :mod:`.temporal`
``realfake fit``              a real-vs-fake (metamer) head in a bundle     :mod:`.realfake`
============================  ===========================================  ==================
"""

from __future__ import annotations

import typer

from hyplex import __version__
from hyplex.cli.calibrate import register as register_calibrate
from hyplex.cli.convert import register as register_convert
from hyplex.cli.design import register as register_design
from hyplex.cli.devices import register as register_devices
from hyplex.cli.forget import register as register_forget
from hyplex.cli.inverse import register as register_inverse
from hyplex.cli.library import library_app
from hyplex.cli.openset import register as register_openset
from hyplex.cli.optics import register as register_optics
from hyplex.cli.pretrain import register as register_pretrain
from hyplex.cli.realfake import register as register_realfake
from hyplex.cli.redteam import register as register_redteam
from hyplex.cli.refit import register as register_refit
from hyplex.cli.simulate import simulate_app
from hyplex.cli.temporal import register as register_temporal
from hyplex.cli.video import register as register_video

app = typer.Typer(
    help="hyplex: snapshot hyperspectral imaging with metasurface encoders.",
    no_args_is_help=True,
    add_completion=False,
)
app.add_typer(simulate_app, name="simulate")
app.add_typer(library_app, name="library")
register_optics(app)
register_devices(app)
register_inverse(app)
register_calibrate(app)
register_design(app)
register_refit(app)
register_video(app)
register_convert(app)
register_openset(app)
register_forget(app)
register_redteam(app)
register_pretrain(app)
register_temporal(app)
register_realfake(app)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"hyplex {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
    threads: int | None = typer.Option(
        None,
        "--threads",
        min=1,
        help="Compute threads for torch, numba and BLAS (default: HYPLEX_THREADS, else the "
        "free cores: usable cores less the load average).",
    ),
) -> None:
    """hyplex: snapshot hyperspectral imaging with metasurface encoders."""
    # One thread policy for the whole command, before any library sizes its own pool
    # (hyplex.optics.threads); light: torch and numba are set when a command imports them.
    from hyplex.optics.threads import configure_threads

    try:
        configure_threads(threads)
    except ValueError as error:  # a bad HYPLEX_THREADS
        raise typer.BadParameter(str(error), param_hint="HYPLEX_THREADS") from error

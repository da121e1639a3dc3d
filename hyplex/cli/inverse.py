"""``hyplex inverse``: the unit cell whose transmittance best matches a target spectrum.

Registered in ``hyplex.cli`` by ``register(app)``. Reads a CSV target (columns
``wavelength_nm,T``), runs :func:`hyplex.optics.inverse.design` and writes the best design as
JSON plus a PNG (target vs achieved spectrum, and the unit cell) beside it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

__all__ = ["inverse", "read_target", "register"]


def read_target(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``(wavelengths_nm, T)`` from a CSV with a header naming ``wavelength_nm`` and ``T``.

    Raises
    ------
    ValueError
        If the file is missing, lacks either column, or holds non-numeric values.
    """
    if not path.is_file():
        raise ValueError(f"target file {path} does not exist")
    with path.open() as handle:
        header = [name.strip().lstrip("#").strip() for name in handle.readline().split(",")]
    missing = {"wavelength_nm", "T"} - set(header)
    if missing:
        raise ValueError(
            f"{path}: the header must name the columns wavelength_nm and T, got {header} "
            f"(missing {sorted(missing)})"
        )
    try:
        table = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)
    except ValueError as error:
        raise ValueError(f"{path}: every row must hold numbers ({error})") from error
    if table.shape[1] != len(header):
        raise ValueError(
            f"{path}: {table.shape[1]} columns in the rows, {len(header)} in the header"
        )
    return table[:, header.index("wavelength_nm")], table[:, header.index("T")]


SURROGATE_FORMATS = (
    "NAME.json + NAME.safetensors as hyplex.optics.surrogate.save_surrogate writes them (or an "
    "older NAME.json + NAME.pt state dict)"
)


def _load_surrogate(path: Path, wavelengths_nm, family: str, period_nm: float, material: str,
                    substrate: str):  # fmt: skip
    """A saved :class:`~hyplex.optics.surrogate.SpectralSurrogate` as the callable
    :func:`hyplex.optics.inverse.design` takes: designs ``(..., P + 1)`` in nm (the family's
    shape parameters, then thickness) -> unpolarised T ``(..., L)`` (the mean of TE and TM) at
    ``wavelengths_nm`` (the target's grid, each point on the surrogate's grid).

    ``path`` is ``NAME``, ``NAME.json``, ``NAME.safetensors`` or an older ``NAME.pt`` (a state
    dict, read with ``torch.load(weights_only=True)``). TorchScript files and pickled modules,
    which this command once took, are refused unopened: loading them can run code.

    Raises
    ------
    ValueError
        A file in another format, a corrupt or foreign surrogate, or one trained for another
        family, period, material, substrate or wavelength grid than asked for.
    """
    from hyplex.optics.surrogate import UnpolarisedSpectrum, load_surrogate, surrogate_paths
    from hyplex.pipeline.model_files import describe_file

    _, _, config = surrogate_paths(path)
    foreign = path.is_file() and path.suffix not in (".json", ".safetensors", ".pt")
    if foreign or not config.is_file():  # a foreign file is never opened past its first bytes
        what = describe_file(path) if path.exists() else "a missing file"
        raise ValueError(
            f"{path}: {what}; --surrogate takes {SURROGATE_FORMATS}. TorchScript files and "
            "pickled modules are refused, since loading them can run code"
        )
    model = load_surrogate(path)  # LibraryError (a ValueError) says what is wrong
    library = model.description
    asked = {"family": family, "period_nm": float(period_nm), "material": material,
             "substrate": substrate, "superstrate": "air"}  # fmt: skip
    differ = [f"{k} {library.get(k)!r} (asked {v!r})" for k, v in asked.items()
              if library.get(k) != v]  # fmt: skip
    if differ:
        raise ValueError(
            f"{path} was trained for another structure: {', '.join(differ)}; pass the matching "
            "options or train a surrogate for this one"
        )
    from hyplex.optics.geometry import get_shape

    expected = tuple(get_shape(family).parameter_names)
    if tuple(library["parameter_names"]) != expected:
        raise ValueError(
            f"{path}: parameters {tuple(library['parameter_names'])}, the {family} family has "
            f"{expected}"
        )
    grid = np.asarray(model.wavelengths_nm, dtype=np.float64)
    wanted = np.asarray(wavelengths_nm, dtype=np.float64).reshape(-1)
    index = np.abs(grid[None, :] - wanted[:, None]).argmin(1)
    off = np.abs(grid[index] - wanted) > 1e-6
    if off.any():
        raise ValueError(
            f"{path}: the target's wavelengths {wanted[off][:5].tolist()} nm are not on the "
            f"surrogate's grid ({grid.size} points, {grid[0]:g}-{grid[-1]:g} nm); sample the "
            "target on that grid"
        )
    return UnpolarisedSpectrum(model, index)


Target = Annotated[Path, typer.Option("--target", help="CSV with columns wavelength_nm,T.")]
Family = Annotated[
    str, typer.Option(help="Shape family: disk, square, ellipse, rectangle, cross, L, H.")
]
Method = Annotated[str, typer.Option(help="rcwa | surrogate | swarm.")]
Period = Annotated[float, typer.Option(help="Square lattice period (nm).")]
ThicknessMin = Annotated[float, typer.Option(help="Smallest pillar thickness (nm).")]
ThicknessMax = Annotated[float, typer.Option(help="Largest pillar thickness (nm).")]
MinFeature = Annotated[float, typer.Option(help="Smallest solid feature and gap (nm).")]
Harmonics = Annotated[int, typer.Option(min=0, help="RCWA orders -M..M along x and y.")]
Material = Annotated[str, typer.Option(help="Pillar material.")]
Substrate = Annotated[str, typer.Option(help="Substrate material.")]
Grid = Annotated[int, typer.Option(min=8, help="Pixels per side of the rendered unit cell.")]
Surrogate = Annotated[
    Path | None,
    typer.Option(
        help="Saved surrogate for --method surrogate: NAME.json + NAME.safetensors "
        "(hyplex.optics.surrogate.save_surrogate; an older NAME.pt state dict also loads). "
        "TorchScript and pickled modules are refused: loading them can run code."
    ),
]
Seed = Annotated[int, typer.Option(help="Random seed.")]
Out = Annotated[Path, typer.Option(help="JSON file to write; a .png goes beside it.")]


def inverse(
    target: Target,
    family: Family = "disk",
    method: Method = "rcwa",
    period_nm: Period = 400.0,
    thickness_min_nm: ThicknessMin = 50.0,
    thickness_max_nm: ThicknessMax = 300.0,
    min_feature_nm: MinFeature = 0.0,
    harmonics: Harmonics = 3,
    material: Material = "cSi",
    substrate: Substrate = "SiO2",
    grid: Grid = 48,
    surrogate: Surrogate = None,
    seed: Seed = 0,
    out: Out = Path("out/inverse.json"),
) -> None:
    """Inverse-design one metasurface unit cell for a target transmittance spectrum."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from hyplex.cli.checks import memory_bad_parameter, output_file
    from hyplex.optics.inverse import design
    from hyplex.optics.memory import MemoryBudgetError

    output_file(out, "--out", "a JSON file path (a .png goes beside it)")
    try:
        wavelengths, spectrum = read_target(target)
        model = None
        if surrogate is not None:
            model = _load_surrogate(surrogate, wavelengths, family, period_nm, material, substrate)
        typer.echo(
            f"inverse design: {family}, method {method}, {wavelengths.size} wavelengths "
            f"{wavelengths.min():g}-{wavelengths.max():g} nm, M = {harmonics}",
            err=True,
        )
        result = design(
            spectrum,
            wavelengths,
            family,
            method,
            period_nm=period_nm,
            thickness_bounds_nm=(thickness_min_nm, thickness_max_nm),
            min_feature_nm=min_feature_nm,
            material=material,
            substrate=substrate,
            harmonics=harmonics,
            grid=(grid, grid),
            surrogate=model,
            seed=seed,
        )
    except MemoryBudgetError as error:
        raise memory_bad_parameter(error) from None
    except ValueError as error:
        raise typer.BadParameter(str(error)) from error
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result.to_dict(), indent=2))
    figure = result.plot()
    png = out.with_suffix(".png")
    figure.savefig(png, dpi=110)
    plt.close(figure)
    typer.echo(
        f"{result.shape}, thickness {result.thickness_nm:.1f} nm: RMS error "
        f"{result.rms_error:.4f} in {result.wall_s:.1f} s ({result.rcwa_evaluations} RCWA designs)"
    )
    typer.echo(f"wrote {out} and {png}")


def register(app: typer.Typer) -> None:
    """Add ``inverse`` as a command of ``app``."""
    app.command("inverse")(inverse)

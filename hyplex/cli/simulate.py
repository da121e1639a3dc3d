"""``hyplex simulate``: synthetic labelled scenes and videos through the camera twin.

Registered in ``hyplex.cli`` as ``app.add_typer(simulate_app, name="simulate")``. Each command
writes an HDF5 file (spectra, labels, raw mosaic frames; see ``hyplex.simulation.scene_io``)
and a PNG preview (sRGB, raw mosaic, class map) beside it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

simulate_app = typer.Typer(
    help="Camera digital twin: synthetic hyperspectral scenes and video, raw mosaic frames.",
    no_args_is_help=True,
)

Out = Annotated[Path, typer.Option(help="HDF5 file to write; a .png preview goes beside it.")]
Height = Annotated[int, typer.Option(min=8, help="Scene height (pixels).")]
Width = Annotated[int, typer.Option(min=8, help="Scene width (pixels).")]
Grid = Annotated[str, typer.Option(help="'hyplex' (204 bands, 397-1003 nm) or 'prototype' (34).")]
Objects = Annotated[int, typer.Option(min=0, help="Objects in the scene.")]
Fake = Annotated[float, typer.Option(min=0.0, max=1.0, help="Chance a plant is a fake (metamer).")]
Seed = Annotated[int, typer.Option(help="Random seed (scene and sensor noise).")]
Upsample = Annotated[int, typer.Option(min=1, help="Sensor pixels per scene pixel (each axis).")]
Pitch = Annotated[float, typer.Option(min=1.0, help="Sensor pixels per sub-filter pitch.")]
Exposure = Annotated[
    float, typer.Option(help="Exposure (us); <= 0 picks one filling 70 % of the full well.")
]
NoRaw = Annotated[bool, typer.Option("--no-raw", help="Skip the camera (no raw frames).")]


def _missing_dependency(error: Exception) -> typer.Exit:
    """Print a clear message (no traceback) for a missing dependency, e.g. earthlib."""
    hint = "" if "earthlib" in str(error) else " (synthetic scenes need earthlib, Python >= 3.11)"
    typer.echo(f"error: cannot simulate: {error}{hint}", err=True)
    return typer.Exit(code=1)


def _check_out(out: Path) -> None:
    """A directory or a path under a file as --out is one line, before the scene is made."""
    from hyplex.cli.checks import output_file

    output_file(out, "--out", "an HDF5 file path (a .png preview goes beside it)")


def _camera(scene_shape, grid, upsample, pitch_px):
    from hyplex.simulation.camera import default_camera

    sensor_shape = (scene_shape[0] * upsample, scene_shape[1] * upsample)
    return default_camera(grid, sensor_shape, pitch_px=pitch_px)


def _raw_attrs(camera, exposure_us):
    layout = camera.encoder.layout
    sensor = camera.sensor
    return {
        "exposure_us": float(exposure_us),
        "adc_bits": sensor.adc_bits,
        "system_gain_dn_per_e": sensor.system_gain_dn_per_e,
        "black_level_dn": sensor.black_level_dn,
        "full_well_e": sensor.full_well_e,
        "pixel_pitch_um": sensor.pixel_pitch_um,
        "f_number": camera.lens.f_number,
        "encoder": camera.encoder.name,
        "layout": {
            "metapixels": list(layout.metapixels),
            "grid": list(layout.grid),
            "pitch_px": layout.pitch_px,
            "metapixels_per_block": list(layout.metapixels_per_block),
            "gap_subfilters": layout.gap_subfilters,
            "rotation_deg": layout.rotation_deg,
            "offset_px": list(layout.offset_px),
        },
        "responses": camera.encoder.responses.tolist(),
    }


@simulate_app.command("scene")
def scene(
    out: Out = Path("out/scene.h5"),
    height: Height = 128,
    width: Width = 128,
    grid: Grid = "hyplex",
    objects: Objects = 6,
    fake_fraction: Fake = 0.3,
    illuminant: Annotated[str, typer.Option(help="D65, A, FL2, LED-B1, halogen, ...")] = "D65",
    lux: Annotated[float, typer.Option(min=1e-3, help="Illuminance (lux).")] = 10000.0,
    seed: Seed = 0,
    upsample: Upsample = 4,
    pitch_px: Pitch = 7.287,
    exposure_us: Exposure = 0.0,
    no_raw: NoRaw = False,
) -> None:
    """Render one labelled scene, its raw mosaic frame, and a PNG preview."""
    from hyplex.simulation.grids import named_grid
    from hyplex.simulation.plotting import save_scene_png
    from hyplex.simulation.scene_io import write_scene
    from hyplex.simulation.scenes import make_scene

    _check_out(out)
    start = time.perf_counter()
    try:
        wavelengths = named_grid(grid)
        result = make_scene(
            (height, width),
            wavelengths,
            objects,
            fake_fraction=fake_fraction,
            illuminant=illuminant,
            illuminance_lux=lux,
            seed=seed,
        )
        raw = attrs = None
        if not no_raw:
            camera = _camera((height, width), wavelengths, upsample, pitch_px)
            radiance = result.radiance
            if exposure_us <= 0:
                exposure_us = camera.auto_exposure_us(radiance, wavelengths)
            raw = camera.render(radiance, wavelengths, exposure_us, seed=seed)
            attrs = _raw_attrs(camera, exposure_us)
    except ValueError as error:
        raise typer.BadParameter(str(error)) from error
    except (ImportError, RuntimeError) as error:
        raise _missing_dependency(error) from error
    settings = {"seed": seed, "illuminant": illuminant, "illuminance_lux": lux, "grid": grid}
    path = write_scene(out, result, raw, attrs, attrs=settings)
    png = save_scene_png(out.with_suffix(".png"), result, raw, f"({illuminant}, {lux:g} lx)")
    fakes = int(np.unique(result.instance_map[result.fake_map]).size)
    typer.echo(
        f"scene {height}x{width}x{wavelengths.size} with {objects} objects ({fakes} fake) "
        f"in {time.perf_counter() - start:.1f} s"
        + ("" if raw is None else f"; raw {raw.shape[1]}x{raw.shape[0]} at {exposure_us:.0f} us")
    )
    typer.echo(f"wrote {path} and {png}")


@simulate_app.command("video")
def video(
    out: Out = Path("out/video.h5"),
    frames: Annotated[int, typer.Option(min=1, help="Number of frames.")] = 8,
    height: Height = 64,
    width: Width = 96,
    grid: Grid = "prototype",
    objects: Objects = 5,
    fake_fraction: Fake = 0.3,
    start_illuminant: Annotated[str, typer.Option(help="Illuminant of frame 0.")] = "D65",
    end_illuminant: Annotated[str, typer.Option(help="Illuminant of the last frame.")] = "A",
    start_lux: Annotated[float, typer.Option(min=1e-3, help="Lux at frame 0.")] = 10000.0,
    end_lux: Annotated[float, typer.Option(min=1e-3, help="Lux at the last frame.")] = 2000.0,
    seed: Seed = 0,
    upsample: Upsample = 4,
    pitch_px: Pitch = 7.287,
    exposure_us: Exposure = 0.0,
    no_raw: NoRaw = False,
) -> None:
    """Render a clip with moving objects and changing light, raw frames, and a PNG."""
    from hyplex.simulation.grids import named_grid
    from hyplex.simulation.plotting import save_video_png
    from hyplex.simulation.scene_io import write_video
    from hyplex.simulation.video import make_video

    _check_out(out)
    start = time.perf_counter()
    try:
        wavelengths = named_grid(grid)
        clip = make_video(
            frames,
            (height, width),
            wavelengths,
            objects,
            fake_fraction=fake_fraction,
            illuminants=(start_illuminant, end_illuminant),
            illuminance_lux=(start_lux, end_lux),
            seed=seed,
        )
        raw_frames = attrs = None
        if not no_raw:
            camera = _camera((height, width), wavelengths, upsample, pitch_px)
            if exposure_us <= 0:  # one exposure for the clip, set on its most lit frame
                lux = [light.illuminance_lux for light in clip.illuminants]
                brightest = clip.frame(int(np.argmax(lux)))
                exposure_us = camera.auto_exposure_us(brightest.radiance, wavelengths)
            raw_frames = np.stack(
                [
                    camera.render(clip.frame(t).radiance, wavelengths, exposure_us, seed, t)
                    for t in range(frames)
                ]
            )
            attrs = _raw_attrs(camera, exposure_us)
    except ValueError as error:
        raise typer.BadParameter(str(error)) from error
    except (ImportError, RuntimeError) as error:
        raise _missing_dependency(error) from error
    settings = {"seed": seed, "illuminants": [start_illuminant, end_illuminant], "grid": grid}
    path = write_video(out, clip, raw_frames, attrs, attrs=settings)
    png = save_video_png(out.with_suffix(".png"), clip, raw_frames)
    typer.echo(
        f"video {frames} frames of {height}x{width}x{wavelengths.size} in "
        f"{time.perf_counter() - start:.1f} s"
    )
    typer.echo(f"wrote {path} and {png}")

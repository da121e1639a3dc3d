"""``hyplex calibrate``: calibrate a camera on a bench of real or simulated instruments.

A command group: with options and no subcommand it runs the calibration
(:func:`hyplex.calibration.pipeline.calibrate`); subcommands (``hyplex calibrate import``)
are registered on the same group.
"""

from __future__ import annotations

from pathlib import Path

import typer

HELP = """Dark -> flat -> registration -> EMVA 1288 -> monochromator sweep (-> Hyplex
basis fit), written to one calibration file (--out) and a PNG report.

\b
What each instrument must support (hyplex.devices.instruments.requirements_text):
camera: the Camera protocol with a settable exposure time (GenICam
  ExposureTime via harvesters and a .cti producer, or an OpenCV V4L2/UVC
  camera with manual exposure), single-frame snap, mono pixels.
monochromator: Cornerstone 130B/260B command set (RS-232 9600 8N1 with echo,
  or USB-TMC): UNITS NM, GOWAVE/WAVE? (200-1100 nm), SHUTTER O|C / SHUTTER?,
  SLIT1MICRONS, INFO?, STB?/ERROR?, *OPC/*ESR?.
power_meter: Thorlabs PM100-class SCPI (USB-TMC via VISA, or a line): *IDN?,
  MEAS:POW? in W, SENS:CORR:WAV (400-1100 nm), SENS:AVER:COUN,
  SENS:POW:RANG:AUTO, SENS:POW:RANG:UPP?, SYST:ERR?.
filter_wheel: Thorlabs FW102C (115200 8N1, CR): pos=n, pos?, pcount?, *idn?.
URLs: /dev/ttyUSB0 or COM3 (pyserial); ASRL/dev/ttyUSB0::INSTR,
  USB0::...::INSTR, TCPIP::host::INSTR (VISA, pyvisa-py); sim://<kind>
  (simulator).

\b
Steps that need a person (cover the lens, place the white reference, point
the camera at the sphere port, place each sample) are prompted and wait for
Enter; --yes runs them scripted; the simulated camera answers them itself.
Ctrl-C, an instrument that stops answering or a camera that disconnects
leave a valid partial --out: rerun with --resume.
"""

INSTRUMENT_KINDS = {
    "--monochromator": "monochromator",
    "--power-meter": "power_meter",
    "--filter-wheel": "filter_wheel",
}


def register(app: typer.Typer) -> None:
    """Add the ``calibrate`` group to ``app``."""
    group = typer.Typer(help=HELP, invoke_without_command=True)
    group.callback(invoke_without_command=True)(calibrate_command)
    # subcommands of the group (hyplex calibrate import ...) are added here
    from hyplex.cli.calibrate_import import register as register_import

    register_import(group)
    app.add_typer(group, name="calibrate")


def calibrate_command(
    ctx: typer.Context,
    camera: str = typer.Option(
        "sim", help="sim (the camera twin) | opencv:<index|file> | genicam[:<N>|<cti>[#N]]."
    ),
    monochromator: str = typer.Option(
        "sim://monochromator", help="Monochromator URL (serial path, VISA resource, sim://)."
    ),
    power_meter: str = typer.Option(
        "sim://powermeter", help="Reference power meter URL (serial, USB-TMC VISA, sim://)."
    ),
    filter_wheel: str = typer.Option(None, help="Filter wheel URL (optional)."),
    grid: str = typer.Option(
        "400:730:10", help="Sweep wavelengths START:STOP:STEP, nm (STOP included)."
    ),
    layout_grid: str = typer.Option("3x3", help="Sub-filters per metapixel, ROWSxCOLS."),
    pitch_px: float = typer.Option(
        None,
        help="Sub-filter pitch, px: the registration searches 0.75-1.33 x this (default: "
        "2.5 px to a twelfth of the sensor); the simulated camera's pitch (default 5.3).",
    ),
    out: Path = typer.Option(Path("cal.h5"), help="Calibration file (HDF5) to write."),
    report: Path = typer.Option(None, help="PNG report (default: beside --out)."),
    resume: bool = typer.Option(False, help="Continue a partial --out (same camera, settings)."),
    yes: bool = typer.Option(False, "--yes", help="Do not wait at the operator's steps."),
    instrument_timeout_s: float = typer.Option(1.0, help="Longest wait for one reply, s."),
    bench_state: Path = typer.Option(
        None,
        help="Simulated camera only: the folder where `hyplex sim-device --bench-state` "
        "instruments publish their state (the camera sees their light).",
    ),
    rows: int = typer.Option(240, min=64, help="Simulated sensor rows."),
    cols: int = typer.Option(256, min=64, help="Simulated sensor columns."),
    rotation_deg: float = typer.Option(1.0, help="Simulated mosaic rotation, degrees."),
    samples: int = typer.Option(48, min=0, help="Simulated broadband samples (basis fit)."),
    design: Path = typer.Option(
        None,
        help="Design bundle whose filters the simulated camera carries (default: "
        "the thin-film stand-in encoder).",
    ),
    fabricate: bool = typer.Option(
        False,
        help="With --design: the camera carries fabricated filters (shifted, "
        "broadened, scaled; hyplex.simulation.fabrication), not the design.",
    ),
    fabrication_seed: int = typer.Option(0, help="Seed of the fabrication errors."),
) -> None:
    if ctx.invoked_subcommand is not None:
        return
    _check_options(
        out, report, pitch_px, rotation_deg, rows, cols, resume, design, instrument_timeout_s
    )
    wavelengths = parse_grid(grid)
    layout = parse_layout_grid(layout_grid)
    urls = {"--monochromator": monochromator, "--power-meter": power_meter}
    if filter_wheel:
        urls["--filter-wheel"] = filter_wheel
    simulated = {name for name, url in urls.items() if url.startswith("sim://")}
    if camera == "sim":
        if bench_state is None and len(simulated) != len(urls):
            raise typer.BadParameter(
                f"{', '.join(sorted(set(urls) - simulated))} is not simulated; the simulated "
                "camera sees only a simulated bench: expected sim:// instruments, or "
                "--bench-state with `hyplex sim-device --bench-state` instruments",
                param_hint="'--camera'",
            )
        if bench_state is not None and not bench_state.is_dir():
            raise typer.BadParameter(
                f"{bench_state} is not a folder; expected the --bench-state folder of the "
                "hyplex sim-device instruments",
                param_hint="'--bench-state'",
            )
        if fabricate and design is None:
            raise typer.BadParameter("--fabricate needs --design", param_hint="--fabricate")
    else:
        if simulated:
            raise typer.BadParameter(
                f"{', '.join(sorted(simulated))} is simulated: a real camera cannot see a "
                "simulated monochromator's light; expected the instruments' serial or VISA "
                "addresses",
                param_hint="'--camera'",
            )
        if bench_state is not None:
            raise typer.BadParameter(
                "--bench-state is for the simulated camera; expected no --bench-state with "
                f"--camera {camera}",
                param_hint="'--bench-state'",
            )
    _run(
        camera, urls, wavelengths, layout, pitch_px, out, report, resume, yes,
        instrument_timeout_s, bench_state, (rows, cols), rotation_deg, samples, design,
        fabricate, fabrication_seed,
    )  # fmt: skip


def parse_grid(text: str):
    """``"START:STOP:STEP"`` nm -> wavelengths, numpy (L,) (STOP included when on the grid)."""
    import numpy as np

    try:
        start, stop, step = (float(v) for v in text.split(":"))
    except ValueError:
        raise typer.BadParameter(
            f"expected START:STOP:STEP in nm (e.g. 400:730:10), got {text!r}",
            param_hint="'--grid'",
        ) from None
    if not all(np.isfinite([start, stop, step])) or step <= 0 or stop <= start:
        raise typer.BadParameter(
            f"expected START < STOP and STEP > 0 (nm), got {text!r}", param_hint="'--grid'"
        )
    wavelengths = np.arange(start, stop + step * 1e-6, step)
    if wavelengths.size < 3:
        raise typer.BadParameter(
            f"{text!r} gives {wavelengths.size} wavelengths; expected >= 3", param_hint="'--grid'"
        )
    return wavelengths


def parse_layout_grid(text: str) -> tuple[int, int]:
    """``"3x3"`` -> (3, 3) sub-filters per metapixel."""
    try:
        rows, cols = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise typer.BadParameter(
            f"expected ROWSxCOLS sub-filters per metapixel (e.g. 3x3), got {text!r}",
            param_hint="'--layout-grid'",
        ) from None
    if rows < 1 or cols < 1 or rows * cols < 2:
        raise typer.BadParameter(
            f"expected >= 2 sub-filters per metapixel, got {text!r}", param_hint="'--layout-grid'"
        )
    return rows, cols


class ConsoleOperator:
    """Prints each hands-on step and waits for Enter (``hyplex calibrate`` without --yes)."""

    def prompt(self, step: str, instruction: str, index: int | None = None) -> None:
        typer.echo(f"\n[{step}] {instruction}", err=True)
        typer.prompt("Press Enter when done", default="", show_default=False, err=True)


def _run(
    camera_spec, urls, wavelengths, layout_grid, pitch_px, out, report, resume, yes,
    timeout_s, bench_state, sensor_shape, rotation_deg, samples, design, fabricate,
    fabrication_seed,
) -> None:  # fmt: skip
    from contextlib import ExitStack

    from tqdm import tqdm

    from hyplex.calibration.operator import ScriptedOperator
    from hyplex.calibration.pipeline import (
        CalibrationError,
        CalibrationInterrupted,
        CalibrationSetupError,
        PipelineSettings,
        calibrate,
    )
    from hyplex.calibration.report import plot_report
    from hyplex.devices.clock import MonotonicClock, VirtualClock

    settings = PipelineSettings(n_samples=samples if camera_spec == "sim" else 0)
    if pitch_px is not None:
        settings = _with_pitch(settings, pitch_px)
    sim_samples, camera_id, truth_k = None, None, None
    with ExitStack() as stack:
        if camera_spec == "sim":
            twin = _twin(sensor_shape, pitch_px or 5.3, rotation_deg, design, fabricate,
                         fabrication_seed, layout_grid)  # fmt: skip
            from hyplex.calibration.sim_bench_config import simulated_configuration

            if bench_state is not None:  # instruments in other processes: real time
                from hyplex.devices.bench_link import LinkedBench

                bench, clock = LinkedBench(bench_state), MonotonicClock()
                camera_clock = VirtualClock()
            else:
                from hyplex.devices.sim_bench import SimulatedBench

                bench = SimulatedBench()
                clock = camera_clock = bench.clock
                urls = {name: bench.urls[_sim_kind(url)] for name, url in urls.items()}
            config = simulated_configuration(
                twin, bench, settings, wavelengths, camera_clock=camera_clock
            )
            device, operator, settings = config.camera, config.operator, config.settings
            sim_samples, camera_id = config.samples, config.camera_id
            truth_k = twin.sensor.system_gain_dn_per_e
        else:
            from hyplex.devices.discovery import open_camera

            try:
                device = open_camera(camera_spec)
            except ValueError as error:
                raise typer.BadParameter(str(error), param_hint="'--camera'") from None
            clock = MonotonicClock()
            operator = (
                ScriptedOperator(echo=lambda text: typer.echo(text, err=True))
                if yes
                else ConsoleOperator()
            )
        instruments = {
            name: stack.enter_context(_open_instrument(name, url, clock, timeout_s))
            for name, url in urls.items()
        }
        try:
            device.open()
        except Exception as error:  # the backend's own error: name the camera
            typer.echo(f"error: --camera {camera_spec} cannot be opened: {error}", err=True)
            raise typer.Exit(1) from None
        stack.callback(device.close)
        bars: dict[str, tqdm] = {}
        stack.callback(lambda: [bar.close() for bar in bars.values()])

        def progress(step: str, done: int, total: int) -> None:
            bar = bars.get(step)
            if bar is None:
                bar = bars[step] = tqdm(total=total, desc=step, leave=True)
            bar.n = done
            bar.refresh()

        try:
            calibration = calibrate(
                device, instruments["--monochromator"], instruments["--power-meter"],
                layout_grid=layout_grid, wavelengths_nm=wavelengths, operator=operator,
                settings=settings, out=out, resume=resume, progress=progress, clock=clock,
                camera_id=camera_id, samples=sim_samples,
                filter_wheel=instruments.get("--filter-wheel"),
            )  # fmt: skip
        except CalibrationSetupError as error:
            raise typer.BadParameter(str(error)) from None
        except CalibrationInterrupted as error:
            typer.echo(f"error: {error}", err=True)
            raise typer.Exit(1) from None
        except CalibrationError as error:
            typer.echo(f"error: {error}", err=True)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            typer.echo(
                f"\ninterrupted: {out} holds the steps finished so far (if any); continue "
                "with --resume",
                err=True,
            )
            raise typer.Exit(130) from None
    from hyplex.calibration.emva_datasheet import report_panels, write_datasheet

    png = plot_report(calibration, report or out.with_suffix(".png"), panels=report_panels())
    emva = calibration.sections["emva"]
    sheet = write_datasheet(emva, png.parent, {"camera": calibration.provenance.camera_model},
                            stem=f"{png.stem}_emva1288")  # fmt: skip
    typer.echo(f"wrote {out}, {png} and the EMVA 1288 data sheet {sheet[1]} (+ .json)")
    typer.echo(f"layout: {calibration.layout}")
    gain = f"K = {float(emva['system_gain_pooled_dn_per_e']):.4f} DN/e-"
    typer.echo(gain + (f" (true {truth_k})" if truth_k is not None else ""))


def _with_pitch(settings, pitch_px: float):
    from dataclasses import replace

    return replace(settings, pitch_range_px=(max(0.75 * pitch_px, 1.01), 1.33 * pitch_px))


def _sim_kind(url: str) -> str:
    """``sim://monochromator`` -> the SimulatedBench's URL key."""
    kind = url.removeprefix("sim://").partition("?")[0]
    return {"power_meter": "powermeter", "filter_wheel": "filterwheel"}.get(kind, kind)


def _open_instrument(option: str, url: str, clock, timeout_s: float):
    from hyplex.devices.errors import InstrumentError
    from hyplex.devices.instruments import open_instrument

    kind = INSTRUMENT_KINDS[option]
    try:
        return open_instrument(kind, url, clock=clock, timeout_s=timeout_s)
    except (InstrumentError, ValueError, OSError) as error:
        raise typer.BadParameter(
            f"{url}: {error}; expected the address of a {kind.replace('_', ' ')} that answers "
            "its command set (see hyplex calibrate --help)",
            param_hint=f"'{option}'",
        ) from None


def _twin(sensor_shape, pitch_px, rotation_deg, design, fabricate, fabrication_seed, grid):
    from hyplex.simulation.camera import default_camera
    from hyplex.simulation.grids import prototype_grid

    if design is None:
        if tuple(grid) != (3, 3):
            raise typer.BadParameter(
                f"the simulated camera's mosaic is 3x3, got --layout-grid {grid[0]}x{grid[1]}",
                param_hint="'--layout-grid'",
            )
        try:
            return default_camera(prototype_grid(), sensor_shape, pitch_px, rotation_deg)
        except ValueError as error:  # a mosaic that does not fit the sensor
            raise typer.BadParameter(str(error)) from None
    from hyplex.hil.measured_response import design_twin
    from hyplex.models.bundle import BundleError, load_bundle
    from hyplex.simulation.fabrication import FabricationError

    try:
        bundle = load_bundle(design)
    except (BundleError, OSError, ValueError) as error:
        raise typer.BadParameter(
            f"{error} (expected a design bundle folder)", param_hint="'--design'"
        ) from None
    twin, _ = design_twin(
        bundle,
        sensor_shape,
        pitch_px,
        rotation_deg,
        FabricationError() if fabricate else None,
        fabrication_seed,
    )
    return twin


def _check_options(out, report, pitch_px, rotation_deg, rows, cols, resume, design, timeout_s):
    """One line per wrong value, before any device is opened."""
    from hyplex.cli.checks import check_sim_sensor, finite, output_file

    output_file(out, "--out", "a calibration file path (.h5)")
    output_file(report, "--report", "a PNG file path")
    finite(pitch_px, "--pitch-px", positive=True, unit="sensor pixels per sub-filter")
    finite(rotation_deg, "--rotation-deg", unit="degrees")
    finite(timeout_s, "--instrument-timeout-s", positive=True, unit="s")
    # the sweep and EMVA steps hold stacks of frames and their float means
    check_sim_sensor(f"{rows} rows x {cols} cols", rows, cols, frames=32, option="--rows")
    if design is not None and not design.is_dir():
        raise typer.BadParameter(
            f"{design}: "
            + ("a file" if design.exists() else "no such bundle folder")
            + "; expected a design bundle folder (hyplex design)",
            param_hint="'--design'",
        )
    if out.exists() and not resume:
        raise typer.BadParameter(
            f"{out} exists; expected a new path, or --resume to continue it (a calibration "
            "file is never overwritten)",
            param_hint="'--out'",
        )
    if resume and out.exists():
        from hyplex.calibration.store import load_calibration

        try:
            load_calibration(out, allow_partial=True)
        except (OSError, KeyError, ValueError) as error:
            raise typer.BadParameter(
                f"{out} cannot be resumed: {error}; expected a hyplex calibration file "
                "(an interrupted `hyplex calibrate`)",
                param_hint="'--resume'",
            ) from None

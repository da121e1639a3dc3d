"""Meep FDTD job runner: executed by the *system* interpreter (``/usr/bin/python3``).

This file is deliberately standalone: it imports only the standard library, numpy and meep,
so it runs under Debian's ``python3-meep`` (numpy 1.24) without the project's venv, and the
flush-to-zero mode that ``import meep`` switches on never reaches the caller's process.
:mod:`hyplex.optics.fdtd` writes a JSON job description, starts

    /usr/bin/python3 _meep_worker.py job.json result.npz

and reads ``result.npz``. A job with ``"norm_only": true`` only writes its ``norm_file``.
Progress goes to stdout as JSON lines ``{"t": ..., "stage": ...}``.

Lengths are in um (Meep's unit length a = 1 um), frequencies in 1/um (f = 1 / lambda_um).
The cell, along z (propagation +z)::

    z = -Lz/2                                                         z = +Lz/2
    | PML | pad | source | gap | R monitor | gap | layers | gap | T monitor | pad | PML |
    |<-------------- superstrate ------------------>|        |<------ substrate ------->|

x and y are Bloch-periodic with k = 0 (normal incidence) over one unit cell. A planar Ex or
Ey current sheet launches a broadband Gaussian pulse. Two runs share every setting:
1. the *normalisation* run, superstrate everywhere: the incident flux and the incident DFT
   fields at the R monitor (cached in ``norm_file`` when given);
2. the *structure* run: T = flux(T monitor) / incident flux, and R from the flux of the fields
   minus the incident fields (``load_minus_flux_data``), the standard Meep recipe (Meep docs,
   "Tutorial/Basics: transmittance spectrum of a waveguide bend").
"""

import json
import os
import sys
import time

import meep as mp
import numpy as np

WORKER_VERSION = 1


def medium(spec):
    """Meep Medium from {"epsilon": eps_inf, "lorentz": [[f_n, gamma_n, sigma_n], ...]}."""
    susceptibilities = [
        mp.LorentzianSusceptibility(frequency=f, gamma=g, sigma=s) for f, g, s in spec["lorentz"]
    ]
    return mp.Medium(epsilon=spec["epsilon"], E_susceptibilities=susceptibilities)


def epsilon_at(spec, frequency):
    """Real part of a medium spec's epsilon at ``frequency`` (1/um)."""
    eps = spec["epsilon"] + sum(
        s * f**2 / (f**2 - frequency**2 - 1j * frequency * g) for f, g, s in spec["lorentz"]
    )
    return float(eps.real)


def slab(z_center, thickness, material):
    """A layer infinite in x and y."""
    return mp.Block(
        center=mp.Vector3(0, 0, z_center),
        size=mp.Vector3(mp.inf, mp.inf, thickness),
        material=material,
    )


def stable_courant(job):
    """Largest Courant number S <= 0.5 (Meep's default) at which every medium keeps
    Re eps >= 0.9 at the grid's Nyquist frequency f_N = resolution / (2 S).

    Above its resonances a Lorentz medium has eps(f) = eps_inf - sum sigma f_n^2 / f^2 < eps_inf;
    with eps_inf = 1 (Meep's cSi, Sellmeier glass) light at f_N outruns the 3-D Courant
    limit and the run blows up. Measured here at S = 0.5: c-Si at 32 px/um (eps(f_N) = 0.87)
    and Sellmeier glass at 40 px/um (0.87) gave NaN; c-Si at 40 px/um (0.92) ran.
    Lowering S raises f_N and costs proportionally more time steps.
    """
    media = [job["superstrate"], job["substrate"]]
    for layer in job["layers"]:
        media.append(layer["background"])
        media.extend(shape["material"] for shape in layer["objects"])
    courant = 0.5
    while (
        courant > 0.1 and min(epsilon_at(m, job["resolution"] / (2 * courant)) for m in media) < 0.9
    ):
        courant -= 0.025
    return courant


def layout(job):
    """z positions (um) of the cell's features, from the job's thicknesses."""
    pml, pad, gap = job["pml_um"], job["pad_um"], job["gap_um"]
    stack = sum(layer["thickness_um"] for layer in job["layers"])
    length = 2 * pml + 2 * pad + 3 * gap + stack
    z_source = -length / 2 + pml + pad
    z_top = z_source + 2 * gap  # first layer starts here
    return {
        "length": length,
        "source": z_source,
        "reflection": z_source + gap,
        "top": z_top,
        "bottom": z_top + stack,
        "transmission": z_top + stack + gap,
    }


def geometry(job, z):
    """Substrate block plus, per layer, a background slab and its objects."""
    # The substrate ends exactly at the cell's top face: with Bloch-periodic boundaries Meep
    # copies objects by the cell length along z too (ensure_periodicity), and any overhang
    # would reappear as glass at the bottom of the cell, around the source.
    # Inside the PML the substrate is non-dispersive, with the real epsilon it has at the band
    # centre: Meep's PML is unstable in Lorentz media (measured here: fields grew to 1e244 with
    # Sellmeier glass in the PML). Glass's index varies by ~0.02 over 400-1000 nm, so the step
    # at the PML face reflects ~1e-5, below the FDTD error.
    z_pml = z["length"] / 2 - job["pml_um"]
    substrate = job["substrate"]
    objects = [
        slab((z["bottom"] + z_pml) / 2, z_pml - z["bottom"], medium(substrate)),
        slab(
            (z_pml + z["length"] / 2) / 2,
            job["pml_um"],
            mp.Medium(epsilon=epsilon_at(substrate, job["fcen"])),
        ),
    ]
    z_start = z["top"]
    for layer in job["layers"]:
        thickness = layer["thickness_um"]
        zc = z_start + thickness / 2
        if thickness > 0:
            objects.append(slab(zc, thickness, medium(layer["background"])))
            for shape in layer["objects"]:
                material = medium(shape["material"])
                cx, cy = shape["center"]
                if shape["kind"] == "cylinder":
                    objects.append(
                        mp.Cylinder(
                            radius=shape["radius"],
                            height=thickness,
                            center=mp.Vector3(cx, cy, zc),
                            material=material,
                        )
                    )
                elif shape["kind"] == "block":
                    sx, sy = shape["size"]
                    objects.append(
                        mp.Block(
                            center=mp.Vector3(cx, cy, zc),
                            size=mp.Vector3(sx, sy, thickness),
                            material=material,
                        )
                    )
                else:
                    raise ValueError(f"unknown object kind {shape['kind']!r}")
        z_start += thickness
    return objects


def simulation(job, z, with_structure):
    one_d = not any(layer["objects"] for layer in job["layers"])
    px, py = job["period_um"]
    cell = mp.Vector3(0 if one_d else px, 0 if one_d else py, z["length"])
    frequencies = np.asarray(job["frequencies"], dtype=float)
    component = mp.Ex if (job["polarization"] == "x" or one_d) else mp.Ey
    source = mp.Source(
        mp.GaussianSource(job["fcen"], fwidth=job["fwidth"]),
        component=component,
        center=mp.Vector3(0, 0, z["source"]),
        size=mp.Vector3(cell.x, cell.y, 0),
    )
    symmetries = []
    if not one_d:
        # Ex is odd under the x mirror and even under the y mirror (Meep docs, "Exploiting
        # Symmetry"); Ey the other way round. Used only where the structure has the mirror.
        odd_x = component == mp.Ex
        if job["mirror_x"]:
            symmetries.append(mp.Mirror(mp.X, phase=-1 if odd_x else 1))
        if job["mirror_y"]:
            symmetries.append(mp.Mirror(mp.Y, phase=1 if odd_x else -1))
    sim = mp.Simulation(
        cell_size=cell,
        resolution=job["resolution"],
        geometry=geometry(job, z) if with_structure else [],
        sources=[source],
        boundary_layers=[mp.PML(job["pml_um"], direction=mp.Z)],
        default_material=medium(job["superstrate"]),
        # k = 0: Bloch-periodic x, y at normal incidence. Not in 1-D, where it would make z
        # periodic too (measured: T of a glass half-space came out 0.69-1.43, not 0.966).
        k_point=False if one_d else mp.Vector3(0, 0, 0),
        symmetries=symmetries,
        dimensions=1 if one_d else 3,
        eps_averaging=job.get("subpixel_averaging", True),
        Courant=job["courant"] or stable_courant(job),
    )
    monitor = mp.Vector3(cell.x, cell.y, 0)
    reflection = sim.add_flux(
        frequencies, mp.FluxRegion(center=mp.Vector3(0, 0, z["reflection"]), size=monitor)
    )
    transmission = sim.add_flux(
        frequencies, mp.FluxRegion(center=mp.Vector3(0, 0, z["transmission"]), size=monitor)
    )
    return sim, reflection, transmission


def run(sim, job, stage):
    """Run past the source until every DFT monitor changes by < ``dft_tol``, or time out."""
    started = time.time()
    last = [0.0]

    def report(sim):
        now = time.time()
        if now - last[0] > 2.0:
            last[0] = now
            print(json.dumps({"stage": stage, "t": sim.meep_time()}), flush=True)

    max_time = job["max_time"]
    sim.run(
        report,
        until_after_sources=[
            # DFT convergence at the monitors, not field decay at a point: the Sellmeier
            # glass's undamped infrared oscillator (gamma = 0, f = 0.1/um) rings for ever
            # far below the band, so the fields never decay although the spectra converged.
            mp.stop_when_dft_decayed(tol=job["dft_tol"], maximum_run_time=max_time),
        ],
    )
    return {"sim_time": sim.meep_time(), "wall_s": time.time() - started}


def main(job_path, result_path):
    with open(job_path) as handle:
        job = json.load(handle)
    mp.verbosity(0)
    z = layout(job)
    norm_file = job.get("norm_file")
    if norm_file and os.path.exists(norm_file):
        saved = np.load(norm_file)
        incident = saved["incident"]
        minus = mp.simulation.FluxData(E=saved["E"], H=saved["H"])
        norm_stats = {"sim_time": float(saved["sim_time"]), "wall_s": 0.0, "cached": True}
    else:
        sim, reflection, _ = simulation(job, z, with_structure=False)
        norm_stats = run(sim, job, "normalisation")
        incident = np.asarray(mp.get_fluxes(reflection))
        data = sim.get_flux_data(reflection)
        minus = data
        if norm_file:
            tmp = norm_file + f".{os.getpid()}.tmp.npz"
            np.savez(tmp, incident=incident, E=data.E, H=data.H, sim_time=norm_stats["sim_time"])
            os.replace(tmp, norm_file)
        sim.reset_meep()
    if job.get("norm_only"):
        return
    sim, reflection, transmission = simulation(job, z, with_structure=True)
    sim.load_minus_flux_data(reflection, minus)
    stats = run(sim, job, "structure")
    transmitted = np.asarray(mp.get_fluxes(transmission))
    reflected = -np.asarray(mp.get_fluxes(reflection))
    tmp = result_path + f".{os.getpid()}.tmp.npz"
    np.savez(
        tmp,
        frequencies=np.asarray(job["frequencies"]),
        T=transmitted / incident,
        R=reflected / incident,
        incident=incident,
        sim_time=stats["sim_time"],
        wall_s=stats["wall_s"] + norm_stats["wall_s"],
        norm_cached=bool(norm_stats.get("cached", False)),
        meep_version=mp.__version__,
        worker_version=WORKER_VERSION,
    )
    os.replace(tmp, result_path)


if __name__ == "__main__":
    if len(sys.argv) == 2 and sys.argv[1] == "--version":
        print(json.dumps({"meep": mp.__version__, "worker": WORKER_VERSION}))
    elif len(sys.argv) == 3:
        main(sys.argv[1], sys.argv[2])
    else:
        sys.exit("usage: python3 _meep_worker.py JOB.json RESULT.npz | --version")

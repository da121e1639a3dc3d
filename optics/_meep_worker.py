"""Meep FDTD job runner: executed by the *system* interpreter (``/usr/bin/python3``).

This file is deliberately standalone: it imports only the standard library, numpy and meep,
so it runs under Debian's ``python3-meep`` (numpy 1.24) without the project's venv, and the
flush-to-zero mode that ``import meep`` switches on never reaches the caller's process.
:mod:`hyplex.optics.fdtd` writes a JSON job description, starts

    /usr/bin/python3 _meep_worker.py job.json result.npz

and reads ``result.npz``. A job with ``"norm_only": true`` only writes its ``norm_file``.
Progress goes to stdout as JSON lines ``{"t": ..., "stage": ...}``.

Lengths are in um (Meep's unit length a = 1 um), frequencies in 1/um (f = 1 / lambda_um).
The cell along the propagation axis ``s`` (light travels towards +s)::

    s = -Ls/2                                                         s = +Ls/2
    | PML | pad | source | gap | R monitor | gap | layers | gap | T monitor | pad | PML |
    |<-------------- superstrate ------------------>|        |<------ substrate ------->|

Three cell kinds (``job["dimensions"]``), one physics; the RCWA's axes are x, y (in-plane) and z
(propagation), and the plane of incidence is x-z:

- 3: a 3-D cell of one period Lx x Ly, s = z, Bloch-periodic in x and y.
- 2: a 2-D cell for gratings uniform along the RCWA's y (1-D gratings, or films at oblique
  incidence). Meep's 2-D cells lie in its x-y plane, so Meep's x is the RCWA's x, Meep's y is
  the propagation axis s, and Meep's z is the RCWA's y (the grating lines)::

        Meep y (= RCWA z, propagation)
        ^
        |   | PML |... substrate ...| T |   ####    ####   | R | source |... | PML |
        +--> Meep x (= RCWA x, period Lx, Bloch-periodic with k_x)
        (Meep z, out of the plane = RCWA y, along the lines)

  TE (E along the lines, RCWA Ey) is Meep's Ez polarisation (Ez, Hx, Hy); TM (E in the plane
  of incidence, RCWA Ex) is Meep's Hz polarisation (Ex, Ey, Hz), launched by an Ex current.
- 1: an unpatterned stack at normal incidence, a 1-D cell along z (exact).

Oblique incidence (2-D only): the source carries the Bloch phase exp(2 pi i k_x x) and the
boundaries are Bloch-periodic with the same k_x = n_sup sin(theta) f0 (Meep's k units, 1/um).
At fixed k_x the angle of a frequency f is asin(k_x / (n_sup f)), so a broadband pulse is
*not* a fixed angle; :mod:`hyplex.optics.fdtd` therefore runs one job per wavelength, each with
k_x set for its own frequency f0, and reads only f0's DFT (the standard per-frequency
approach, Meep docs, "Tutorial/Mode Decomposition: Reflectance and Transmittance Spectra for
Planewave at Oblique Incidence").

Two runs share every setting:
1. the *normalisation* run, superstrate everywhere: the incident flux and the incident DFT
   fields at the R monitor (cached in ``norm_file`` when given);
2. the *structure* run: T = flux(T monitor) / incident flux, and R from the flux of the fields
   minus the incident fields (``load_minus_flux_data``), the standard Meep recipe (Meep docs,
   "Tutorial/Basics: transmittance spectrum of a waveguide bend").
"""

import cmath
import json
import math
import os
import sys
import time

import meep as mp
import numpy as np

WORKER_VERSION = 2


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


class Axes:
    """Maps the RCWA's (x, y, z = propagation) onto Meep's axes for a 1-, 2- or 3-D cell."""

    def __init__(self, dimensions):
        self.dimensions = dimensions
        self.along = mp.Y if dimensions == 2 else mp.Z  # the propagation axis s

    def vector(self, x, y, s):
        """Meep Vector3 of the RCWA point (x, y) at position s along the propagation axis."""
        if self.dimensions == 1:
            return mp.Vector3(0, 0, s)
        if self.dimensions == 2:
            return mp.Vector3(x, s, 0)  # the RCWA's y (along the lines) is Meep's z
        return mp.Vector3(x, y, s)

    def size(self, x, y, s):
        """Meep Vector3 of a source or monitor extent: (x, y) in the plane, s along the axis."""
        if self.dimensions == 1:
            return mp.Vector3(0, 0, s)
        if self.dimensions == 2:
            return mp.Vector3(x, s, 0)
        return mp.Vector3(x, y, s)

    def object_size(self, x, y, s):
        """Meep Vector3 of an object's extent. In 2-D objects extend to infinity along Meep's
        z: a block of zero z size spoils the sub-pixel smoothing of Ez (measured: a 100 nm
        n = 2 film at 30 degrees converged at first order in TE, against second order in TM
        and with an infinite z extent)."""
        if self.dimensions == 2:
            return mp.Vector3(x, s, mp.inf)
        return self.size(x, y, s)


def slab(axes, s_center, thickness, material):
    """A layer infinite in the plane."""
    return mp.Block(
        center=axes.vector(0, 0, s_center),
        size=axes.object_size(mp.inf, mp.inf, thickness),
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
    """Positions (um) along the propagation axis of the cell's features."""
    pml, pad, gap = job["pml_um"], job["pad_um"], job["gap_um"]
    stack = sum(layer["thickness_um"] for layer in job["layers"])
    length = 2 * pml + 2 * pad + 3 * gap + stack
    s_source = -length / 2 + pml + pad
    s_top = s_source + 2 * gap  # first layer starts here
    return {
        "length": length,
        "source": s_source,
        "reflection": s_source + gap,
        "top": s_top,
        "bottom": s_top + stack,
        "transmission": s_top + stack + gap,
    }


def shape_object(axes, shape, s_center, thickness, period):
    """Meep primitive of one worker shape (cylinder or block) in a layer."""
    material = medium(shape["material"])
    cx, cy = shape["center"]
    if shape["kind"] == "cylinder":
        if axes.dimensions != 3:
            raise ValueError("a cylinder needs a 3-D cell (it is not uniform along y)")
        return mp.Cylinder(
            radius=shape["radius"],
            height=thickness,
            center=axes.vector(cx, cy, s_center),
            material=material,
        )
    if shape["kind"] == "block":
        sx, sy = shape["size"]
        # A block that spans the period (a 1-D grating's line along y; in 2-D every block
        # does, checked by the caller) is made infinite along that axis. Spanning exactly one
        # period leaves faces on the cell boundary, and there the sub-pixel smoothing treats
        # Ex points that sit on the y = +-Ly/2 face as half inside (measured: TM of a 3-D
        # grating cell differed from the exact 2-D cell by 0.05 in T; without smoothing, or
        # with the infinite block, the two agree to 1e-5).
        sx = mp.inf if sx >= period[0] * (1 - 1e-9) else sx
        sy = mp.inf if sy >= period[1] * (1 - 1e-9) else sy
        return mp.Block(
            center=axes.vector(cx, cy, s_center),
            size=axes.object_size(sx, sy, thickness),
            material=material,
        )
    raise ValueError(f"unknown object kind {shape['kind']!r}")


def geometry(job, axes, z):
    """Substrate block plus, per layer, a background slab and its objects."""
    # The substrate ends exactly at the cell's top face: with Bloch-periodic boundaries Meep
    # copies objects by the cell length along s too (ensure_periodicity), and any overhang
    # would reappear as glass at the other end of the cell, around the source.
    # Inside the PML the substrate is non-dispersive, with the real epsilon it has at the band
    # centre: Meep's PML is unstable in Lorentz media (measured here: fields grew to 1e244 with
    # Sellmeier glass in the PML). Glass's index varies by ~0.02 over 400-1000 nm, so the step
    # at the PML face reflects ~1e-5, below the FDTD error.
    s_pml = z["length"] / 2 - job["pml_um"]
    substrate = job["substrate"]
    objects = [
        slab(axes, (z["bottom"] + s_pml) / 2, s_pml - z["bottom"], medium(substrate)),
        slab(
            axes,
            (s_pml + z["length"] / 2) / 2,
            job["pml_um"],
            mp.Medium(epsilon=epsilon_at(substrate, job["fcen"])),
        ),
    ]
    s_start = z["top"]
    for layer in job["layers"]:
        thickness = layer["thickness_um"]
        sc = s_start + thickness / 2
        if thickness > 0:
            objects.append(slab(axes, sc, thickness, medium(layer["background"])))
            objects.extend(
                shape_object(axes, shape, sc, thickness, job["period_um"])
                for shape in layer["objects"]
            )
        s_start += thickness
    return objects


def source_component(job):
    """Meep component of the current sheet: TM (RCWA Ex) is Ex in every cell; TE (RCWA Ey,
    along the lines) is Ey in 3-D and Ez in 2-D (Meep's out-of-plane axis); 1-D runs Ex."""
    if job["polarization"] == "x" or job["dimensions"] == 1:
        return mp.Ex
    return mp.Ez if job["dimensions"] == 2 else mp.Ey


def mirror_symmetries(job, component):
    """Mirror planes through the cell centre that the structure and the source share.

    With an even (phase +1) mirror plane, E transforms as a vector: the component normal to
    the plane is odd, the tangential ones even (Meep docs, "Exploiting Symmetry", "Vectors and
    Pseudovectors"). A uniform Ex sheet has Ex(-x) = Ex(x), an odd vector field under the x = 0
    mirror (phase -1) and an even one under y = 0 (phase +1); Ey the other way round; Ez (2-D
    TE) is tangential to the x = 0 plane (phase +1). fdtd.py sets mirror_x / mirror_y only
    where the structure has that mirror and k_x = 0.
    """
    symmetries = []
    if job["dimensions"] == 1:
        return symmetries
    if job["mirror_x"]:
        symmetries.append(mp.Mirror(mp.X, phase=-1 if component == mp.Ex else 1))
    if job["mirror_y"] and job["dimensions"] == 3:
        symmetries.append(mp.Mirror(mp.Y, phase=-1 if component == mp.Ey else 1))
    return symmetries


def simulation(job, z, with_structure):
    dimensions = job["dimensions"]
    axes = Axes(dimensions)
    px, py = job["period_um"]
    if dimensions == 1:
        cell = mp.Vector3(0, 0, z["length"])
    elif dimensions == 2:
        cell = mp.Vector3(px, z["length"], 0)
    else:
        cell = mp.Vector3(px, py, z["length"])
    frequencies = np.asarray(job["frequencies"], dtype=float)
    component = source_component(job)
    kx = job["kx"]
    amplitude = {}
    if kx:
        # Plane-wave source at oblique incidence: the sheet carries the Bloch phase of the
        # incident wave, exp(i 2 pi k_x x) (Meep's k in units of 2 pi / a).
        amplitude["amp_func"] = lambda p: cmath.exp(2j * math.pi * kx * p.x)
    source = mp.Source(
        mp.GaussianSource(job["fcen"], fwidth=job["fwidth"]),
        component=component,
        center=axes.vector(0, 0, z["source"]),
        size=axes.size(cell.x, cell.y, 0),
        **amplitude,
    )
    if dimensions == 1:
        # No k_point in 1-D, where it would make z periodic too (measured: T of a glass
        # half-space came out 0.69-1.43, not 0.966).
        k_point = False
    else:
        # Bloch-periodic in the plane: k = 0 at normal incidence, (k_x, 0) at oblique.
        k_point = mp.Vector3(kx, 0, 0)
    sim = mp.Simulation(
        cell_size=cell,
        resolution=job["resolution"],
        geometry=geometry(job, axes, z) if with_structure else [],
        sources=[source],
        boundary_layers=[mp.PML(job["pml_um"], direction=axes.along)],
        default_material=medium(job["superstrate"]),
        k_point=k_point,
        symmetries=mirror_symmetries(job, component),
        dimensions=dimensions,
        eps_averaging=job.get("subpixel_averaging", True),
        Courant=job["courant"] or stable_courant(job),
    )
    monitor = axes.size(cell.x, cell.y, 0)
    reflection = sim.add_flux(
        frequencies, mp.FluxRegion(center=axes.vector(0, 0, z["reflection"]), size=monitor)
    )
    transmission = sim.add_flux(
        frequencies, mp.FluxRegion(center=axes.vector(0, 0, z["transmission"]), size=monitor)
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

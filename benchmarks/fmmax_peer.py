"""The fmmax side of benchmarks/rcwa.py, run in fmmax's own interpreter (jax, no torch).

fmmax 1.7.1 + jax 0.10.2 (CPU, float64) live in their own venv (``.venv-fmmax``, see the
README): they are not installed beside torch in the project's venv. benchmarks/rcwa.py starts
this script pinned to one core (with both cores visible, fmmax hangs in its first jitted call
on these machines, MEEP.md) and exchanges JSON over stdin/stdout::

    {"densities": [D][N][N], "wavelengths_nm": [L], "orders": [M, ...], "grad": bool,
     "formulation": "jones", "period_nm": 400, "height_nm": 200, "index": 3.5,
     "substrate_index": 1.45}
    -> {"results": [{"M": M, "harmonics": n, "T0": [D][L][2], "compile_s": s, "solve_s": s}]}

T0 is the zeroth-order transmittance for x- and y-polarised incidence at normal incidence
(a C4 pillar has both equal). ``solve_s`` times one jitted call (forward, plus the gradient of
the sum of unpolarised T0 with respect to the densities when ``grad``); ``compile_s`` is the
first call's time minus ``solve_s``: jax's tracing and XLA compile, once per harmonic count.
"""

from __future__ import annotations

import json
import sys
import time

import jax

jax.config.update("jax_enable_x64", True)
import fmmax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402


def transmission_function(job: dict, M: int):
    """A jitted ``densities (D, N, N) -> T0 (D, L, 2)`` for ``(2M+1)^2`` harmonics."""
    period = float(job["period_nm"])
    lattice = fmmax.LatticeVectors(u=fmmax.X * period, v=fmmax.Y * period)
    expansion = fmmax.generate_expansion(
        primitive_lattice_vectors=lattice,
        approximate_num_terms=(2 * M + 1) ** 2,
        truncation=fmmax.Truncation.PARALLELOGRAMIC,
    )
    formulation = fmmax.Formulation(job.get("formulation", "jones"))
    wavelengths = jnp.asarray(job["wavelengths_nm"])[:, None]  # (L, 1): batch (L, D)
    in_plane = jnp.zeros((2,))
    eps_fill, eps_sub = float(job["index"]) ** 2, float(job["substrate_index"]) ** 2
    n = expansion.num_terms
    zeroth = int(np.where((np.asarray(expansion.basis_coefficients) == 0).all(-1))[0][0])

    def layer(permittivity):
        return fmmax.eigensolve_isotropic_media(
            wavelength=wavelengths,
            in_plane_wavevector=in_plane,
            primitive_lattice_vectors=lattice,
            permittivity=permittivity,
            expansion=expansion,
            formulation=formulation,
        )

    def transmittance(densities):
        eps = (1.0 + (eps_fill - 1.0) * densities).astype(complex)[None]  # (1, D, N, N)
        layers = [
            layer(jnp.ones((1, 1, 1, 1), complex)),
            layer(eps),
            layer(jnp.full((1, 1, 1, 1), eps_sub, complex)),
        ]
        thickness = [jnp.zeros(()), jnp.asarray(float(job["height_nm"])), jnp.zeros(())]
        s_matrix = fmmax.stack_s_matrix(layers, thickness)
        batch = s_matrix.s11.shape[:-2]
        incident = jnp.zeros(batch + (2 * n, 2), complex)
        incident = incident.at[..., zeroth, 0].set(1).at[..., zeroth + n, 1].set(1)
        flux_in, _ = fmmax.amplitude_poynting_flux(incident, jnp.zeros_like(incident), layers[0])
        out = s_matrix.s11 @ incident  # forward amplitudes in the substrate
        flux_out, _ = fmmax.amplitude_poynting_flux(out, jnp.zeros_like(out), layers[-1])
        T0 = (flux_out[..., zeroth, :] + flux_out[..., zeroth + n, :]) / flux_in.sum(-2)
        return jnp.moveaxis(T0, 0, 1)  # (D, L, 2)

    def loss(densities):
        T0 = transmittance(densities)
        return T0.mean(-1).sum(), T0

    if job.get("grad"):
        return jax.jit(jax.value_and_grad(loss, has_aux=True)), n
    return jax.jit(transmittance), n


def main() -> None:
    job = json.load(sys.stdin)
    densities = jnp.asarray(np.asarray(job["densities"], dtype=np.float64))
    results = []
    for M in job["orders"]:
        function, n = transmission_function(job, int(M))
        start = time.perf_counter()
        output = jax.block_until_ready(function(densities))
        first = time.perf_counter() - start
        start = time.perf_counter()
        output = jax.block_until_ready(function(densities))
        solve = time.perf_counter() - start
        T0 = output[0][1] if job.get("grad") else output
        results.append(
            {
                "M": int(M),
                "harmonics": int(n),
                "T0": np.asarray(T0).tolist(),
                "compile_s": max(first - solve, 0.0),
                "solve_s": solve,
            }
        )
        print(f"fmmax M={M}: compile {first - solve:.1f} s, solve {solve:.2f} s", file=sys.stderr)
    json.dump({"fmmax": fmmax.__version__, "jax": jax.__version__, "results": results}, sys.stdout)


if __name__ == "__main__":
    main()

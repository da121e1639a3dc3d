"""Cross-check of the converged Si disk of issue 21 with fmmax (run in fmmax's own venv).

Si (n = 3.5) disk r = 120 nm, h = 200 nm, period 400 nm, air / glass (n = 1.45), normal
incidence; zeroth-order T for x- and y-polarised light and their mean at 532 / 700 / 900 nm,
for fmmax formulations and harmonic counts (parallelogramic truncation, (2M+1)^2 terms). The
disk is rasterised on GRID x GRID pixels with 8x8 supersampled area fractions, like
``hyplex.optics.geometry.disk``. fmmax samples the grid with a DFT, hyplex integrates the
pixels exactly, so a coarse grid gives slightly different limits; 400 x 400 (1 nm) makes
the two representations agree to ~1e-3.

    XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1" \\
        OPENBLAS_NUM_THREADS=1 taskset -c 0 .venv-fmmax/bin/python \\
        benchmarks/fmmax_disk_crosscheck.py 400 jones,jones_direct 5,6,8,12

Arguments: GRID FORMULATIONS(comma) ORDERS(comma). One line per run on stdout; the first call
of each includes jax's compile time, the second is the solve alone.
"""

import sys
import time

import jax

jax.config.update("jax_enable_x64", True)
import fmmax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

WAVELENGTHS_NM = [532.0, 700.0, 900.0]


def disk(grid: int, radius: float = 120.0, period: float = 400.0, supersample: int = 8):
    x = (np.arange(grid * supersample) + 0.5) / (grid * supersample) * period - period / 2
    X, Y = np.meshgrid(x, x, indexing="ij")
    inside = (X**2 + Y**2 <= radius**2).astype(float)
    return inside.reshape(grid, supersample, grid, supersample).mean((1, 3))


def zeroth_order_t(formulation, M, density, n_si=3.5, n_sub=1.45, height=200.0, period=400.0):
    lattice = fmmax.LatticeVectors(u=fmmax.X * period, v=fmmax.Y * period)
    expansion = fmmax.generate_expansion(
        primitive_lattice_vectors=lattice,
        approximate_num_terms=(2 * M + 1) ** 2,
        truncation=fmmax.Truncation.PARALLELOGRAMIC,
    )
    wavelengths = jnp.asarray(WAVELENGTHS_NM)
    eps = 1.0 + (n_si**2 - 1.0) * jnp.asarray(density)[None]

    def layer(permittivity):
        return fmmax.eigensolve_isotropic_media(
            wavelength=wavelengths,
            in_plane_wavevector=jnp.zeros((2,)),
            primitive_lattice_vectors=lattice,
            permittivity=permittivity,
            expansion=expansion,
            formulation=formulation,
        )

    layers = [
        layer(jnp.ones((1, 1, 1), complex)),
        layer(eps.astype(complex)),
        layer(jnp.full((1, 1, 1), n_sub**2, complex)),
    ]
    s_matrix = fmmax.stack_s_matrix(layers, [jnp.zeros(()), jnp.asarray(height), jnp.zeros(())])
    n = expansion.num_terms
    k0 = int(np.where((np.asarray(expansion.basis_coefficients) == 0).all(-1))[0][0])
    incident = jnp.zeros((len(WAVELENGTHS_NM), 2 * n, 2), complex)
    incident = incident.at[:, k0, 0].set(1).at[:, k0 + n, 1].set(1)
    flux_in, _ = fmmax.amplitude_poynting_flux(incident, jnp.zeros_like(incident), layers[0])
    out = s_matrix.s11 @ incident
    flux_out, _ = fmmax.amplitude_poynting_flux(out, jnp.zeros_like(out), layers[-1])
    return np.asarray((flux_out[:, k0, :] + flux_out[:, k0 + n, :]) / flux_in.sum(-2)), n


def main() -> None:
    grid = int(sys.argv[1])
    formulations = sys.argv[2].split(",")
    orders = [int(m) for m in sys.argv[3].split(",")]
    density = disk(grid)
    for name in formulations:
        for M in orders:
            start = time.time()
            T, n = zeroth_order_t(fmmax.Formulation(name), M, density)
            first = time.time() - start
            start = time.time()
            T, n = zeroth_order_t(fmmax.Formulation(name), M, density)
            again = time.time() - start
            print(
                f"{name:12s} M={M:2d} n={n} T0 x/y={np.round(T, 4).tolist()} "
                f"unpolarised={np.round(T.mean(-1), 4).tolist()} first {first:.1f} s "
                f"again {again:.1f} s",
                flush=True,
            )


if __name__ == "__main__":
    main()

"""Plain numpy formulations of the kernels in ``kernels.py``: references for tests and the
peers of ``benchmarks/kernels.py``. Same inputs, same outputs (up to rounding and, for the
sensor, a different random stream)."""

from __future__ import annotations

import numpy as np


def project_mosaic_numpy(cube, weights, codes, neighbours, mix, scene_rows, scene_cols):
    """Gather each pixel's filter weights, then one einsum over bands (float64 accumulation).

    ``out = einsum("hwl,hwl->hw", cube[rows][:, cols], weights[codes])``, blended with the
    neighbour's projection where ``mix`` (crosstalk) is given.
    """
    scene = cube[np.asarray(scene_rows)][:, np.asarray(scene_cols)]
    out = np.einsum("hwl,hwl->hw", scene, weights[codes], dtype=np.float64)
    if np.asarray(mix).size:
        other = np.einsum("hwl,hwl->hw", scene, weights[neighbours], dtype=np.float64)
        out = (1.0 - mix) * out + mix * other
    return out.astype(cube.dtype)


def project_mosaic_matmul(cube, weights, codes, scene_rows, scene_cols):
    """All filters by one matrix product (BLAS), then a gather: ``(cube @ weights.T)[codes]``.

    Does F + 1 times the arithmetic of the gather form but runs at BLAS speed; no crosstalk.
    """
    signals = cube @ weights.T  # (Hs, Ws, F + 1)
    scene = signals[np.asarray(scene_rows)][:, np.asarray(scene_cols)]
    return np.take_along_axis(scene, codes[..., None].astype(np.intp), axis=-1)[..., 0]


def bin_by_slot_numpy(raw, slots, n_slots):
    """Per-slot mean and count by ``np.bincount`` over the flattened frame (slot -1 skipped)."""
    flat = slots.ravel().astype(np.intp) + 1  # slot -1 goes to bin 0, dropped below
    sums = np.bincount(flat, weights=raw.ravel(), minlength=n_slots + 1)[1:]
    counts = np.bincount(flat, minlength=n_slots + 1)[1:]
    with np.errstate(invalid="ignore", divide="ignore"):
        means = (sums / counts).astype(np.float32)
    return means, counts.astype(np.int32)


def sensor_frame_numpy(electrons, prnu, dsnu_e, settings, rng, noise=True):
    """EMVA 1288 linear camera in numpy; same model as ``kernels.sensor_frame``.

    ``settings`` = (dark electrons, read noise (e-), full well (e-), K (DN/e-), black level
    (DN), max_dn, exact_below); ``rng`` a numpy Generator. Shot noise is always exact Poisson
    here (``exact_below`` is ignored); the collected charge saturates at the full well, then
    read noise and DSNU are added.
    """
    dark, read_noise, full_well, gain, black, max_dn, _ = settings
    photo = electrons.astype(np.float64) * (prnu if np.asarray(prnu).size else 1.0)
    lam = np.maximum(photo, 0.0) + dark
    count = rng.poisson(lam).astype(np.float64) if noise else lam
    signal = np.minimum(count, full_well)
    if noise and read_noise > 0:
        signal = signal + read_noise * rng.standard_normal(signal.shape)
    if np.asarray(dsnu_e).size:
        signal = signal + dsnu_e
    value = np.floor(gain * signal + black + 0.5)
    return np.clip(value, 0, max_dn).astype(np.uint16)

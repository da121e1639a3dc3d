"""Measured calibration data from before hyplex: pairs of (reference spectrum, channel
readings), fitted to channel responses and written as a hyplex calibration file.

The original Hyplex prototype (Makarenko et al., "Real-time Hyperspectral Imaging in Hardware
via Trained Metasurface Encoders", CVPR 2022, supplementary) was calibrated from 48 such
pairs: a reference spectrometer measured each broadband sample, the camera gave one reading
per channel. For sample s and channel f on the wavelength grid lambda_i (bin widths q_i)::

    y_{s,f} = sum_i S_s(lambda_i) q_i R_f(lambda_i) + noise            (A R_f = y_f, A = S q)

Two estimators of R_f (C, L) are fitted to the same samples:

1. the Hyplex method, non-negative weights of smooth basis functions by NNLS
   (:func:`hyplex.calibration.basis_fit.fit_response_basis`);
2. hyplex's own estimator with the spectral priors of its monochromator deconvolution
   (:mod:`hyplex.calibration.spectral_response`): smoothness by a second-difference
   Tikhonov penalty and non-negativity (A. N. Tikhonov, V. Y. Arsenin, "Solutions of ill-posed
   problems", 1977; P. C. Hansen, "Rank-deficient and discrete ill-posed problems", SIAM 1998,
   ch. 5; Lawson & Hanson NNLS, 1974, ch. 23)::

       R_f = argmin_{r >= 0} ||A r - y_f||^2 + alpha_f ||D2 r||^2

   alpha_f is chosen per channel by leave-one-out over a grid (the largest alpha within one
   standard error of the best, see :func:`_loo_alpha`), with the exact closed-form
   leave-one-out residuals e_s / (1 - H_ss) of the unconstrained linear smoother
   H = A (A^T A + alpha D2^T D2)^-1 A^T (G. H. Golub, M. Heath, G. Wahba, "Generalized
   cross-validation as a method for choosing a good ridge parameter", Technometrics 1979);
   the constrained problem is then solved by NNLS on the stacked system [A; sqrt(alpha) D2].

Leave-one-out figures (every sample held out in turn, both fits redone on the others):

- R^2_LOO per channel, 1 - sum (y - y_hat_-s)^2 / sum (y - mean y)^2, for both estimators:
  the weakest channel is named, not averaged away;
- spectral RMSE: the held-out spectrum reconstructed from its readings through the fitted
  responses by the linear minimum-mean-square-error (Wiener) estimate with the training
  spectra as the prior, x = mu + Sigma A^T (A Sigma A^T + N)^-1 (y - A mu), N the training
  residual variance of each channel (W. K. Pratt, C. E. Mancill, "Spectral estimation
  techniques for the spectral calibration of a color image scanner", Applied Optics 15, 1976).
  Sigma is the training spectra's covariance shrunk towards a smooth stationary covariance
  (:func:`smooth_prior_covariance`), weight and correlation length chosen by an inner
  leave-one-out over the training samples (:func:`tuned_prior_reconstruction`): 47 samples
  estimate a 34 x 34 covariance poorly, and the physics (spectra are smooth in wavelength)
  supplies the rest;
- the same RMSE for the plain baseline, a ridge regression from readings to spectra with an
  intercept, its ridge parameter tuned by an inner leave-one-out (closed form, exact).

The response uncertainty written to the file is the jackknife standard deviation of the
leave-one-out fits, sqrt((n-1)/n sum_s (R_-s - mean R_-s)^2).

File layouts read by :func:`read_samples` (spectra in any unit proportional to spectral
power or radiance per nm, never photons; readings dark-subtracted, e.g. DN/s):

- CSV: one header line, then one line per sample. Columns named ``ch<anything>`` (e.g.
  ``ch0``, ``ch_red``) are the channel readings; columns whose name is a number are the
  spectrum at that wavelength in nm. ``#`` starts a comment line.
- NPY (``numpy.save`` of one float array, numeric only; never unpickled): the CSV table as
  numbers, header row included, with NaN as the header of the C channel columns:
  ``[[nan, ..., nan, lambda_1, ..., lambda_L], [y_1, ..., y_C, S_1, ..., S_L], ...]``.
- NPZ: arrays ``wavelengths_nm`` (L,), ``spectra`` (S, L), ``readings`` (S, C).
- HDF5 (``.h5``/``.hdf5``): datasets ``wavelengths_nm``, ``spectra``, ``readings`` as for NPZ;
  an optional attribute ``channel_names`` (JSON list).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.optimize import nnls

from hyplex.calibration.basis_fit import fit_response_basis
from hyplex.simulation.grids import quadrature_weights

MIN_SAMPLES = 4  # leave-one-out needs >= 3 training samples
ALPHA_GRID = tuple(10.0 ** np.arange(-6.0, 1.01, 0.5))  # x trace(A^T A) / trace(D2^T D2)
RIDGE_GRID = tuple(10.0 ** np.arange(-6.0, 2.01, 0.5))  # x trace(Z^T Z) / C
PRIOR_WEIGHTS = (0.0, 0.1, 0.2, 0.4)  # shrinkage of the spectra's covariance to a smooth one
PRIOR_LENGTHS_NM = (15.0, 30.0, 60.0)  # correlation lengths of the smooth target
SUFFIXES = (".csv", ".txt", ".npy", ".npz", ".h5", ".hdf5")


class SampleFileError(ValueError):
    """A sample file that cannot be read as (spectra, readings) pairs."""


@dataclass(frozen=True)
class MeasuredSamples:
    """Pairs of reference spectra and channel readings.

    Attributes
    ----------
    wavelengths_nm : (L,) strictly increasing, nm
    spectra : (S, L) reference spectra, >= 0, any power-proportional unit per nm
    readings : (S, C) dark-subtracted channel readings (e.g. DN/s)
    channel_names : (C,) names of the channels
    source : where the samples came from (a path or a description)
    """

    wavelengths_nm: np.ndarray
    spectra: np.ndarray
    readings: np.ndarray
    channel_names: tuple[str, ...] = ()
    source: str = ""

    def __post_init__(self):
        grid, spectra, readings = check_samples(
            self.wavelengths_nm, self.spectra, self.readings, self.source or "samples"
        )
        object.__setattr__(self, "wavelengths_nm", grid)
        object.__setattr__(self, "spectra", spectra)
        object.__setattr__(self, "readings", readings)
        names = tuple(str(n) for n in self.channel_names) or tuple(
            f"ch{c}" for c in range(readings.shape[1])
        )
        if len(names) != readings.shape[1]:
            raise SampleFileError(
                f"{self.source or 'samples'}: {len(names)} channel names for "
                f"{readings.shape[1]} reading columns"
            )
        object.__setattr__(self, "channel_names", names)


def _first_bad(array, test) -> str:
    index = np.argwhere(test(array))[0]
    return "[" + ", ".join(str(int(i)) for i in index) + "]"


def check_samples(wavelengths_nm, spectra, readings, source: str = "samples"):
    """Validate and convert (wavelengths (L,), spectra (S, L), readings (S, C)) to float64.

    Raises
    ------
    SampleFileError
        Wrong shapes or mismatched lengths, NaN or infinite values (the first one is named),
        negative spectra, a grid that is not strictly increasing, or fewer than
        ``MIN_SAMPLES`` samples.
    """
    try:
        grid = np.asarray(wavelengths_nm, dtype=np.float64)
        spectra = np.asarray(spectra, dtype=np.float64)
        readings = np.asarray(readings, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise SampleFileError(f"{source}: not numeric ({error})") from None
    if grid.ndim != 1 or grid.size < 3:
        raise SampleFileError(f"{source}: need >= 3 wavelengths (L,), got shape {grid.shape}")
    if spectra.ndim != 2 or spectra.shape[1] != grid.size:
        raise SampleFileError(
            f"{source}: spectra must be (samples, L={grid.size} wavelengths), got {spectra.shape}"
        )
    if readings.ndim != 2 or readings.shape[1] < 1:
        raise SampleFileError(
            f"{source}: readings must be (samples, channels), got {readings.shape}"
        )
    if readings.shape[0] != spectra.shape[0]:
        raise SampleFileError(
            f"{source}: mismatched lengths: {spectra.shape[0]} spectra but {readings.shape[0]} "
            "rows of readings (one row of readings per spectrum expected)"
        )
    for name, array in (("wavelengths_nm", grid), ("spectra", spectra), ("readings", readings)):
        if not np.all(np.isfinite(array)):
            where = _first_bad(array, lambda a: ~np.isfinite(a))
            raise SampleFileError(
                f"{source}: {name}{where} is {array[tuple(np.argwhere(~np.isfinite(array))[0])]}"
                "; expected finite numbers"
            )
    if np.any(np.diff(grid) <= 0):
        raise SampleFileError(f"{source}: wavelengths_nm must be strictly increasing (nm)")
    if np.any(grid <= 0):
        raise SampleFileError(f"{source}: wavelengths_nm must be > 0 nm")
    if np.any(spectra < 0):
        where = _first_bad(spectra, lambda a: a < 0)
        raise SampleFileError(
            f"{source}: spectra{where} is negative; expected spectra >= 0 (clip a reference "
            "spectrometer's dark-subtraction noise before importing)"
        )
    if spectra.shape[0] < MIN_SAMPLES:
        raise SampleFileError(
            f"{source}: {spectra.shape[0]} samples; need >= {MIN_SAMPLES} for a fit with "
            "leave-one-out errors"
        )
    return grid, spectra, readings


def _from_table(header, rows, source: str) -> MeasuredSamples:
    channel_columns, wavelength_columns, wavelengths, names = [], [], [], []
    for index, name in enumerate(header):
        name = str(name).strip()
        if name.lower().startswith("ch"):
            channel_columns.append(index)
            names.append(name)
            continue
        try:
            wavelengths.append(float(name))
        except ValueError:
            raise SampleFileError(
                f"{source}: column {index + 1} is named {name!r}; expected 'ch...' for a "
                "channel reading or a wavelength in nm"
            ) from None
        wavelength_columns.append(index)
    if not channel_columns:
        raise SampleFileError(f"{source}: no channel column (named 'ch...') in the header")
    table = np.asarray(rows, dtype=np.float64)
    if table.ndim != 2 or table.shape[1] != len(header):
        raise SampleFileError(f"{source}: every row must have {len(header)} values")
    return MeasuredSamples(
        np.asarray(wavelengths), table[:, wavelength_columns], table[:, channel_columns],
        tuple(names), source,
    )  # fmt: skip


def _read_csv(path: Path) -> MeasuredSamples:
    with path.open(newline="") as handle:
        lines = [row for row in csv.reader(handle) if row and not row[0].lstrip().startswith("#")]
    if len(lines) < 2:
        raise SampleFileError(f"{path}: expected a header line and one line per sample")
    header, rows = lines[0], lines[1:]
    for number, row in enumerate(rows, start=2):
        if len(row) != len(header):
            raise SampleFileError(
                f"{path}: data line {number - 1} has {len(row)} values, the header {len(header)} "
                "(mismatched lengths)"
            )
    try:
        values = [[float(v) for v in row] for row in rows]
    except ValueError as error:
        raise SampleFileError(f"{path}: {error}; expected numbers") from None
    return _from_table(header, values, str(path))


def _load_numpy(path: Path):
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as error:  # object arrays or a pickle: never unpickled
        raise SampleFileError(
            f"{path} holds pickled Python objects ({error}); hyplex never unpickles files: "
            "save plain numeric arrays (numpy.save of a float array, or numpy.savez)"
        ) from None
    except (OSError, EOFError) as error:
        raise SampleFileError(f"{path} is not a readable NumPy file ({error})") from None


def _read_npy(path: Path) -> MeasuredSamples:
    table = _load_numpy(path)
    if isinstance(table, np.lib.npyio.NpzFile):
        raise SampleFileError(f"{path} is an NPZ archive; name it .npz")
    if table.dtype.kind not in "fiu" or table.ndim != 2 or table.shape[0] < 2:
        raise SampleFileError(
            f"{path}: expected a 2-D numeric array (header row + one row per sample), got "
            f"dtype {table.dtype} shape {table.shape}"
        )
    header = table[0].astype(np.float64)
    channels = np.isnan(header)
    if not channels.any() or not np.all(channels[: channels.sum()]):
        raise SampleFileError(
            f"{path}: the header row must start with NaN for each channel column, then the "
            "wavelengths in nm"
        )
    names = [f"ch{c}" for c in range(int(channels.sum()))]
    labels = names + [repr(float(v)) for v in header[~channels]]
    return _from_table(labels, table[1:], str(path))


def _read_arrays(path: Path, arrays, names=()) -> MeasuredSamples:
    missing = [k for k in ("wavelengths_nm", "spectra", "readings") if k not in arrays]
    if missing:
        raise SampleFileError(
            f"{path}: missing {', '.join(missing)}; expected arrays wavelengths_nm (L,), "
            "spectra (S, L), readings (S, C)"
        )
    values = {}
    for key in ("wavelengths_nm", "spectra", "readings"):
        array = np.asarray(arrays[key])
        if array.dtype.kind not in "fiu":
            raise SampleFileError(f"{path}: {key} has dtype {array.dtype}; expected numbers")
        values[key] = array
    return MeasuredSamples(values["wavelengths_nm"], values["spectra"], values["readings"],
                           tuple(names), str(path))  # fmt: skip


def _read_hdf5(path: Path) -> MeasuredSamples:
    import h5py

    try:
        file = h5py.File(path, "r")
    except OSError as error:
        raise SampleFileError(f"{path} is not a readable HDF5 file ({error})") from None
    with file:
        arrays = {k: file[k][()] for k in ("wavelengths_nm", "spectra", "readings") if k in file}
        names = json.loads(file.attrs.get("channel_names", "[]"))
    return _read_arrays(path, arrays, names)


def read_samples(path) -> MeasuredSamples:
    """Read (spectra, readings) pairs from CSV, NPY, NPZ or HDF5 (layouts in the module doc).

    Raises
    ------
    SampleFileError
        Unknown suffix, a pickled NPY, a malformed table, or values that fail
        :func:`check_samples`.
    """
    path = Path(path)
    if not path.is_file():
        raise SampleFileError(
            f"{path}: no such file; expected a sample file ({', '.join(SUFFIXES)})"
        )
    suffix = path.suffix.lower()
    if suffix in (".csv", ".txt"):
        return _read_csv(path)
    if suffix == ".npy":
        return _read_npy(path)
    if suffix == ".npz":
        archive = _load_numpy(path)
        with archive:
            try:
                arrays = {k: archive[k] for k in archive.files}
            except ValueError as error:
                raise SampleFileError(
                    f"{path} holds pickled Python objects ({error}); hyplex never unpickles"
                ) from None
        return _read_arrays(path, arrays)
    if suffix in (".h5", ".hdf5"):
        return _read_hdf5(path)
    raise SampleFileError(f"{path}: unknown suffix {suffix!r}; expected one of {SUFFIXES}")


def write_samples_csv(path, samples: MeasuredSamples) -> Path:
    """Write ``samples`` in the CSV layout of :func:`read_samples` (atomically)."""
    from hyplex.optics.atomic_io import atomic_path

    path = Path(path)
    header = list(samples.channel_names) + [f"{w:g}" for w in samples.wavelengths_nm]
    with atomic_path(path) as temporary, open(temporary, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for reading, spectrum in zip(samples.readings, samples.spectra, strict=True):
            writer.writerow([f"{v:.9g}" for v in (*reading, *spectrum)])
    return path


# -- estimators ------------------------------------------------------------------------------


def _design(spectra, grid) -> np.ndarray:
    return spectra * quadrature_weights(grid)[None, :]


def _second_difference(size: int) -> np.ndarray:
    return np.diff(np.eye(size), 2, axis=0)


def _loo_alpha(design, y, penalty) -> float:
    """The largest alpha of the grid whose closed-form leave-one-out error of the
    unconstrained smoother is within one standard error of the smallest (the one-standard-
    error rule: T. Hastie, R. Tibshirani, J. Friedman, "The elements of statistical learning",
    2nd ed., 2009, sec. 7.10). Broadband readings barely tell smooth responses from rough
    ones (the leave-one-out curve is flat), so the rule takes the smoothest response that
    predicts the readings as well as the best, within the noise."""
    normal = design.T @ design
    scale = np.trace(normal) / max(np.trace(penalty), 1e-300)
    floor = 1e-12 * np.trace(normal) / normal.shape[0]
    squared = []
    for factor in ALPHA_GRID:
        system = normal + factor * scale * penalty + floor * np.eye(normal.shape[0])
        hat = design @ np.linalg.solve(system, design.T)
        residual = (y - hat @ y) / np.clip(1.0 - np.diag(hat), 1e-9, None)
        squared.append(residual**2)
    squared = np.array(squared)  # (alphas, S)
    errors = squared.mean(1)
    best = int(np.argmin(errors))
    limit = errors[best] + squared[best].std(ddof=1) / np.sqrt(squared.shape[1])
    chosen = max(i for i in range(len(ALPHA_GRID)) if errors[i] <= limit)
    return float(ALPHA_GRID[chosen] * scale)


def fit_response_prior(spectra, wavelengths_nm, readings, alphas=None):
    """hyplex's own response estimate: non-negative, smooth (second-difference Tikhonov), with
    alpha per channel by leave-one-out (module doc).

    Parameters
    ----------
    spectra : array_like (S, L)
    wavelengths_nm : array_like (L,)
    readings : array_like (S, C)
    alphas : array_like (C,), optional
        Fixed penalties (skip the leave-one-out choice).

    Returns
    -------
    response : numpy.ndarray (C, L)
        Readings per unit spectrum per nm.
    alphas : numpy.ndarray (C,)
    """
    grid = np.asarray(wavelengths_nm, dtype=np.float64)
    design = _design(np.asarray(spectra, np.float64), grid)
    readings = np.asarray(readings, np.float64)
    second = _second_difference(grid.size)
    penalty = second.T @ second
    column_scale = np.linalg.norm(design, axis=0)
    column_scale[column_scale == 0] = 1.0
    chosen = np.empty(readings.shape[1])
    response = np.empty((readings.shape[1], grid.size))
    for c, y in enumerate(readings.T):
        alpha = _loo_alpha(design, y, penalty) if alphas is None else float(alphas[c])
        chosen[c] = alpha
        stacked = np.vstack([design, np.sqrt(alpha) * second])
        target = np.concatenate([y, np.zeros(second.shape[0])])
        # nnls on scaled columns (same minimiser, better conditioned), then unscale
        weights, _ = nnls(stacked / column_scale, target, maxiter=50 * grid.size)
        response[c] = weights / column_scale
    return response, chosen


def smooth_prior_covariance(spectra, wavelengths_nm, weight: float, length_nm: float):
    """Covariance (L, L) of ``spectra`` (P, L) shrunk towards a smooth stationary target:
    (1 - w) C + w T, T_ij = mean(diag C) exp(-(lambda_i - lambda_j)^2 / (2 l^2)) (a squared-
    exponential Gaussian-process kernel, C. E. Rasmussen, C. K. I. Williams, "Gaussian
    processes for machine learning", 2006, ch. 4; shrinkage of a sample covariance towards a
    structured target: J. Schaefer, K. Strimmer, "A shrinkage approach to large-scale
    covariance matrix estimation", Stat. Appl. Genet. Mol. Biol. 4, 2005)."""
    grid = np.asarray(wavelengths_nm, dtype=np.float64)
    covariance = np.cov(np.asarray(spectra, np.float64), rowvar=False)
    if weight > 0:
        lag = grid[:, None] - grid[None, :]
        target = np.mean(np.diag(covariance)) * np.exp(-0.5 * (lag / length_nm) ** 2)
        covariance = (1.0 - weight) * covariance + weight * target
    return covariance + 1e-6 * np.trace(covariance) / grid.size * np.eye(grid.size)


def wiener_reconstruction(responses, wavelengths_nm, readings, prior_spectra, noise_variance,
                          covariance=None):  # fmt: skip
    """Spectra (N, L) from readings (N, C) through responses (C, L) by the LMMSE (Wiener)
    estimate with the mean of ``prior_spectra`` (P, L), their covariance (or ``covariance``
    (L, L), e.g. :func:`smooth_prior_covariance`) and a diagonal reading noise
    ``noise_variance`` (C,) (module doc)."""
    grid = np.asarray(wavelengths_nm, dtype=np.float64)
    forward = np.asarray(responses, np.float64) * quadrature_weights(grid)[None, :]  # (C, L)
    prior = np.asarray(prior_spectra, np.float64)
    mean = prior.mean(0)
    if covariance is None:
        covariance = smooth_prior_covariance(prior, grid, 0.0, 1.0)
    noise = np.diag(np.clip(np.asarray(noise_variance, np.float64), 1e-30, None))
    gain = covariance @ forward.T @ np.linalg.inv(forward @ covariance @ forward.T + noise)
    return mean + (np.asarray(readings, np.float64) - mean @ forward.T) @ gain.T


def _inner_loo_errors(forward, spectra, readings, noise_variance, grid, weight, length_nm):
    """Squared error of every training spectrum reconstructed with the prior of the others
    (mean and covariance by rank-one downdates of the full scatter matrix; exact)."""
    n, size = spectra.shape
    mean = spectra.mean(0)
    deviation = spectra - mean  # (n, L)
    scatter = deviation.T @ deviation
    factor = n / (n - 1.0)
    # C_-j = (S - n/(n-1) d_j d_j^T) / (n - 2);  mu_-j = mu - d_j / (n - 1)
    variance_mean = (np.trace(scatter) - factor * np.sum(deviation**2, 1)) / ((n - 2.0) * size)
    lag = grid[:, None] - grid[None, :]
    kernel = np.exp(-0.5 * (lag / length_nm) ** 2) if weight > 0 else np.zeros((size, size))
    jitter = 1e-6 * variance_mean  # 1e-6 x trace / L, as smooth_prior_covariance
    projected = deviation @ forward.T  # (n, C) = F d_j
    full = scatter / (n - 2.0)
    cross = (1 - weight) * (full @ forward.T)[None] - (1 - weight) * factor / (n - 2.0) * (
        deviation[:, :, None] * projected[:, None, :]
    )  # (n, L, C): (1-w) C_-j F^T
    cross = cross + (weight * variance_mean)[:, None, None] * (kernel @ forward.T)[None]
    cross = cross + jitter[:, None, None] * forward.T[None]
    inner = np.einsum("cl,nlk->nck", forward, cross) + np.diag(noise_variance)[None]
    means = mean[None] - deviation / (n - 1.0)  # (n, L)
    innovation = readings - means @ forward.T  # (n, C)
    solved = np.linalg.solve(inner, innovation[:, :, None])[:, :, 0]
    estimate = means + np.einsum("nlc,nc->nl", cross, solved)
    return np.sum((estimate - spectra) ** 2, axis=1)


def tuned_prior_reconstruction(responses, wavelengths_nm, readings, train_spectra,
                               train_readings, noise_variance):  # fmt: skip
    """:func:`wiener_reconstruction` with the prior covariance's shrinkage weight and length
    (``PRIOR_WEIGHTS`` x ``PRIOR_LENGTHS_NM``) chosen by an inner leave-one-out over the
    training samples (each reconstructed from its readings with the prior of the others),
    as the ridge baseline's parameter is. Returns ((N, L) spectra, (weight, length_nm))."""
    grid = np.asarray(wavelengths_nm, dtype=np.float64)
    spectra = np.asarray(train_spectra, np.float64)
    observed = np.asarray(train_readings, np.float64)
    forward = np.asarray(responses, np.float64) * quadrature_weights(grid)[None, :]
    noise = np.clip(np.asarray(noise_variance, np.float64), 1e-30, None)
    best, best_error = (0.0, PRIOR_LENGTHS_NM[0]), np.inf
    for weight in PRIOR_WEIGHTS:
        for length in PRIOR_LENGTHS_NM if weight > 0 else PRIOR_LENGTHS_NM[:1]:
            error = float(
                np.sum(_inner_loo_errors(forward, spectra, observed, noise, grid, weight, length))
            )
            if error < best_error:
                best, best_error = (weight, length), error
    covariance = smooth_prior_covariance(spectra, grid, *best)
    estimate = wiener_reconstruction(responses, grid, readings, spectra, noise, covariance)
    return estimate, best


def ridge_readings_to_spectra(train_readings, train_spectra, test_readings):
    """The plain baseline: ridge regression from readings to spectra, with an unpenalised
    intercept on standardised readings, its parameter chosen from ``RIDGE_GRID`` by the
    exact closed-form leave-one-out error over the training samples. Returns (N, L)."""
    y = np.asarray(train_readings, np.float64)
    x = np.asarray(train_spectra, np.float64)
    centre, spread = y.mean(0), y.std(0)
    spread[spread == 0] = 1.0
    design = np.column_stack([np.ones(len(y)), (y - centre) / spread])
    normal = design.T @ design
    mask = np.eye(design.shape[1])
    mask[0, 0] = 0.0  # the intercept is not penalised
    scale = np.trace(normal[1:, 1:]) / (design.shape[1] - 1)
    best, best_error = None, np.inf
    for factor in RIDGE_GRID:
        system = normal + factor * scale * mask
        hat = design @ np.linalg.solve(system, design.T)
        residual = (x - hat @ x) / np.clip(1.0 - np.diag(hat), 1e-9, None)[:, None]
        error = float(np.mean(residual**2))
        if error < best_error:
            best, best_error = factor * scale, error
    weights = np.linalg.solve(normal + best * mask, design.T @ x)
    test = np.column_stack(
        [np.ones(len(test_readings)), (np.asarray(test_readings, np.float64) - centre) / spread]
    )
    return test @ weights


# -- the import ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImportResult:
    """Responses fitted to measured samples, with leave-one-out figures.

    Attributes
    ----------
    samples : MeasuredSamples
    response : (C, L) hyplex's estimate (smoothness + non-negativity priors)
    uncertainty : (C, L) jackknife standard deviation of ``response``
    alphas : (C,) penalties chosen by leave-one-out
    basis_response : (C, L) the Hyplex basis/NNLS fit
    basis_coefficients : (C, K)
    basis_r_squared : (C,) in-sample R^2 of the basis fit
    r_squared_loo : (C,) leave-one-out R^2 of the readings, hyplex's estimate
    basis_r_squared_loo : (C,) the same, the basis fit
    loo_rmse : float, leave-one-out spectral RMSE through hyplex's estimate (spectrum units)
    basis_loo_rmse : float, the same through the basis fit
    ridge_loo_rmse : float, the plain ridge readings -> spectra baseline
    spectra_rms : float, RMS of the spectra (to read the RMSEs as fractions)
    weak_channel : int, index of the smallest ``r_squared_loo``
    n_basis : int
    settings : dict
    """

    samples: MeasuredSamples
    response: np.ndarray
    uncertainty: np.ndarray
    alphas: np.ndarray
    basis_response: np.ndarray
    basis_coefficients: np.ndarray
    basis_r_squared: np.ndarray
    r_squared_loo: np.ndarray
    basis_r_squared_loo: np.ndarray
    loo_rmse: float
    basis_loo_rmse: float
    ridge_loo_rmse: float
    spectra_rms: float
    weak_channel: int
    n_basis: int
    settings: dict = field(default_factory=dict)

    @property
    def weak_channel_name(self) -> str:
        return self.samples.channel_names[self.weak_channel]

    def summary(self) -> str:
        """A text report: per-channel leave-one-out R^2 and the spectral RMSEs."""
        names = self.samples.channel_names
        width = max(8, *(len(n) for n in names))
        lines = [
            f"{len(self.samples.spectra)} samples, {len(names)} channels, "
            f"{self.samples.wavelengths_nm[0]:g}-{self.samples.wavelengths_nm[-1]:g} nm "
            f"({self.samples.wavelengths_nm.size} wavelengths)",
            f"{'channel':{width}s} {'R2 LOO (prior)':>15s} {'R2 LOO (basis)':>15s}",
        ]
        for c, name in enumerate(names):
            flag = "  <- weakest" if c == self.weak_channel else ""
            lines.append(
                f"{name:{width}s} {self.r_squared_loo[c]:15.4f} "
                f"{self.basis_r_squared_loo[c]:15.4f}{flag}"
            )
        rms = self.spectra_rms
        lines += [
            "leave-one-out spectral RMSE (fraction of the spectra's RMS):",
            f"  hyplex prior fit + Wiener  {self.loo_rmse:.4g} ({self.loo_rmse / rms:.3%})",
            f"  Hyplex basis fit + Wiener  {self.basis_loo_rmse:.4g} "
            f"({self.basis_loo_rmse / rms:.3%})",
            f"  plain ridge readings->spectra  {self.ridge_loo_rmse:.4g} "
            f"({self.ridge_loo_rmse / rms:.3%})",
        ]
        return "\n".join(lines)


def _r_squared(y, predicted) -> np.ndarray:
    total = np.sum((y - y.mean(0)) ** 2, axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, 1.0 - np.sum((y - predicted) ** 2, axis=0) / total, np.nan)


def import_samples(samples: MeasuredSamples, n_basis: int = 12, progress=None) -> ImportResult:
    """Fit both estimators to ``samples`` and score them by leave-one-out (module doc).

    Parameters
    ----------
    samples : MeasuredSamples
    n_basis : int
        Basis functions of the Hyplex fit (<= the number of wavelengths).
    progress : callable(done, total), optional
        Called after every held-out sample.
    """
    grid, spectra, readings = samples.wavelengths_nm, samples.spectra, samples.readings
    if int(n_basis) != n_basis or not 1 <= n_basis <= grid.size:
        raise ValueError(f"n_basis must be an integer in 1..{grid.size}, got {n_basis!r}")
    n = len(spectra)
    design = _design(spectra, grid)
    response, alphas = fit_response_prior(spectra, grid, readings)
    basis = fit_response_basis(spectra, grid, readings, n_basis)
    predicted = np.empty_like(readings)
    basis_predicted = np.empty_like(readings)
    folds = np.empty((n, *response.shape))
    reconstructed, basis_reconstructed, ridge = (np.empty_like(spectra) for _ in range(3))
    for s in range(n):
        keep = np.arange(n) != s
        fold, _ = fit_response_prior(spectra[keep], grid, readings[keep], alphas)
        fold_basis = fit_response_basis(spectra[keep], grid, readings[keep], n_basis).response
        folds[s] = fold
        predicted[s] = design[s] @ fold.T
        basis_predicted[s] = design[s] @ fold_basis.T
        for estimate, out in ((fold, reconstructed), (fold_basis, basis_reconstructed)):
            residual = readings[keep] - design[keep] @ estimate.T
            noise = residual.var(0) * n / max(n - 2, 1)
            estimate_s, _ = tuned_prior_reconstruction(
                estimate, grid, readings[s : s + 1], spectra[keep], readings[keep], noise
            )
            out[s] = estimate_s[0]
        ridge[s] = ridge_readings_to_spectra(readings[keep], spectra[keep], readings[s : s + 1])[0]
        if progress is not None:
            progress(s + 1, n)
    r2 = _r_squared(readings, predicted)
    spread = folds - folds.mean(0)
    uncertainty = np.sqrt((n - 1) / n * np.sum(spread**2, axis=0))

    def rmse(estimate):
        return float(np.sqrt(np.mean((estimate - spectra) ** 2)))

    return ImportResult(
        samples=samples,
        response=response,
        uncertainty=uncertainty,
        alphas=alphas,
        basis_response=basis.response,
        basis_coefficients=basis.coefficients,
        basis_r_squared=basis.r_squared,
        r_squared_loo=r2,
        basis_r_squared_loo=_r_squared(readings, basis_predicted),
        loo_rmse=rmse(reconstructed),
        basis_loo_rmse=rmse(basis_reconstructed),
        ridge_loo_rmse=rmse(ridge),
        spectra_rms=float(np.sqrt(np.mean(spectra**2))),
        weak_channel=int(np.nanargmin(r2)),
        n_basis=int(n_basis),
        settings={"n_basis": int(n_basis), "alpha_grid": list(ALPHA_GRID)},
    )


def calibration_from_import(result: ImportResult, camera_id: str = "imported",
                            camera_model: str = "measured samples"):  # fmt: skip
    """A :class:`hyplex.calibration.store.Calibration` holding the imported responses.

    Sections: ``spectral`` (``wavelengths_nm``, ``response``, ``uncertainty``, ``measured``:
    hyplex's estimate, the form ``hyplex refit`` reads), ``basis_fit`` (the Hyplex fit) and
    ``measured_import`` (the samples and the leave-one-out figures). There is no dark, flat,
    EMVA or registration section and no mosaic layout: the file says so in
    ``measured_import/has_registration = False``, and users of the file must take the
    layout from elsewhere (the design bundle).
    """
    from hyplex.calibration.store import Calibration, Provenance

    samples = result.samples
    provenance = Provenance(
        camera_id=camera_id,
        camera_model=camera_model,
        sensor_shape=(0, 0),
        devices={"reference": f"measured samples: {samples.source}"},
        settings={"measured_import": result.settings},
    )
    sections = {
        "spectral": {
            "wavelengths_nm": samples.wavelengths_nm,
            "response": result.response,
            "uncertainty": result.uncertainty,
            "measured": result.response,
            "source": "measured_import",
        },
        "basis_fit": {
            "wavelengths_nm": samples.wavelengths_nm,
            "response": result.basis_response,
            "coefficients": result.basis_coefficients,
            "r_squared": result.basis_r_squared,
            "r_squared_loo": result.basis_r_squared_loo,
        },
        "measured_import": {
            "wavelengths_nm": samples.wavelengths_nm,
            "spectra": samples.spectra,
            "readings": samples.readings,
            "channel_names": json.dumps(list(samples.channel_names)),
            "source": samples.source,
            "alphas": result.alphas,
            "r_squared_loo": result.r_squared_loo,
            "loo_rmse": result.loo_rmse,
            "basis_loo_rmse": result.basis_loo_rmse,
            "ridge_loo_rmse": result.ridge_loo_rmse,
            "spectra_rms": result.spectra_rms,
            "weak_channel": result.weak_channel,
            "weak_channel_name": result.weak_channel_name,
            "has_registration": False,
        },
    }
    return Calibration(provenance, None, sections, "complete")

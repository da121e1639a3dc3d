"""Richardson extrapolation of a grid-convergence ladder, with a fitted order and error estimates.

A discretised solver (here Meep FDTD at ``r`` grid points per um) returns ``T(r)``; in its
asymptotic range the error behaves as

    T(r) = T_inf + C r^-p + o(r^-p)                                              (1)

with ``p`` the order of convergence: 2 where Meep's sub-pixel smoothing applies, 1 in
dispersive (Lorentz) media, which Meep does not smooth (staircased interfaces). Given the
ladder ``r_1 < r_2 < ... < r_K`` this module

1. *fits* ``p`` from the ladder itself (the "observed order of accuracy", Roache 1997, Sec. 3):
   for three levels, eliminating ``C`` and ``T_inf`` from (1) gives

       (T_1 - T_2) / (T_2 - T_3) = (r_1^-p - r_2^-p) / (r_2^-p - r_3^-p)          (2)

   which for a geometric ladder (``r_3/r_2 = r_2/r_1 = q``) is ``q^p``, so
   ``p = log((T_1 - T_2) / (T_2 - T_3)) / log q``. One ``p`` for a whole spectrum is fitted on
   the RMS over all points of the differences between neighbouring levels (least squares in
   log space for K > 3 levels), which is robust where the per-point ratio changes sign;
2. extrapolates with the last pair (Richardson 1911; Roache 1997, eq. 5):

       T_inf = T_K + (T_K - T_{K-1}) / ((r_K / r_{K-1})^p - 1)                     (3)

3. estimates errors:

   - ``correction`` = ``|T_inf - T_K|`` = ``|T_K - T_{K-1}| / ((r_K/r_{K-1})^p - 1)``, Richardson's
     estimate of the finest run's own error; ``gci`` = ``F_s`` times it, Roache's grid
     convergence index (``F_s`` = 1.25 with an observed order from >= 3 levels, 3 with an
     assumed order from 2 levels; Roache 1997, Sec. 4);
   - ``error``, the uncertainty of ``T_inf`` itself, as the spread of (3) over the orders that
     the ladder supports: ``|T_inf(p) - T_inf(p_j)|`` with ``p_j`` the order of the last three
     levels at point ``j`` alone (from (2), clamped to ``order_bounds``). Where the point's
     differences change sign (oscillatory convergence, no order exists) it is the last change
     ``|T_K - T_{K-1}|``, the conservative choice. Where the fitted order had to be clamped
     (the ladder is not asymptotic) the error is at least the whole correction. With two
     levels no order can be fitted; ``error`` is then the GCI with ``F_s`` = 3.

References
----------
- L. F. Richardson, Phil. Trans. R. Soc. A 210, 307-357 (1911).
- P. J. Roache, "Quantification of uncertainty in computational fluid dynamics", Annu. Rev.
  Fluid Mech. 29, 123-160 (1997).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "Extrapolation",
    "OrderFit",
    "fit_order",
    "pointwise_order",
    "richardson",
    "extrapolate",
]

#: orders outside this range are not a convergence rate but noise or pre-asymptotic data
DEFAULT_ORDER_BOUNDS = (0.5, 4.0)
#: Roache's safety factors: with an observed order (>= 3 levels), with an assumed one (2 levels)
SAFETY_FACTOR_FITTED = 1.25
SAFETY_FACTOR_ASSUMED = 3.0


@dataclass(frozen=True)
class OrderFit:
    """A convergence order fitted from a ladder.

    Attributes
    ----------
    order : float
        The order used, ``raw_order`` clamped to ``bounds``.
    raw_order : float
        The least-squares order before clamping (NaN if the ladder does not converge at all,
        i.e. the differences do not shrink).
    clamped : bool
        True if ``raw_order`` fell outside ``bounds`` (then a warning was issued).
    bounds : (float, float)
    differences_rms : ndarray ``(K - 1,)``
        RMS over all points of ``T_{k+1} - T_k``, the data the order was fitted to.
    """

    order: float
    raw_order: float
    clamped: bool
    bounds: tuple[float, float]
    differences_rms: np.ndarray


@dataclass
class Extrapolation:
    """Richardson extrapolation of a ladder ``values (K, ...)`` at ``resolutions (K,)``.

    Attributes
    ----------
    resolutions : ndarray ``(K,)``, ascending.
    value : ndarray ``(...)``
        The extrapolated ``T_inf``, eq. (3) of the module docstring.
    error : ndarray ``(...)``
        Uncertainty estimate of ``value`` (see the module docstring: spread over the orders
        the ladder supports; GCI with F_s = 3 for a two-level ladder).
    correction : ndarray ``(...)``
        ``|value - finest|``, Richardson's estimate of the finest level's own error.
    gci : ndarray ``(...)``
        Roache's grid convergence index of the finest level: ``F_s * correction``.
    order : float
        The order used in (3).
    order_fitted : bool
        True if ``order`` came from the ladder (>= 3 levels and no fixed order given).
    fit : OrderFit or None
        The fit behind ``order`` (None for an assumed order).
    notes : list of str
        Plain-language warnings (clamped order, non-monotone points, two-level ladder).
    """

    resolutions: np.ndarray
    value: np.ndarray
    error: np.ndarray
    correction: np.ndarray
    gci: np.ndarray
    order: float
    order_fitted: bool
    fit: OrderFit | None = None
    notes: list[str] = field(default_factory=list)


def _ladder(resolutions, values) -> tuple[np.ndarray, np.ndarray]:
    """Validated ``(r (K,), T (K, ...))`` sorted by ascending resolution."""
    r = np.asarray(resolutions, dtype=float).reshape(-1)
    T = np.asarray(values, dtype=float)
    if r.size < 2:
        raise ValueError(f"a ladder needs at least 2 resolutions, got {r.size}")
    if T.ndim == 0 or T.shape[0] != r.size:
        raise ValueError(
            f"values must have shape (K, ...) with K = len(resolutions) = {r.size}, got {T.shape}"
        )
    if not (np.isfinite(r).all() and (r > 0).all()):
        raise ValueError(f"resolutions must be positive and finite, got {r}")
    order = np.argsort(r)
    r, T = r[order], T[order]
    if (np.diff(r) <= 0).any():
        raise ValueError(f"resolutions must be distinct, got {np.sort(r)}")
    if not np.isfinite(T).all():
        raise ValueError("values contain NaN or Inf")
    return r, T


def _difference_shape(r: np.ndarray, p) -> np.ndarray:
    """``r_k^-p - r_{k+1}^-p`` per neighbouring pair: ``(K - 1, ...)`` for orders ``p (...)``."""
    p = np.asarray(p, dtype=float)
    powers = r.reshape((-1,) + (1,) * p.ndim) ** (-p)
    return powers[:-1] - powers[1:]


def _solve_ratio(ratio, r3: np.ndarray, bounds) -> np.ndarray:
    """Order ``p`` with ``g(p) = (r1^-p - r2^-p)/(r2^-p - r3^-p) = ratio`` (eq. 2), by bisection.

    ``g`` increases with ``p`` (for a geometric ladder it is ``q^p``); ratios outside
    ``g(bounds)`` give the bound. ``ratio`` is an array of positive numbers.
    """
    ratio = np.asarray(ratio, dtype=float)
    lo = np.full(ratio.shape, float(bounds[0]))
    hi = np.full(ratio.shape, float(bounds[1]))

    def g(p):
        d = _difference_shape(r3, p)
        return d[0] / d[1]

    for _ in range(60):  # interval shrinks by 2^-60
        mid = (lo + hi) / 2
        below = g(mid) < ratio
        lo = np.where(below, mid, lo)
        hi = np.where(below, hi, mid)
    return (lo + hi) / 2


def fit_order(resolutions, values, order_bounds=DEFAULT_ORDER_BOUNDS) -> OrderFit:
    """One convergence order for a whole ladder, fitted on the RMS of level differences.

    Parameters
    ----------
    resolutions : array ``(K,)``, K >= 3, grid points per unit length (any order).
    values : array ``(K, ...)``, the solution at each resolution (e.g. ``(K, L)`` spectra).
    order_bounds : ``(p_min, p_max)``; a fitted order outside is clamped, with a warning.

    Returns
    -------
    OrderFit

    Notes
    -----
    With ``D_k = RMS_j(T_{k+1,j} - T_{k,j})``, model (1) gives
    ``D_k = |C|_rms |r_k^-p - r_{k+1}^-p|``. Three levels: ``D_1 / D_2`` = eq. (2), solved for
    ``p``. More levels: ``p`` minimises ``sum_k (log D_k - log A - log|r_k^-p - r_{k+1}^-p|)^2``
    (``A`` eliminated in closed form) on a grid of 4001 orders, then by golden-section search.
    Taking the RMS over points before the ratio keeps points where ``T_1 - T_2`` and
    ``T_2 - T_3`` differ in sign (where eq. 2 has no solution) from breaking the fit. The
    result is clamped to ``order_bounds``.
    """
    r, T = _ladder(resolutions, values)
    if r.size < 3:
        raise ValueError(f"fitting an order needs at least 3 resolutions, got {r.size}")
    lo, hi = float(order_bounds[0]), float(order_bounds[1])
    if not 0 < lo < hi:
        raise ValueError(f"order_bounds must satisfy 0 < p_min < p_max, got {order_bounds}")
    diffs = np.diff(T.reshape(r.size, -1), axis=0)
    d_rms = np.sqrt(np.mean(diffs**2, axis=1))
    if (d_rms == 0).any():
        # A level equal to its neighbour: converged to round-off (or a cached duplicate).
        warnings.warn("two neighbouring levels are identical; order set to p_max", stacklevel=2)
        return OrderFit(hi, float("nan"), True, (lo, hi), d_rms)
    if r.size == 3:
        ratio = d_rms[0] / d_rms[1]
        # g(p) -> r-ratio limits; eq. (2) has a root in (0, inf) only if ratio > g(0+).
        raw = float(_solve_ratio(ratio, r, (1e-6, 50.0))) if ratio > 0 else float("nan")
        g0 = np.log(r[1] / r[0]) / np.log(r[2] / r[1])  # lim_{p -> 0} g(p)
        if ratio <= g0 * (1 + 1e-12):
            raw = float("nan")  # the differences do not shrink: no convergence order
    else:

        def cost(p):
            model = np.log(np.abs(_difference_shape(r, p)))  # (K-1, P)
            residual = np.log(d_rms)[:, None] - model
            residual -= residual.mean(0, keepdims=True)  # the best log A for each p
            return (residual**2).sum(0)

        grid = np.linspace(1e-3, 8.0, 4001)
        i = int(np.argmin(cost(grid)))
        a, b = grid[max(i - 1, 0)], grid[min(i + 1, grid.size - 1)]
        for _ in range(80):  # golden-section refinement around the grid minimum
            c, d = b - 0.618034 * (b - a), a + 0.618034 * (b - a)
            if cost(np.array([c]))[0] < cost(np.array([d]))[0]:
                b = d
            else:
                a = c
        raw = float((a + b) / 2)
        slope_sign = np.polyfit(np.log(r[1:]), np.log(d_rms), 1)[0]
        if slope_sign >= 0:
            raw = float("nan")
    if not np.isfinite(raw):
        warnings.warn(
            f"the ladder does not converge (RMS level differences {np.round(d_rms, 5).tolist()} "
            f"do not shrink); order clamped to p_min = {lo}",
            stacklevel=2,
        )
        return OrderFit(lo, raw, True, (lo, hi), d_rms)
    order = min(max(raw, lo), hi)
    clamped = order != raw
    if clamped:
        warnings.warn(
            f"fitted convergence order {raw:.3g} lies outside {order_bounds}; clamped to "
            f"{order:.3g} (the ladder is not in its asymptotic range)",
            stacklevel=2,
        )
    return OrderFit(order, raw, clamped, (lo, hi), d_rms)


def pointwise_order(resolutions, values, order_bounds=DEFAULT_ORDER_BOUNDS) -> np.ndarray:
    """Order of the last three levels at every point, eq. (2); NaN where it does not exist.

    Parameters
    ----------
    resolutions : array ``(K,)``, K >= 3.
    values : array ``(K, ...)``.
    order_bounds : orders are clamped to this range.

    Returns
    -------
    ndarray ``(...)``: the order per point, NaN where ``T_{K-2} - T_{K-1}`` and
    ``T_{K-1} - T_K`` differ in sign or vanish (oscillatory or converged convergence).
    """
    r, T = _ladder(resolutions, values)
    if r.size < 3:
        raise ValueError(f"a pointwise order needs at least 3 resolutions, got {r.size}")
    d1, d2 = T[-3] - T[-2], T[-2] - T[-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = d1 / d2
    valid = np.isfinite(ratio) & (ratio > 0)
    p = _solve_ratio(np.where(valid, ratio, 1.0), r[-3:], order_bounds)
    return np.where(valid, p, np.nan)


def richardson(fine, coarse, ratio, order):
    """Richardson extrapolation of two levels, eq. (3): ``fine + (fine - coarse)/(ratio^p - 1)``.

    Parameters
    ----------
    fine, coarse : arrays (broadcastable), the solution at resolutions ``r`` and ``r / ratio``.
    ratio : float > 1, the refinement ratio ``r_fine / r_coarse``.
    order : float or array > 0, the convergence order ``p`` (broadcasts against the values).

    Returns
    -------
    ndarray: the extrapolated value.
    """
    ratio = float(ratio)
    if not ratio > 1:
        raise ValueError(f"ratio = r_fine / r_coarse must exceed 1, got {ratio}")
    order = np.asarray(order, dtype=float)
    if not (np.isfinite(order) & (order > 0)).all():
        raise ValueError(f"order must be positive, got {order}")
    fine, coarse = np.asarray(fine, dtype=float), np.asarray(coarse, dtype=float)
    return fine + (fine - coarse) / (ratio**order - 1.0)


def extrapolate(
    resolutions,
    values,
    order: float | None = None,
    assumed_order: float = 1.0,
    order_bounds=DEFAULT_ORDER_BOUNDS,
    fit_levels: int | None = None,
) -> Extrapolation:
    """Richardson-extrapolate a ladder to infinite resolution, with an error estimate.

    Parameters
    ----------
    resolutions : array ``(K,)``, K >= 2, grid points per unit length (any order).
    values : array ``(K, ...)``, e.g. ``(K, L)`` spectra, level k at ``resolutions[k]``.
    order : float, optional
        Use this order instead of fitting one (then ``error`` is the GCI with F_s = 3).
    assumed_order : float
        The order for a two-level ladder (no fit possible): 1 for Meep in Lorentz media
        (no sub-pixel smoothing), 2 where smoothing applies.
    order_bounds : ``(p_min, p_max)`` for the fitted order (clamped with a warning).
    fit_levels : int >= 3, optional
        Fit the order on the finest ``fit_levels`` levels only (Roache's three finest grids);
        coarser levels outside the asymptotic range then cannot bias it. Default: all levels.

    Returns
    -------
    Extrapolation with ``value``, ``error``, ``correction`` and ``gci`` of shape ``(...)``.

    Examples
    --------
    >>> r = np.array([100.0, 200.0, 400.0])
    >>> T = 0.5 + 0.3 / r[:, None] * np.ones((3, 4))   # first order, T_inf = 0.5
    >>> result = extrapolate(r, T)
    >>> round(result.order, 6), np.allclose(result.value, 0.5)
    (1.0, True)
    """
    r, T = _ladder(resolutions, values)
    notes: list[str] = []
    fit = None
    if order is not None:
        p, fitted = float(order), False
    elif r.size >= 3:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if fit_levels is not None and not 3 <= fit_levels <= r.size:
                raise ValueError(f"fit_levels must lie in [3, {r.size}], got {fit_levels}")
            levels = slice(-(fit_levels or r.size), None)
            fit = fit_order(r[levels], T[levels], order_bounds)
        for w in caught:
            notes.append(str(w.message))
            warnings.warn(str(w.message), stacklevel=2)
        p, fitted = fit.order, True
    else:
        p, fitted = float(assumed_order), False
        notes.append(
            f"two levels only: order assumed p = {p:g}, not fitted; error is Roache's GCI "
            f"with F_s = {SAFETY_FACTOR_ASSUMED:g}"
        )
    if not (np.isfinite(p) and p > 0):
        raise ValueError(f"order must be positive, got {p}")
    q = r[-1] / r[-2]
    value = richardson(T[-1], T[-2], q, p)
    correction = np.abs(value - T[-1])
    if fitted:
        gci = SAFETY_FACTOR_FITTED * correction
        p_point = pointwise_order(r, T, order_bounds)
        with_point = richardson(T[-1], T[-2], q, np.where(np.isnan(p_point), p, p_point))
        last_change = np.abs(T[-1] - T[-2])
        error = np.where(np.isnan(p_point), last_change, np.abs(value - with_point))
        if fit.clamped:
            # No order in range: the ladder is not asymptotic, so the extrapolation itself is
            # in doubt; its whole step beyond the finest level counts as error.
            error = np.maximum(error, correction)
            notes.append(
                "the fitted order was clamped (the ladder is not in its asymptotic range); "
                "the error includes the whole Richardson correction |T_inf - T_K|"
            )
        n_bad = int(np.isnan(p_point).sum())
        if n_bad:
            notes.append(
                f"{n_bad} of {p_point.size} points converge non-monotonically (their last two "
                "differences change sign); their error is the last change |T_K - T_(K-1)|"
            )
    else:
        gci = SAFETY_FACTOR_ASSUMED * correction
        error = gci
    return Extrapolation(
        resolutions=r,
        value=value,
        error=error,
        correction=correction,
        gci=gci,
        order=p,
        order_fitted=fitted,
        fit=fit,
        notes=notes,
    )

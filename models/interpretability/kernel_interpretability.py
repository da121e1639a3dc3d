"""An interpretability index for a kernel classifier and its trade-off with generalisation.

Paper: J. Zhao, Q. Wang, Y. Wang, Y. Liu, Z. Shi, X. Hei, "How to improve the
interpretability of kernel learning" (arXiv 1811.10469, 2018). The paper (i) proposes a
quantitative interpretability index, (ii) analyses the equilibrium between interpretability
and generalisation, and (iii) puts forward a learning framework that balances the two,
applied to the least-squares SVM. Only its abstract could be read here, so the index and the
balancing family below are this module's own construction in that framework's shape; they
are not the paper's equations:

* The classifier is an LS-SVM (Suykens & Vandewalle 1999, "Least Squares Support Vector
  Machine Classifiers", eq. 10): ``[[0, 1^T], [1, K + I/gamma]] [b; alpha] = [0; y]``,
  ``f(x) = sum_i alpha_i k(x_i, x) + b``, labels ``y = +-1``.
* Its kernel mixes an additive kernel and a full RBF kernel,
  ``k_mu = (1 - mu) k_add + mu k_rbf`` with ``k_add(x, x') = mean_d exp(-(x_d - x'_d)^2 /
  (2 s^2))``: at ``mu = 0`` the decision function is a sum of one-dimensional curves, one per
  barcode channel, that a person can read; ``mu = 1`` allows every interaction.
* The interpretability index of a decision function on data ``X`` is the share of its
  variance that its best additive approximation explains,
  ``I(f) = 1 - min_g ||f - g||^2 / ||f - mean f||^2`` over additive ``g = sum_d g_d(x_d)``
  (each ``g_d`` a step function on quantile bins, fitted by least squares): 1 when ``f`` is
  a sum of per-channel effects, towards 0 when only interactions decide.
* The trade-off: sweeping ``mu`` gives (held-out accuracy, I) pairs; the balanced model
  maximises ``accuracy + lambda I`` (:func:`interpretability_tradeoff`).

On hyplex it runs on metapixel barcodes (9 channels), e.g. real against fake vegetation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "additive_rbf_kernel",
    "mixed_kernel",
    "LSSVMClassifier",
    "interpretability_index",
    "interpretability_tradeoff",
]


def _as_features(name: str, x) -> np.ndarray:
    x = np.asarray(x, dtype=float)
    if x.ndim != 2 or not np.all(np.isfinite(x)):
        raise ValueError(f"{name} must be a finite (N, D) array; got shape {x.shape}")
    return x


def additive_rbf_kernel(a: np.ndarray, b: np.ndarray, scale: float) -> np.ndarray:
    """``mean_d exp(-(a_d - b_d)^2 / (2 scale^2))``: (N, D), (M, D) -> (N, M)."""
    diff = a[:, None, :] - b[None, :, :]
    return np.exp(-(diff**2) / (2 * scale**2)).mean(-1)


def _rbf(a, b, scale):
    sq = (a**2).sum(1)[:, None] + (b**2).sum(1)[None] - 2 * a @ b.T
    return np.exp(-np.maximum(sq, 0) / (2 * scale**2 * a.shape[1]))


def mixed_kernel(a: np.ndarray, b: np.ndarray, mu: float, scale: float = 1.0) -> np.ndarray:
    """``(1 - mu) k_add + mu k_rbf`` (RBF bandwidth ``scale * sqrt(D)``): (N, M)."""
    if not 0 <= mu <= 1:
        raise ValueError(f"mu must lie in [0, 1]; got {mu}")
    out = np.zeros((a.shape[0], b.shape[0]))
    if mu < 1:
        out += (1 - mu) * additive_rbf_kernel(a, b, scale)
    if mu > 0:
        out += mu * _rbf(a, b, scale)
    return out


@dataclass
class LSSVMClassifier:
    """LS-SVM classifier with the :func:`mixed_kernel` (features standardised on fit).

    ``gamma`` > 0 is the regularisation constant, ``mu`` in [0, 1] the interaction share,
    ``scale`` the kernel width in standard deviations."""

    gamma: float = 10.0
    mu: float = 0.0
    scale: float = 1.0

    def fit(self, x, y) -> LSSVMClassifier:
        """``x`` (N, D) features, ``y`` (N,) labels in {0, 1} or {-1, +1}."""
        x = _as_features("x", x)
        y = np.asarray(y)
        labels = np.unique(y)
        if y.shape != (x.shape[0],) or len(labels) != 2:
            raise ValueError(f"y must be (N,) = ({x.shape[0]},) with two classes; got {labels}")
        if not self.gamma > 0:
            raise ValueError(f"gamma must be > 0; got {self.gamma}")
        self.labels_ = labels
        target = np.where(y == labels[1], 1.0, -1.0)
        self.mean_, self.std_ = x.mean(0), x.std(0) + 1e-12
        self.support_ = (x - self.mean_) / self.std_
        n = len(target)
        system = np.zeros((n + 1, n + 1))
        system[0, 1:] = system[1:, 0] = 1.0
        system[1:, 1:] = mixed_kernel(self.support_, self.support_, self.mu, self.scale)
        system[1:, 1:] += np.eye(n) / self.gamma
        solution = np.linalg.solve(system, np.concatenate([[0.0], target]))
        self.bias_, self.alpha_ = solution[0], solution[1:]
        return self

    def decision_function(self, x) -> np.ndarray:
        """``f(x)`` (N,): positive for the second label."""
        z = (_as_features("x", x) - self.mean_) / self.std_
        return mixed_kernel(z, self.support_, self.mu, self.scale) @ self.alpha_ + self.bias_

    def predict(self, x) -> np.ndarray:
        return np.where(self.decision_function(x) > 0, self.labels_[1], self.labels_[0])


def interpretability_index(decision, x, bins: int = 8) -> float:
    """Share of ``decision``'s variance on ``x`` explained by an additive function.

    Parameters
    ----------
    decision : callable (N, D) -> (N,), or the (N,) values of the decision function on ``x``.
    x : (N, D) features. bins : quantile bins per feature for the additive step functions.

    Returns
    -------
    float in [0, 1] (1 for a constant function).
    """
    x = _as_features("x", x)
    f = np.asarray(decision(x) if callable(decision) else decision, dtype=float)
    if f.shape != (x.shape[0],):
        raise ValueError(f"decision values must be ({x.shape[0]},); got {f.shape}")
    total = float(((f - f.mean()) ** 2).sum())
    if total <= 1e-12 * max(1.0, float((f**2).sum())):
        return 1.0
    columns = [np.ones((x.shape[0], 1))]
    for d in range(x.shape[1]):
        edges = np.unique(np.quantile(x[:, d], np.linspace(0, 1, bins + 1)[1:-1]))
        index = np.searchsorted(edges, x[:, d])
        one_hot = np.eye(len(edges) + 1)[index][:, 1:]  # first bin is the intercept's
        columns.append(one_hot)
    design = np.concatenate(columns, 1)
    coef, *_ = np.linalg.lstsq(design, f, rcond=None)
    residual = float(((f - design @ coef) ** 2).sum())
    return float(np.clip(1 - residual / total, 0.0, 1.0))


def interpretability_tradeoff(
    x_train,
    y_train,
    x_test,
    y_test,
    mus=(0.0, 0.25, 0.5, 0.75, 1.0),
    weight: float = 0.2,
    gamma: float = 10.0,
    scale: float = 1.0,
) -> dict:
    """Accuracy and interpretability along ``mu``, and the balanced choice.

    Returns
    -------
    dict: ``curve`` = list of ``{"mu", "accuracy", "interpretability"}`` (held-out accuracy
    0..1, index on the test features), ``balanced`` = the entry maximising ``accuracy +
    weight * interpretability``.
    """
    y_test = np.asarray(y_test)
    curve = []
    for mu in mus:
        model = LSSVMClassifier(gamma, float(mu), scale).fit(x_train, y_train)
        curve.append(
            {
                "mu": float(mu),
                "accuracy": float(np.mean(model.predict(x_test) == y_test)),
                "interpretability": interpretability_index(model.decision_function, x_test),
            }
        )
    balanced = max(curve, key=lambda e: e["accuracy"] + weight * e["interpretability"])
    return {"curve": curve, "balanced": balanced, "weight": weight}

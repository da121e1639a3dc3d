"""The interpretability index on constructed cases, and its trade-off with accuracy."""

import numpy as np
import pytest

from hyplex.models.interpretability.kernel_interpretability import (
    LSSVMClassifier,
    interpretability_index,
    interpretability_tradeoff,
)


def test_index_on_constructed_functions():
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, size=(2000, 3))
    additive = lambda z: np.sign(z[:, 0]) + 0.5 * (z[:, 1] > 0.3)  # noqa: E731
    assert interpretability_index(additive, x) > 0.97  # bins only approximate the 0.3 step
    assert interpretability_index(lambda z: np.sign(z[:, 0] * z[:, 1]), x) < 0.05
    assert interpretability_index(np.full(2000, 3.0), x) == 1.0
    mixed = lambda z: np.sign(z[:, 0]) + np.sign(z[:, 0] * z[:, 1])  # noqa: E731
    assert 0.4 < interpretability_index(mixed, x) < 0.6  # half the variance is additive


def test_lssvm_solves_its_linear_system():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(60, 2))
    y = (x[:, 0] > 0).astype(int)
    model = LSSVMClassifier(gamma=5.0, mu=0.5).fit(x, y)
    # the dual constraint sum(alpha) = 0 and the training residual alpha / gamma = y - f
    assert abs(model.alpha_.sum()) < 1e-8
    f = model.decision_function(x)
    assert np.allclose(np.where(y == 1, 1.0, -1.0) - f, model.alpha_ / 5.0)
    assert np.mean(model.predict(x) == y) > 0.95


def test_tradeoff_between_interpretability_and_generalisation():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(300, 4))
    y = (x[:, 0] * x[:, 1] > 0).astype(int)  # an interaction decides
    result = interpretability_tradeoff(x[:150], y[:150], x[150:], y[150:], mus=(0.0, 1.0))
    additive, full = result["curve"]
    assert full["accuracy"] > additive["accuracy"] + 0.2
    assert additive["interpretability"] > full["interpretability"] + 0.3
    assert result["balanced"] == full  # accuracy wins at the default weight


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="two classes"):
        LSSVMClassifier().fit(np.zeros((3, 2)), np.zeros(3))
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        interpretability_index(np.zeros(3), np.zeros(3))

"""The GP against scikit-learn's, incremental refits, hyperparameters and failures."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import RBF

from nas.strategy.gp import GaussianProcess, _cholesky


def data(seed: int = 0, n: int = 40) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    return x, np.sin(x).sum(1) + rng.normal(0, 0.1, n), rng.normal(size=(25, 3))


def test_matches_sklearn_with_fixed_hyperparameters() -> None:
    x, y, xs = data()
    ref = GaussianProcessRegressor(RBF(1.3, "fixed"), alpha=0.05, normalize_y=True, optimizer=None).fit(x, y)
    mean_ref, std_ref = ref.predict(xs, return_std=True)
    gp = GaussianProcess(1.3, 0.05, optimize=False).fit(x, y)
    mean, std = gp.predict(xs)
    np.testing.assert_allclose(mean, mean_ref, atol=1e-6)
    np.testing.assert_allclose(std**2, std_ref**2, atol=1e-6)
    assert gp.log_marginal_likelihood_value_ == pytest.approx(ref.log_marginal_likelihood_value_, abs=1e-6)


def test_marginal_likelihood_optimum_matches_sklearn() -> None:
    x, y, xs = data(1)
    gp = GaussianProcess(noise=0.05, noise_bounds=(0.05, 0.05)).fit(x, y)
    ref = GaussianProcessRegressor(
        RBF(1.0, (1e-2, 1e2)), alpha=0.05, normalize_y=True, n_restarts_optimizer=5, random_state=0
    ).fit(x, y)
    assert gp.length_scale_ == pytest.approx(ref.kernel_.length_scale, rel=1e-3)
    assert gp.log_marginal_likelihood_value_ == pytest.approx(ref.log_marginal_likelihood_value_, abs=1e-6)
    np.testing.assert_allclose(gp.predict(xs)[0], ref.predict(xs), atol=1e-4)


def test_optimised_hyperparameters_beat_the_defaults() -> None:
    x, y, _ = data(2)
    fixed = GaussianProcess(optimize=False).fit(x, y)
    tuned = GaussianProcess().fit(x, y)
    assert tuned.log_marginal_likelihood_value_ >= fixed.log_marginal_likelihood_value_


def test_incremental_add_computes_one_row_and_equals_a_refit() -> None:
    x, y, xs = data(3)
    gp = GaussianProcess(0.9, 0.02, optimize=False).fit(x[:-1], y[:-1])
    before = gp.kernel_entries_
    gp.add(x[-1], y[-1])
    assert gp.kernel_entries_ - before == len(x)  # the new row (n - 1 others + itself), nothing more
    full = GaussianProcess(0.9, 0.02, optimize=False).fit(x, y)
    for a, b in zip(gp.predict(xs), full.predict(xs), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-9)
    assert gp.log_marginal_likelihood_value_ == pytest.approx(full.log_marginal_likelihood_value_, abs=1e-9)


def test_duplicates_are_kept_not_dropped() -> None:
    x = np.array([[0.0], [0.0], [1.0]])
    gp = GaussianProcess(1.0, 1e-8, optimize=False).fit(x, np.array([0.0, 1.0, 2.0]))
    assert len(gp.X_) == 3 and gp.jitter_ >= 0
    gp.add(np.array([0.0]), 0.5)
    assert len(gp.X_) == 4 and np.all(np.isfinite(gp.predict(x)[0]))


def test_cholesky_failure_names_the_remedy() -> None:
    with pytest.raises(ValueError, match="raise the noise variance"):
        _cholesky(np.array([[1.0, 2.0], [2.0, 1.0]]), 0.0)


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="NaN"):
        GaussianProcess().fit(np.array([[0.0], [1.0]]), np.array([0.5, np.nan]))
    with pytest.raises(ValueError, match="as many targets"):
        GaussianProcess().fit(np.zeros((3, 2)), np.zeros(2))

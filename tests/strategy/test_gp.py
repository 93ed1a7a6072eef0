"""The GP against scikit-learn's, incremental refits, hyperparameters and failures."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import RBF

from nas.strategy.gp import GaussianProcess, GroupedGaussianProcess, _cholesky


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


def test_grouped_gp_with_one_length_scale_for_all_groups_is_the_plain_gp() -> None:
    x, y, xs = data(4)
    plain = GaussianProcess(1.1, 0.03, optimize=False).fit(x, y)
    grouped = GroupedGaussianProcess([0, 1, 1], 1.1, 0.03, optimize=False).fit(x, y)
    for a, b in zip(grouped.predict(xs), plain.predict(xs), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-9)
    assert grouped.log_marginal_likelihood_value_ == pytest.approx(plain.log_marginal_likelihood_value_, abs=1e-9)


def test_grouped_gp_matches_sklearn_ard_fixed_and_at_the_optimum() -> None:
    x, y, xs = data(5)
    fixed = GroupedGaussianProcess([0, 1, 2], optimize=False)
    fixed.length_scale = np.array([0.7, 1.5, 3.0])
    fixed.fit(x, y)
    ref = GaussianProcessRegressor(RBF([0.7, 1.5, 3.0], "fixed"), alpha=0.01, normalize_y=True, optimizer=None)
    ref.fit(x, y)
    np.testing.assert_allclose(fixed.predict(xs)[0], ref.predict(xs), atol=1e-6)
    assert fixed.log_marginal_likelihood_value_ == pytest.approx(ref.log_marginal_likelihood_value_, abs=1e-6)
    # optimised: at least as likely as scikit-learn's optimum over the same length scales (noise held fixed)
    tuned = GroupedGaussianProcess([0, 1, 2], noise=0.01, noise_bounds=(0.01, 0.01)).fit(x, y)
    best = GaussianProcessRegressor(
        RBF([1.0, 1.0, 1.0], (1e-2, 1e2)), alpha=0.01, normalize_y=True, n_restarts_optimizer=5, random_state=0
    ).fit(x, y)
    assert tuned.log_marginal_likelihood_value_ >= best.log_marginal_likelihood_value_ - 1e-4


def test_grouped_gp_learns_which_group_matters() -> None:
    rng = np.random.default_rng(6)
    x = rng.normal(size=(60, 4))
    y = np.sin(2 * x[:, 0]) + np.cos(x[:, 1])  # groups: columns 0-1 matter, columns 2-3 do not
    gp = GroupedGaussianProcess([0, 0, 1, 1]).fit(x, y)
    assert gp.length_scale_.shape == (2,) and gp.length_scale_[1] > 5 * gp.length_scale_[0]


def test_grouped_gp_add_equals_a_refit() -> None:
    x, y, xs = data(7)
    gp = GroupedGaussianProcess([0, 1, 0], 0.8, 0.02, optimize=False).fit(x[:-1], y[:-1])
    gp.add(x[-1], y[-1])
    full = GroupedGaussianProcess([0, 1, 0], 0.8, 0.02, optimize=False).fit(x, y)
    for a, b in zip(gp.predict(xs), full.predict(xs), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-9)


def test_bad_groups_are_refused() -> None:
    with pytest.raises(ValueError, match=r"groups must number the feature columns 0\.\.G-1"):
        GroupedGaussianProcess([0, 2])
    with pytest.raises(ValueError, match="features have 3 columns but groups name 2"):
        GroupedGaussianProcess([0, 1]).fit(np.zeros((4, 3)), np.arange(4.0))

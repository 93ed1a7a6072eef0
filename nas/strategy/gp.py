"""Gaussian-process regression on feature vectors with a squared-exponential kernel.

Follows Rasmussen & Williams, *Gaussian Processes for Machine Learning*, Algorithm 2.1.

Notation (shapes):
    X   (n, p)  training features          y      (n,)   targets, normalised to zero mean, unit std
    K   (n, n)  k(X, X) + noise * I        L      (n, n) lower Cholesky factor of K
    alpha (n,)  K^-1 y = L^T \\ (L \\ y)    X*     (m, p) query features, k* = k(X, X*) (n, m)

The kernel has unit signal variance (targets are normalised); its length scale and the noise
variance are chosen by maximising the log marginal likelihood unless ``optimize=False``.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.linalg import LinAlgError, cho_solve, cholesky, solve_triangular

from nas.strategy.kernel import rbf

JITTERS = (0.0, 1e-10, 1e-8, 1e-6, 1e-4)


def _sq_dists(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    sq = np.sum(a**2, 1)[:, None] + np.sum(b**2, 1)[None, :] - 2.0 * a @ b.T
    return np.maximum(sq, 0.0)


def _lml(y: np.ndarray, chol: np.ndarray, alpha: np.ndarray) -> float:
    """Algorithm 2.1 line 8: log p(y|X) = -y^T alpha / 2 - sum(log diag L) - n/2 log 2 pi."""
    return float(-0.5 * y @ alpha - np.sum(np.log(np.diag(chol))) - 0.5 * len(y) * math.log(2 * math.pi))


def _cholesky(k: np.ndarray, noise: float) -> tuple[np.ndarray, float]:
    """Lower Cholesky factor of ``k``, adding the smallest jitter that works; ValueError with the remedy."""
    eye = np.eye(len(k))
    for jitter in JITTERS:
        try:
            return cholesky(k + jitter * eye, lower=True), jitter
        except LinAlgError:
            continue
    raise ValueError(
        f"the kernel matrix of {len(k)} observations is not positive definite even with jitter {JITTERS[-1]}; "
        f"raise the noise variance (now {noise:g}) or check for duplicated observations with conflicting targets"
    )


class GaussianProcess:
    """GP regressor; fitted attributes end in ``_``. Observations are never dropped."""

    def __init__(
        self,
        length_scale: float = 1.0,
        noise: float = 1e-2,
        *,
        optimize: bool = True,
        length_scale_bounds: tuple[float, float] = (1e-2, 1e2),
        noise_bounds: tuple[float, float] = (1e-6, 1.0),
    ) -> None:
        self.length_scale = length_scale
        self.noise = noise
        self.optimize = optimize
        self.length_scale_bounds = length_scale_bounds
        self.noise_bounds = noise_bounds
        self.kernel_entries_ = 0  # kernel matrix entries computed so far (for the incremental-refit promise)
        self.L_: np.ndarray
        self.jitter_: float

    # --- fitting ------------------------------------------------------------------------------

    def fit(self, x: np.ndarray, y: np.ndarray) -> GaussianProcess:
        """Fit to ``x`` (n, p) and ``y`` (n,), choosing hyperparameters first when ``optimize``."""
        x, y = np.atleast_2d(np.asarray(x, float)), np.asarray(y, float).ravel()
        if len(x) != len(y) or len(y) == 0:
            raise ValueError(
                f"GP fit needs as many targets as feature rows and at least one, got {len(x)} and {len(y)}"
            )
        if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
            raise ValueError("GP fit got NaN or infinite features or targets; a failed training must not be fitted")
        self.X_, self.y_ = x, y
        self._d2 = _sq_dists(x, x)
        self.kernel_entries_ += len(x) ** 2
        self._normalise()
        if self.optimize and len(y) > 1:
            self.length_scale_, self.noise_ = self._best_hyperparameters()
        else:
            self.length_scale_, self.noise_ = self.length_scale, self.noise
        self._factorise()
        return self

    def add(self, x: np.ndarray, y: float) -> GaussianProcess:
        """Add one observation keeping the hyperparameters: computes only the new kernel row."""
        x = np.asarray(x, float).reshape(1, -1)
        if not (np.all(np.isfinite(x)) and math.isfinite(y)):
            raise ValueError("GP add got NaN or infinite features or target")
        d2_row = _sq_dists(self.X_, x)[:, 0]
        self.kernel_entries_ += len(self.X_) + 1
        n = len(self.X_)
        d2 = np.empty((n + 1, n + 1))
        d2[:n, :n], d2[:n, n], d2[n, :n], d2[n, n] = self._d2, d2_row, d2_row, 0.0
        k_row = np.exp(-0.5 * d2_row / self.length_scale_**2)  # the new kernel row, nothing else
        l_row = solve_triangular(self.L_, k_row, lower=True)
        corner = 1.0 + self.noise_ + self.jitter_ - l_row @ l_row
        self.X_, self.y_, self._d2 = np.vstack([self.X_, x]), np.append(self.y_, y), d2
        self._normalise()
        if corner <= 1e-12:  # numerically singular: refactorise (with jitter) from the cached distances
            self._factorise()
            return self
        chol = np.zeros((n + 1, n + 1))
        chol[:n, :n], chol[n, :n], chol[n, n] = self.L_, l_row, math.sqrt(corner)
        self.L_ = chol
        self.alpha_ = cho_solve((self.L_, True), self._y_norm)
        self.log_marginal_likelihood_value_ = _lml(self._y_norm, self.L_, self.alpha_)
        return self

    def _normalise(self) -> None:
        self.y_mean_ = float(np.mean(self.y_))
        std = float(np.std(self.y_))
        self.y_std_ = std if std > 0 else 1.0
        self._y_norm = (self.y_ - self.y_mean_) / self.y_std_

    def _k(self, length_scale: float, noise: float) -> np.ndarray:
        """K = k(X, X) + noise * I from the cached squared distances (Algorithm 2.1 line 2)."""
        return np.exp(-0.5 * self._d2 / length_scale**2) + noise * np.eye(len(self._d2))

    def _factorise(self) -> None:
        self.L_, self.jitter_ = _cholesky(self._k(self.length_scale_, self.noise_), self.noise_)
        self.alpha_ = cho_solve((self.L_, True), self._y_norm)  # line 3
        self.log_marginal_likelihood_value_ = _lml(self._y_norm, self.L_, self.alpha_)

    def log_marginal_likelihood(self, length_scale: float, noise: float) -> float:
        """Log marginal likelihood of the fitted data under the given hyperparameters (-inf if singular)."""
        try:
            chol = cholesky(self._k(length_scale, noise), lower=True)
        except LinAlgError:
            return -math.inf
        return _lml(self._y_norm, chol, cho_solve((chol, True), self._y_norm))

    def _best_hyperparameters(self) -> tuple[float, float]:
        """Maximise the log marginal likelihood over (log length scale, log noise) from a fixed grid of starts."""
        spread = np.sqrt(self._d2[self._d2 > 0])
        base = float(np.median(spread)) if spread.size else 1.0
        bounds = [tuple(np.log(self.length_scale_bounds)), tuple(np.log(self.noise_bounds))]

        def loss(theta: np.ndarray) -> float:
            value = self.log_marginal_likelihood(math.exp(theta[0]), math.exp(theta[1]))
            return -value if math.isfinite(value) else 1e25

        starts = [
            np.clip([math.log(base * f), math.log(nz)], [b[0] for b in bounds], [b[1] for b in bounds])
            for f in (0.3, 1.0, 3.0)
            for nz in (1e-3, 1e-1)
        ]
        start = min(starts, key=lambda t: loss(np.asarray(t)))
        from scipy.optimize import minimize  # imported here: reading a log needs no optimiser

        result = minimize(loss, start, method="L-BFGS-B", bounds=bounds)
        theta = result.x if result.fun <= loss(np.asarray(start)) else start
        return math.exp(theta[0]), math.exp(theta[1])

    # --- prediction ----------------------------------------------------------------------------

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean and standard deviation (of the latent function) at the rows of ``x``."""
        x = np.atleast_2d(np.asarray(x, float))
        k_star = rbf(self.X_, x, self.length_scale_)
        mean = k_star.T @ self.alpha_  # line 4
        v = solve_triangular(self.L_, k_star, lower=True)  # line 5
        var = np.maximum(1.0 - np.sum(v**2, 0), 0.0)  # line 6, k(x*, x*) = 1
        return mean * self.y_std_ + self.y_mean_, np.sqrt(var) * self.y_std_

"""Gaussian-process regression on feature vectors with a squared-exponential kernel.

Follows Rasmussen & Williams, *Gaussian Processes for Machine Learning*, Algorithm 2.1.

Notation (shapes):
    X   (n, p)  training features          y      (n,)   targets, normalised to zero mean, unit std
    K   (n, n)  k(X, X) + noise * I        L      (n, n) lower Cholesky factor of K
    alpha (n,)  K^-1 y = L^T \\ (L \\ y)    X*     (m, p) query features, k* = k(X, X*) (n, m)

The kernel has unit signal variance (targets are normalised); its length scale and the noise
variance are chosen by maximising the log marginal likelihood unless ``optimize=False``.
``GroupedGaussianProcess`` gives each group of feature columns its own length scale (automatic
relevance determination), e.g. one per edge of a cell encoded one-hot.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

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
        self.length_scale: float | np.ndarray = length_scale  # an array of one per group in GroupedGaussianProcess
        self.noise = noise
        self.optimize = optimize
        self.length_scale_bounds = length_scale_bounds
        self.noise_bounds = noise_bounds
        self.kernel_entries_ = 0  # kernel matrix entries computed so far (for the incremental-refit promise)
        self.length_scale_: Any  # float; an array of one per group in GroupedGaussianProcess
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
        self._d2 = self._pair_d2(x, x)
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
        d2_row = self._pair_d2(self.X_, x)[:, 0]
        self.kernel_entries_ += len(self.X_) + 1
        n = len(self.X_)
        d2 = np.empty((n + 1, n + 1, *self._d2.shape[2:]))
        d2[:n, :n], d2[:n, n], d2[n, :n], d2[n, n] = self._d2, d2_row, d2_row, 0.0
        k_row = self._kernel(d2_row, self.length_scale_)  # the new kernel row, nothing else
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

    def _pair_d2(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """What the kernel is a function of, for every pair of rows: here the squared distance, (n, m)."""
        return _sq_dists(a, b)

    @staticmethod
    def _kernel(d2: np.ndarray, length_scale: Any) -> np.ndarray:
        """Kernel values from ``_pair_d2``'s output."""
        return np.exp(-0.5 * d2 / length_scale**2)

    def _k(self, length_scale: Any, noise: float) -> np.ndarray:
        """K = k(X, X) + noise * I from the cached squared distances (Algorithm 2.1 line 2)."""
        return self._kernel(self._d2, length_scale) + noise * np.eye(len(self._d2))

    def _factorise(self) -> None:
        self.L_, self.jitter_ = _cholesky(self._k(self.length_scale_, self.noise_), self.noise_)
        self.alpha_ = cho_solve((self.L_, True), self._y_norm)  # line 3
        self.log_marginal_likelihood_value_ = _lml(self._y_norm, self.L_, self.alpha_)

    def log_marginal_likelihood(self, length_scale: Any, noise: float) -> float:
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

    def _cross_kernel(self, x: np.ndarray) -> np.ndarray:
        """k(X, x), (n, m)."""
        return rbf(self.X_, x, self.length_scale_)

    @property
    def max_std(self) -> float:
        """No posterior standard deviation exceeds this: the prior's (unit variance in normalised units)."""
        return self.y_std_

    def predict_mean(self, x: np.ndarray) -> np.ndarray:
        """The posterior mean alone at the rows of ``x``: no triangular solve, a fraction of ``predict``'s cost."""
        return self._cross_kernel(np.atleast_2d(np.asarray(x, float))).T @ self.alpha_ * self.y_std_ + self.y_mean_

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean and standard deviation (of the latent function) at the rows of ``x``."""
        x = np.atleast_2d(np.asarray(x, float))
        k_star = self._cross_kernel(x)
        mean = k_star.T @ self.alpha_  # line 4
        v = solve_triangular(self.L_, k_star, lower=True)  # line 5
        var = np.maximum(1.0 - np.sum(v**2, 0), 0.0)  # line 6, k(x*, x*) = 1
        return mean * self.y_std_ + self.y_mean_, np.sqrt(var) * self.y_std_


class GroupedGaussianProcess(GaussianProcess):
    """A length scale per group of feature columns: k(a, b) = exp(-sum_g |a_g - b_g|^2 / (2 l_g^2)).

    ``groups[j]`` is the group of column j (0..G-1, each used). ``length_scale_`` is an array of G length
    scales, chosen with the noise by maximising the log marginal likelihood (analytic gradients) from the
    best of a grid of equal-length-scale starts. With one-hot columns scaled by 1/sqrt(2), a group's squared
    distance is 1 where the two points differ in it, so the kernel is exp(-a weighted Hamming distance).
    """

    def __init__(
        self,
        groups: Sequence[int],
        length_scale: float = 1.0,
        noise: float = 1e-2,
        *,
        optimize: bool = True,
        length_scale_bounds: tuple[float, float] = (1e-2, 1e2),
        noise_bounds: tuple[float, float] = (1e-6, 1.0),
    ) -> None:
        super().__init__(
            length_scale,
            noise,
            optimize=optimize,
            length_scale_bounds=length_scale_bounds,
            noise_bounds=noise_bounds,
        )
        self.groups = np.asarray(groups, dtype=int)
        n_groups = int(self.groups.max()) + 1 if self.groups.size else 0
        if self.groups.ndim != 1 or not self.groups.size or set(self.groups.tolist()) != set(range(n_groups)):
            raise ValueError(f"groups must number the feature columns 0..G-1, each group used; got {list(groups)}")
        self._members = np.eye(n_groups)[self.groups]  # (p, G): column j belongs to group groups[j]
        self.length_scale = np.full(n_groups, float(length_scale))

    def _pair_d2(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Squared distance within each group, (n, m, G)."""
        if a.shape[1] != len(self.groups):
            raise ValueError(f"features have {a.shape[1]} columns but groups name {len(self.groups)}")
        return ((a[:, None, :] - b[None, :, :]) ** 2) @ self._members

    @staticmethod
    def _kernel(d2: np.ndarray, length_scale: Any) -> np.ndarray:
        return np.exp(-0.5 * (d2 @ (1.0 / np.asarray(length_scale) ** 2)))

    def _cross_kernel(self, x: np.ndarray) -> np.ndarray:
        scale = 1.0 / np.asarray(self.length_scale_)[self.groups]  # each column in units of its group's length scale
        return rbf(self.X_ * scale, x * scale, 1.0)

    def _best_hyperparameters(self) -> tuple[Any, float]:
        n_groups = self._d2.shape[2]
        eye = np.eye(len(self._d2))
        lo = [math.log(self.length_scale_bounds[0])] * n_groups + [math.log(self.noise_bounds[0])]
        hi = [math.log(self.length_scale_bounds[1])] * n_groups + [math.log(self.noise_bounds[1])]

        def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
            """Negative log marginal likelihood and its gradient in (log l_1..log l_G, log noise)."""
            inv_sq = np.exp(-2.0 * theta[:-1])
            noise = math.exp(theta[-1])
            kf = np.exp(-0.5 * (self._d2 @ inv_sq))
            try:
                chol = cholesky(kf + noise * eye, lower=True)
            except LinAlgError:
                return 1e25, np.zeros_like(theta)
            alpha = cho_solve((chol, True), self._y_norm)
            w = cho_solve((chol, True), eye) - np.outer(alpha, alpha)  # dNLL/dK = w / 2
            grad_l = 0.5 * np.einsum("ij,ijg->g", w * kf, self._d2) * inv_sq  # dK/dlog l_g = K * D_g / l_g^2
            return -_lml(self._y_norm, chol, alpha), np.append(grad_l, 0.5 * np.trace(w) * noise)

        total = self._d2.sum(axis=2)  # squared distance over all groups
        spread = np.sqrt(total[total > 0])
        base = float(np.median(spread)) if spread.size else 1.0
        starts = [
            np.clip([math.log(base * f)] * n_groups + [math.log(nz)], lo, hi)
            for f in (0.3, 1.0, 3.0)
            for nz in (1e-3, 1e-1)
        ]
        start = min(starts, key=lambda t: loss(np.asarray(t))[0])
        from scipy.optimize import minimize  # imported here: reading a log needs no optimiser

        result = minimize(loss, start, jac=True, method="L-BFGS-B", bounds=list(zip(lo, hi, strict=True)))
        theta = result.x if result.fun <= loss(np.asarray(start))[0] else start
        return np.exp(theta[:-1]), math.exp(theta[-1])

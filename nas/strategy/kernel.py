"""One positive semi-definite kernel over architectures, used both to fit and to predict.

Edit distances are not Euclidean, so ``exp(-d / l)`` on them need not be positive semi-definite,
and the original Auto-Keras fitted on one kernel (a Bourgain embedding of the training set) and
predicted with another. Here each architecture is embedded once, as its vector of distances to a
fixed set of anchor architectures (a Frechet embedding), and the kernel is the squared-exponential
kernel on those vectors:

    phi(a) = [d(a, r_1), ..., d(a, r_M)] / sqrt(M)
    k(a, b) = exp(-|phi(a) - phi(b)|^2 / (2 l^2))

It is an RBF kernel on explicit vectors, so every kernel matrix is PSD; it is a fixed function of
the pair, so fitting and predicting agree and a new observation adds one row. By the triangle
inequality ``|phi(a) - phi(b)| <= d(a, b)``, with equality in the anchor coordinates, so ``l`` is
in units of the edit distance. The anchors are random walks from the initial point, fixed by a
seed for the whole search.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import Any

import numpy as np


def rbf(x1: np.ndarray, x2: np.ndarray, length_scale: float) -> np.ndarray:
    """Squared-exponential kernel matrix between the rows of ``x1`` (n, p) and ``x2`` (m, p)."""
    sq = np.sum(x1**2, 1)[:, None] + np.sum(x2**2, 1)[None, :] - 2.0 * x1 @ x2.T
    return np.exp(-0.5 * np.maximum(sq, 0.0) / length_scale**2)


class AnchorEmbedding:
    """Descriptor -> vector of distances to fixed anchors; results are cached by descriptor.

    ``distances(descriptors, anchors)`` gives the (n, M) matrix of distances in one call, so the descriptors
    not seen before are embedded together (the morphism space computes them as arrays, not pair by pair).
    """

    def __init__(self, distances: Callable[[Sequence[Any], Sequence[Any]], np.ndarray], anchors: Sequence[Hashable]):
        if not anchors:
            raise ValueError("an anchor embedding needs at least one anchor")
        self.distances = distances
        self.anchors = tuple(anchors)
        self._cache: dict[Hashable, np.ndarray] = {}

    def __call__(self, descriptors: Sequence[Hashable]) -> np.ndarray:
        """(n, M) features of ``descriptors``; computes only those not seen before."""
        new = list(dict.fromkeys(d for d in descriptors if d not in self._cache))
        if new:
            rows = np.asarray(self.distances(new, self.anchors), dtype=float) * (1.0 / np.sqrt(len(self.anchors)))
            self._cache.update(zip(new, rows, strict=True))
        if not descriptors:
            return np.empty((0, len(self.anchors)))
        return np.vstack([self._cache[d] for d in descriptors])


def anchors_from_walks(space: Any, n_anchors: int, seed: int, max_walk: int = 8) -> list[Hashable]:
    """Descriptors of ``n_anchors`` random walks from ``space.initial()`` (lengths 0..max_walk), fixed by ``seed``."""
    rng = np.random.default_rng(seed)
    out = []
    for j in range(n_anchors):
        point = space.initial()
        for _ in range(j % (max_walk + 1)):
            moves = space.neighbours(point, rng, n=1, tries=4)
            if not moves:
                break
            point = moves[0][1]
        out.append(space.descriptor(point))
    return out

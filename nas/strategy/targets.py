"""The scale the surrogate fits scores on.

Scores of a search are skewed: a few degenerate networks (a cell of skip connections, a training
that diverged) score far below the rest. Fitted as they are, normalised by their mean and standard
deviation, those few set the GP's scale, and the differences that matter, among the best, drown
in its noise; the annealed acquisition search, whose temperature is in the surrogate's units, then
behaves differently on accuracies in percent and accuracies in [0, 1].

``rank`` fits the standard normal quantiles of the scores' ranks instead (a Gaussian copula): only
the order of the scores is kept, which is what choosing the next network needs, on the same scale
for every metric, dataset and budget. ``raw`` fits the scores as they are (searches logged before
the setting existed).
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

TARGETS = ("rank", "raw")


@dataclass(frozen=True)
class Targets:
    """The map from observed scores to the surrogate's targets, and back (for reporting predictions)."""

    kind: str
    scores: np.ndarray  # the distinct observed scores, ascending
    warped: np.ndarray  # their targets, ascending

    @staticmethod
    def fit(kind: str, scores: np.ndarray) -> Targets:
        """The map for ``scores`` (at least one); ValueError naming the choices for an unknown ``kind``."""
        if kind not in TARGETS:
            raise ValueError(f"unknown surrogate targets {kind!r}; choose one of {', '.join(TARGETS)}")
        distinct, counts = np.unique(np.asarray(scores, float), return_counts=True)
        if kind == "raw":
            return Targets(kind, distinct, distinct)
        ranks = np.cumsum(counts) - (counts - 1) / 2  # ties share their mean rank (1-based)
        quantile = NormalDist().inv_cdf
        return Targets(kind, distinct, np.array([quantile(q) for q in (ranks - 0.5) / counts.sum()]))

    def __call__(self, scores: np.ndarray) -> np.ndarray:
        """The targets of observed ``scores`` (each one of the scores the map was fitted on)."""
        y = np.asarray(scores, float)
        return y if self.kind == "raw" else self.warped[np.searchsorted(self.scores, y)]

    def to_scores(self, z: np.ndarray) -> np.ndarray:
        """Targets back to scores: piecewise linear through the observed pairs, the end slopes beyond them."""
        z = np.asarray(z, float)
        if self.kind == "raw":
            return z
        if len(self.scores) == 1:
            return np.full_like(z, self.scores[0])
        lo = (self.scores[1] - self.scores[0]) / (self.warped[1] - self.warped[0])
        hi = (self.scores[-1] - self.scores[-2]) / (self.warped[-1] - self.warped[-2])
        out = np.interp(z, self.warped, self.scores)
        out = np.where(z < self.warped[0], self.scores[0] + lo * (z - self.warped[0]), out)
        return np.where(z > self.warped[-1], self.scores[-1] + hi * (z - self.warped[-1]), out)

    def prediction(self, mean: float, std: float) -> tuple[float, float]:
        """A surrogate prediction (mean, std in targets) in score units: the mean mapped back, and half
        the width of the mapped interval mean +- std."""
        low, centre, high = self.to_scores(np.array([mean - std, mean, mean + std]))
        return float(centre), float(high - low) / 2

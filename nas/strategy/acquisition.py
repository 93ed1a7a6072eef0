"""UCB acquisition, optimised by best-first search with simulated annealing over morphism trees; or, in a
space small enough to list (NAS-Bench-201's 15,625 cells), expected improvement over every point.

As in Auto-Keras: a priority queue starts with the trained models; the most promising node is
expanded into random neighbours; a neighbour joins the queue when its acquisition beats its
parent's, or else with probability exp((acq - parent_acq) / t); the temperature t starts at t0 and
is multiplied by ``decay`` after every expansion until it falls below ``t_min``. The best
neighbour ever seen is the proposal, and it carries the chain of steps from its trained root.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.stats import norm

BETA = 2.576


@dataclass(frozen=True)
class AnnealingConfig:
    """Knobs of the acquisition search (Auto-Keras' defaults)."""

    beta: float = BETA
    t0: float = 1.0
    decay: float = 0.9
    t_min: float = 1e-4
    keep: int = 8  # neighbours kept per expansion
    tries: int = 16  # attempts to find them

    def __post_init__(self) -> None:
        if not (self.t0 > self.t_min > 0 and 0 < self.decay < 1):
            raise ValueError(f"annealing needs t0 > t_min > 0 and 0 < decay < 1, got {self}")
        if self.keep < 1 or self.tries < self.keep:
            raise ValueError(f"annealing needs 1 <= keep <= tries, got keep={self.keep}, tries={self.tries}")


def ucb(mean: np.ndarray, std: np.ndarray, beta: float = BETA) -> np.ndarray:
    """Upper confidence bound: mean + beta * std."""
    return mean + beta * std


def expected_improvement(mean: np.ndarray, std: np.ndarray, best: float) -> np.ndarray:
    """E[max(f - best, 0)] under f ~ N(mean, std^2); (mean - best) where std is 0."""
    std = np.asarray(std, float)
    gain = np.asarray(mean, float) - best
    safe = np.where(std > 0, std, 1.0)
    z = gain / safe
    return np.where(std > 0, gain * norm.cdf(z) + safe * norm.pdf(z), np.maximum(gain, 0.0))


@dataclass(frozen=True)
class Candidate:
    """A point reached from a trained root by a chain of steps, with its acquisition."""

    root_id: str
    steps: tuple[Any, ...]
    point: Any
    acquisition: float
    mean: float
    std: float


@dataclass(frozen=True)
class SearchResult:
    best: Candidate | None
    evaluated: int


def optimize_acquisition(
    space: Any,
    roots: Sequence[tuple[str, Any]],
    score: Callable[[Sequence[Any]], tuple[np.ndarray, np.ndarray]],
    excluded: set[str],
    rng: np.random.Generator,
    config: AnnealingConfig = AnnealingConfig(),
) -> SearchResult:
    """The neighbour of the trained ``roots`` (model id, point) with the highest UCB.

    ``score(points)`` returns the surrogate's (mean, std). Points whose id is in ``excluded``
    (trained, pending, or already proposed) are never proposed, but the search may pass through
    them to reach new points.
    """
    seen = {point.id for _, point in roots}  # expanded or queued once at most
    counter = 0  # tie-breaker, so the heap never compares points
    heap: list[tuple[float, int, Candidate]] = []
    mean, std = score([p for _, p in roots])
    for (root_id, point), m, s in zip(roots, mean, std, strict=True):
        acq = float(ucb(m, s, config.beta))
        heapq.heappush(heap, (-acq, counter, Candidate(root_id, (), point, acq, float(m), float(s))))
        counter += 1
    best: Candidate | None = None
    evaluated = 0
    t = config.t0
    while heap and t > config.t_min:
        _, _, node = heapq.heappop(heap)
        fresh = []
        for step, child in space.neighbours(node.point, rng, n=config.keep, tries=config.tries):
            if child.id not in seen:
                seen.add(child.id)
                fresh.append((step, child))
        if fresh:
            mean, std = score([c for _, c in fresh])
            evaluated += len(fresh)
            for (step, child), m, s in zip(fresh, mean, std, strict=True):
                acq = float(ucb(m, s, config.beta))
                cand = Candidate(node.root_id, (*node.steps, step), child, acq, float(m), float(s))
                if child.id not in excluded and (best is None or acq > best.acquisition):
                    best = cand
                if acq >= node.acquisition or rng.random() < math.exp((acq - node.acquisition) / t):
                    heapq.heappush(heap, (-acq, counter, cand))
                    counter += 1
        t *= config.decay
    return SearchResult(best, evaluated)


def maximize_over_space(
    space: Any,
    roots: Sequence[tuple[str, Any]],
    score: Callable[[Sequence[Any]], tuple[np.ndarray, np.ndarray]],
    excluded: set[str],
    best: float,
) -> SearchResult:
    """The point of the whole space (``space.points()``) not in ``excluded`` with the highest expected
    improvement over ``best``; it carries the steps from its nearest trained root (the first on ties)."""
    points = space.points()
    mean, std = score(points)
    acq = expected_improvement(mean, std, best)
    acq[[p.id in excluded for p in points]] = -np.inf
    i = int(np.argmax(acq))
    if not np.isfinite(acq[i]):
        return SearchResult(None, len(points))
    point = points[i]
    near = np.asarray(space.distances([space.descriptor(point)], [space.descriptor(p) for _, p in roots]))[0]
    root_id, root = roots[int(np.argmin(near))]
    found = Candidate(root_id, space.steps(root, point), point, float(acq[i]), float(mean[i]), float(std[i]))
    return SearchResult(found, len(points))

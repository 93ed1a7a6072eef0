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
    """The neighbour of the trained ``roots`` (model id, point) with the highest acquisition: UCB with
    ``config.beta``.

    ``score(points)`` returns the surrogate's (mean, std). Points whose id is in ``excluded``
    (trained, pending, or already proposed) are never proposed, but the search may pass through
    them to reach new points.
    """
    seen = {point.id for _, point in roots}  # expanded or queued once at most
    counter = 0  # tie-breaker, so the heap never compares points
    heap: list[tuple[float, int, Candidate]] = []
    mean, std = score([p for _, p in roots])
    values = ucb(mean, std, config.beta)
    for (root_id, point), m, s, acq in zip(roots, mean, std, values.tolist(), strict=True):
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
            values = ucb(mean, std, config.beta)
            evaluated += len(fresh)
            for (step, child), m, s, acq in zip(fresh, mean, std, values.tolist(), strict=True):
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
    gp: Any,
    excluded: set[str],
    best: float,
    chunk: int = 512,
) -> SearchResult:
    """The point of the whole space (``space.points()``, features ``space.encode``) not in ``excluded`` with the
    highest expected improvement over ``best`` under ``gp`` (the first in the space's order on ties); it
    carries the steps from its nearest trained root (the first on ties).

    Exact, with less work than scoring every point: every point's posterior mean is computed, but its standard
    deviation (a triangular solve, the costly part) only while the expected improvement it would have with the
    largest possible deviation (``gp.max_std``; EI grows with both mean and deviation) can still reach the
    best one found, visiting points by that bound in chunks of ``chunk``.
    """
    points = space.points()
    x = np.asarray(space.encode(points), float)
    mean = np.concatenate([gp.predict_mean(x[i : i + 4 * chunk]) for i in range(0, len(x), 4 * chunk)])  # in blocks:
    bound = expected_improvement(mean, np.full(len(points), gp.max_std), best)  # small temporaries, warm memory
    bound[[p.id in excluded for p in points]] = -np.inf
    order = np.argsort(-bound, kind="stable")
    top: tuple[float, int, float, float] | None = None  # (acquisition, index, mean, std)
    for first in range(0, len(order), chunk):
        idx = np.sort(order[first : first + chunk])
        edge = float(np.max(bound[idx]))
        if not np.isfinite(edge) or (top is not None and edge < top[0] - 1e-12 * abs(top[0])):
            break  # no point left can beat the best found
        mean, std = gp.predict(x[idx])
        acq = expected_improvement(mean, std, best)
        acq[~np.isfinite(bound[idx])] = -np.inf
        j = int(np.argmax(acq))
        if np.isfinite(acq[j]) and (top is None or (acq[j], -idx[j]) > (top[0], -top[1])):
            top = (float(acq[j]), int(idx[j]), float(mean[j]), float(std[j]))
    if top is None:
        return SearchResult(None, len(points))
    acq_top, i, mean_top, std_top = top
    point = points[i]
    near = np.asarray(space.distances([space.descriptor(point)], [space.descriptor(p) for _, p in roots]))[0]
    root_id, root = roots[int(np.argmin(near))]
    return SearchResult(Candidate(root_id, space.steps(root, point), point, acq_top, mean_top, std_top), len(points))

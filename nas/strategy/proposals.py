"""What every strategy reads and returns: the observations and pending points it is given (``History``), the
points it names (``Proposal``, in a ``Batch`` with the surrogate ``Refit`` it used), and the ``Proposer``
interface, ``propose(history, k, rng)``. Proposers hold no history of their own: every call reads the
``History`` it is given (in a search, the state rebuilt from the event log) and a random generator, so the same
history and seed give the same proposals."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

import numpy as np

from nas.strategy.space import SearchSpace


@dataclass(frozen=True)
class Observation:
    """A trained model: its id, its point in the space, and its score (higher is better)."""

    model_id: str
    point: Any
    score: float


@dataclass(frozen=True)
class History:
    """What a proposer may read: trained models in the order they finished, pending points, all seen ids."""

    observations: tuple[Observation, ...] = ()
    pending: tuple[Any, ...] = ()
    seen: frozenset[str] = frozenset()  # ids of every point ever proposed (never propose one twice)
    # measurements the budget still allows, the ones proposed now included; None where the budget is not a
    # count (a search stopped by wall clock)
    remaining: int | None = None

    def excluded(self) -> set[str]:
        return set(self.seen) | {o.point.id for o in self.observations} | {p.id for p in self.pending}


@dataclass(frozen=True)
class Proposal:
    """One point to train, how it was reached, and what the proposer thought of it."""

    parent_id: str | None
    steps: tuple[Any, ...]
    point: Any
    acquisition: float | None = None
    mean: float | None = None
    std: float | None = None
    candidates: int = 0
    seconds: float = 0.0


@dataclass(frozen=True)
class Refit:
    """A surrogate refit: how many observations it fitted, the chosen hyperparameters, the fit quality, the time."""

    observations: int
    length_scale: float
    noise: float
    log_marginal_likelihood: float
    seconds: float


@dataclass(frozen=True)
class Batch:
    proposals: list[Proposal]
    refit: Refit | None = None


class Proposer(Protocol):
    def propose(self, history: History, k: int, rng: np.random.Generator) -> Batch: ...


def best_per_point(observations: Sequence[Observation]) -> list[Observation]:
    """Each point's best observation (its first on ties), in the order the points were first observed."""
    best: dict[str, Observation] = {}
    for o in observations:
        if o.point.id not in best or o.score > best[o.point.id].score:
            best[o.point.id] = o
    return list(best.values())


def leader(history: History) -> Observation | None:
    """The best observation of the point whose best score is highest (the first observed on ties), or None when
    nothing is observed yet or that point is pending (being trained further already)."""
    if not history.observations:
        return None
    best = max(best_per_point(history.observations), key=lambda o: o.score)
    return None if best.point.id in {p.id for p in history.pending} else best


def first_proposal(
    space: SearchSpace[Any], history: History, rng: np.random.Generator, taken: set[str]
) -> Proposal | None:
    """With nothing trained yet: the initial point, else a random walk from it."""
    start = space.initial()
    point = start
    steps: tuple[Any, ...] = ()
    for _ in range(32):
        if point.id not in taken:
            return Proposal(None, steps, point)
        moves = space.neighbours(start, rng, n=1, tries=4)
        if not moves:
            return None
        steps, point = (moves[0][0],), moves[0][1]
    return None


def random_chain(
    space: SearchSpace[Any], parent: Observation, rng: np.random.Generator, length: int, taken: set[str]
) -> Proposal | None:
    """A chain of up to ``length`` random steps from ``parent``'s point to a point not in ``taken``, or None."""
    point, steps = parent.point, []
    for _ in range(length):
        moves = space.neighbours(point, rng, n=1, tries=4)
        if not moves:
            break
        step, point = moves[0]
        steps.append(step)
    if steps and point.id not in taken:
        return Proposal(parent.model_id, tuple(steps), point)
    return None


def fill(
    history: History,
    k: int,
    rng: np.random.Generator,
    space: SearchSpace[Any],
    pick: Callable[[set[str]], Proposal | None],
    attempts: int = 64,
) -> list[Proposal]:
    """Up to k distinct proposals from ``pick(taken)``, starting with the initial point when nothing is trained."""
    taken = history.excluded()
    out: list[Proposal] = []
    for _ in range(attempts):
        if len(out) == k:
            break
        start = time.perf_counter()
        p = first_proposal(space, history, rng, taken) if not history.observations else pick(taken)
        if p is not None:
            out.append(replace(p, seconds=time.perf_counter() - start))
            taken.add(p.point.id)
    return out

"""Proposers: given what has been observed so far, name the next architectures to train.

They hold no history of their own: every call reads the ``History`` it is given (in a search,
the state rebuilt from the event log) and a random generator, so the same history and seed give
the same proposals. Three strategies share one interface, ``propose(history, k, rng)``:

- ``bayesian``: Auto-Keras. A GP on the anchor-embedded edit distance (fitted to the scores' rank
  quantiles, see ``targets``), UCB optimised by annealed best-first search over morphism trees;
  k > 1 proposals fantasise the pending ones (kriging believer: each is added to the GP at its
  predicted mean). A space that can encode its points (``encode``, ``groups``) gets the exact
  edit-distance kernel with a length scale per group instead of the anchor embedding, and one that
  can list them all (``points``, ``steps``) gets expected improvement maximised over every point.
  In a space that can measure a point again (``remeasurable``), a point leads only once measured
  ``confirm`` times: while the point of highest mean score has fewer, it is proposed again first
  (a re-measurement: its own model as parent, no steps), so one lucky training cannot win the search.
  Where the history says how many measurements the budget has left (``History.remaining``), the last
  ``identify`` share of them tells the best few points apart: while a rival's confidence band reaches
  the leader's, the least-measured of them is measured again instead of a new point.
  In a space where proposing a trained point again trains its model further (``continuable``), a
  point's score is its best training's: the GP sees each point once, and morphisms start from the
  model that scored it. ``continuation`` names the model a search should train further first.
  With ``rates``, each proposal also chooses the learning rate its training starts from: the GP reads the log
  rate as one more group of the kernel (``features``) and each candidate network gets the rate of highest
  acquisition (``best_rates``).
- ``random``: a random chain of 1 to ``max_chain`` steps from a random trained model (with ``rates``, at a
  rate drawn from them).
- ``evolution``: regularised evolution. Tournament of ``sample`` among the ``population`` most
  recent trained models; the winner's one-step mutation is the child; older ones age out. With ``rates`` the
  child's rate is the winner's, mutated (``mutated_rate``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import numpy as np

from nas.strategy.acquisition import (
    AnnealingConfig,
    maximize_over_space,
    optimize_acquisition,
    ucb,
)
from nas.strategy.gp import GaussianProcess, GroupedGaussianProcess
from nas.strategy.kernel import AnchorEmbedding, anchors_from_walks
from nas.strategy.targets import Targets

STRATEGIES = ("bayesian", "random", "evolution")
CONTENDERS = 5  # the best points, by mean score, that the end of a counted budget tells apart
MAX_MEASUREMENTS = 6  # a point is measured at most this often while they are told apart
CLEAR_LEAD = 2.0  # a new leader ahead of the runner-up by more than this many noise deviations is not confirmed


@dataclass(frozen=True)
class Observation:
    """A trained model: its id, its point in the space, and its score (higher is better)."""

    model_id: str
    point: Any
    score: float
    rate: float | None = None  # the learning rate its proposal chose; None: the configured one


@dataclass(frozen=True)
class History:
    """What a proposer may read: trained models in the order they finished, pending points, all seen ids."""

    observations: tuple[Observation, ...] = ()
    pending: tuple[Any, ...] = ()
    seen: frozenset[str] = frozenset()  # ids of every point ever proposed (never propose one twice)
    # measurements the budget still allows, the ones proposed now included; None where the budget is not a
    # count (a search stopped by wall clock)
    remaining: int | None = None
    # the learning rates chosen for the first pending points (the rest, and every one where this is shorter: None,
    # the configured rate)
    pending_rates: tuple[float | None, ...] = ()

    def excluded(self) -> set[str]:
        return set(self.seen) | {o.point.id for o in self.observations} | {p.id for p in self.pending}

    def rate_of_pending(self, i: int) -> float | None:
        """The learning rate chosen for ``pending[i]`` (None: the configured one)."""
        return self.pending_rates[i] if i < len(self.pending_rates) else None


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
    learning_rate: float | None = None  # chosen with the steps (a proposer's ``rates``); None: the configured one


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


def _first_proposal(space: Any, history: History, rng: np.random.Generator, taken: set[str]) -> Proposal | None:
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


def _random_chain(
    space: Any, parent: Observation, rng: np.random.Generator, length: int, taken: set[str]
) -> Proposal | None:
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


def _fill(
    history: History, k: int, rng: np.random.Generator, space: Any, pick: Any, attempts: int = 64
) -> list[Proposal]:
    """Up to k distinct proposals from ``pick(taken)``, starting with the initial point when nothing is trained."""
    taken = history.excluded()
    out: list[Proposal] = []
    for _ in range(attempts):
        if len(out) == k:
            break
        start = time.perf_counter()
        p = _first_proposal(space, history, rng, taken) if not history.observations else pick(taken)
        if p is not None:
            out.append(replace(p, seconds=time.perf_counter() - start))
            taken.add(p.point.id)
    return out


def _check_rates(rates: Sequence[float]) -> None:
    if not all(r > 0 for r in rates):
        raise ValueError(f"learning rates must be positive, got {list(rates)}")


def mutated_rate(rates: Sequence[float], rate: float, rng: np.random.Generator) -> float:
    """An evolved child's learning rate: of ``rates``, the one nearest its parent's ``rate`` on a log scale (the
    smaller on ties), moved to a neighbour in sorted order (up or down by lot, staying at an end) with probability
    1/2."""
    ordered = sorted(rates)
    i = int(np.argmin(np.abs(np.log(ordered) - np.log(rate))))
    if rng.random() < 0.5:
        i = min(max(i + (1 if rng.random() < 0.5 else -1), 0), len(ordered) - 1)
    return ordered[i]


@dataclass(frozen=True)
class RandomProposer:
    """Random morphism chains from random trained models; with ``rates``, each at a rate drawn from them."""

    space: Any
    max_chain: int = 3
    rates: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        _check_rates(self.rates)

    def propose(self, history: History, k: int, rng: np.random.Generator) -> Batch:
        def pick(taken: set[str]) -> Proposal | None:
            parent = history.observations[int(rng.integers(len(history.observations)))]
            p = _random_chain(self.space, parent, rng, int(rng.integers(1, self.max_chain + 1)), taken)
            if p is None or not self.rates:
                return p
            return replace(p, learning_rate=self.rates[int(rng.integers(len(self.rates)))])

        return Batch(_fill(history, k, rng, self.space, pick))


@dataclass(frozen=True)
class EvolutionProposer:
    """Regularised evolution (Real et al. 2019) with morphisms as mutations; with ``rates``, a child's learning rate
    is its parent's mutated (``mutated_rate``; a parent whose proposal chose none had ``base_rate``)."""

    space: Any
    population: int = 20
    sample: int = 5
    rates: tuple[float, ...] = ()
    base_rate: float = 1e-3

    def __post_init__(self) -> None:
        _check_rates((*self.rates, self.base_rate))

    def propose(self, history: History, k: int, rng: np.random.Generator) -> Batch:
        def pick(taken: set[str]) -> Proposal | None:
            alive = history.observations[-self.population :]  # the oldest age out
            idx = rng.choice(len(alive), size=min(self.sample, len(alive)), replace=False)
            winner = max((alive[int(i)] for i in idx), key=lambda o: o.score)
            p = _random_chain(self.space, winner, rng, 1, taken)
            if p is None or not self.rates:
                return p
            parent_rate = self.base_rate if winner.rate is None else winner.rate
            return replace(p, learning_rate=mutated_rate(self.rates, parent_rate, rng))

        return Batch(_fill(history, k, rng, self.space, pick))


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


def continuation(history: History) -> Observation | None:
    """The model to train further before anything new, in a ``continuable`` space, or None: the ``leader`` when
    its point has been trained only once, or when its latest training set its best score (it still gains). A
    lineage that stops gaining is left to the morphisms; a new leader is trained further again."""
    best = leader(history)
    if best is None:
        return None
    latest = [o for o in history.observations if o.point.id == best.point.id][-1]
    return best if latest is best else None


def _one_length_scale(length_scale: Any) -> float:
    """The GP's length scale, or the geometric mean of its length scales per group (what a refit logs)."""
    if np.ndim(length_scale) == 0:
        return float(length_scale)
    return float(np.exp(np.mean(np.log(length_scale))))


@dataclass
class BayesianProposer:
    """Auto-Keras' proposer: GP on the edit-distance embedding + annealed UCB search.

    The anchor embedding is fixed by ``anchor_seed`` and caches features by descriptor; it is a
    cache only, rebuilt identically from the same space and seed. In a space with ``encode`` the GP
    reads its encoding with a length scale per group of columns (``groups``), refitted every time
    (logged hyperparameters hold one length scale); in a space with ``points`` the proposal is the
    point of highest expected improvement of the whole space.
    """

    space: Any
    annealing: AnnealingConfig = field(default_factory=AnnealingConfig)
    n_anchors: int = 32
    anchor_seed: int = 0
    _embedding: AnchorEmbedding | None = field(default=None, repr=False)
    # (length scale, noise) from a logged refit: propose with them instead of refitting
    hyperparameters: tuple[float, float] | None = None
    targets: str = "rank"  # the scale the GP fits scores on (nas.strategy.targets); "raw" for older logs
    confirm: int = 2  # measurements a point needs to lead, in a space that is ``remeasurable``
    identify: float = 0.1  # the final share of a counted budget spent re-measuring contenders, same spaces
    # learning rates each proposal chooses among, jointly with its morphisms (see ``features``); (): none chosen
    rates: tuple[float, ...] = ()
    base_rate: float = 1e-3  # the rate of an observation whose proposal chose none (the configured one)
    # where every score the GP fits is the same, propose random chains (``RandomProposer``, at rates by lot) instead
    # of the acquisition's choice (see ``propose``); a search sets it where it chooses rates
    random_without_signal: bool = False

    def __post_init__(self) -> None:
        if self.confirm < 1:
            raise ValueError(f"confirm must be at least 1 measurement, got {self.confirm}")
        if not 0 <= self.identify < 1:
            raise ValueError(f"identify must be a share of the budget in [0, 1), got {self.identify}")
        _check_rates((*self.rates, self.base_rate))
        if self.rates and hasattr(self.space, "points"):
            raise ValueError("learning rates are chosen in a space of trainable networks only, not in a table's")

    @property
    def embedding(self) -> AnchorEmbedding:
        if self._embedding is None:
            anchors = anchors_from_walks(self.space, self.n_anchors, self.anchor_seed)
            self._embedding = AnchorEmbedding(self.space.distances, anchors)
        return self._embedding

    def _point_features(self, points: Sequence[Any]) -> np.ndarray:
        if hasattr(self.space, "encode"):
            return np.asarray(self.space.encode(points), float)
        return self.embedding([self.space.descriptor(p) for p in points])

    def features(self, points: Sequence[Any], rates: Sequence[float | None] | None = None) -> np.ndarray:
        """What the GP reads of ``points``: the space's encoding or the anchor embedding of the edit distance, and
        where the proposer chooses learning rates, one more column: the natural log of each point's rate (None, or
        no ``rates``: ``base_rate``). That column is a group of its own, with its own length scale, so the kernel is
        exp(-|embedding difference|^2 / (2 l_a^2) - (log rate ratio)^2 / (2 l_r^2)), both chosen by marginal
        likelihood: the edit distance plus a distance on the rate."""
        x = self._point_features(points)
        if not self.rates:
            return x
        given = [None] * len(points) if rates is None else list(rates)
        return np.column_stack([x, np.log([self.base_rate if r is None else r for r in given])])

    def _gp(self) -> GaussianProcess:
        """A GP to fit, hyperparameters by marginal likelihood."""
        groups = list(self.space.groups) if hasattr(self.space, "groups") else None
        if self.rates:
            columns = groups if groups is not None else [0] * len(self.embedding.anchors)
            return GroupedGaussianProcess([*columns, max(columns) + 1])
        return GroupedGaussianProcess(groups) if groups is not None else GaussianProcess()

    def best_rates(self, gp: GaussianProcess, points: Sequence[Any]) -> tuple[list[float], np.ndarray, np.ndarray]:
        """For each of ``points``, the rate of ``rates`` with the highest acquisition (UCB with the annealing's
        beta; the first listed on ties), and the GP's mean and deviation at it."""
        x = self._point_features(points)
        n, k = len(points), len(self.rates)
        grid = np.vstack([np.column_stack([x, np.full(n, np.log(r))]) for r in self.rates])
        mean, std = (a.reshape(k, n) for a in gp.predict(grid))
        values = ucb(mean, std, self.annealing.beta)
        best = np.argmax(np.reshape(values, (k, n)), axis=0)
        cols = np.arange(n)
        return [self.rates[i] for i in best], mean[best, cols], std[best, cols]

    def observed(self, history: History) -> Sequence[Observation]:
        """What the GP fits: every observation, or in a ``continuable`` space each point's best."""
        if getattr(self.space, "continuable", False):
            return best_per_point(history.observations)
        return history.observations

    def _data(self, history: History) -> tuple[np.ndarray, np.ndarray]:
        """Features and surrogate targets of what the GP fits (``observed``)."""
        observed = self.observed(history)
        scores = np.array([o.score for o in observed])
        x = self.features([o.point for o in observed], [o.rate for o in observed])
        return x, Targets.fit(self.targets, scores)(scores)

    def refit(self, history: History) -> tuple[GaussianProcess, Refit]:
        """The GP on what it fits (``observed``: no observation dropped), hyperparameters by marginal likelihood."""
        start = time.perf_counter()
        x, y = self._data(history)
        gp = self._gp().fit(x, y)
        info = Refit(
            len(x),
            _one_length_scale(gp.length_scale_),
            gp.noise_,
            gp.log_marginal_likelihood_value_,
            time.perf_counter() - start,
        )
        return gp, info

    def surrogate(self, history: History) -> tuple[GaussianProcess, Refit | None]:
        """The GP on ``history``: with the given hyperparameters if any, else refitted (and the refit)."""
        if self.hyperparameters is None or hasattr(self.space, "groups") or self.rates:
            return self.refit(history)
        x, y = self._data(history)
        length_scale, noise = self.hyperparameters
        return GaussianProcess(length_scale, noise, optimize=False).fit(x, y), None

    def remeasure(self, history: History) -> Observation | None:
        """In a ``remeasurable`` space, the point to measure again before anything new (its latest observation),
        or None. First the point of highest mean score (the first observed on ties) while it has fewer than
        ``confirm`` measurements, unless its lead over the runner-up is clear: more than ``CLEAR_LEAD`` times
        sigma * sqrt(1 / n_leader + 1 / n_runner_up), where sigma is the measurement noise pooled over the points
        measured more than once (known once there are 2 degrees of freedom). Then, in the last ``identify``
        share of a counted budget, the least-measured (highest mean on ties) of the ``CONTENDERS`` best points
        whose band, mean + sigma / sqrt(n), reaches the leader's mean - sigma / sqrt(n), where there is such a
        rival; a point is measured at most ``MAX_MEASUREMENTS`` times. A pending point is never proposed
        again."""
        if not getattr(self.space, "remeasurable", False) or not history.observations:
            return None
        scores: dict[str, list[float]] = {}
        latest: dict[str, Observation] = {}
        for o in history.observations:
            scores.setdefault(o.point.id, []).append(o.score)
            latest[o.point.id] = o
        pending = {p.id for p in history.pending}
        means = {i: float(np.mean(s)) for i, s in scores.items()}
        ranked = sorted(means, key=lambda i: -means[i])  # stable: the first observed leads a tie
        lead = ranked[0]
        dof = sum(len(s) - 1 for s in scores.values())
        sigma = (
            float(np.sqrt(sum(float(np.sum((np.array(s) - np.mean(s)) ** 2)) for s in scores.values()) / dof))
            if dof >= 2
            else None
        )
        if len(scores[lead]) < self.confirm:
            second = ranked[1] if len(ranked) > 1 else None
            clear = (
                sigma is not None
                and second is not None
                and means[lead] - means[second]
                > CLEAR_LEAD * sigma * np.sqrt(1 / len(scores[lead]) + 1 / len(scores[second]))
            )
            if not clear:
                return None if lead in pending else latest[lead]
        if history.remaining is None:
            return None
        budget = len(history.observations) + len(history.pending) + history.remaining
        if history.remaining > self.identify * budget or sigma is None:
            return None
        half = {i: sigma / np.sqrt(len(scores[i])) for i in ranked[:CONTENDERS]}
        band = [i for i in half if means[i] + half[i] >= means[lead] - half[lead]]
        open_ = [i for i in band if i not in pending and len(scores[i]) < MAX_MEASUREMENTS]
        if len(band) < 2 or not open_:
            return None
        return latest[min(open_, key=lambda i: len(scores[i]))]

    def _random(self) -> RandomProposer:
        """The random walk a proposal falls back to."""
        return RandomProposer(self.space, rates=self.rates)

    def propose(self, history: History, k: int, rng: np.random.Generator) -> Batch:
        """Up to ``k`` proposals and the refit they used. With ``random_without_signal``, where every score the GP
        fits is the same it has nothing to rank networks (or rates) by: its mean is flat and the acquisition grows
        with the distance from what was trained alone, so the tree search would walk as far as its schedule lets
        it. Those proposals are random chains instead, as the random walk's. Measured where rates are chosen, whose
        unobserved values add to that deviation: 37 morphisms from two tied scores, 17 times the initial network's
        work per example, where the same state without rates gave 2."""
        if not history.observations:
            return Batch(_fill(history, k, rng, self.space, None))
        gp, info = self.surrogate(history)
        if self.random_without_signal and len({o.score for o in self.observed(history)}) == 1:
            return Batch(self._random().propose(history, k, rng).proposals, info)
        targets = Targets.fit(self.targets, np.array([o.score for o in self.observed(history)]))
        for i, point in enumerate(history.pending):  # kriging believer: a pending point counts as its predicted mean
            x = self.features([point], [history.rate_of_pending(i)])
            gp.add(x[0], float(gp.predict(x)[0][0]))
        taken = history.excluded()
        roots = [(o.model_id, o.point) for o in self.observed(history)]
        out: list[Proposal] = []
        leader = self.remeasure(history) if k > 0 else None
        if leader is not None:  # measure it again before anything new
            start = time.perf_counter()
            x = self.features([leader.point], [leader.rate])
            (m,), (s,) = gp.predict(x)
            mean, std = targets.prediction(float(m), float(s))
            seconds = time.perf_counter() - start
            out.append(Proposal(leader.model_id, (), leader.point, None, mean, std, 0, seconds, leader.rate))
            gp.add(x[0], float(m))
        while len(out) < k:
            start = time.perf_counter()

            def score(points: Sequence[Any], gp: GaussianProcess = gp) -> tuple[np.ndarray, np.ndarray]:
                """The GP's mean and deviation at each point, at its best rate where rates are chosen."""
                if self.rates:
                    return self.best_rates(gp, points)[1:]
                return gp.predict(self.features(points))

            if hasattr(self.space, "points"):
                found = maximize_over_space(self.space, roots, gp, taken, float(np.max(gp.y_)))
            else:
                found = optimize_acquisition(self.space, roots, score, taken, rng, self.annealing)
            if found.best is None:  # the neighbourhood is exhausted: fall back to a random chain
                extra = (
                    self._random()
                    .propose(
                        History(history.observations, (*history.pending, *(p.point for p in out)), frozenset(taken)),
                        1,
                        rng,
                    )
                    .proposals
                )
                if not extra:
                    break
                out.extend(extra)
                taken.add(extra[0].point.id)
                continue
            b = found.best
            rate = self.best_rates(gp, [b.point])[0][0] if self.rates else None
            mean, std = targets.prediction(b.mean, b.std)  # the acquisition stays in the surrogate's units
            seconds = time.perf_counter() - start
            out.append(Proposal(b.root_id, b.steps, b.point, b.acquisition, mean, std, found.evaluated, seconds, rate))
            taken.add(b.point.id)
            gp.add(self.features([b.point], [rate])[0], b.mean)  # fantasise it so the next proposal differs
        return Batch(out, info)


def make_proposer(strategy: str, space: Any, **options: Any) -> Proposer:
    """The proposer named ``strategy``; ValueError naming the choices otherwise."""
    classes = {"bayesian": BayesianProposer, "random": RandomProposer, "evolution": EvolutionProposer}
    if strategy not in classes:
        raise ValueError(f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    return classes[strategy](space, **options)

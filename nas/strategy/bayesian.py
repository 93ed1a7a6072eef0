"""The ``bayesian`` strategy, Auto-Keras' proposer: a GP on the anchor-embedded edit distance (fitted to the
scores' rank quantiles, see ``targets``), UCB optimised by annealed best-first search over morphism trees; k > 1
proposals fantasise the pending ones (kriging believer: each is added to the GP at its predicted mean).

What the space says (``SearchSpace``) changes three things:
- a space with an encoding of its own (``groups``, ``encode``) gets the exact kernel with a length scale per
  group instead of the anchor embedding, and one that lists every point (``points``, ``steps``) gets expected
  improvement maximised over all of them;
- in a ``remeasurable`` space a point leads only once measured ``confirm`` times: while the point of highest
  mean score has fewer, it is proposed again first (a re-measurement: its own model as parent, no steps), so one
  lucky training cannot win the search. Where the history says how many measurements the budget has left
  (``History.remaining``), the last ``identify`` share of them tells the best few points apart: while a rival's
  confidence band reaches the leader's, the least-measured of them is measured again instead of a new point;
- in a ``continuable`` space, where proposing a trained point again trains its model further, a point's score is
  its best training's: the GP sees each point once, and morphisms start from the model that scored it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from nas.strategy.acquisition import AnnealingConfig, maximize_over_space, optimize_acquisition
from nas.strategy.gp import GaussianProcess, GroupedGaussianProcess
from nas.strategy.kernel import AnchorEmbedding, anchors_from_walks
from nas.strategy.proposals import Batch, History, Observation, Proposal, Refit, best_per_point, fill
from nas.strategy.random_walk import RandomProposer
from nas.strategy.space import SearchSpace
from nas.strategy.targets import Targets

CONTENDERS = 5  # the best points, by mean score, that the end of a counted budget tells apart
MAX_MEASUREMENTS = 6  # a point is measured at most this often while they are told apart
CLEAR_LEAD = 2.0  # a new leader ahead of the runner-up by more than this many noise deviations is not confirmed


def _one_length_scale(length_scale: Any) -> float:
    """The GP's length scale, or the geometric mean of its length scales per group (what a refit logs)."""
    if np.ndim(length_scale) == 0:
        return float(length_scale)
    return float(np.exp(np.mean(np.log(length_scale))))


@dataclass
class BayesianProposer:
    """Auto-Keras' proposer: GP on the edit-distance embedding + annealed UCB search.

    The anchor embedding is fixed by ``anchor_seed`` and caches features by descriptor; it is a
    cache only, rebuilt identically from the same space and seed. In a space with an encoding the GP
    reads it with a length scale per group of columns, refitted every time (logged hyperparameters hold
    one length scale).
    """

    space: SearchSpace[Any]
    annealing: AnnealingConfig = field(default_factory=AnnealingConfig)
    n_anchors: int = 32
    anchor_seed: int = 0
    _embedding: AnchorEmbedding | None = field(default=None, repr=False)
    # (length scale, noise) from a logged refit: propose with them instead of refitting
    hyperparameters: tuple[float, float] | None = None
    targets: str = "rank"  # the scale the GP fits scores on (nas.strategy.targets); "raw" for older logs
    confirm: int = 2  # measurements a point needs to lead, in a space that is ``remeasurable``
    identify: float = 0.1  # the final share of a counted budget spent re-measuring contenders, same spaces

    def __post_init__(self) -> None:
        if self.confirm < 1:
            raise ValueError(f"confirm must be at least 1 measurement, got {self.confirm}")
        if not 0 <= self.identify < 1:
            raise ValueError(f"identify must be a share of the budget in [0, 1), got {self.identify}")

    @property
    def embedding(self) -> AnchorEmbedding:
        if self._embedding is None:
            anchors = anchors_from_walks(self.space, self.n_anchors, self.anchor_seed)
            self._embedding = AnchorEmbedding(self.space.distances, anchors)
        return self._embedding

    def features(self, points: Sequence[Any]) -> np.ndarray:
        """What the GP reads of ``points``: the space's encoding, or the anchor embedding of the edit distance."""
        if self.space.groups is not None:
            return np.asarray(self.space.encode(points), float)
        return self.embedding([self.space.descriptor(p) for p in points])

    def _gp(self) -> GaussianProcess:
        """A GP to fit, hyperparameters by marginal likelihood."""
        groups = self.space.groups
        return GroupedGaussianProcess(list(groups)) if groups is not None else GaussianProcess()

    def observed(self, history: History) -> Sequence[Observation]:
        """What the GP fits: every observation, or in a ``continuable`` space each point's best."""
        if self.space.continuable:
            return best_per_point(history.observations)
        return history.observations

    def _data(self, history: History) -> tuple[np.ndarray, np.ndarray]:
        """Features and surrogate targets of what the GP fits (``observed``)."""
        observed = self.observed(history)
        scores = np.array([o.score for o in observed])
        x = self.features([o.point for o in observed])
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
        """The GP on ``history``: with the given hyperparameters if any, else refitted (and the refit). A space with
        groups is always refitted: a log holds one length scale, not one per group."""
        if self.hyperparameters is None or self.space.groups is not None:
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
        if not self.space.remeasurable or not history.observations:
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

    def propose(self, history: History, k: int, rng: np.random.Generator) -> Batch:
        """Up to ``k`` proposals and the refit they used."""
        if not history.observations:
            return Batch(fill(history, k, rng, self.space, lambda taken: None))
        gp, info = self.surrogate(history)
        targets = Targets.fit(self.targets, np.array([o.score for o in self.observed(history)]))
        for point in history.pending:  # kriging believer: a pending point counts as its predicted mean
            x = self.features([point])
            gp.add(x[0], float(gp.predict(x)[0][0]))
        taken = history.excluded()
        roots = [(o.model_id, o.point) for o in self.observed(history)]
        out: list[Proposal] = []
        leader = self.remeasure(history) if k > 0 else None
        if leader is not None:  # measure it again before anything new
            start = time.perf_counter()
            x = self.features([leader.point])
            (m,), (s,) = gp.predict(x)
            mean, std = targets.prediction(float(m), float(s))
            seconds = time.perf_counter() - start
            out.append(Proposal(leader.model_id, (), leader.point, None, mean, std, 0, seconds))
            gp.add(x[0], float(m))
        listed = self.space.points() is not None
        while len(out) < k:
            start = time.perf_counter()

            def score(points: Sequence[Any], gp: GaussianProcess = gp) -> tuple[np.ndarray, np.ndarray]:
                """The GP's mean and deviation at each point."""
                return gp.predict(self.features(points))

            if listed:
                found = maximize_over_space(self.space, roots, gp, taken, float(np.max(gp.y_)))
            else:
                found = optimize_acquisition(self.space, roots, score, taken, rng, self.annealing)
            if found.best is None:  # the neighbourhood is exhausted: fall back to a random chain
                pending = (*history.pending, *(p.point for p in out))
                extra = (
                    RandomProposer(self.space)
                    .propose(History(history.observations, pending, frozenset(taken)), 1, rng)
                    .proposals
                )
                if not extra:
                    break
                out.extend(extra)
                taken.add(extra[0].point.id)
                continue
            b = found.best
            mean, std = targets.prediction(b.mean, b.std)  # the acquisition stays in the surrogate's units
            seconds = time.perf_counter() - start
            out.append(Proposal(b.root_id, b.steps, b.point, b.acquisition, mean, std, found.evaluated, seconds))
            taken.add(b.point.id)
            gp.add(self.features([b.point])[0], b.mean)  # fantasise it so the next proposal differs
        return Batch(out, info)

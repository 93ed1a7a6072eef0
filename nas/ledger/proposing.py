"""Turning a search's state into proposals: which outcomes the next proposal may see, the space and caps it moves
in, the configured strategy, and the seed of each proposal. A pure function of the state, so replay proposes
again exactly what the log holds."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from nas.architectures.graph import Architecture
from nas.ledger.state import SearchState
from nas.strategy.acquisition import AnnealingConfig
from nas.strategy.bayesian import BayesianProposer
from nas.strategy.kernel import AnchorEmbedding, anchors_from_walks
from nas.strategy.proposals import Batch, History, Proposal, Proposer, Refit, leader
from nas.strategy.space import MorphismSpace
from nas.strategy.strategies import make_proposer


def seed_for(seed: int, *parts: int) -> np.random.Generator:
    """A generator that depends only on the search seed and ``parts``."""
    return np.random.default_rng([seed, *parts])


class Proposing:
    """Turns a search state into proposals: a pure function of the state, its seed and k.

    Holds only a cache (the Bayesian anchor embedding), rebuilt identically from the state.
    """

    def __init__(self) -> None:
        self._embedding: AnchorEmbedding | None = None

    @staticmethod
    def known(state: SearchState) -> int:
        """How many models' outcomes the next proposal may see (see ``batch``): all but the ``trainers`` last,
        since it is proposed while every slot trains."""
        return len(state.models) - state.config["search"]["trainers"]

    @classmethod
    def seen(cls, state: SearchState) -> History:
        """What the next proposal reads: the outcomes of the first ``known`` models, in the order they were proposed,
        so that with several trainers which one ended first does not change a proposal. An older log may say its
        proposals read them in the order they ended (``SearchStarted.outcomes_in_proposal_order``), and replays so
        (with one trainer, the same)."""
        return state.history(known_models=cls.known(state), proposal_order=state.outcomes_in_proposal_order)

    def space(self, state: SearchState) -> MorphismSpace:
        """The morphism space under the caps known to the next proposal (out-of-memory lowers the size cap)."""
        s = state.config["search"]
        return MorphismSpace(
            Architecture.from_json(state.initial_architecture),
            max_params=state.size_cap(self.known(state)),
            max_layers=s["max_layers"],
            kernel_lambda=s["kernel_lambda"],
        )

    def _bayesian(self, state: SearchState, hyperparameters: tuple[float, float] | None) -> BayesianProposer:
        """The Bayesian proposer; its anchors depend on the configured caps only."""
        s = state.config["search"]
        space = self.space(state)
        if self._embedding is None:
            fixed = MorphismSpace(space.start, s["max_params"], s["max_layers"], s["kernel_lambda"])
            self._embedding = AnchorEmbedding(fixed.distances, anchors_from_walks(fixed, 32, state.seed))
        return BayesianProposer(
            space,
            AnnealingConfig(beta=s["beta"]),
            anchor_seed=state.seed,
            _embedding=self._embedding,
            hyperparameters=hyperparameters,
            targets=s["surrogate_targets"],
        )

    def proposer(self, state: SearchState) -> Proposer:
        """The configured proposer; the Bayesian one uses the hyperparameters of the last logged refit."""
        strategy = state.config["search"]["strategy"]
        if strategy == "bayesian":
            return self._bayesian(state, state.surrogate)
        return make_proposer(strategy, self.space(state))

    def refit(self, state: SearchState) -> Refit | None:
        """The surrogate refit the next proposal should use: None for strategies without one, or nothing seen yet."""
        history = self.seen(state)
        if state.config["search"]["strategy"] != "bayesian" or not history.observations:
            return None
        return self._bayesian(state, None).refit(history)[1]

    def batch(self, state: SearchState, k: int) -> Batch:
        """Proposals for the next k models. The next model, number j, sees the trainings of models
        1 .. j-1-trainers: the ``trainers`` models before it may still be training (they count as pending), as
        they are when it is proposed while every slot trains. After a model that was not trained because not one
        epoch of it fitted in the wall-clock budget left (failure ``budget``), the first is the leader trained
        further, whose epochs cost what they cost before."""
        history = self.seen(state)
        rng = seed_for(state.seed, len(state.models))
        further = None
        if k > 0 and state.models and list(state.models.values())[-1].out_of_time:
            further = leader(history)
        if further is None:
            return self.proposer(state).propose(history, k, rng)
        first = Proposal(further.model_id, (), further.point)
        if k == 1:
            return Batch([first])
        more = replace(history, pending=(*history.pending, further.point))
        rest = self.proposer(state).propose(more, k - 1, rng)
        return Batch([first, *rest.proposals], rest.refit)

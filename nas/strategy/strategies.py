"""The strategies a search may name (``search.strategy``) and the proposer of each."""

from __future__ import annotations

from typing import Any

from nas.strategy.bayesian import BayesianProposer
from nas.strategy.evolution import EvolutionProposer
from nas.strategy.proposals import Proposer
from nas.strategy.random_walk import RandomProposer
from nas.strategy.space import SearchSpace

PROPOSERS: dict[str, type[Any]] = {
    "bayesian": BayesianProposer,
    "random": RandomProposer,
    "evolution": EvolutionProposer,
}
STRATEGIES = tuple(PROPOSERS)


def make_proposer(strategy: str, space: SearchSpace[Any], **options: Any) -> Proposer:
    """The proposer named ``strategy``; ValueError naming the choices otherwise."""
    if strategy not in PROPOSERS:
        raise ValueError(f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    proposer: Proposer = PROPOSERS[strategy](space, **options)
    return proposer

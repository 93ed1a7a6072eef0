"""The ``evolution`` strategy: regularised evolution (Real et al. 2019) with morphisms as mutations. A tournament
of ``sample`` among the ``population`` most recent trained models; the winner's one-step mutation is the child;
older ones age out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from nas.strategy.proposals import Batch, History, Proposal, fill, random_chain
from nas.strategy.space import SearchSpace


@dataclass(frozen=True)
class EvolutionProposer:
    """Regularised evolution with morphisms as mutations."""

    space: SearchSpace[Any]
    population: int = 20
    sample: int = 5

    def propose(self, history: History, k: int, rng: np.random.Generator) -> Batch:
        def pick(taken: set[str]) -> Proposal | None:
            alive = history.observations[-self.population :]  # the oldest age out
            idx = rng.choice(len(alive), size=min(self.sample, len(alive)), replace=False)
            winner = max((alive[int(i)] for i in idx), key=lambda o: o.score)
            return random_chain(self.space, winner, rng, 1, taken)

        return Batch(fill(history, k, rng, self.space, pick))

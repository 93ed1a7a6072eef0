"""The ``random`` strategy: a random chain of 1 to ``max_chain`` steps from a random trained model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from nas.strategy.proposals import Batch, History, Proposal, fill, random_chain
from nas.strategy.space import SearchSpace


@dataclass(frozen=True)
class RandomProposer:
    """Random morphism chains from random trained models."""

    space: SearchSpace[Any]
    max_chain: int = 3

    def propose(self, history: History, k: int, rng: np.random.Generator) -> Batch:
        def pick(taken: set[str]) -> Proposal | None:
            parent = history.observations[int(rng.integers(len(history.observations)))]
            return random_chain(self.space, parent, rng, int(rng.integers(1, self.max_chain + 1)), taken)

        return Batch(fill(history, k, rng, self.space, pick))

"""Small, meaningful logs for tests: real architectures, so the audit's checks of meaning hold."""

from __future__ import annotations

from nas.architectures.initial import initial_mlp
from nas.ledger.events import ArchitectureProposed, Event, SearchStarted, TrainingStarted

ARCH = initial_mlp((6,), 3, layers=1, units=4)


def begun(name: str) -> list[Event]:
    """SearchStarted, m1 (the initial MLP) proposed, m1's training started: seqs 1-3."""
    return [
        SearchStarted(name, 1, name, {"search": {"max_models": 3, "trainers": 1}}, "fp", "test", 0, ARCH.to_json()),
        ArchitectureProposed(name, 2, "m1", None, [], ARCH.id, ARCH.to_json(), "random"),
        TrainingStarted(name, 3, "m1", 1),
    ]

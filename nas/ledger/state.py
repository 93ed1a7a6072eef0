"""SearchState = fold(apply, events). Nothing else changes the state of a search."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from functools import lru_cache, reduce, singledispatch
from typing import Any

from nas.architectures.graph import Architecture
from nas.ledger.events import (
    ArchitectureProposed,
    Event,
    ModelRegistered,
    SearchFinished,
    SearchStarted,
    SurrogateRefitted,
    TrainingCompleted,
    TrainingFailed,
    TrainingStarted,
    logged_config,
)
from nas.ledger.log import ChainError
from nas.strategy.proposals import History, Observation

OOM_CAP_FACTOR = 0.75  # after an out-of-memory failure the size cap falls below the failed model's size


@lru_cache(maxsize=8192)
def parse_architecture(text: str) -> Architecture:
    """Architectures are logged as canonical JSON; parsing is cached because replays repeat it."""
    return Architecture.from_json(text)


class ModelStatus(StrEnum):
    """Where a proposed model is: proposed -> training -> trained | failed."""

    PROPOSED = "proposed"
    TRAINING = "training"
    TRAINED = "trained"
    FAILED = "failed"

    @property
    def is_finished(self) -> bool:
        """Trained or failed: the model has its one outcome and is never trained again."""
        return self in (ModelStatus.TRAINED, ModelStatus.FAILED)


@dataclass(frozen=True)
class ModelRecord:
    """One proposed model and what became of it."""

    model_id: str
    parent_id: str | None
    architecture: str  # canonical JSON
    architecture_id: str
    morphisms: tuple[dict[str, Any], ...]
    proposed_seq: int
    status: ModelStatus = ModelStatus.PROPOSED
    attempts: int = 0
    val_accuracy: float | None = None
    param_count: int | None = None
    completed_seq: int | None = None  # the TrainingCompleted event, whose run holds the weights
    weights_sha256: str | None = None  # as that event recorded it (None in v1 logs)
    failure: str | None = None
    train_seconds: float = 0.0
    epochs_trained: int = 0  # epochs its completed training ran (0 before it completed)
    planned_epochs: int | None = None  # the epochs its TrainingStarted planned (None: as configured)
    learning_rate: float | None = None  # the rate its proposal chose (None: the configured one)

    @property
    def arch(self) -> Architecture:
        return parse_architecture(self.architecture)

    @property
    def out_of_time(self) -> bool:
        """Whether it was never trained because none of its epochs fitted in the wall-clock budget left (a
        TrainingFailed for ``budget``, logged instead of a TrainingStarted)."""
        return self.status == ModelStatus.FAILED and self.failure == "budget"

    @property
    def epoch_seconds(self) -> float | None:
        """Wall-clock seconds per epoch of its completed training, its set-up included; None before it completed."""
        return self.train_seconds / self.epochs_trained if self.epochs_trained else None


@dataclass(frozen=True)
class SearchState:
    """Everything known about a search, rebuilt from its events."""

    search_id: str = ""
    name: str = ""
    config: Mapping[str, Any] = field(default_factory=dict)
    seed: int = 0
    initial_architecture: str = ""
    dataset_fingerprint: str = ""
    outcomes_in_proposal_order: bool = True  # how its proposals read outcomes (``SearchStarted``)
    last_seq: int = 0
    models: Mapping[str, ModelRecord] = field(default_factory=dict)  # in proposal order
    trained_order: tuple[str, ...] = ()  # model ids in the order their training completed
    best_model_id: str | None = None
    refits: int = 0
    surrogate: tuple[float, float] | None = None  # (length scale, noise) of the last logged refit
    spent_seconds: float = 0.0  # proposal, refit and training seconds recorded so far (compute, not wall clock)
    elapsed_s: float | None = None  # the search's wall clock as last recorded (a proposal, its end); None: never
    finished: bool = False
    finish_reason: str | None = None
    registered: tuple[tuple[str, str, str], ...] = ()  # (model id, registered name, version)

    def size_cap(self, known_models: int | None = None) -> int | None:
        """The parameter cap: the configured one, lowered below every model that ran out of memory.

        ``known_models`` limits the failures that count to the first n proposed models (see ``history``).
        """
        cap = self.config.get("search", {}).get("max_params")
        for m in list(self.models.values())[: known_models if known_models is not None else None]:
            if m.failure == "out_of_memory" and m.param_count:
                lowered = int(m.param_count * OOM_CAP_FACTOR)
                cap = lowered if cap is None else min(cap, lowered)
        return cap

    @property
    def max_params(self) -> int | None:
        return self.size_cap()

    @property
    def started(self) -> bool:
        return self.last_seq > 0

    def count(self, status: ModelStatus) -> int:
        return sum(m.status == status for m in self.models.values())

    @property
    def out_of_time(self) -> int:
        """Models never trained because no epoch of theirs fitted in the time left (counted in FAILED as well)."""
        return sum(m.out_of_time for m in self.models.values())

    @property
    def failed_trainings(self) -> int:
        """Models whose training failed: FAILED ones less those never trained for lack of time (``out_of_time``)."""
        return self.count(ModelStatus.FAILED) - self.out_of_time

    @property
    def ended(self) -> int:
        """Models with an outcome, trained or failed."""
        return sum(m.status.is_finished for m in self.models.values())

    @property
    def unfinished(self) -> list[ModelRecord]:
        """Proposed or started models with no outcome: trained (again) on resume."""
        return [m for m in self.models.values() if not m.status.is_finished]

    @property
    def best(self) -> ModelRecord | None:
        return self.models[self.best_model_id] if self.best_model_id else None

    def leaders(self, k: int) -> list[ModelRecord]:
        """The ``k`` best trained models by validation accuracy (fewer if fewer were trained), best first; of
        equal accuracies the one trained first ranks higher, so ``leaders(1)`` is ``[best]``."""
        ranked = sorted(
            enumerate(self.trained_order), key=lambda p: (-float(self.models[p[1]].val_accuracy or 0.0), p[0])
        )
        return [self.models[model_id] for _, model_id in ranked[:k]]

    def history(self, known_models: int | None = None, proposal_order: bool = False) -> History:
        """What the proposers may read: trained models in completion order (``proposal_order``: in the order
        they were proposed), pending ones, every id seen.

        With ``known_models = n`` only the trainings of the first n proposed models count as
        observed; later ones are pending even if they have finished, so what a proposal sees does
        not depend on how fast trainings running beside it happen to be (nor, in proposal order, their order).
        """
        order = list(self.models)
        known = set(order if known_models is None else order[: max(known_models, 0)])
        trained = tuple(
            Observation(mid, self.models[mid].arch, float(self.models[mid].val_accuracy or 0.0))
            for mid in (order if proposal_order else self.trained_order)
            if mid in known and self.models[mid].status == ModelStatus.TRAINED
        )
        waiting = [m for m in self.models.values() if m.model_id not in known or not m.status.is_finished]
        seen = frozenset(m.architecture_id for m in self.models.values())
        return History(trained, tuple(m.arch for m in waiting), seen)


def _with_model(state: SearchState, model: ModelRecord, **changes: Any) -> SearchState:
    return replace(state, models={**state.models, model.model_id: model}, **changes)


class ImpossibleEvent(ChainError):
    """An event that cannot follow the events before it (a log no writer of ours produces)."""

    def __init__(self, event: Event, problem: str) -> None:
        super().__init__(event.seq, problem, event.search_id)


def _model(state: SearchState, event: TrainingStarted | TrainingCompleted | TrainingFailed) -> ModelRecord:
    """The proposed model an event is about; ImpossibleEvent if it was never proposed or already has an outcome."""
    model = state.models.get(event.model_id)
    if model is None:
        raise ImpossibleEvent(event, f"{type(event).__name__} names model {event.model_id!r}, which was never proposed")
    if model.status.is_finished:
        raise ImpossibleEvent(event, f"model {event.model_id} already has an outcome ({model.status})")
    return model


@singledispatch
def apply(event: Event, state: SearchState) -> SearchState:
    raise ValueError(f"no rule to apply {type(event).__name__}")


@apply.register
def _(event: SearchStarted, state: SearchState) -> SearchState:
    return replace(
        state,
        search_id=event.search_id,
        name=event.name,
        config=logged_config(event.config),
        seed=event.seed,
        initial_architecture=event.initial_architecture,
        dataset_fingerprint=event.dataset_fingerprint,
        outcomes_in_proposal_order=event.outcomes_in_proposal_order,
    )


@apply.register
def _(event: ArchitectureProposed, state: SearchState) -> SearchState:
    model = ModelRecord(
        event.model_id,
        event.parent_model_id,
        event.architecture,
        event.architecture_id,
        tuple(event.morphisms),
        event.seq,
        learning_rate=event.learning_rate,
    )
    return _with_model(
        state,
        model,
        spent_seconds=state.spent_seconds + event.proposal_seconds,
        elapsed_s=state.elapsed_s if event.elapsed_s is None else event.elapsed_s,
    )


@apply.register
def _(event: SurrogateRefitted, state: SearchState) -> SearchState:
    return replace(
        state,
        refits=state.refits + 1,
        surrogate=(event.length_scale, event.noise),
        spent_seconds=state.spent_seconds + event.seconds,
    )


@apply.register
def _(event: TrainingStarted, state: SearchState) -> SearchState:
    model = _model(state, event)
    return _with_model(
        state, replace(model, status=ModelStatus.TRAINING, attempts=event.attempt, planned_epochs=event.epochs)
    )


@apply.register
def _(event: TrainingCompleted, state: SearchState) -> SearchState:
    model = replace(
        _model(state, event),
        status=ModelStatus.TRAINED,
        val_accuracy=event.val_accuracy,
        param_count=event.param_count,
        completed_seq=event.seq,
        weights_sha256=event.weights_sha256,
        train_seconds=event.seconds,
        epochs_trained=len(event.epochs),
    )
    best = state.best
    better = best is None or event.val_accuracy > (best.val_accuracy or 0.0)
    return _with_model(
        state,
        model,
        trained_order=(*state.trained_order, event.model_id),
        best_model_id=event.model_id if better else state.best_model_id,
        spent_seconds=state.spent_seconds + event.seconds,
    )


@apply.register
def _(event: TrainingFailed, state: SearchState) -> SearchState:
    model = replace(
        _model(state, event),
        status=ModelStatus.FAILED,
        failure=event.reason,
        param_count=event.param_count,
        train_seconds=event.seconds,
    )
    return _with_model(state, model, spent_seconds=state.spent_seconds + event.seconds)


@apply.register
def _(event: SearchFinished, state: SearchState) -> SearchState:
    elapsed = state.elapsed_s if event.elapsed_s is None else event.elapsed_s
    return replace(state, finished=True, finish_reason=event.reason, elapsed_s=elapsed)


@apply.register
def _(event: ModelRegistered, state: SearchState) -> SearchState:
    return replace(state, registered=(*state.registered, (event.model_id, event.registered_name, event.version)))


def fold(events: Iterable[Event], state: SearchState | None = None) -> SearchState:
    """The state after ``events`` (in seq order), starting from ``state`` or from nothing."""

    def step(s: SearchState, e: Event) -> SearchState:
        if e.seq != s.last_seq + 1:
            raise ChainError(e.seq, f"it follows seq {s.last_seq}: the log has a gap or is out of order", e.search_id)
        return replace(apply(e, s), last_seq=e.seq)

    return reduce(step, events, state or SearchState())

"""The ask/tell service: replay the log, propose, record outcomes. No Keras, no Prefect.

Every method appends events at the seq the service last read and refreshes its state from the
log, so two processes on one search cannot both win a step (``ConcurrencyError``). Randomness is
derived from the search seed and the number of models proposed so far, not from seq numbers, so a
search that crashed and was resumed (which logs an extra ``TrainingStarted``) proposes exactly what
an uninterrupted one would.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import nas
from nas.architectures.graph import Architecture
from nas.architectures.initial import initial_for
from nas.architectures.morphisms import Morphism
from nas.architectures.weights import file_sha256
from nas.ledger.events import (
    FAILURE_REASONS,
    ArchitectureProposed,
    Event,
    ModelRegistered,
    SearchFinished,
    SearchStarted,
    SurrogateRefitted,
    TrainingCompleted,
    TrainingFailed,
    TrainingStarted,
)
from nas.ledger.log import Attachments, ChainError, ConcurrencyError, EventLog
from nas.ledger.proposing import Proposing
from nas.ledger.state import SearchState, fold

APPEND_RETRIES = 20


def code_version() -> str:
    """The package version and, inside a Git checkout, the commit."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = "unknown"
    return f"{nas.__version__}+{commit}"


class IntegrityError(ChainError):
    """Stored data is not what its event recorded (a replaced weights file): the search must stop."""


class SearchService:
    """Ask/tell over one search's event log."""

    def __init__(self, log: EventLog) -> None:
        self.log = log
        self.state = fold(log.read())
        self.proposing = Proposing()
        # The search's wall clock: what its log records (a log from before it was recorded: the seconds spent),
        # then this service's own time since it opened the log.
        self._opened = time.time()
        self._elapsed_before = self.state.spent_seconds if self.state.elapsed_s is None else self.state.elapsed_s

    def elapsed_s(self) -> float:
        """Wall-clock seconds the search has run: over earlier runners' sessions (as logged) and this one's."""
        return self._elapsed_before + (time.time() - self._opened)

    def deadline(self) -> float:
        """When ``search.time_budget_s`` of wall clock runs out, as a Unix time (trainings elsewhere share it)."""
        return self._opened - self._elapsed_before + float(self.state.config["search"]["time_budget_s"])

    def refresh(self) -> SearchState:
        """Catch up with events appended by anyone since the last read (reads nothing when none were)."""
        if self.log.last_seq() != self.state.last_seq:
            self.state = fold(self.log.read(after_seq=self.state.last_seq), self.state)
        return self.state

    def _commit(
        self, build: Callable[[SearchState], list[Event]], attachments: Mapping[int, Mapping[str, Path]] | None = None
    ) -> list[Event]:
        """Append what ``build(state)`` gives; if another writer appended first, catch up and build again.

        ``attachments`` maps an index into the built events to that event's files.
        """
        for _ in range(APPEND_RETRIES):
            events = build(self.state)
            if not events:
                return events
            files: Attachments = {events[i].seq: f for i, f in (attachments or {}).items()}
            try:
                self.log.append(events, self.state.last_seq, files)
                self.state = fold(events, self.state)
                return events
            except ConcurrencyError:
                self.refresh()
        raise ConcurrencyError(f"search {self.log.search_id!r}: still conflicting after {APPEND_RETRIES} attempts")

    # --- commands --------------------------------------------------------------------------------

    def start(
        self,
        name: str,
        config: Mapping[str, Any],
        input_shape: tuple[int, ...],
        num_classes: int,
        dataset_fingerprint: str,
    ) -> None:
        """Log ``SearchStarted`` with the initial architecture for data of this shape."""
        if self.state.started:
            raise ValueError(f"search {name!r} already exists; resume it or choose another name")
        arch = initial_for(config, input_shape, num_classes)
        event = SearchStarted(
            search_id=self.log.search_id,
            seq=1,
            name=name,
            config=dict(config),
            dataset_fingerprint=dataset_fingerprint,
            code_version=code_version(),
            seed=config["search"]["seed"],
            initial_architecture=arch.to_json(),
        )
        self._commit(lambda state: [] if state.started else [event])

    def refit(self) -> None:
        """Refit the surrogate on what the next proposal may see and log it (Bayesian strategy only)."""

        def build(state: SearchState) -> list[Event]:
            r = self.proposing.refit(state)
            return (
                [] if r is None else [SurrogateRefitted(search_id=state.search_id, seq=state.last_seq + 1, **asdict(r))]
            )

        self._commit(build)

    def ask(self, k: int = 1, elapsed_s: float | None = None) -> list[ArchitectureProposed]:
        """Propose up to ``k`` new models with the logged surrogate and log them, with the search's wall clock
        (``elapsed_s``, from the runner whose clock it is; this service's own by default)."""

        def build(state: SearchState) -> list[Event]:
            batch = self.proposing.batch(state, k)
            elapsed = round(self.elapsed_s() if elapsed_s is None else elapsed_s, 3)
            return [
                ArchitectureProposed(
                    search_id=state.search_id,
                    seq=state.last_seq + 1 + i,
                    model_id=f"m{len(state.models) + i + 1}",
                    parent_model_id=p.parent_id,
                    morphisms=[m.to_dict() for m in p.steps],
                    architecture_id=p.point.id,
                    architecture=p.point.to_json(),
                    strategy=state.config["search"]["strategy"],
                    acquisition=p.acquisition,
                    gp_mean=p.mean,
                    gp_std=p.std,
                    candidates=p.candidates,
                    proposal_seconds=p.seconds,
                    batch_index=i,
                    batch_size=len(batch.proposals),
                    elapsed_s=elapsed,
                )
                for i, p in enumerate(batch.proposals)
            ]

        return [e for e in self._commit(build) if isinstance(e, ArchitectureProposed)]

    def training_started(self, model_id: str, epochs: int | None = None) -> None:
        """Log that ``model_id``'s training begins, planning ``epochs`` (None: as configured)."""

        def build(state: SearchState) -> list[Event]:
            model = state.models[model_id]
            if model.status.is_finished:
                raise ValueError(f"model {model_id} is {model.status}; a finished training is never repeated")
            return [TrainingStarted(state.search_id, state.last_seq + 1, model_id, model.attempts + 1, epochs)]

        self._commit(build)

    def training_completed(
        self,
        model_id: str,
        val_accuracy: float,
        epochs: list[dict[str, float | None]],
        preservation_error: float | None,
        seconds: float,
        weights_path: Path,
        files: Mapping[str, Path] | None = None,
    ) -> None:
        """Log the model's outcome with its weights (the first outcome of a model stands; a later one logs nothing)."""
        digest = file_sha256(weights_path)

        def build(state: SearchState) -> list[Event]:
            model = state.models[model_id]
            if model.status.is_finished:
                return []  # a second training of the model ended later (a lost worker's): the first outcome stands
            return [
                TrainingCompleted(
                    search_id=state.search_id,
                    seq=state.last_seq + 1,
                    model_id=model_id,
                    architecture_id=model.architecture_id,
                    val_accuracy=val_accuracy,
                    param_count=model.arch.param_count,
                    epochs=epochs,
                    preservation_error=preservation_error,
                    seconds=seconds,
                    weights_sha256=digest,
                )
            ]

        self._commit(build, {0: {"weights.npz": weights_path, **(files or {})}})

    def training_failed(
        self, model_id: str, reason: str, error: str, seconds: float, files: Mapping[str, Path] | None = None
    ) -> None:
        """Log that the model's training failed (the first outcome of a model stands)."""
        if reason not in FAILURE_REASONS:
            raise ValueError(f"failure reason {reason!r} must be one of {', '.join(FAILURE_REASONS)}")

        def build(state: SearchState) -> list[Event]:
            model = state.models[model_id]
            if model.status.is_finished:
                return []
            return [
                TrainingFailed(
                    search_id=state.search_id,
                    seq=state.last_seq + 1,
                    model_id=model_id,
                    reason=reason,
                    error=error[:2000],
                    param_count=model.arch.param_count,
                    seconds=seconds,
                )
            ]

        self._commit(build, {0: dict(files)} if files else None)

    def finish(self, reason: str) -> None:
        """Log ``SearchFinished`` with the best model the fold names."""

        def build(state: SearchState) -> list[Event]:
            if state.finished:
                return []
            best = state.best
            return [
                SearchFinished(
                    search_id=state.search_id,
                    seq=state.last_seq + 1,
                    best_model_id=best.model_id if best else None,
                    val_accuracy=best.val_accuracy if best else None,
                    reason=reason,
                    elapsed_s=round(self.elapsed_s(), 3),
                )
            ]

        self._commit(build)

    def model_registered(self, model_id: str, registered_name: str, version: str) -> bool:
        """Log that ``model_id``'s final model is ``registered_name`` version ``version``, once; True if logged now."""
        if model_id not in self.state.models:
            raise ValueError(f"search {self.state.search_id!r} has no model {model_id!r} to register")
        entry = (model_id, registered_name, str(version))

        def build(state: SearchState) -> list[Event]:
            if entry in state.registered:
                return []
            return [ModelRegistered(state.search_id, state.last_seq + 1, *entry)]

        return bool(self._commit(build))

    # --- queries ---------------------------------------------------------------------------------------

    def weights_file(self, model_id: str) -> Path:
        """The trained weights of ``model_id`` (a local copy of its TrainingCompleted attachment), checked
        against the sha256 the event recorded; ValueError if the model has none, IntegrityError if the file
        was replaced or is missing."""
        model = self.state.models[model_id]
        if model.completed_seq is None:
            raise ValueError(f"model {model_id} of search {self.state.search_id!r} has no trained weights")
        try:
            path = Path(self.log.attachment(model.completed_seq, "weights.npz"))
        except FileNotFoundError as e:
            raise IntegrityError(
                model.completed_seq, f"the weights of {model_id} are missing; run nas audit", self.log.search_id
            ) from e
        if model.weights_sha256 is not None and file_sha256(path) != model.weights_sha256:
            raise IntegrityError(
                model.completed_seq,
                f"the weights of {model_id} are not the ones its event recorded (the artifact was replaced); "
                "the search stops: run nas audit",
                self.log.search_id,
            )
        return path

    def stop_reason(self) -> str | None:
        """Why no further model may be proposed (budget spent), or None to go on. The time budget is wall clock,
        as this service counts it (``elapsed_s``): the runner's; it counts as spent once less of it is left than
        one epoch of the best model took (a proposal is mostly a morphism of a good model, as costly or more)."""
        s = self.state.config["search"]
        if len(self.state.models) >= s["max_models"]:
            return f"max_models={s['max_models']} reached"
        left = s["time_budget_s"] - self.elapsed_s()
        if left <= 0:
            return f"time_budget_s={s['time_budget_s']:g} of wall clock spent"
        best = self.state.best
        epoch = None if best is None else best.epoch_seconds
        if best is not None and epoch is not None and left < epoch:
            return (
                f"time_budget_s={s['time_budget_s']:g} of wall clock nearly spent: {left:.1f} s left, less than "
                f"an epoch of the best model {best.model_id} ({epoch:.1f} s)"
            )
        return None

    def chain(self, model_id: str) -> tuple[Architecture, list[Morphism]]:
        """The parent's architecture and the morphisms that turn it into ``model_id``."""
        model = self.state.models[model_id]
        parent = self.state.models[model.parent_id].arch if model.parent_id else model.arch
        return parent, [Morphism.from_dict(m) for m in model.morphisms]

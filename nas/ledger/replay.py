"""Replaying a log: the state it adds up to, its summary, and whether re-running the proposer reproduces it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from nas.ledger.events import (
    LAST_WITH,
    ArchitectureProposed,
    Event,
    SearchStarted,
    SurrogateRefitted,
    TrainingCompleted,
    TrainingFailed,
    removed_by,
    removed_in_use,
)
from nas.ledger.proposing import Proposing
from nas.ledger.state import ModelStatus, SearchState, fold


def summary(state: SearchState) -> dict[str, Any]:
    """What a person wants to know about a search, JSON-able."""
    best = state.best
    return {
        "search": state.search_id,
        "events": state.last_seq,
        "status": "finished" if state.finished else "unfinished",
        "finish_reason": state.finish_reason,
        "strategy": state.config.get("search", {}).get("strategy"),
        "trained": state.count(ModelStatus.TRAINED),
        "failed": state.failed_trainings,
        "not_trained": state.out_of_time,  # none of their epochs fitted in the wall-clock budget left
        "pending": len(state.unfinished),
        "best_model": best.model_id if best else None,
        "best_architecture": best.architecture_id if best else None,
        "best_val_accuracy": best.val_accuracy if best else None,
        "spent_seconds": round(state.spent_seconds, 3),  # compute: proposals, refits, trainings
        "elapsed_s": None if state.elapsed_s is None else round(state.elapsed_s, 3),  # wall clock, as last recorded
        "max_params": state.max_params,
    }


def summary_values(state: SearchState) -> dict[str, str]:
    """The summary a store lists a search by (``SearchStore.searches``), as strings; the audit checks it.
    ``failed`` counts every model logged failed, ``not_trained`` those of them never trained for lack of time
    (a search summarised before that key existed has none: the audit skips a key a parent run does not show)."""
    best = state.best
    return {
        "status": "finished" if state.finished else "unfinished",
        "strategy": str(state.config.get("search", {}).get("strategy", "")),
        "dataset": str(state.config.get("data", {}).get("dataset", "")),
        "data_fingerprint": state.dataset_fingerprint,
        "trained": str(state.count(ModelStatus.TRAINED)),
        "failed": str(state.count(ModelStatus.FAILED)),
        "not_trained": str(state.out_of_time),
        "best_model": best.model_id if best else "",
        "best_val_accuracy": repr(best.val_accuracy) if best and best.val_accuracy is not None else "",
        "events": str(state.last_seq),
    }


def best_so_far(events: Sequence[Event]) -> dict[int, float]:
    """Models ended -> best validation accuracy so far (steps with no trained model yet are left out)."""
    state, out = SearchState(), {}
    for event in events:
        state = fold([event], state)
        if isinstance(event, TrainingCompleted | TrainingFailed) and state.best is not None:
            out[state.ended] = float(state.best.val_accuracy or 0.0)
    return out


@dataclass(frozen=True)
class Divergence:
    seq: int
    problem: str


def _groups(events: Sequence[Event]) -> list[list[Event]]:
    """The proposals of one ask grouped (by their batch index); every other event alone."""
    out: list[list[Event]] = []
    for e in events:
        if isinstance(e, ArchitectureProposed) and e.batch_index > 0:
            out[-1].append(e)
        else:
            out.append([e])
    return out


def verify(events: Sequence[Event]) -> Divergence | None:
    """Re-run every refit and every proposal over the log; the first logged step they do not reproduce. ValueError
    for a search whose proposals read a setting this version removed (``REMOVED``): they cannot be re-run here."""
    started = next((e for e in events if isinstance(e, SearchStarted)), None)
    used = [u for u in removed_in_use(started.config) if u.startswith("search.")] if started else []
    if used and started is not None:
        raise ValueError(
            f"search {started.name!r} proposed with {removed_by(used)}; nas {LAST_WITH} re-runs its proposals, and "
            "nas audit still checks its log here"
        )
    proposing = Proposing()
    state = SearchState()
    for group in _groups(events):
        first = group[0]
        if isinstance(first, SurrogateRefitted):
            redo = proposing.refit(state)
            if redo is None:
                return Divergence(first.seq, "a refit is logged where the proposer has nothing to refit")
            mine = (redo.observations, redo.length_scale, redo.noise, redo.log_marginal_likelihood)
            theirs = (first.observations, first.length_scale, first.noise, first.log_marginal_likelihood)
            if mine != theirs:
                return Divergence(first.seq, f"refit gives (n, length scale, noise, lml) {mine}, the log has {theirs}")
        elif isinstance(first, ArchitectureProposed):
            logged = [e for e in group if isinstance(e, ArchitectureProposed)]
            batch = proposing.batch(state, len(logged))
            if len(batch.proposals) < len(logged):
                return Divergence(logged[len(batch.proposals)].seq, "the proposer proposes fewer models than logged")
            for e, p in zip(logged, batch.proposals, strict=False):
                chain = [m.to_dict() for m in p.steps]
                if (e.architecture_id, e.parent_model_id, e.morphisms) != (p.point.id, p.parent_id, chain):
                    return Divergence(
                        e.seq,
                        f"{e.model_id}: re-running the proposer gives {p.point.id[:12]} from {p.parent_id} "
                        f"({', '.join(m['kind'] for m in chain)}); the log has {e.architecture_id[:12]} from "
                        f"{e.parent_model_id} ({', '.join(m['kind'] for m in e.morphisms)})",
                    )
                if e.learning_rate is not None:
                    return Divergence(
                        e.seq, f"{e.model_id}: the log has learning rate {e.learning_rate}; the proposer chooses none"
                    )
        state = fold(group, state)
    return None

"""Events: codec, upcasting, the committed golden v1 log, and the fold."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import ClassVar

import pytest

from nas.ledger.events import (
    EVENT_TYPES,
    UPCASTERS,
    ArchitectureProposed,
    Event,
    SearchFinished,
    SearchStarted,
    TrainingCompleted,
    TrainingFailed,
    TrainingStarted,
    canonical_json,
    from_record,
    to_record,
)
from nas.ledger.log import ChainError, verify_chain
from nas.ledger.memory import MemoryStore
from nas.ledger.proposing import Proposing
from nas.ledger.replay import summary
from nas.ledger.service import SearchService
from nas.ledger.state import OOM_CAP_FACTOR, fold

ROOT = Path(__file__).parents[2]
GOLDEN = Path(__file__).parent / "golden" / "v1.jsonl"


def golden() -> list[dict]:
    return [json.loads(line) for line in GOLDEN.read_text().splitlines()]


def test_golden_v1_log_still_replays() -> None:
    events = verify_chain(golden())
    assert {type(e).__name__ for e in events} == set(EVENT_TYPES)  # it covers every event type
    state = fold(events)
    assert state.name == "golden" and state.finished and state.finish_reason == "max_models=2 reached"
    assert state.best_model_id == "m1" and state.best.val_accuracy == 0.5
    assert state.models["m2"].status == "failed" and state.models["m2"].failure == "out_of_memory"
    assert state.max_params == int(1822 * OOM_CAP_FACTOR)  # the out-of-memory failure lowered the cap
    assert state.registered == (("m1", "nas-golden", "1"),)
    assert state.refits == 1 and state.count("trained") == 1


def test_every_event_round_trips_through_canonical_json() -> None:
    for record in golden():
        event = from_record({k: v for k, v in record.items() if k not in ("hash", "prev_hash")})
        current = to_record(event)  # at the current schema version
        assert to_record(from_record(json.loads(canonical_json(current)))) == current


def test_v1_proposals_are_upcast_to_v2() -> None:
    """ArchitectureProposed v2 added batch_index and batch_size; a v1 proposal was a batch of one."""
    old = next(r for r in golden() if r["type"] == "ArchitectureProposed")
    assert old["schema_version"] == 1 and "batch_size" not in old["payload"]
    event = from_record({k: v for k, v in old.items() if k not in ("hash", "prev_hash")})
    assert isinstance(event, ArchitectureProposed) and (event.batch_index, event.batch_size) == (0, 1)
    assert to_record(event)["schema_version"] == ArchitectureProposed.VERSION == 4
    new = ("batch_index", "batch_size", "elapsed_s", "learning_rate")
    unchanged = {k: v for k, v in to_record(event)["payload"].items() if k not in new}
    assert unchanged == old["payload"]


def test_v3_proposals_are_upcast_to_v4_at_the_configured_learning_rate() -> None:
    """ArchitectureProposed v4 added ``learning_rate`` (the rate a proposal chose, ``search.learning_rates``); a v3
    proposal chose none: None, the configured rate. A v4 record keeps its rate through the codec."""
    old = next(r for r in golden() if r["type"] == "ArchitectureProposed")
    v3 = {k: v for k, v in old.items() if k not in ("hash", "prev_hash")}
    v3 = {**v3, "schema_version": 3, "payload": {**v3["payload"], "batch_index": 0, "batch_size": 1, "elapsed_s": 2.5}}
    event = from_record(v3)
    assert isinstance(event, ArchitectureProposed) and event.learning_rate is None and event.elapsed_s == 2.5
    assert {k: v for k, v in to_record(event)["payload"].items() if k != "learning_rate"} == v3["payload"]
    chosen = replace(event, learning_rate=0.002)
    assert from_record(json.loads(canonical_json(to_record(chosen)))) == chosen


def test_v1_training_starts_are_upcast_to_v2_with_no_plan() -> None:
    """TrainingStarted v2 added ``epochs`` (the epochs a training planned by the wall-clock budget); a v1 training
    planned the configured number: None."""
    old = next(r for r in golden() if r["type"] == "TrainingStarted")
    assert old["schema_version"] == 1 and "epochs" not in old["payload"]
    event = from_record({k: v for k, v in old.items() if k not in ("hash", "prev_hash")})
    assert isinstance(event, TrainingStarted) and event.epochs is None and event.attempt == 1
    assert to_record(event)["schema_version"] == TrainingStarted.VERSION == 2
    assert {k: v for k, v in to_record(event)["payload"].items() if k != "epochs"} == old["payload"]


def test_editing_the_golden_log_is_detected() -> None:
    records = golden()
    records[3]["payload"]["val_accuracy"] = 0.99
    with pytest.raises(ChainError, match="seq 4: hash does not match"):
        verify_chain(records)
    records = golden()
    del records[2]
    with pytest.raises(ChainError, match="expected seq 3, found 4"):
        verify_chain(records)


def test_old_schema_versions_are_upcast_on_read(monkeypatch: pytest.MonkeyPatch) -> None:
    """A v2 of TrainingStarted that renamed ``attempt`` to ``try_number`` still reads v1 records."""

    @dataclass(frozen=True)
    class TrainingStartedV2(Event):
        model_id: str
        try_number: int = 1
        TYPE: ClassVar[str] = "TrainingStarted"
        VERSION: ClassVar[int] = 2

    def upcast_v1_v2(payload: dict) -> dict:
        payload = dict(payload)
        payload["try_number"] = payload.pop("attempt")
        return payload

    monkeypatch.setitem(EVENT_TYPES, "TrainingStarted", TrainingStartedV2)
    monkeypatch.setitem(UPCASTERS, ("TrainingStarted", 1), upcast_v1_v2)
    old = next(r for r in golden() if r["type"] == "TrainingStarted")
    event = from_record({k: v for k, v in old.items() if k not in ("hash", "prev_hash")})
    assert isinstance(event, TrainingStartedV2) and event.try_number == 1 and event.seq == 3


def test_unknown_types_and_future_versions_are_refused() -> None:
    record = to_record(TrainingStarted("s", 1, "m1"))
    with pytest.raises(ValueError, match="unknown event type 'ModelDeleted'"):
        from_record({**record, "type": "ModelDeleted"})
    with pytest.raises(ValueError, match=r"schema version 9; this code reads up to 2$"):
        from_record({**record, "schema_version": 9})
    with pytest.raises(ValueError, match="does not fit schema version 2"):
        from_record({**record, "payload": {"model": "m1"}})


def test_nan_never_reaches_the_log() -> None:
    with pytest.raises(ValueError):
        canonical_json({"loss": float("nan")})


def test_fold_refuses_gaps() -> None:
    events = verify_chain(golden())
    with pytest.raises(ValueError, match="event seq 3: it follows seq 1"):
        fold([events[0], events[2]])


def test_a_started_training_with_no_end_is_unfinished() -> None:
    events = verify_chain(golden())[:3]  # SearchStarted, m1 proposed, m1 training started
    state = fold(events)
    assert [m.model_id for m in state.unfinished] == ["m1"]
    assert state.models["m1"].status == "training" and state.models["m1"].attempts == 1
    history = state.history()
    assert history.observations == () and len(history.pending) == 1


def test_the_leaders_rank_trained_models_by_validation_accuracy_ties_to_the_earlier() -> None:
    """``leaders(k)``: the members of the searched model the DVC stages ensemble. Trainings ending m2 (0.7),
    m1 (0.9), m4 (0.7), m3 (0.8), m5 failed: best first, a tie to the one trained first, failures never."""
    start = verify_chain(golden())[0]
    assert isinstance(start, SearchStarted)
    arch = start.initial_architecture
    events: list[Event] = [start]
    for i in range(1, 6):
        events.append(ArchitectureProposed("golden", len(events) + 1, f"m{i}", None, [], f"{i}" * 64, arch, "random"))
    for model_id, acc in (("m2", 0.7), ("m1", 0.9), ("m4", 0.7), ("m3", 0.8)):
        events.append(TrainingCompleted("golden", len(events) + 1, model_id, "a" * 64, acc, 10))
    events.append(TrainingFailed("golden", len(events) + 1, "m5", "nan_loss"))
    state = fold(events)
    assert [m.model_id for m in state.leaders(3)] == ["m1", "m3", "m2"]
    assert [m.model_id for m in state.leaders(10)] == ["m1", "m3", "m2", "m4"]  # as many as were trained
    assert state.leaders(1) == [state.best]
    assert fold(events[:6]).leaders(3) == []  # nothing trained yet


def test_best_model_is_the_highest_validation_accuracy() -> None:
    start = verify_chain(golden())[0]
    assert isinstance(start, SearchStarted)
    arch = start.initial_architecture
    events: list[Event] = [start]
    seq = 1
    for i, acc in enumerate([0.5, 0.8, 0.7], start=1):
        events += [
            ArchitectureProposed("golden", seq + 1, f"m{i}", None, [], f"{i}" * 64, arch, "random"),
            TrainingCompleted("golden", seq + 2, f"m{i}", f"{i}" * 64, acc, 10),
        ]
        seq += 2
    state = fold(events)
    assert state.best_model_id == "m2" and state.trained_order == ("m1", "m2", "m3")
    m4 = ArchitectureProposed("golden", seq + 1, "m4", None, [], "4" * 64, arch, "random")
    failed = TrainingFailed("golden", seq + 2, "m4", "nan_loss")
    assert fold([m4, failed], state).max_params == state.max_params  # only running out of memory lowers the cap
    with pytest.raises(ChainError, match="model m3 already has an outcome"):
        fold([TrainingFailed("golden", seq + 1, "m3", "nan_loss")], state)
    with pytest.raises(ChainError, match="names model 'm9', which was never proposed"):
        fold([TrainingCompleted("golden", seq + 1, "m9", "9" * 64, 0.9, 10)], state)


def test_the_next_proposal_sees_every_model_but_the_ones_that_may_still_train() -> None:
    """``Proposing.known``: after m1..m3 (m3 still training), the next proposal sees all but the ``trainers`` last
    models (it is proposed while every slot trains). The history it gets holds the known outcomes only."""
    start = verify_chain(golden())[0]
    assert isinstance(start, SearchStarted)
    arch = start.initial_architecture
    tail: list[Event] = []
    for i, acc in ((1, 0.5), (2, 0.8)):
        tail += [
            ArchitectureProposed("golden", len(tail) + 2, f"m{i}", None, [], f"{i}" * 64, arch, "random"),
            TrainingCompleted("golden", len(tail) + 3, f"m{i}", f"{i}" * 64, acc, 10),
        ]
    tail.append(ArchitectureProposed("golden", len(tail) + 2, "m3", None, [], "3" * 64, arch, "random"))

    def known(**search: object) -> int:
        settings = {k: v for k, v in {**start.config["search"], **search}.items() if v is not None}
        state = fold([replace(start, config={**start.config, "search": settings}), *tail])
        seen = state.history(known_models=Proposing.known(state))
        assert len(seen.observations) == min(Proposing.known(state), 2)  # m3 has no outcome yet
        return Proposing.known(state)

    assert known(trainers=1) == 2 and known(trainers=2) == 1 and known(trainers=3) == 0


def test_the_next_proposal_reads_outcomes_in_the_order_the_models_were_proposed() -> None:
    """With two trainers m2 may end before m1: a proposal reads m1 then m2 all the same (so which training ended
    first changes no proposal). A v1 log read them so where it logged ``search.propose_ahead``, and as they ended
    where it did not; the upcaster of ``SearchStarted`` says which, and each replays as it ran."""
    start = verify_chain(golden())[0]
    assert isinstance(start, SearchStarted)
    arch = start.initial_architecture
    tail: list[Event] = [
        ArchitectureProposed("golden", 2, "m1", None, [], "1" * 64, arch, "random"),
        ArchitectureProposed("golden", 3, "m2", None, [], "2" * 64, arch, "random"),
        TrainingCompleted("golden", 4, "m2", "2" * 64, 0.8, 10),
        TrainingCompleted("golden", 5, "m1", "1" * 64, 0.5, 10),
        ArchitectureProposed("golden", 6, "m3", None, [], "3" * 64, arch, "random"),
    ]
    search = {**start.config["search"], "trainers": 1}  # (the fold does not check who trained at once)
    now = to_record(replace(start, config={**start.config, "search": search}, outcomes_in_proposal_order=True))
    assert now["schema_version"] == 2 and now["payload"]["outcomes_in_proposal_order"] is True
    v1 = {**now, "schema_version": 1, "payload": {k: v for k, v in now["payload"].items() if "outcomes" not in k}}
    ahead = {**v1["payload"]["config"], "search": {**search, "propose_ahead": False}}  # any value: it was logged
    for record, order in (
        (now, ["m1", "m2"]),
        ({**v1, "payload": {**v1["payload"], "config": ahead}}, ["m1", "m2"]),
        (v1, ["m2", "m1"]),  # logged before search.propose_ahead
    ):
        state = fold([from_record(record), *tail])
        assert [o.model_id for o in Proposing.seen(state).observations] == order


def test_v1_trainings_are_upcast_to_v2_without_a_weights_hash() -> None:
    """TrainingCompleted v2 records the sha256 of weights.npz; a v1 record did not, so it reads as unknown."""
    old = next(r for r in golden() if r["type"] == "TrainingCompleted")
    assert old["schema_version"] == 1 and "weights_sha256" not in old["payload"]
    event = from_record({k: v for k, v in old.items() if k not in ("hash", "prev_hash")})
    assert isinstance(event, TrainingCompleted) and event.weights_sha256 is None
    assert to_record(event)["schema_version"] == TrainingCompleted.VERSION == 2
    assert fold(verify_chain(golden())).models["m1"].weights_sha256 is None


def test_logs_from_before_the_wall_clock_have_none_and_a_service_counts_on_from_their_spent_seconds() -> None:
    """ArchitectureProposed v3 and SearchFinished v2 record the search's wall clock (elapsed_s); older records
    upcast to None, and a service opened on such a log counts the seconds the log says were spent."""
    events = verify_chain(golden())
    assert all(e.elapsed_s is None for e in events if isinstance(e, ArchitectureProposed | SearchFinished))
    assert to_record(next(e for e in events if isinstance(e, SearchFinished)))["schema_version"] == 2
    state = fold(events)
    assert state.elapsed_s is None and state.spent_seconds > 0
    log = MemoryStore().log("golden")
    log.append(events, 0)
    before = time.time()
    service = SearchService(log)
    assert state.spent_seconds <= service.elapsed_s() <= state.spent_seconds + (time.time() - before) + 1


def test_the_wall_clock_carries_over_to_the_next_runner() -> None:
    """A resumed search goes on from the wall clock its log records, so its budget is not spent twice."""
    from nas.data import fingerprint, load_splits
    from nas.drivers.config import load

    config = load(ROOT / "params.yaml", ["data.dataset=digits", "search.strategy=random", "search.time_budget_s=300"])
    splits = load_splits("digits")
    log = MemoryStore().log("clock")
    first = SearchService(log)
    first.start("clock", config, splits.input_shape, splits.num_classes, fingerprint(splits))
    (proposed,) = first.ask(1, elapsed_s=120.0)
    assert proposed.elapsed_s == 120.0 and first.state.elapsed_s == 120.0
    opened = time.time()
    second = SearchService(log)
    assert 120.0 <= second.elapsed_s() < 121.0 + (time.time() - opened)
    assert abs(second.deadline() - (opened + 300 - 120)) < 1.0 + (time.time() - opened)
    second.finish("stopped by hand")
    assert 120.0 <= second.state.elapsed_s < 125.0 and second.stop_reason() is None
    shown = summary(second.state)  # what `nas replay` prints: compute and wall clock apart
    assert shown["elapsed_s"] == round(second.state.elapsed_s, 3) and shown["spent_seconds"] < shown["elapsed_s"]
    assert summary(fold(verify_chain(golden())))["elapsed_s"] is None  # a log from before the wall clock


def test_a_search_logged_before_later_settings_reads_as_it_ran_and_a_complete_one_unchanged() -> None:
    """The one upcaster of a logged configuration: the fold gives a log's missing settings the values such a search
    ran with (a constant rate, raw GP targets, no minimum of steps), not today's defaults, and keeps what the log
    holds."""
    from nas.drivers.config import validate
    from nas.ledger.events import BEFORE_SETTING, logged_config
    from nas.ledger.state import fold

    complete = validate({})
    old = {
        group: {k: v for k, v in values.items() if k not in BEFORE_SETTING.get(group, {})}
        for group, values in complete.items()
    }
    state = fold([SearchStarted("s", 1, "s", old, "fp", "test", 0, "{}")])
    assert state.config["train"]["schedule"] == "constant" and complete["train"]["schedule"] == "cosine"
    assert state.config["search"]["surrogate_targets"] == "raw" and state.config["train"]["min_steps"] == 0
    assert state.config["search"]["max_models"] == complete["search"]["max_models"]
    now = fold([SearchStarted("s", 1, "s", complete, "fp", "test", 0, "{}")]).config
    removed = {group: {k: v for k, v in values.items() if k in complete[group]} for group, values in now.items()}
    assert removed == complete and now["search"]["learning_rates"] == [] and "learning_rates" not in complete["search"]
    assert logged_config(old) == fold([SearchStarted("s", 1, "s", old, "fp", "test", 0, "{}")]).config
    assert "schedule" not in old["train"]  # the event itself is not changed (its hash covers it)

"""The nas-search flow under a real Prefect API (test harness): it logs, resumes, and trains in parallel."""

from __future__ import annotations

import pytest

from nas.drivers.config import load
from nas.drivers.runner import run_search
from nas.ledger.events import TrainingCompleted, TrainingStarted
from nas.ledger.memory import MemoryStore
from nas.ledger.ports import LeaseHeld
from nas.ledger.replay import verify
from nas.tracking import open_store

SMALL = ["search.initial_width=8", "train.min_steps=0"]
FLOW_ARGS = {"dataset": "digits", "epochs": 1, "overrides": SMALL}


def outcome(events) -> list[tuple[str, str, float]]:
    return [(e.model_id, e.architecture_id, e.val_accuracy) for e in events if isinstance(e, TrainingCompleted)]


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_api")
def test_flow_logs_a_search_the_plain_loop_reproduces_and_resumes_by_name(store: str) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName

    from flows.nas_search import nas_search

    info = nas_search(name="f1", max_models=3, **FLOW_ARGS)
    assert info["trained"] == 3 and info["status"] == "finished"
    with get_client(sync_client=True) as client:  # a run started from Python is named after its search
        named = client.read_flow_runs(flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=["f1"])))
    assert [r.state_name for r in named] == ["Completed"]
    with get_client(sync_client=True) as client:  # task runs are named after what they do
        of_f1 = FlowRunFilter(name=FlowRunFilterName(any_=["f1"]))
        tasks = {t.name for t in client.read_task_runs(flow_run_filter=of_f1)}
    assert {"refit", "propose m1", "propose m3", "train m1", "train m3"} <= tasks
    with get_client(sync_client=True) as client:  # the artifacts, written by the publisher's thread, are the run's
        artifacts = client.read_artifacts(flow_run_filter=of_f1)
    table = max((a for a in artifacts if a.key == "nas-f1"), key=lambda a: a.created)
    assert "Status: finished (max_models=3 reached)" in str(table.data) and "| m3" in str(table.data)
    assert [a.data for a in artifacts if a.type == "progress"] == [100.0]
    events = open_store().log("f1").read()
    config = load(None, ["data.dataset=digits", "train.epochs=1", "search.max_models=3", *SMALL])
    local = MemoryStore()
    run_search(local, "f1", config)
    assert outcome(local.log("f1").read()) == outcome(events)  # the flow is only an orchestrator
    assert verify(events) is None  # proposals made while training replay too
    again = nas_search(name="f1", max_models=3, **FLOW_ARGS)  # same name: resumes, nothing left to do
    assert again == info
    assert open_store().log("f1").read() == events


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_api")
def test_two_trainers_train_at_once_and_propose_the_same_models(store: str) -> None:
    """Random proposals do not read scores, so both runs propose the same models. Their scores are NOT
    compared: two trainings sharing one TensorFlow process (and its thread pools) are not reproducible,
    and a few epochs amplify last-bit differences. With trainers = 1 a search repeats exactly."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitUpdate

    from flows.nas_search import TRAINER_LIMIT, nas_search

    runs = []
    nas_search(name="p0", max_models=1, **FLOW_ARGS)  # creates the shared limit if an earlier test did not
    with get_client(sync_client=True) as client:  # as an operator would: two slots on this machine
        client.update_global_concurrency_limit(TRAINER_LIMIT, GlobalConcurrencyLimitUpdate(limit=2))
    for name in ("p1", "p2"):
        # 4 epochs: long enough that the second training starts before the first ends, even on a loaded machine
        nas_search(name=name, max_models=4, trainers=2, strategy="random", **{**FLOW_ARGS, "epochs": 4})
        runs.append(open_store().log(name).read())
    first, second = sorted(outcome(runs[0])), sorted(outcome(runs[1]))  # completion order may differ
    assert [m[:2] for m in first] == [m[:2] for m in second] and len(first) == 4
    first_done = next(i for i, e in enumerate(runs[0]) if isinstance(e, TrainingCompleted))
    assert sum(isinstance(e, TrainingStarted) for e in runs[0][:first_done]) >= 2  # overlapping trainings


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_api")
def test_more_trainers_than_slots_finish_and_the_flow_gives_its_slots_back(store: str) -> None:
    """The flow keeps the slot it trains in from one training to the next; with trainers=2 and one slot on
    the API, the second training waits for a slot of its own, and the flow must not sit on an idle one."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate, GlobalConcurrencyLimitUpdate
    from prefect.exceptions import ObjectNotFound

    from flows.nas_search import TRAINER_LIMIT, nas_search

    with get_client(sync_client=True) as client:
        try:
            before = client.read_global_concurrency_limit_by_name(TRAINER_LIMIT).limit
            client.update_global_concurrency_limit(TRAINER_LIMIT, GlobalConcurrencyLimitUpdate(limit=1))
        except ObjectNotFound:
            before = 1
            client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=TRAINER_LIMIT, limit=1))
    try:
        info = nas_search(name="one-slot", max_models=4, trainers=2, strategy="random", **FLOW_ARGS)
        assert info["trained"] == 4 and info["status"] == "finished"
        events = open_store().log("one-slot").read()
        running = 0
        for e in events:  # one slot: never two trainings at once
            running += isinstance(e, TrainingStarted) - isinstance(e, TrainingCompleted)
            assert running <= 1
        with get_client(sync_client=True) as client:
            assert client.read_global_concurrency_limit_by_name(TRAINER_LIMIT).active_slots == 0  # given back
    finally:
        with get_client(sync_client=True) as client:
            client.update_global_concurrency_limit(TRAINER_LIMIT, GlobalConcurrencyLimitUpdate(limit=before))


@pytest.mark.usefixtures("prefect_api")
def test_bad_flow_parameters_fail_fast_and_log_nothing(store: str) -> None:
    from flows.nas_search import nas_search

    for params, message in [
        ({"strategy": "greedy"}, "search.strategy='greedy' must be one of"),
        ({"time_budget_s": -1}, "search.time_budget_s=-1.0 must be a positive number"),
        ({"dataset": "nowhere"}, "unknown dataset 'nowhere'"),
        ({"overrides": ["train.epoch=3"]}, "unknown setting 'train.epoch'"),
        ({"max_params": 10}, "above search.max_params=10"),  # the initial network is checked before any run
    ]:
        with pytest.raises(ValueError, match=message):
            nas_search(name="bad", **params)
    assert not open_store().exists("bad")


@pytest.mark.usefixtures("prefect_api")
def test_a_search_another_runner_holds_is_refused_and_nothing_is_logged(store: str) -> None:
    from flows.nas_search import nas_search

    nas_search(name="held", max_models=1, **FLOW_ARGS)  # ends and releases its lease
    log = open_store().log("held")
    open_store().lease("held").acquire("flow run other (0f2c)", ttl_s=60)  # another runner took it meanwhile
    before = log.last_seq()
    with pytest.raises(LeaseHeld, match=r"'held' is already being run by flow run other \(0f2c\)"):
        nas_search(name="held", **FLOW_ARGS)
    assert log.last_seq() == before

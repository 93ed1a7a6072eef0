"""One runner per search: the lease on the search's parent run (a real SQLite MLflow store)."""

from __future__ import annotations

import threading
import time

import pytest

from nas.event_log.mlflow import LeaseHeld, MlflowEventLog
from tests.ledger.test_contract import started


@pytest.fixture
def log(mlflow_uri: str) -> MlflowEventLog:
    log = MlflowEventLog("leased", uri=mlflow_uri)
    log.append([started("leased")], 0)
    return log


def test_a_held_lease_refuses_a_second_runner_naming_the_holder(log: MlflowEventLog, mlflow_uri: str) -> None:
    assert log.acquire_lease("runner A", ttl_s=60) == (1, None)
    other = MlflowEventLog("leased", uri=mlflow_uri)
    with pytest.raises(LeaseHeld, match=r"already being run by runner A \(heartbeat \d+ s ago\).*lease expires"):
        other.acquire_lease("runner B", ttl_s=60)
    assert log.acquire_lease("runner A", ttl_s=60) == (1, None)  # the holder itself (a retry) keeps it


def test_a_released_lease_passes_on_without_waiting(log: MlflowEventLog, mlflow_uri: str) -> None:
    number, _ = log.acquire_lease("runner A", ttl_s=60)
    log.release_lease(number)
    assert MlflowEventLog("leased", uri=mlflow_uri).acquire_lease("runner B", ttl_s=60) == (2, None)


def test_an_expired_lease_is_taken_over_and_its_holder_learns_it_lost(log: MlflowEventLog, mlflow_uri: str) -> None:
    number, _ = log.acquire_lease("runner A", ttl_s=60)
    time.sleep(1.2)
    other = MlflowEventLog("leased", uri=mlflow_uri)
    assert other.acquire_lease("runner B", ttl_s=1) == (2, "runner A")  # A's heartbeat is older than 1 s
    with pytest.raises(LeaseHeld, match="taken over by runner B"):
        log.renew_lease(number)
    other.renew_lease(2)


def test_of_runners_claiming_at_once_exactly_one_wins(log: MlflowEventLog, mlflow_uri: str) -> None:
    barrier = threading.Barrier(4)
    outcomes: dict[str, str] = {}

    def claim(name: str) -> None:
        mine = MlflowEventLog("leased", uri=mlflow_uri)
        mine.parent_run()
        barrier.wait()
        try:
            mine.acquire_lease(name, ttl_s=60)
            outcomes[name] = "won"
        except LeaseHeld as e:
            outcomes[name] = str(e)

    threads = [threading.Thread(target=claim, args=(f"runner {i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes.values()).count("won") == 1, outcomes
    params = log.parent_run().data.params
    assert [k for k in params if k.startswith("lease.")] == ["lease.0001"]


def test_a_search_without_a_parent_run_cannot_be_leased(mlflow_uri: str) -> None:
    with pytest.raises(ValueError, match="no parent run"):
        MlflowEventLog("nothing-yet", uri=mlflow_uri).acquire_lease("runner A", ttl_s=60)

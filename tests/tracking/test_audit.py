"""Tampering with a search's MLflow runs is caught by the audit, which names the first bad event."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from nas.cli import main
from nas.ledger.log import verify_chain
from nas.tracking import open_store
from nas.tracking.event_log import MlflowEventLog
from tests.ledger.test_events import golden


def audit(log: MlflowEventLog):
    return open_store().audit(log.search_id)


@pytest.fixture
def search(mlflow_uri: str) -> MlflowEventLog:
    log = open_store().log("golden")
    events = verify_chain(golden())
    log.append(events[:4], 0)
    log.append(events[4:], 4)
    return log


def run_of(log: MlflowEventLog, seq: int):
    return next(r for r in log.runs.event_runs() if r.data.tags["nas.seq"] == str(seq))


def first_bad(log: MlflowEventLog) -> tuple[int, str]:
    report = audit(log)
    assert not report.ok
    assert main(["audit", log.search_id]) == 1
    return report.findings[0]


def test_an_untouched_search_passes_with_its_lineage(search: MlflowEventLog, capsys) -> None:
    report = audit(search)
    assert report.ok and report.events == 10
    assert [step["model"] for step in report.lineage] == ["m1"]
    assert main(["audit", "golden"]) == 0
    assert "audit passed: search golden, 10 events" in capsys.readouterr().out


def test_a_param_edited_in_the_database(search: MlflowEventLog, mlflow_uri: str) -> None:
    run_id = run_of(search, 4).info.run_id
    with sqlite3.connect(mlflow_uri.removeprefix("sqlite:///")) as db:
        db.execute("UPDATE params SET value = '0.99' WHERE key = 'val_accuracy' AND run_uuid = ?", (run_id,))
    seq, problem = first_bad(search)
    assert seq == 4 and "param 'val_accuracy'" in problem and "'0.99'" in problem


def test_params_cannot_be_changed_through_the_client_and_added_ones_are_caught(search: MlflowEventLog) -> None:
    from mlflow.exceptions import MlflowException

    run_id = run_of(search, 4).info.run_id
    with pytest.raises(MlflowException, match="Changing param values is not allowed"):
        search.client.log_param(run_id, "val_accuracy", "0.99")
    search.client.log_param(run_id, "note", "looks better")
    seq, problem = first_bad(search)
    assert seq == 4 and "params the event does not: note" in problem


def test_a_deleted_run(search: MlflowEventLog) -> None:
    search.client.delete_run(run_of(search, 6).info.run_id)
    seq, problem = first_bad(search)
    assert seq == 6 and "missing" in problem


def test_a_replaced_artifact(search: MlflowEventLog, tmp_path: Path) -> None:
    run = run_of(search, 4)
    record = json.loads((Path(run.info.artifact_uri.removeprefix("file://")) / "event.json").read_text())
    record["payload"]["val_accuracy"] = 0.99
    fake = tmp_path / "fake" / "event.json"
    fake.parent.mkdir()
    fake.write_text(json.dumps(record))
    search.client.log_artifact(run.info.run_id, str(fake))
    seq, problem = first_bad(search)
    assert seq == 4 and "replaced or edited" in problem


def test_an_added_run(search: MlflowEventLog) -> None:
    parent = search.runs.parent()
    tags = {"mlflow.parentRunId": parent.info.run_id, "nas.search_id": "golden", "nas.role": "event", "nas.seq": "11"}
    search.client.create_run(search.runs.experiment_id, run_name="0011 trained m9 val_acc=0.999", tags=tags)
    seq, problem = first_bad(search)
    assert seq == 11 and "it was added" in problem


def test_reordered_runs(search: MlflowEventLog) -> None:
    a, b = run_of(search, 2), run_of(search, 3)
    search.client.set_tag(a.info.run_id, "nas.seq", "3")
    search.client.set_tag(b.info.run_id, "nas.seq", "2")
    seq, problem = first_bad(search)
    assert seq == 2 and problem.startswith("tag 'nas.seq' of run") and "is '3', the event says '2'" in problem


def test_replay_refuses_a_tampered_log(search: MlflowEventLog) -> None:
    search.client.delete_run(run_of(search, 5).info.run_id)
    with pytest.raises(ValueError, match="seq 5: the committed event's run is missing"):
        open_store().log("golden").read()


def test_replaced_weights_are_caught_by_the_audit_and_never_trained_from(mlflow_uri: str, tmp_path: Path) -> None:
    from nas.drivers.config import load
    from nas.drivers.runner import run_search
    from nas.ledger.service import SearchService

    root = Path(__file__).parents[2]
    config = load(
        root / "params.yaml", ["data.dataset=digits", "train.epochs=1", "train.min_steps=0", "search.max_models=1"]
    )
    run_search(open_store(), "w", config)
    log = open_store().log("w")
    seq = SearchService(log).state.models["m1"].completed_seq
    assert seq is not None and audit(log).ok
    fake = tmp_path / "files" / "weights.npz"
    fake.parent.mkdir()
    data = bytearray(SearchService(log).weights_file("m1").read_bytes())
    data[len(data) // 2] ^= 0xFF  # one byte differs
    fake.write_bytes(bytes(data))
    log.client.log_artifact(run_of(log, seq).info.run_id, str(fake), artifact_path="files")
    found, problem = first_bad(log)
    assert found == seq and "weights.npz artifact" in problem and "was replaced" in problem
    with pytest.raises(ValueError, match=r"event seq \d+: the weights of m1 are not the ones its event recorded"):
        SearchService(log).weights_file("m1")


def test_a_second_outcome_for_one_model_is_caught_and_never_logged_by_the_service(mlflow_uri: str) -> None:
    from nas.ledger.events import TrainingFailed
    from nas.ledger.service import SearchService
    from tests.ledger.logs import ARCH, begun

    log = open_store().log("twice")
    failed = [TrainingFailed("twice", seq, "m1", "error", "lost", ARCH.param_count, 1.0) for seq in (4, 5)]
    log.append([*begun("twice"), failed[0]], 0)
    service = SearchService(log)
    service.training_failed("m1", "timeout", "a late second outcome", 2.0)  # the first outcome stands
    assert log.last_seq() == 4 and audit(log).ok
    log.append([failed[1]], 4)  # a writer that skipped the check
    found, problem = first_bad(log)
    assert found == 5 and problem == "model m1 has 2 training outcomes (seqs 4, 5)"


def test_searches_live_in_the_experiment_mlflow_experiment_name_names(
    mlflow_uri: str, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """``MLFLOW_EXPERIMENT_NAME`` picks the MLflow experiment that holds the searches (default ``nas``), as it does
    for MLflow's own clients: a search made under one name is listed and audited under it, and not under another."""
    from mlflow.tracking import MlflowClient

    from tests.tracking.forge import fake_search

    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "team-a")
    fake_search(open_store(), "mine", models=2)
    assert main(["ls"]) == 0 and "mine" in capsys.readouterr().out
    assert main(["audit", "mine"]) == 0
    capsys.readouterr()
    client = MlflowClient(mlflow_uri)
    assert client.get_experiment_by_name("team-a") is not None and client.get_experiment_by_name("nas") is None
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME")
    assert main(["ls"]) == 0 and "mine" not in capsys.readouterr().out

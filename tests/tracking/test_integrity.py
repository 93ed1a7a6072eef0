"""Attacks on a stored search, by means no earlier test listed, and what catches each (issue: trustworthy history).

Each attack runs on a real SQLite MLflow store holding a search whose trainings are faked (real events, real
weights files); the end-to-end test at the bottom attacks a really trained search through the command line.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from nas.cli import main
from nas.drivers.witness import default_anchors, witness
from nas.ledger.events import SearchFinished, TrainingCompleted
from nas.ledger.log import Head, seal
from nas.tracking import list_searches, open_store
from nas.tracking.store import MlflowStore
from tests.tracking.forge import Database, artifact_dir, fake_search, rechain, rewrite_record, truncate


@pytest.fixture
def store(mlflow_uri: str) -> MlflowStore:
    store = open_store()
    assert isinstance(store, MlflowStore)
    return store


def witnessed(store: MlflowStore, name: str) -> None:
    """What a runner keeps outside the store: every event's seq and hash."""
    records = store.log(name).records()
    witness(name, [Head(r["seq"], r["hash"]) for r in records], store.uri, "test")


def first_finding(store: MlflowStore, name: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    report = store.audit(name, anchors=default_anchors(name, store.uri))
    assert not report.ok
    assert main(["audit", name]) == 1
    seq = report.findings[0][0]
    where = f"first bad event seq {seq}" if seq else "in its runs"
    assert f"audit FAILED: search {name}, {where}" in capsys.readouterr().out
    return report.findings[0]


def completed_seq(store: MlflowStore, name: str, model: str) -> int:
    return next(e.seq for e in store.log(name).read() if isinstance(e, TrainingCompleted) and e.model_id == model)


def test_a_clean_fake_search_passes_and_its_head_is_printed(store: MlflowStore, capsys) -> None:
    fake_search(store, "clean")
    witnessed(store, "clean")
    assert main(["audit", "clean"]) == 0
    out = capsys.readouterr().out
    head = store.log("clean").head()
    assert "audit passed" in out and f"head: {head}" in out and "anchor(s) held" in out


def test_a_fully_rechained_forgery_is_caught_by_the_witness_at_the_edited_seq(store: MlflowStore, capsys) -> None:
    fake_search(store, "forged")
    witnessed(store, "forged")
    seq = completed_seq(store, "forged", "m2")
    rechain(store, "forged", seq, lambda payload: payload.update(seconds=0.5))  # an edit nothing else shows
    assert store.audit("forged", anchors=()).ok  # the store alone cannot tell: everything was re-sealed
    found, problem = first_finding(store, "forged", capsys)  # the witness file can
    assert found == seq and "re-chained or rolled back" in problem
    assert main(["resume", "forged", "--local"]) == 3
    assert "integrity error" in capsys.readouterr().err


def test_an_anchor_given_on_the_command_line_catches_a_forgery(store: MlflowStore, capsys) -> None:
    fake_search(store, "anchored")
    head = store.log("anchored").head()
    rechain(store, "anchored", 4, lambda payload: payload.update(seconds=0.5))
    assert main(["audit", "anchored"]) == 0  # no witness file: nothing outside the store
    capsys.readouterr()
    assert main(["audit", "anchored", "--anchor", str(head)]) == 1
    assert f"seq {head.seq} is not the record anchored" in capsys.readouterr().out
    out = Path("search.json")
    out.write_text(json.dumps({"search": "anchored", "head": str(head)}))  # as the DVC stage writes it
    assert main(["audit", "anchored", "--anchor", str(out)]) == 1


def test_a_truncated_tail_is_caught(store: MlflowStore, capsys) -> None:
    fake_search(store, "cut")
    witnessed(store, "cut")
    last = store.log("cut").head().seq
    truncate(store, "cut", last - 3)
    assert store.audit("cut", anchors=()).findings == []  # consistent but shorter
    found, problem = first_finding(store, "cut", capsys)
    assert found == last - 2 and "truncated" in problem


def test_with_the_ledger_key_a_forger_without_it_is_caught_at_the_first_forged_record(
    store: MlflowStore, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.setenv("NAS_LEDGER_KEY", "kept out of the store")
    fake_search(store, "keyed")
    assert store.audit("keyed").ok
    seq = completed_seq(store, "keyed", "m1")
    rechain(store, "keyed", seq, lambda payload: payload.update(val_accuracy=0.999))  # re-sealed without the key
    found, problem = first_finding(store, "keyed", capsys)
    assert found == seq and "seal" in problem


def test_an_outcome_that_does_not_match_its_proposal_is_caught(store: MlflowStore, capsys) -> None:
    from nas.ledger.events import ArchitectureProposed, TrainingStarted

    fake_search(store, "mismatch", finish=False)
    log = store.log("mismatch")
    events = log.read()
    seq = len(events) + 1
    m1 = next(e for e in events if isinstance(e, ArchitectureProposed) and e.model_id == "m1")
    log.append(
        [
            ArchitectureProposed("mismatch", seq, "m4", "m1", [], m1.architecture_id, m1.architecture, "random"),
            TrainingStarted("mismatch", seq + 1, "m4", 1),
            TrainingCompleted("mismatch", seq + 2, "m4", "b" * 64, 0.999, 12),  # another architecture, 12 params
        ],
        seq - 1,
    )
    found, problem = first_finding(store, "mismatch", capsys)
    assert found == seq + 2 and "names architecture bbbbbbbbbbbb, its proposal" in problem


def test_a_proposal_at_a_learning_rate_the_search_does_not_list_is_caught(store: MlflowStore, capsys) -> None:
    from nas.ledger.events import ArchitectureProposed

    fake_search(store, "rate", finish=False)  # search.learning_rates: [] (none chosen)
    log = store.log("rate")
    seq = log.last_seq() + 1
    m1 = next(e for e in log.read() if isinstance(e, ArchitectureProposed) and e.model_id == "m1")
    log.append([replace(m1, seq=seq, model_id="m4", parent_model_id="m1", learning_rate=0.5)], seq - 1)
    found, problem = first_finding(store, "rate", capsys)
    assert found == seq and "m4 is proposed at learning rate 0.5, not one of search.learning_rates []" in problem


def test_a_search_finished_that_names_another_best_model_is_caught(store: MlflowStore, capsys) -> None:
    fake_search(store, "finished")
    events = store.log("finished").read()
    finished = events[-1]
    assert isinstance(finished, SearchFinished)
    rechain(store, "finished", finished.seq, lambda payload: payload.update(best_model_id="m1", val_accuracy=0.99))
    found, problem = first_finding(store, "finished", capsys)
    assert found == finished.seq and "SearchFinished names best m1 (0.99)" in problem


def test_an_outcome_for_a_model_never_proposed_is_a_message_not_a_traceback(store: MlflowStore, capsys) -> None:
    fake_search(store, "ghost", finish=False)
    log = store.log("ghost")
    seq = log.last_seq() + 1
    log.append([TrainingCompleted("ghost", seq, "m9", "c" * 64, 0.99, 10)], seq - 1)  # hash-valid, meaningless
    found, problem = first_finding(store, "ghost", capsys)
    assert found == seq and "names model 'm9', which was never proposed" in problem
    for command in (["replay", "ghost"], ["replay", "ghost", "--verify"], ["resume", "ghost", "--local"]):
        assert main(command) == 3
        err = capsys.readouterr().err
        assert err.startswith("nas: integrity error: search 'ghost', event seq ") and len(err.strip().splitlines()) == 1
    assert main(["report", "ghost"]) == 3


@pytest.mark.parametrize(
    "tamper",
    ["epoch metric", "latest metric", "run name", "type tag", "parent tag", "best_val_accuracy", "summary tag"],
)
def test_what_the_ui_shows_is_audited(store: MlflowStore, tamper: str, capsys) -> None:
    fake_search(store, "ui")
    seq = completed_seq(store, "ui", "m2")
    run = next(r for r in store.runs("ui").event_runs() if r.data.tags["nas.seq"] == str(seq))
    db, run_id, parent = Database(store.uri), run.info.run_id, store.runs("ui").parent_id
    if tamper == "epoch metric":
        db.run("UPDATE metrics SET value = 0.999 WHERE run_uuid = ? AND key = 'val_accuracy'", run_id)
    elif tamper == "latest metric":
        db.run("UPDATE latest_metrics SET value = 0.999 WHERE run_uuid = ? AND key = 'val_accuracy'", run_id)
    elif tamper == "run name":
        store.client.set_tag(run_id, "mlflow.runName", f"{seq:04d} trained m2 val_acc=0.999")
    elif tamper == "type tag":
        store.client.set_tag(run_id, "nas.type", "TrainingFailed")
    elif tamper == "parent tag":
        other = store.client.create_run(store.runs("ui").experiment_id, run_name="elsewhere").info.run_id
        store.client.set_tag(run_id, "mlflow.parentRunId", other)
    elif tamper == "best_val_accuracy":
        db.run("UPDATE metrics SET value = 0.999 WHERE run_uuid = ? AND key = 'best_val_accuracy'", parent)
    elif tamper == "summary tag":
        store.client.set_tag(parent, "nas.best_val_accuracy", "0.999")
    found, problem = first_finding(store, "ui", capsys)
    assert found in (0, seq), problem


def test_a_plain_run_nested_under_the_search_is_reported(store: MlflowStore, capsys) -> None:
    fake_search(store, "nested")
    parent = store.runs("nested").parent_id
    store.client.create_run(store.runs("nested").experiment_id, tags={"mlflow.parentRunId": str(parent)})
    found, problem = first_finding(store, "nested", capsys)
    assert found == 0 and "under the search is not a committed event: it was added" in problem


def test_a_missing_run_is_named_and_nothing_is_called_reordered(store: MlflowStore, capsys) -> None:
    fake_search(store, "gap")
    run = next(r for r in store.runs("gap").event_runs() if r.data.tags["nas.seq"] == "4")
    store.client.delete_run(run.info.run_id)
    report = store.audit("gap")
    assert report.findings[0][0] == 4 and "missing" in report.findings[0][1]
    assert not any("reorder" in p or "chained" in p for _, p in report.findings)


def test_an_edit_whose_own_hash_was_recomputed_is_named_at_the_edited_seq(store: MlflowStore, capsys) -> None:
    fake_search(store, "rehash")
    records = store.log("rehash").records()
    old = records[3]
    body = {k: v for k, v in old.items() if k not in ("hash", "mac")}
    body["payload"] = {**body["payload"], "seconds": 0.5}
    new = seal({k: v for k, v in body.items() if k != "prev_hash"}, old["prev_hash"])
    run = next(r for r in store.runs("rehash").event_runs() if r.data.params["nas.hash"] == old["hash"])
    rewrite_record(store, run.info.run_id, old, new)
    found, problem = first_finding(store, "rehash", capsys)
    assert found == 4, problem


def test_resume_refuses_a_committed_run_marked_failed_and_says_so(store: MlflowStore, capsys) -> None:
    fake_search(store, "failed", finish=False)
    run = next(r for r in store.runs("failed").event_runs() if r.data.tags["nas.seq"] == "3")
    store.client.set_terminated(run.info.run_id, "FAILED")
    assert main(["resume", "failed", "--local"]) == 3
    err = capsys.readouterr().err
    assert "seq 3" in err and "FAILED" in err and "nas audit" in err
    assert store.client.get_run(run.info.run_id).info.status == "FAILED"  # the evidence stays


def test_a_decoy_parent_and_a_broken_search_do_not_break_ls(store: MlflowStore, capsys) -> None:
    fake_search(store, "good")
    fake_search(store, "broken")
    run = next(r for r in store.runs("broken").event_runs() if r.data.tags["nas.seq"] == "2")
    store.client.delete_run(run.info.run_id)
    store.create("decoy")  # a parent run with no SearchStarted
    assert main(["ls"]) == 0
    out = capsys.readouterr().out
    assert "good" in out and "finished" in out
    assert "decoy" in out and "BROKEN" in out and "no SearchStarted" in out
    assert "broken" in out  # listed from its summary; `nas audit broken` names the missing run
    assert main(["audit", "broken"]) == 1

    # `nas ls` read the SQLite file directly; MLflow's own client lists the same, a deleted parent in neither
    store.create("gone")
    store.client.delete_run(store.runs("gone").parent_id)
    store.client.set_tag(store.runs("good").parent_id, "nas.trained", "many")  # a summary that does not parse
    direct = list_searches(store.uri)
    assert direct == store.searches() and [s.name for s in direct] == ["broken", "decoy", "good"]
    assert direct[2].problem is not None and "not readable" in direct[2].problem


def test_bad_settings_on_the_flow_path_leave_no_run(store: MlflowStore, capsys) -> None:
    from tests.conftest import mlflow_has_no_runs

    Path("params.yaml").write_text((Path(__file__).parents[2] / "params.yaml").read_text())
    assert main(["search", "--set", "search.max_params=10", "--set", "data.dataset=digits", "--name", "tiny"]) == 2
    assert "above search.max_params=10" in capsys.readouterr().err
    assert mlflow_has_no_runs(store.uri)


def test_a_replaced_weights_file_stops_a_resumed_search_with_a_non_zero_exit(store: MlflowStore, capsys) -> None:
    from nas.ledger.events import ArchitectureProposed

    fake_search(store, "weights", models=2, finish=False)
    seq = completed_seq(store, "weights", "m1")
    run = next(r for r in store.runs("weights").event_runs() if r.data.tags["nas.seq"] == str(seq))
    path = artifact_dir(store, run.info.run_id) / "files" / "weights.npz"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    found, problem = first_finding(store, "weights", capsys)
    assert found == seq and "weights.npz artifact" in problem
    log = store.log("weights")
    m1 = next(e for e in log.read() if isinstance(e, ArchitectureProposed) and e.model_id == "m1")
    last = log.last_seq()
    log.append(
        [ArchitectureProposed("weights", last + 1, "m3", "m1", [], m1.architecture_id, m1.architecture, "random")], last
    )
    assert main(["resume", "weights", "--local"]) == 3  # m3 would be trained from m1's replaced weights
    err = capsys.readouterr().err
    assert "the weights of m1 are not the ones its event recorded" in err and "run nas audit" in err
    assert not any(type(e).__name__ == "TrainingCompleted" and e.model_id == "m3" for e in log.read())

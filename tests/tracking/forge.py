"""An attacker's tools against a search stored in a SQLite MLflow store: what a person with the database and the
artifact folder can do, by means the MLflow client does not offer. And a quick search to attack (real events,
real weights files, no Keras: trainings are faked with Glorot-initialised weights)."""

from __future__ import annotations

import json
import sqlite3
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from nas.architectures.weights import init_weights, save_weights
from nas.data import fingerprint
from nas.drivers.config import load
from nas.drivers.runner import splits_for
from nas.ledger.log import record_of, seal
from nas.ledger.replay import best_so_far, summary_values
from nas.ledger.service import SearchService
from nas.tracking.records import event_params, run_name
from nas.tracking.runs import claim_key
from nas.tracking.store import MlflowStore

ROOT = Path(__file__).parents[2]


def publish_summary(store: MlflowStore, name: str) -> None:
    """What the runner publishes each round: the summary tags and best_val_accuracy."""
    log = store.log(name)
    events = log.read()
    state = SearchService(log).state
    store.reports(name).summary(summary_values(state), {"best_val_accuracy": best_so_far(events)})


def fake_search(store: MlflowStore, name: str, models: int = 3, finish: bool = True) -> SearchService:
    """A random search of ``models`` models on 8x8 digits whose trainings are faked (weights as initialised)."""
    config = load(ROOT / "params.yaml", ["data.dataset=digits", "search.strategy=random", "search.initial_width=8"])
    config["search"]["max_models"] = models
    splits = splits_for(config)
    store.create(name)
    service = SearchService(store.log(name))
    service.start(name, config, splits.input_shape, splits.num_classes, fingerprint(splits))
    rng = np.random.default_rng(len(name))
    for _ in range(models):
        (proposal,) = service.ask(1)
        fake_training(service, proposal.model_id, float(rng.uniform(0.5, 0.9)), rng)
        publish_summary(store, name)
    if finish:
        service.finish(f"max_models={models} reached")
        publish_summary(store, name)
    return service


def fake_training(service: SearchService, model: str, accuracy: float, rng: np.random.Generator) -> None:
    """Log ``model``'s training as started and completed at ``accuracy``, its weights as initialised."""
    service.training_started(model)
    path = Path(tempfile.mkdtemp(prefix="nas-fake-")) / f"{model}.npz"
    save_weights(path, init_weights(service.state.models[model].arch, rng))
    epochs = [{"loss": 1.0, "accuracy": 0.5, "val_loss": 1.1, "val_accuracy": accuracy}]
    service.training_completed(model, accuracy, epochs, 0.0, 1.0, path)


class Database:
    """Direct access to a SQLite MLflow store, as an attacker with the file has it."""

    def __init__(self, uri: str) -> None:
        self.path = uri.removeprefix("sqlite:///")

    def run(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        with sqlite3.connect(self.path) as db:
            return list(db.execute(sql, args))

    def set_param(self, run_id: str, key: str, value: str) -> None:
        self.run("DELETE FROM params WHERE run_uuid = ? AND key = ?", run_id, key)
        self.run("INSERT INTO params (key, value, run_uuid) VALUES (?, ?, ?)", key, value, run_id)

    def params(self, run_id: str) -> dict[str, str]:
        return dict(self.run("SELECT key, value FROM params WHERE run_uuid = ?", run_id))


def artifact_dir(store: MlflowStore, run_id: str) -> Path:
    return Path(store.client.get_run(run_id).info.artifact_uri.removeprefix("file://"))


def rewrite_record(store: MlflowStore, run_id: str, old: dict[str, Any], new: dict[str, Any]) -> None:
    """Make a run show ``new`` instead of ``old`` everywhere: params, name, event.json."""
    db = Database(store.uri)
    for key in set(event_params(old)) - set(event_params(new)):
        db.run("DELETE FROM params WHERE run_uuid = ? AND key = ?", run_id, key)
    for key, value in event_params(new).items():
        db.set_param(run_id, key, value)
    db.run("UPDATE runs SET name = ? WHERE run_uuid = ?", run_name(new), run_id)
    db.run("UPDATE tags SET value = ? WHERE run_uuid = ? AND key = 'mlflow.runName'", run_name(new), run_id)
    (artifact_dir(store, run_id) / "event.json").write_text(json.dumps(new, sort_keys=True, indent=1))


def rechain(store: MlflowStore, name: str, seq: int, edit: Callable[[dict[str, Any]], None]) -> None:
    """The full forgery: edit event ``seq``'s payload, re-seal it and every later event (new hashes, new links),
    rewrite their runs and the parent's commit points. Only something kept outside the store can tell."""
    log = store.log(name)
    records = log.records()
    runs = {r.data.params["nas.hash"]: r.info.run_id for r in store.runs(name).event_runs()}
    parent = store.runs(name).parent_id
    assert parent is not None
    db = Database(store.uri)
    prev = records[seq - 2]["hash"] if seq > 1 else "0" * 64
    for old in records[seq - 1 :]:
        body = record_of(old)
        if old["seq"] == seq:
            body = json.loads(json.dumps(body))
            edit(body["payload"])
        new = seal(body, prev)
        rewrite_record(store, runs[old["hash"]], old, new)
        db.set_param(parent, claim_key(old["seq"]), new["hash"])
        prev = new["hash"]


def truncate(store: MlflowStore, name: str, keep: int) -> None:
    """Roll the log back to its first ``keep`` events: delete later commit points and their runs, and publish
    the summary of the shorter log, so the store is consistent again."""
    log = store.log(name)
    records = log.records()
    runs = {r.data.params["nas.hash"]: r.info.run_id for r in store.runs(name).event_runs()}
    parent = store.runs(name).parent_id
    db = Database(store.uri)
    for rec in records[keep:]:
        db.run("DELETE FROM params WHERE run_uuid = ? AND key = ?", parent, claim_key(rec["seq"]))
        store.client.delete_run(runs[rec["hash"]])
    steps = best_so_far(store.log(name).read())
    shown = db.run("SELECT step FROM metrics WHERE run_uuid = ? AND key = 'best_val_accuracy'", parent)
    for step in {s for (s,) in shown}:
        if step not in steps:
            db.run("DELETE FROM metrics WHERE run_uuid = ? AND key = 'best_val_accuracy' AND step = ?", parent, step)
    last = max(steps)
    db.run(
        "UPDATE latest_metrics SET value = ?, step = ? WHERE run_uuid = ? AND key = 'best_val_accuracy'",
        steps[last],
        last,
        parent,
    )
    publish_summary(store, name)

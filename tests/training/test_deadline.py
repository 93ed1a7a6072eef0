"""Trainings planned by the wall-clock budget: real Keras on digits, a real MLflow store (SQLite). The parents'
recorded durations are chosen (100 s an epoch) so the plan does not hang on how fast this machine trains."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from nas.architectures.graph import Architecture, Layer
from nas.architectures.initial import initial_mlp
from nas.architectures.weights import init_weights, load_weights, save_weights, standardize
from nas.cli import main
from nas.data import fingerprint
from nas.drivers.config import load
from nas.drivers.pipeline import write_search_outputs
from nas.drivers.runner import splits_for
from nas.ledger.events import TrainingCompleted, TrainingFailed, TrainingStarted
from nas.ledger.replay import best_so_far, summary_values, verify
from nas.ledger.service import SearchService
from nas.ledger.state import ModelStatus
from nas.report.page import progress_rows, render, table
from nas.tracking import open_store
from nas.training.fit import TrainConfig, fit
from nas.training.task import expected_epoch_seconds, planned_epochs, run_training

ROOT = Path(__file__).parents[2]
SETTINGS = [
    "data.dataset=digits",
    "search.initial_width=8",
    "train.epochs=4",
    "train.min_steps=0",
    "train.early_stopping_patience=0",
    "train.schedule=cosine",
    "train.learning_rate=0.002",
]


def a_search_whose_models_took_100_s_an_epoch(uri: str, tmp_path: Path, budget_s: float = 1200.0) -> SearchService:
    """A started search whose first two models trained (for real, 4 epochs each) and are recorded as having taken
    400 s each, and whose m3 (a morphism of one of them) is proposed."""
    config = load(ROOT / "params.yaml", [*SETTINGS, f"search.time_budget_s={budget_s}"])
    splits = splits_for(config)
    store = open_store(uri)
    store.create("plan")
    service = SearchService(store.log("plan"))
    service.start("plan", config, splits.input_shape, splits.num_classes, fingerprint(splits))
    for model_id in ("m1", "m2"):  # m2 is proposed before m1's outcome counts, as when proposed while m1 trains
        service.refit()
        (proposed,) = service.ask(1)
        assert proposed.model_id == model_id
        arch = service.state.models[model_id].arch
        weights = standardize(arch, init_weights(arch, np.random.default_rng(0)), splits.x_train)
        config_4 = TrainConfig(4)
        result = fit(arch, weights, splits.x_train, splits.y_train, splits.x_val, splits.y_val, config_4, seed=0)
        service.training_started(model_id)
        path = tmp_path / f"{model_id}.npz"
        save_weights(path, result.weights)
        service.training_completed(model_id, result.val_accuracy, result.history, None, 400.0, path)
    service.refit()
    (m3,) = service.ask(1)
    assert m3.model_id == "m3" and m3.parent_model_id is not None and m3.morphisms
    return service


@pytest.mark.slow  # a search on an MLflow store
def test_a_training_plans_the_epochs_that_fit_and_its_cosine_ends_with_them(mlflow_uri: str, tmp_path: Path) -> None:
    """With time left for 2.5 epochs of m3 as expected (100 s an epoch of its parent, scaled by the work per
    example), m3 plans 2 of its 4 epochs, logs the plan, trains exactly those, and its cosine rate spans them
    (half the rate at the second epoch's start, not 85% of it)."""
    service = a_search_whose_models_took_100_s_an_epoch(mlflow_uri, tmp_path)
    state = service.state
    parent = state.models[state.models["m3"].parent_id]
    assert parent.epoch_seconds == 100.0
    per_epoch = expected_epoch_seconds(state, "m3")
    assert per_epoch == pytest.approx(100.0 * state.models["m3"].arch.work / parent.arch.work)
    splits = splits_for(state.config)
    assert run_training(service, "m3", splits, deadline=time.time() + 2.5 * per_epoch) == ModelStatus.TRAINED
    events = service.log.read()
    started = next(e for e in events if isinstance(e, TrainingStarted) and e.model_id == "m3")
    completed = next(e for e in events if isinstance(e, TrainingCompleted) and e.model_id == "m3")
    assert started.epochs == 2
    assert [e["learning_rate"] for e in completed.epochs] == pytest.approx([0.002, 0.001])
    # without a deadline (or with time for all of it) a training plans the configured epochs, and logs no plan
    started_m1 = next(e for e in events if isinstance(e, TrainingStarted) and e.model_id == "m1")
    assert started_m1.epochs is None
    assert (service.state.models["m3"].planned_epochs, service.state.models["m1"].planned_epochs) == (2, None)
    assert open_store(mlflow_uri).audit("plan").ok  # the plan is a param, not metrics


@pytest.mark.slow  # a search on an MLflow store
def test_a_model_none_of_whose_epochs_fits_is_not_trained_and_the_leader_trained_further(
    mlflow_uri: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With time left for half an epoch of m3 as expected, it is logged failed for ``budget`` without a training;
    the next proposal is the leader trained further (its epochs cost what they cost before), and replay
    reproduces it."""
    service = a_search_whose_models_took_100_s_an_epoch(mlflow_uri, tmp_path)
    splits = splits_for(service.state.config)
    per_epoch = expected_epoch_seconds(service.state, "m3")
    assert per_epoch is not None
    assert run_training(service, "m3", splits, deadline=time.time() + per_epoch / 2) == ModelStatus.FAILED
    events = service.log.read()
    assert not any(isinstance(e, TrainingStarted) and e.model_id == "m3" for e in events)
    (failed,) = [e for e in events if isinstance(e, TrainingFailed)]
    left, rest = failed.error.split(" ", 1)
    assert failed.reason == "budget" and per_epoch / 2 - 5 < float(left) <= per_epoch / 2 + 0.05  # to 0.1 s
    assert rest == f"s of the wall-clock budget left, less than one epoch of it (about {per_epoch:.1f} s)"
    assert service.stop_reason() is None  # the search's own budget (1,200 s) has time for an epoch of the leader
    service.refit()
    (m4,) = service.ask(1)
    assert (m4.parent_model_id, m4.morphisms) == (service.state.best_model_id, [])
    assert verify(service.log.read()) is None
    assert open_store(mlflow_uri).audit("plan").ok
    # the report says m3 was not trained for lack of time: no red failure, no point on the progress plot
    events = service.log.read()
    assert [r["model_id"] for r in progress_rows(events)] == ["m1", "m2"]
    (row,) = [r for r in table(service.state) if r["model"] == "m3"]
    assert row["status"] == "not trained (budget: no time left)"
    page = render(events, tmp_path / "report").read_text()
    assert "2 trained,\n0 failed, 1 not trained for lack of time," in page
    # and so do `nas replay` and the closing line of `nas search` (both read replay.summary)
    assert main(["replay", "plan", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert (info["trained"], info["failed"], info["not_trained"]) == (2, 0, 1)
    # and so does the DVC search stage's metrics file
    metrics = write_search_outputs(
        service.state,
        events,
        lambda model_id: load_weights(service.weights_file(model_id)),
        service.log.head(),
        models=tmp_path / "models",
        metrics=tmp_path / "metrics",
        plots=tmp_path / "plots",
    )
    assert (metrics["models_trained"], metrics["models_failed"], metrics["models_not_trained"]) == (2, 0, 1)
    assert json.loads((tmp_path / "metrics" / "search.json").read_text())["models_not_trained"] == 1
    # and so do `nas ls` and the MLflow parent run's summary (its description too), which the audit still accepts
    store = open_store(mlflow_uri)
    sink = store.reports("plan")
    sink.summary(summary_values(service.state), {"best_val_accuracy": best_so_far(events)})
    description = sink.runs.parent().data.tags["mlflow.note.content"]
    assert "2 models trained, 0 failed, 1 not trained for lack of time; best " in description
    (listed,) = [s for s in store.searches() if s.name == "plan"]
    assert (listed.trained, listed.failed, listed.not_trained) == (2, 0, 1)
    assert store.audit("plan").ok
    capsys.readouterr()
    assert main(["ls"]) == 0
    (line,) = [x for x in capsys.readouterr().out.splitlines() if x.startswith("plan ")]
    assert "trained   2  failed  0  best " in line and line.endswith("  (1 not trained for lack of time)")


@pytest.mark.slow  # a search on an MLflow store
def test_no_model_is_proposed_when_less_is_left_than_an_epoch_of_the_best(mlflow_uri: str, tmp_path: Path) -> None:
    service = a_search_whose_models_took_100_s_an_epoch(mlflow_uri, tmp_path, budget_s=60.0)
    reason = service.stop_reason()
    assert reason is not None and reason.startswith("time_budget_s=60 of wall clock nearly spent: ")
    best = service.state.best_model_id
    assert reason.endswith(f"s left, less than an epoch of the best model {best} (100.0 s)")


def test_the_plan_takes_the_epochs_that_fit() -> None:
    assert planned_epochs(4, 100.0, 250.0) == 2
    assert planned_epochs(4, 100.0, 1e6) == 4  # never more than configured
    assert planned_epochs(4, 100.0, 99.0) == 0  # none fits
    assert planned_epochs(4, None, 10.0) == 4 and planned_epochs(4, 100.0, None) == 4  # unknown: as configured


def test_work_counts_multiply_adds_and_element_operations() -> None:
    """Architecture.work, by hand: a Dense of 8 units on 20 features is 160 multiply-adds, a ReLU on 8 values 8."""
    mlp = initial_mlp((20,), 4, layers=1, units=8)
    by_hand = 0
    for layer in mlp.layers:
        shape_in = mlp.shapes[layer.inputs[0]]
        by_hand += layer.get("units") * shape_in[-1] if layer.kind == "Dense" else int(np.prod(shape_in))
    assert mlp.work == by_hand
    conv_layer = Layer.make("c", "Conv2D", ["input"], filters=4, kernel_size=3, strides=1)
    conv = Architecture((8, 8, 3), (conv_layer, Layer.make("g", "GlobalAveragePooling2D", ["c"])))
    assert conv.work == 8 * 8 * 4 * 3 * 3 * 3 + 8 * 8 * 4  # the convolution, then the pooling reads 256 values


def test_a_deadline_stops_a_training_within_its_epoch_and_the_cut_epoch_is_validated(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Past ``fit``'s deadline the training ends after the batch running then (how a training stops at the search's
    deadline), the epoch it cut short is validated and recorded; past its timeout it raises TrainingTimeout, and a
    stop asked of the search raises StopRequested, the same way. The batches read are counted to tell a stop within
    the epoch from one at its end."""
    from nas.training import fit as fitting
    from nas.training.stop import StopRequested, TrainingTimeout, clear_stop, request_stop

    config = load(ROOT / "params.yaml", SETTINGS)
    splits = splits_for(config)
    arch = initial_mlp((64,), 10, layers=1, units=8)
    x, x_val = splits.x_train.reshape(len(splits.x_train), -1), splits.x_val.reshape(len(splits.x_val), -1)
    read: list[int] = []
    real = fitting._ShuffledBatches.__getitem__

    def counted(self: fitting._ShuffledBatches, i: int) -> tuple[np.ndarray, np.ndarray]:
        read.append(i)
        if len(read) == 20:
            time.sleep(0.5)  # the deadline passes here, within the first epoch
        return real(self, i)

    monkeypatch.setattr(fitting._ShuffledBatches, "__getitem__", counted)
    train = TrainConfig(4, 2, early_stopping_patience=0)
    per_epoch = -(-len(x) // 2)
    result = fit(arch, None, x, splits.y_train, x_val, splits.y_val, train, deadline=time.time() + 0.25)
    assert len(read) < per_epoch and len(result.history) == 1 and "val_accuracy" in result.history[0]

    read.clear()  # a deadline passed before Keras' fit starts (which clears the stop flag) stops it all the same
    result = fit(arch, None, x, splits.y_train, x_val, splits.y_val, train, deadline=time.time() - 1)
    assert len(read) < per_epoch and len(result.history) == 1

    read.clear()
    with pytest.raises(TrainingTimeout, match=r"train.timeout_s=0.25 \(stopped in epoch 1 of 4\)"):
        fit(arch, None, x, splits.y_train, x_val, splits.y_val, train, timeout_s=0.25)
    assert len(read) < per_epoch
    read.clear()
    request_stop("a test")
    try:
        with pytest.raises(StopRequested, match="a test"):
            fit(arch, None, x, splits.y_train, x_val, splits.y_val, train)
    finally:
        clear_stop()
    assert len(read) < per_epoch

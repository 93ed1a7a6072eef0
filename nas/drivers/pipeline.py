"""The DVC stages (``nas stage prepare|search|evaluate|register``, run by ``dvc.yaml``) and registering a
search's best model (``nas register``).

Every output is a plain file: numpy archives, JSON metrics (``metrics/search.json`` holds the search's
head, so Git anchors the log), CSV plot data, PNG figures, ``.keras`` models. Imports Keras and
matplotlib only inside the functions that need them.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from nas.architectures.graph import Architecture
from nas.architectures.weights import Weights
from nas.data import Splits, load_prepared, save_prepared
from nas.ledger.audit import require_files
from nas.ledger.events import Event, canonical_json
from nas.ledger.log import Head
from nas.ledger.ports import SearchStore
from nas.ledger.state import ModelRecord, ModelStatus, SearchState
from nas.report.figures import plot_best_so_far
from nas.report.page import progress_rows
from nas.tracking.store import MlflowStore

if TYPE_CHECKING:
    from nas.ledger.service import SearchService
    from nas.training.builder import Member

PREPARED = Path("data/prepared")
MODELS = Path("models")
METRICS = Path("metrics")
PLOTS = Path("plots")


def search_name(config: Mapping[str, Any], data_fingerprint: str) -> str:
    """The name of the search the pipeline runs: ``dvc-`` and a hash of its settings and its data.

    The same settings on the same data name the same search, so running the stage again resumes
    (or reuses, if finished) that search instead of training it twice; any change names a new one.
    """
    digest = hashlib.sha256(f"{canonical_json(dict(config))}\n{data_fingerprint}".encode()).hexdigest()
    return f"dvc-{digest[:12]}"


def _write_csv(path: Path, rows: Sequence[Mapping[str, Any]], header: Sequence[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(header))
        writer.writeheader()
        writer.writerows(rows)


def write_json(path: Path, value: Any) -> None:
    """``value`` as indented, key-sorted JSON in ``path`` (folders made)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=2, sort_keys=True) + "\n")


def write_search_outputs(
    state: SearchState,
    events: Sequence[Event],
    weights_of: Callable[[str], Weights],
    head: Head,
    *,
    ensemble: int = 1,
    models: Path = MODELS,
    metrics: Path = METRICS,
    plots: Path = PLOTS,
) -> dict[str, Any]:
    """Write the search stage's outputs: ``models/best.keras`` (the searched model: the best one, or with
    ``ensemble`` = k the mean of the k best by validation, see ``build_ensemble``), ``models/best.json`` (the
    best model, and every member), ``metrics/search.json``, ``plots/best_so_far.csv`` and ``.png``.
    ``weights_of(model_id)`` reads a trained model's weights. ValueError if the search trained no model."""
    from nas.training.builder import save_ensemble

    best = state.best
    if best is None or best.completed_seq is None:
        raise ValueError(
            f"search {state.search_id!r} trained no model ({state.count(ModelStatus.FAILED)} failed); "
            "see `nas replay` for why, then raise the limits in params.yaml"
        )
    members = state.leaders(ensemble)
    save_ensemble([(m.model_id, m.arch, weights_of(m.model_id)) for m in members], models / "best.keras")

    def described(m: ModelRecord) -> dict[str, Any]:
        return {
            "model_id": m.model_id,
            "architecture_id": m.architecture_id,
            "param_count": m.arch.param_count,
            "val_accuracy": m.val_accuracy,
            "architecture": json.loads(m.architecture),
        }

    write_json(
        models / "best.json",
        {"search": state.search_id, **described(best), "members": [described(m) for m in members]},
    )
    info = {
        "best_val_accuracy": best.val_accuracy,
        "models_trained": state.count(ModelStatus.TRAINED),
        "models_failed": state.failed_trainings,
        "models_not_trained": state.out_of_time,  # none of their epochs fitted in the wall-clock budget left
        "search_seconds": round(state.spent_seconds, 1),  # compute: proposals and trainings, summed
        "elapsed_s": None if state.elapsed_s is None else round(state.elapsed_s, 1),  # wall clock
        "members": [m.model_id for m in members],  # of the searched model (best.keras)
    }
    # The head anchors the log in Git: `nas audit NAME --anchor metrics/search.json` checks it is still there.
    write_json(metrics / "search.json", {**info, "search": state.search_id, "head": str(head)})
    rows = progress_rows(events)
    _write_csv(plots / "best_so_far.csv", rows, ["models", "seconds", "model_id", "val_accuracy", "best_val_accuracy"])
    plot_best_so_far(rows, plots / "best_so_far.png")
    return info


def _confusion_png(matrix: np.ndarray, names: Sequence[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = len(matrix)
    fig, ax = plt.subplots(figsize=(1.2 + 0.45 * k, 1.0 + 0.45 * k))
    ax.imshow(matrix, cmap="Blues")
    for i in range(k):
        for j in range(k):
            color = "white" if matrix[i, j] > matrix.max() / 2 else "black"
            ax.text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize=7, color=color)
    ax.set_xticks(range(k), names, rotation=90 if max(map(len, names)) > 3 else 0)
    ax.set_yticks(range(k), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    ax.set_title("test set")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def described_members(model_ids: Sequence[str]) -> str:
    """How messages name a searched or final model: its one model's id, or "the mean of m8, m11, m9"."""
    return model_ids[0] if len(model_ids) == 1 else f"the mean of {', '.join(model_ids)}"


def read_best(models: Path = MODELS) -> tuple[dict[str, Any], list[tuple[str, Architecture]]]:
    """``models/best.json`` and the members of the searched model it names, (model id, architecture) best first
    (one for a file written before ensembles); ValueError if the search stage has not run."""
    path = models / "best.json"
    try:
        info = json.loads(path.read_text())
        lone = {"model_id": info.get("model_id", "best"), "architecture": info["architecture"]}
        members = info.get("members") or [lone]
        return info, [(m["model_id"], Architecture.from_dict(m["architecture"])) for m in members]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path} is missing or unreadable ({e}); run the search stage first (dvc repro search)") from e


def final_fit(
    arch: Architecture, weights: Weights, splits: Splits, final: Mapping[str, Any], batch_size: int, seed: int
) -> Weights:
    """The searched model ``weights`` fine-tuned on train + validation for ``final['epochs']`` epochs (none: the
    same weights), from ``final['learning_rate']`` on ``final['schedule']`` (``cosine`` decays it to 0 over the
    fine-tune, as the search's trainings do), with no early stopping: nothing is held out to stop on, and never
    the test set. The same seed gives the same weights on CPU."""
    from nas.training.fit import TrainConfig, fit, make_deterministic

    if final["epochs"] == 0:
        return weights
    make_deterministic(seed)
    x = np.concatenate([splits.x_train, splits.x_val])
    y = np.concatenate([splits.y_train, splits.y_val])
    config = TrainConfig(final["epochs"], batch_size, final["learning_rate"], 0, schedule=final["schedule"])
    return fit(arch, weights, x, y, None, None, config, seed=seed).weights


def evaluate(
    final: Mapping[str, Any],
    batch_size: int,
    seed: int,
    *,
    prepared: Path = PREPARED,
    models: Path = MODELS,
    metrics: Path = METRICS,
    plots: Path = PLOTS,
) -> dict[str, Any]:
    """The final fit and the one look at the test set.

    Fine-tunes each member of the searched model as ``final_fit`` does, writes ``models/final.keras`` (their
    ensemble, or the one model), ``metrics/test.json`` (the final model's test accuracy and loss, the searched
    model's for comparison, and the members), and the confusion matrix as ``plots/confusion.csv`` and ``.png``
    (classes by name where the data named them).
    """
    from nas.training.builder import build_ensemble, load_ensemble, save_ensemble

    splits = prepared_data(prepared)
    _, members = read_best(models)
    weights = load_ensemble(models / "best.keras", members)
    searched = [(i, arch, w) for (i, arch), w in zip(members, weights, strict=True)]

    def scores(ensemble: Sequence[Member]) -> tuple[float, float, np.ndarray]:
        # Keras' predict, as the registered model (mlflow.pyfunc) will predict.
        model = build_ensemble(ensemble)
        probs = np.asarray(model.predict(splits.x_test, batch_size=256, verbose=0), dtype=np.float64)
        picked = np.clip(probs[np.arange(len(probs)), splits.y_test], 1e-12, 1.0)
        predicted = probs.argmax(axis=1)
        return float(np.mean(predicted == splits.y_test)), float(-np.mean(np.log(picked))), predicted

    searched_accuracy, _, _ = scores(searched)
    fitted = [(i, arch, final_fit(arch, w, splits, final, batch_size, seed)) for i, arch, w in searched]
    save_ensemble(fitted, models / "final.keras")
    accuracy, loss, predicted = scores(fitted)
    result = {
        "test_accuracy": accuracy,
        "test_loss": loss,
        "searched_model_test_accuracy": searched_accuracy,
        "final_epochs": final["epochs"],
        "final_schedule": final["schedule"],
        "test_examples": len(splits.y_test),
        "members": [i for i, _, _ in fitted],
    }
    write_json(metrics / "test.json", result)
    k = splits.num_classes
    names = splits.classes or tuple(str(i) for i in range(k))
    _write_csv(
        plots / "confusion.csv",
        [{"actual": names[a], "predicted": names[p]} for a, p in zip(splits.y_test, predicted, strict=True)],
        ["actual", "predicted"],
    )
    matrix = np.zeros((k, k), dtype=np.int64)
    np.add.at(matrix, (splits.y_test, predicted), 1)
    _confusion_png(matrix, names, plots / "confusion.png")
    return result


def prepared_data(prepared: Path = PREPARED) -> Splits:
    """The prepare stage's output, checked; ValueError if it is missing or bad."""
    if not (prepared / "train.npz").is_file():
        raise ValueError(f"{prepared} holds no prepared data; run the prepare stage first (dvc repro prepare)")
    return load_prepared(prepared)


def stage_prepare(params: Path) -> None:
    """Stage ``prepare``: load the dataset ``data.*`` names, check and split it into ``data/prepared``."""
    from nas.drivers.config import load
    from nas.drivers.runner import splits_for

    info = save_prepared(splits_for(load(params)), PREPARED)
    print(
        f"prepared {info['dataset']}: {info['train_examples']} train, {info['val_examples']} validation, "
        f"{info['test_examples']} test examples in {PREPARED} (fingerprint {str(info['fingerprint'])[:12]})"
    )


def stage_search(params: Path, run: Callable[[str, Mapping[str, Any] | None], object]) -> None:
    """Stage ``search``: run (or resume, or reuse) the search named by the settings and the prepared data, then
    write its outputs. ``run(name, settings)`` runs a new search, or resumes one where ``settings`` is None, as
    ``nas search`` and ``nas resume`` do."""
    from nas.architectures.weights import load_weights
    from nas.data import fingerprint
    from nas.drivers.config import load, load_pipeline
    from nas.ledger.service import SearchService
    from nas.tracking import open_store
    from nas.tracking.registry import link_data, pipeline_tags

    splits = prepared_data()
    config = load(params, [f"data.dataset={PREPARED.as_posix()}"])
    ensemble = load_pipeline(params)["final"]["ensemble"]
    name = search_name(config, fingerprint(splits))
    store = open_store()
    service = SearchService(store.log(name)) if store.exists(name) else None
    if service is not None and service.state.finished:
        print(f"search {name} already ran on these settings and data; using its results (nas replay {name})")
    else:
        print(f"{'resuming' if service else 'starting'} search {name}")
        run(name, None if service else config)
    if isinstance(store, MlflowStore):  # the parent run shows the data it read
        link_data(store.runs(name), splits, str(PREPARED), pipeline_tags(PREPARED))
    log = store.log(name)
    service = SearchService(log)
    info = write_search_outputs(
        service.state,
        log.read(),
        lambda model_id: load_weights(service.weights_file(model_id)),
        log.head(),
        ensemble=ensemble,
    )
    what = described_members(info["members"])
    print(
        f"search {name}: best val_accuracy {info['best_val_accuracy']:.4f}, {info['models_trained']} trained, "
        f"{info['models_failed']} failed, {info['models_not_trained']} not trained for lack of time "
        f"-> models/best.keras ({what}), metrics/search.json"
    )


def stage_evaluate(params: Path) -> None:
    """Stage ``evaluate``: fine-tune the searched model (each member) on train + validation, test it once."""
    from nas.drivers.config import load, load_pipeline

    config = load(params)
    result = evaluate(load_pipeline(params)["final"], config["train"]["batch_size"], config["search"]["seed"])
    what = described_members(result["members"])
    print(
        f"test accuracy {result['test_accuracy']:.4f} ({what}) after {result['final_epochs']} final epoch(s) on "
        f"train + validation, {result['final_schedule']} rate (searched model: "
        f"{result['searched_model_test_accuracy']:.4f}) -> metrics/test.json"
    )


def _summarise(store: SearchStore, service: SearchService) -> None:
    """Publish the search's summary anew after a registration, so that nas ls need not read its events to trust
    it (the summary says which seq it was made at)."""
    from nas.ledger.replay import summary_values

    store.reports(service.state.search_id).summary(summary_values(service.state), {})


def _mlflow_runs(store: SearchStore, name: str) -> Any:
    """The MLflow runs of search ``name``; ValueError if the store is not MLflow's (nowhere to register)."""
    if not isinstance(store, MlflowStore):
        raise ValueError(f"registering models needs an MLflow tracking store; {store.uri} is not one")
    if not store.exists(name):
        raise ValueError(f"there is no search {name!r} in {store.uri}; see nas ls")
    return store.runs(name)


def stage_register(params: Path) -> None:
    """Stage ``register``: models/final.keras becomes a version of ``register.model_name``, alias champion."""
    from nas.drivers.config import load_pipeline
    from nas.ledger.service import SearchService
    from nas.tracking import open_store
    from nas.tracking.registry import ALIAS, log_ensemble, register
    from nas.training.builder import load_ensemble

    name = load_pipeline(params)["register"]["model_name"]
    info, members = read_best()
    final = [(i, arch, w) for (i, arch), w in zip(members, load_ensemble(MODELS / "final.keras", members), strict=True)]
    ids = [i for i, _, _ in final]
    what = described_members(ids)
    note = f"{what} of search {info['search']}, fine-tuned on train + validation"
    splits = prepared_data()
    test = json.loads((METRICS / "test.json").read_text())
    store = open_store()
    runs = _mlflow_runs(store, info["search"])
    require_files(store, info["search"])
    service = SearchService(store.log(info["search"]))
    logged, digest = log_ensemble(
        runs,
        f"{info['search']}-final",
        final,
        splits.x_test[:5],
        {"nas.kind": "final", "mlflow.note.content": note},
        {"test_accuracy": float(test["test_accuracy"])},
        splits.names,
    )
    version, created = register(
        runs,
        service,
        info["model_id"],
        logged,
        digest,
        name,
        ALIAS,
        description=f"{what} of search {info['search']}; test accuracy {test['test_accuracy']:.4f}",
        members=ids,
    )
    _summarise(store, service)
    record = {
        "name": name,
        "version": version,
        "alias": ALIAS,
        "uri": f"models:/{name}@{ALIAS}",
        "search": info["search"],
        "model_id": info["model_id"],
        "members": ids,
        "test_accuracy": test["test_accuracy"],
    }
    write_json(MODELS / "registered.json", record)
    verb = "registered as" if created else "already registered as"
    print(f"{what} of search {info['search']} {verb} {name} version {version}, alias {ALIAS}")
    print(f'load it: mlflow.pyfunc.load_model("models:/{name}@{ALIAS}")')


def register_best(
    store: SearchStore, search: str, model_name: str | None, alias: str | None, ensemble: int = 1
) -> tuple[str, bool, str, list[str]]:
    """Register the best model of ``search`` (as the search logged it; with ``ensemble`` = k the mean of its k
    best, as ``build_ensemble`` builds it) under ``model_name`` (default: the search's name) with ``alias``;
    returns (version, created, registered name, the members). Idempotent."""
    from nas.architectures.weights import load_weights
    from nas.drivers.runner import splits_for
    from nas.ledger.service import SearchService
    from nas.tracking.registry import log_best_model, log_ensemble, register
    from nas.training.builder import build_model

    if ensemble < 1:
        raise ValueError(f"--ensemble {ensemble} must be a positive integer (1: the best model alone)")
    runs = _mlflow_runs(store, search)
    require_files(store, search)
    service = SearchService(store.log(search))
    best = service.state.best
    if best is None or best.weights_sha256 is None:
        raise ValueError(f"search {search!r} has no trained model with recorded weights to register")
    splits = splits_for(service.state.config)
    leaders = service.state.leaders(ensemble)
    members = [(m.model_id, m.arch, load_weights(service.weights_file(m.model_id))) for m in leaders]
    ids = [i for i, _, _ in members]
    if len(members) == 1:
        logged = log_best_model(runs, best, build_model(best.arch, members[0][2]), splits.x_val[:5], splits.names)
        digest = best.weights_sha256
        description = f"{best.model_id} of search {search}: validation accuracy {best.val_accuracy:.4f}"
    else:
        description = f"{described_members(ids)} of search {search}, as searched"
        logged, digest = log_ensemble(
            runs,
            f"{search}-mean-of-{len(ids)}",
            members,
            splits.x_val[:5],
            {"nas.kind": "ensemble", "mlflow.note.content": description},
            {"val_accuracy": float(best.val_accuracy or 0)},
            splits.names,
        )
    name = model_name or search
    version, created = register(
        runs, service, best.model_id, logged, digest, name, alias or None, description=description,
        members=ids if len(ids) > 1 else (),
    )  # fmt: skip
    _summarise(store, service)
    return version, created, name, ids

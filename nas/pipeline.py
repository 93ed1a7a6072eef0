"""The DVC stages' work: prepare the data, write a search's outputs, evaluate the final model.

``dvc.yaml`` runs ``nas stage prepare|search|evaluate|register``; this module holds what those
commands do apart from running the flow (``flows/``) and talking to the registry (``nas.registry``).
Every output is a plain file: numpy archives, JSON metrics, CSV plot data, PNG figures, ``.keras``
models. Imports Keras and matplotlib only inside the functions that need them.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nas.data import Splits, load_prepared, save_prepared
from nas.events import Event, canonical_json
from nas.graph import Architecture
from nas.report import plot_best_so_far, progress_rows
from nas.state import SearchState
from nas.weights import Weights

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


def prepare(splits: Splits, out: Path = PREPARED) -> dict[str, object]:
    """Write the split data to ``out`` (see ``nas.data.save_prepared``); returns its fingerprint record."""
    return save_prepared(splits, out)


def _write_csv(path: Path, rows: Sequence[Mapping[str, Any]], header: Sequence[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(header))
        writer.writeheader()
        writer.writerows(rows)


def _write_json(path: Path, value: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=2, sort_keys=True) + "\n")


def write_search_outputs(
    state: SearchState,
    events: Sequence[Event],
    weights_of: Callable[[str], Weights],
    *,
    models: Path = MODELS,
    metrics: Path = METRICS,
    plots: Path = PLOTS,
) -> dict[str, Any]:
    """Write the search stage's outputs: ``models/best.keras`` and ``models/best.json`` (the best model),
    ``metrics/search.json``, ``plots/best_so_far.csv`` and ``.png``. ``weights_of(model_id)`` reads a
    trained model's weights. ValueError if the search trained no model."""
    from nas.keras_builder import save_keras

    best = state.best
    if best is None or best.completed_seq is None:
        raise ValueError(
            f"search {state.search_id!r} trained no model ({state.count('failed')} failed); "
            "see `nas replay` for why, then raise the limits in params.yaml"
        )
    save_keras(best.arch, weights_of(best.model_id), models / "best.keras")
    _write_json(
        models / "best.json",
        {
            "search": state.search_id,
            "model_id": best.model_id,
            "architecture_id": best.architecture_id,
            "param_count": best.arch.param_count,
            "val_accuracy": best.val_accuracy,
            "architecture": json.loads(best.architecture),
        },
    )
    info = {
        "best_val_accuracy": best.val_accuracy,
        "models_trained": state.count("trained"),
        "models_failed": state.count("failed"),
        "search_seconds": round(state.spent_seconds, 1),
    }
    _write_json(metrics / "search.json", info)
    rows = progress_rows(events)
    _write_csv(plots / "best_so_far.csv", rows, ["models", "seconds", "model_id", "val_accuracy", "best_val_accuracy"])
    plot_best_so_far(rows, plots / "best_so_far.png")
    return info


def _confusion_png(matrix: np.ndarray, path: Path) -> None:
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
    ax.set_xticks(range(k))
    ax.set_yticks(range(k))
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    ax.set_title("test set")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def read_best(models: Path = MODELS) -> tuple[dict[str, Any], Architecture]:
    """``models/best.json`` and the architecture it holds; ValueError if the search stage has not run."""
    path = models / "best.json"
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"{path} is missing or unreadable ({e}); run the search stage first (dvc repro search)") from e
    return info, Architecture.from_dict(info["architecture"])


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

    Fine-tunes the searched model on train + validation for ``final['epochs']`` epochs at
    ``final['learning_rate']`` (no early stopping: nothing is held out to stop on, and never the
    test set), writes ``models/final.keras``, ``metrics/test.json`` (the final model's test accuracy
    and loss, and the searched model's for comparison), and the confusion matrix as
    ``plots/confusion.csv`` and ``.png``.
    """
    from nas.keras_builder import build_model, load_keras, save_keras
    from nas.keras_train import TrainConfig, make_deterministic, train

    splits = prepared_data(prepared)
    _, arch = read_best(models)
    weights = load_keras(models / "best.keras", arch)

    def scores(w: Weights) -> tuple[float, float, np.ndarray]:
        # Keras' predict, as the registered model (mlflow.pyfunc) will predict.
        probs = np.asarray(build_model(arch, w).predict(splits.x_test, batch_size=256, verbose=0), dtype=np.float64)
        picked = np.clip(probs[np.arange(len(probs)), splits.y_test], 1e-12, 1.0)
        predicted = probs.argmax(axis=1)
        return float(np.mean(predicted == splits.y_test)), float(-np.mean(np.log(picked))), predicted

    searched_accuracy, _, _ = scores(weights)
    if final["epochs"] > 0:
        make_deterministic(seed)
        x = np.concatenate([splits.x_train, splits.x_val])
        y = np.concatenate([splits.y_train, splits.y_val])
        config = TrainConfig(final["epochs"], batch_size, final["learning_rate"], early_stopping_patience=0)
        weights = train(arch, weights, x, y, None, None, config, seed=seed).weights
    save_keras(arch, weights, models / "final.keras")
    accuracy, loss, predicted = scores(weights)
    result = {
        "test_accuracy": accuracy,
        "test_loss": loss,
        "searched_model_test_accuracy": searched_accuracy,
        "final_epochs": final["epochs"],
        "test_examples": len(splits.y_test),
    }
    _write_json(metrics / "test.json", result)
    _write_csv(
        plots / "confusion.csv",
        [{"actual": int(a), "predicted": int(p)} for a, p in zip(splits.y_test, predicted, strict=True)],
        ["actual", "predicted"],
    )
    k = splits.num_classes
    matrix = np.zeros((k, k), dtype=np.int64)
    np.add.at(matrix, (splits.y_test, predicted), 1)
    _confusion_png(matrix, plots / "confusion.png")
    return result


def prepared_data(prepared: Path = PREPARED) -> Splits:
    """The prepare stage's output, checked; ValueError if it is missing or bad."""
    if not (prepared / "train.npz").is_file():
        raise ValueError(f"{prepared} holds no prepared data; run the prepare stage first (dvc repro prepare)")
    return load_prepared(prepared)

"""Tables: the search against scikit-learn's MLP on numeric tables given as a user gives them (an ``.npz`` of raw,
unscaled features), on the same splits, over several seeds.

For each table and seed: this project's Bayesian search (the plain loop on a real MLflow store, what
``nas search --local`` runs, default settings but the dataset, seeds and budget), its best model (by validation
accuracy) scored once on the test split with the raw features; and ``MLPClassifier(hidden_layer_sizes=(256, 256))``
with scikit-learn's defaults otherwise, fitted on the same training split, once on the raw features (the issue's
peer) and once behind a ``StandardScaler`` (the stronger peer). Tables ship inside scikit-learn (no download):
breast cancer (569 x 30, 2 classes, features from 0.001 to 4,000), wine (178 x 13, 3 classes), and the 8x8 digits
as flat vectors (1,797 x 64, 10 classes).

    .venv/bin/python bench/tabular.py                      # 3 tables x 3 seeds x 300 s (~50 min)
    .venv/bin/python bench/tabular.py --budget 60 --seeds 1
    .venv/bin/python bench/tabular.py --budget 600 --tables digits_flat --out tabular-digits_flat-600
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).parent / "results"
ROOT = Path(__file__).parents[1]
TABLES = ("breast_cancer", "wine", "digits_flat")


def write_table(name: str, folder: Path) -> Path:
    """The table ``name`` as a user would give it: an ``.npz`` with raw features ``x`` and labels ``y``."""
    from sklearn import datasets

    loader = {"breast_cancer": datasets.load_breast_cancer, "wine": datasets.load_wine}.get(name)
    bunch = loader() if loader else datasets.load_digits()
    path = folder / f"{name}.npz"
    np.savez(path, x=bunch.data.astype(np.float32), y=bunch.target.astype(np.int64))
    return path


def run_search(path: Path, seed: int, budget: float) -> dict[str, Any]:
    """One Bayesian search on the table at ``path``; its best model's validation and test accuracy."""
    from nas.architectures.weights import load_weights
    from nas.drivers.config import load
    from nas.drivers.runner import run_search as search
    from nas.drivers.runner import splits_for
    from nas.ledger.service import SearchService
    from nas.tracking import open_store
    from nas.training.builder import predict

    sets = [f"data.dataset={path}", f"data.seed={seed}", f"search.seed={seed}", f"search.time_budget_s={budget}"]
    config = load(ROOT / "params.yaml", [*sets, "search.max_models=1000"])
    splits = splits_for(config)
    name = f"{path.stem}-{seed}"
    start = time.monotonic()
    search(open_store(), name, config, splits)
    seconds = time.monotonic() - start
    service = SearchService(open_store().log(name))
    best = service.state.best
    assert best is not None and best.val_accuracy is not None, f"search {name} trained no model"
    weights = load_weights(service.weights_file(best.model_id))
    test = float(np.mean(predict(best.arch, weights, splits.x_test).argmax(1) == splits.y_test))
    return {
        "val_accuracy": float(best.val_accuracy),
        "test_accuracy": test,
        "seconds": round(seconds, 1),
        "models": service.state.ended,
        "best_model": best.model_id,
        "best_params": best.arch.param_count,
        "best_is_initial": best.parent_id is None,
    }


def run_sklearn(path: Path, seed: int, scaled: bool) -> dict[str, Any]:
    """scikit-learn's MLPClassifier (256, 256), defaults otherwise, on the same training split."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from nas.data import load_splits

    splits = load_splits(str(path), seed=seed)
    mlp = MLPClassifier(hidden_layer_sizes=(256, 256), random_state=seed)
    model = make_pipeline(StandardScaler(), mlp) if scaled else mlp
    start = time.monotonic()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(splits.x_train, splits.y_train)
    return {
        "val_accuracy": float(model.score(splits.x_val, splits.y_val)),
        "test_accuracy": float(model.score(splits.x_test, splits.y_test)),
        "seconds": round(time.monotonic() - start, 1),
    }


METHODS = ("nas bayesian", "MLPClassifier raw", "MLPClassifier scaled")


def report(runs: dict[str, dict[str, list[dict[str, Any]]]], budget: float, seeds: int) -> str:
    lines = [
        "# Tables: the search against scikit-learn's MLP",
        "",
        f"Produced by `bench/tabular.py --budget {budget:g} --seeds {seeds}` ({platform.node()}, "
        f"{os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}). Each cell: median test accuracy over {seeds} seeds "
        "(min-max), the same stratified split per seed for every method (`data.seed` = seed). The search: default "
        f"`params.yaml` but dataset, seeds, `search.time_budget_s={budget:g}` of wall clock and no model cap; its best "
        "model by validation accuracy, tested once on raw features (the model standardises them itself). "
        "MLPClassifier: `hidden_layer_sizes=(256, 256)`, scikit-learn's defaults otherwise, fitted on the same "
        "training split, on raw features and behind a `StandardScaler`.",
        "",
        "| table | " + " | ".join(METHODS) + " | search: models, best (parameters), from the initial network |",
        "|---|" + "---|" * (len(METHODS) + 1),
    ]
    for table, by_method in runs.items():
        cells = []
        for method in METHODS:
            tests = [r["test_accuracy"] for r in by_method[method]]
            cells.append(f"{statistics.median(tests):.4f} ({min(tests):.3f}-{max(tests):.3f})")
        ours = by_method["nas bayesian"]
        detail = "; ".join(
            f"{r['models']}, {r['best_model']} ({r['best_params']:,}){' initial' if r['best_is_initial'] else ''}"
            for r in ours
        )
        lines.append(f"| {table} | " + " | ".join(cells) + f" | {detail} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", type=float, default=300.0, help="wall-clock seconds per search")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--tables", nargs="+", default=list(TABLES), choices=TABLES)
    parser.add_argument("--out", default="tabular", help="results/<out>.md and .json (keeps another run's page)")
    args = parser.parse_args()
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp}/mlflow.db"
        os.environ["NAS_WITNESS"] = f"{tmp}/witness.jsonl"
        for table in args.tables:
            path = write_table(table, Path(tmp))
            runs[table] = {m: [] for m in METHODS}
            for seed in range(args.seeds):
                runs[table]["MLPClassifier raw"].append(run_sklearn(path, seed, scaled=False))
                runs[table]["MLPClassifier scaled"].append(run_sklearn(path, seed, scaled=True))
                runs[table]["nas bayesian"].append(run_search(path, seed, args.budget))
                print(table, seed, {m: runs[table][m][-1]["test_accuracy"] for m in METHODS}, flush=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.out}.json").write_text(json.dumps({"budget_s": args.budget, "runs": runs}, indent=1) + "\n")
    text = report(runs, args.budget, args.seeds)
    (RESULTS / f"{args.out}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()

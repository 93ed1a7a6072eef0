"""Ensembles of the best models of finished search_efficiency runs: validation and test accuracy of the mean of
the k best models' class probabilities (``final.ensemble = k``), for each k, from the runs' own stores.

Each run is named by the bench's working folder (its ``mlflow.db``), its ``.runs.jsonl`` and its method, seed
and settings there; members are ranked as the bench and the DVC stages rank them, among models that ended
within the budget. Nothing is trained: the searched weights are read back and predict the validation and test
sets (the test set as the bench itself reads it, once per model, after the search).

    python bench/ensemble.py --spec runs.json --budget 1200 --out bench/results/ensemble-fashion_mnist-1200
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _bench() -> Any:
    spec = importlib.util.spec_from_file_location("bench_search_efficiency", ROOT / "bench" / "search_efficiency.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def measure(run: dict[str, Any], budget: float, ks: list[int]) -> dict[str, Any]:
    """Validation and test accuracy of the ensemble of the k best models of one run, for each k in ``ks``."""
    from nas.architectures.weights import load_weights
    from nas.data import load_prepared
    from nas.ledger.service import SearchService
    from nas.ledger.state import fold
    from nas.tracking import open_store
    from nas.training.builder import predict

    bench = _bench()
    rows = [json.loads(line) for line in Path(run["runs_file"]).read_text().splitlines()]
    same = [
        r for r in rows if (r["method"], r["seed"], r.get("settings")) == (run["method"], run["seed"], run["settings"])
    ]
    if len(same) != 1:
        raise ValueError(f"{run['runs_file']} holds {len(same)} runs of {run['method']} seed {run['seed']}, not one")
    curve = [tuple(p) for p in same[0]["curve"]]
    store = open_store(f"sqlite:///{Path(run['folder']) / 'mlflow.db'}")
    name = f"{run['method']}-{same[0]['dataset']}-{run['seed']}"
    state = fold(store.log(name).read())
    service = SearchService(store.log(name))
    splits = load_prepared(Path(state.config["data"]["dataset"]))
    ranked = bench.leaders(curve, budget, max(ks))
    probabilities = []
    for model_id in ranked:
        weights = load_weights(service.weights_file(model_id))
        arch = state.models[model_id].arch
        probabilities.append((predict(arch, weights, splits.x_val), predict(arch, weights, splits.x_test)))
    out: dict[str, Any] = {**run, "members": ranked, "val": {}, "test": {}}
    for k in ks:
        if k <= len(ranked):
            val, test = (np.mean([p[j] for p in probabilities[:k]], axis=0) for j in (0, 1))
            out["val"][k] = float(np.mean(val.argmax(1) == splits.y_val))
            out["test"][k] = float(np.mean(test.argmax(1) == splits.y_test))
    if out["test"].get(1) != same[0]["test_accuracy"]:
        raise ValueError(f"{name}: its best model scores {out['test'].get(1)} on test, the runs file says "
                         f"{same[0]['test_accuracy']}; is this the run's folder?")  # fmt: skip
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--spec", required=True, help="JSON list of {folder, runs_file, method, seed, settings[, label]}"
    )
    parser.add_argument("--budget", type=float, default=1200.0)
    parser.add_argument("--k", nargs="+", type=int, default=[1, 2, 3, 4, 5])
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    started = time.time()
    results = [measure(run, args.budget, args.k) for run in json.loads(Path(args.spec).read_text())]
    out = Path(args.out)
    for r in results:
        r.setdefault("label", r["method"])  # a row of the tables: the method, or what the spec calls the runs
    methods = list(dict.fromkeys(r["label"] for r in results))

    def cell(values: list[float]) -> str:
        spread = f" [{min(values):.4f}, {max(values):.4f}]" if len(values) > 1 else ""
        return f"{statistics.median(values):.4f}{spread}"

    lines = [
        "# Ensembles of the best models of a search: test accuracy against k",
        "",
        f"Written by `bench/ensemble.py --spec ... --budget {args.budget:g} --k {' '.join(map(str, args.k))}` "
        f"in {(time.time() - started) / 60:.0f} minutes. Each run: the k best models by validation accuracy among "
        "those that ended within the budget, their class probabilities averaged (`final.ensemble = k`, the "
        "searched model of the DVC stages; no fine-tune here). k = 1 is the best model alone, the `test acc` "
        "of the bench pages. Cells: median over seeds [min, max].",
        "",
        "| method | " + " | ".join(f"test, k={k}" for k in args.k) + " | " + " | ".join(f"val, k={k}" for k in args.k) + " |",
        "|---|" + "---:|" * (2 * len(args.k)),
    ]  # fmt: skip
    for method in methods:
        mine = [r for r in results if r["label"] == method]
        tests = [cell([r["test"][k] for r in mine if k in r["test"]]) for k in args.k]
        vals = [cell([r["val"][k] for r in mine if k in r["val"]]) for k in args.k]
        lines.append(f"| {method} | " + " | ".join(tests + vals) + " |")
    lines += ["", "| method | seed | members (best first) | " + " | ".join(f"test, k={k}" for k in args.k) + " |"]
    lines.append("|---|---:|---|" + "---:|" * len(args.k))
    for r in results:
        tests = [f"{r['test'][k]:.4f}" if k in r["test"] else "-" for k in args.k]
        lines.append(f"| {r['label']} | {r['seed']} | {', '.join(r['members'])} | " + " | ".join(tests) + " |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    out.with_suffix(".json").write_text(json.dumps(results, indent=1))
    print("\n".join(lines))


if __name__ == "__main__":
    main()

"""The DVC evaluate stage's final fit: does fine-tuning a search's best model on train + validation lift its test
accuracy, and with which learning-rate schedule?

For each search given (a tracking URI and a search name, as ``nas search`` or ``bench/search_efficiency.py``
left them), the best model's test accuracy as searched, then after ``nas.drivers.pipeline.final_fit`` (what the
evaluate stage runs) with each schedule, over fit seeds. ``final.epochs`` and ``final.learning_rate`` come from
params.yaml (or ``--epochs``, ``--learning-rate``); the data are the search's own (its ``data.*`` settings: a
bench run's prepared folder, a bundled dataset). Prints the table, writes ``bench/results/<out>.{md,json}``.

    .venv/bin/python bench/final_fit.py --search sqlite:////tmp/try/mlflow.db my-search --seeds 3 --out final_fit-x
    # the Fashion-MNIST figures: the best models of five 1,200-s searches that search_efficiency.py left in /tmp
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from nas.architectures.weights import load_weights
from nas.drivers.config import load_pipeline
from nas.drivers.pipeline import final_fit
from nas.drivers.runner import splits_for
from nas.ledger.service import SearchService
from nas.tracking import open_store
from nas.training import SCHEDULES
from nas.training.builder import predict

RESULTS = Path(__file__).parent / "results"
ROOT = Path(__file__).parents[1]


def one_search(uri: str, name: str, final: dict[str, Any], seeds: range) -> dict[str, Any]:
    """The best model of search ``name``: its test accuracy as searched and after the final fit with each schedule
    (a list over ``seeds``), with the seconds each fit took."""
    service = SearchService(open_store(uri).log(name))
    state = service.state
    best = state.models[state.best_model_id]
    arch, searched = best.arch, load_weights(service.weights_file(best.model_id))
    splits = splits_for(state.config)
    batch_size = state.config["train"]["batch_size"]  # as the evaluate stage fits

    def test_accuracy(weights: Any) -> float:
        return float(np.mean(np.argmax(predict(arch, weights, splits.x_test), axis=1) == splits.y_test))

    row: dict[str, Any] = {
        "search": name,
        "strategy": state.config["search"]["strategy"],
        "model": best.model_id,
        "parameters": best.param_count,
        "train_examples": len(splits.y_train),
        "val_accuracy": best.val_accuracy,
        "searched": test_accuracy(searched),
    }
    for schedule in SCHEDULES:
        scores, seconds = [], []
        for seed in seeds:
            start = time.perf_counter()
            weights = final_fit(arch, searched, splits, {**final, "schedule": schedule}, batch_size, seed)
            seconds.append(time.perf_counter() - start)
            scores.append(test_accuracy(weights))
            print(f"{name} {best.model_id} {schedule} seed {seed}: {row['searched']:.4f} -> {scores[-1]:.4f}")
        row[schedule], row[f"{schedule}_seconds"] = scores, statistics.mean(seconds)
    return row


def page(rows: list[dict[str, Any]], final: dict[str, Any], seeds: range) -> str:
    """The results as Markdown: per search, the test accuracy as searched and the change each schedule made."""
    lines = [
        "# The final fit: test accuracy before and after fine-tuning on train + validation",
        "",
        f"Written by `bench/final_fit.py` on {platform.machine()} ({platform.python_implementation()} "
        f"{platform.python_version()}). The best model (by validation accuracy) of each search, fine-tuned as the DVC "
        f"evaluate stage does: {final['epochs']} epoch(s) on train + validation from rate {final['learning_rate']:g}, "
        f"the search's batch size, no early stopping, fit seeds {seeds.start}..{seeds.stop - 1}. Change: test accuracy after minus "
        "before, in points, mean over the fit seeds.",
        "",
        "| search | model | parameters | train examples | test as searched | "
        + " | ".join(f"{s}: change" for s in SCHEDULES)
        + " |",
        "|---|---|---:|---:|---:|" + "---:|" * len(SCHEDULES),
    ]
    for r in rows:
        changes = [100 * (statistics.mean(r[s]) - r["searched"]) for s in SCHEDULES]
        lines.append(
            f"| {r['search']} | {r['model']} | {r['parameters']:,} | {r['train_examples']:,} | {r['searched']:.4f} | "
            + " | ".join(f"{c:+.2f}" for c in changes)
            + " |"
        )
    for s in SCHEDULES:
        mean = statistics.mean(100 * (statistics.mean(r[s]) - r["searched"]) for r in rows)
        lines.append(f"\nMean change with `{s}`: {mean:+.2f} points over {len(rows)} search(es).")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--search", nargs=2, action="append", required=True, metavar=("URI", "NAME"))
    parser.add_argument("--seeds", type=int, default=1, help="fit seeds per search and schedule")
    parser.add_argument("--epochs", type=int, help="final.epochs (default: params.yaml's)")
    parser.add_argument("--learning-rate", type=float, help="final.learning_rate (default: params.yaml's)")
    parser.add_argument("--out", default="final_fit")
    args = parser.parse_args()
    final = dict(load_pipeline(ROOT / "params.yaml")["final"])
    final["epochs"] = final["epochs"] if args.epochs is None else args.epochs
    final["learning_rate"] = final["learning_rate"] if args.learning_rate is None else args.learning_rate
    seeds = range(args.seeds)
    rows = [one_search(uri, name, final, seeds) for uri, name in args.search]
    text = page(rows, final, seeds)
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.out}.md").write_text(text)
    (RESULTS / f"{args.out}.json").write_text(json.dumps({"final": final, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()

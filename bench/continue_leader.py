"""Ablation on real data: does training the leader further (``search.continue_leader``) pay, in a wall-clock budget?

The same Bayesian search, the same seeds, with ``search.continue_leader=true`` (the best network is trained
further from its weights while that gains, before new morphisms) and ``false`` (the default: every model a new
morphism). A run is `bench/search_efficiency.py`'s run of our search; its
results are the best validation accuracy among the models that ended within the budget and that model's test
accuracy. Pairs share the seed, so the comparison is paired (Wilcoxon signed-rank, two-sided); the two runs of
a seed go in alternating order, so the process's warm-up falls on each side alike. Each run is appended to the
runs file as it ends.

    .venv/bin/python bench/continue_leader.py                                  # MNIST-5k, 90 s, 6 seeds: ~20 min
    .venv/bin/python bench/continue_leader.py --datasets fashion_mnist_official --budget 300 --epochs 3 --seeds 3
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from nb201 import written_by
from nb201_identify import paired_p
from search_efficiency import RESULTS, ROOT, best_at, official_fashion_mnist, run_ours

VARIANTS = ("true", "false")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", default=["mnist5k"])
    parser.add_argument("--budget", type=float, default=90.0, help="wall-clock seconds per run")
    parser.add_argument("--epochs", type=int, default=2, help="train.epochs")
    parser.add_argument("--seeds", type=int, default=6)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--out", default="continue_leader")
    args = parser.parse_args()
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    tmp = Path(tempfile.mkdtemp(prefix="nas-bench-continue-"))
    os.chdir(tmp)
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp / 'mlflow.db'}"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from nas.drivers.config import load
    from nas.drivers.runner import splits_for

    RESULTS.mkdir(exist_ok=True)
    runs_file = RESULTS / f"{args.out}.runs.jsonl"
    runs_file.write_text("")
    started = time.time()
    results: dict[tuple[str, int, str], dict[str, Any]] = {}
    for dataset in args.datasets:
        source = str(official_fashion_mnist(tmp / dataset)) if dataset == "fashion_mnist_official" else dataset
        splits = splits_for(load(ROOT / "params.yaml", [f"data.dataset={source}"]))
        for seed in seeds:
            for value in VARIANTS if seed % 2 == 0 else VARIANTS[::-1]:
                settings = [f"search.continue_leader={value}"]
                r = run_ours("bayesian", dataset, source, seed, args.budget, args.epochs, splits, settings, value)
                results[(dataset, seed, value)] = r
                with runs_file.open("a") as f:
                    f.write(json.dumps({"dataset": dataset, "seed": seed, "continue_leader": value, **r}) + "\n")
                print(f"{dataset} seed {seed} continue_leader={value:<5}  models {len(r['curve']):>3}  further "
                      f"{r['further']:>2}  best val {best_at(r['curve'], args.budget)}  test {r['test_accuracy']}",
                      flush=True)  # fmt: skip
    minutes = (time.time() - started) / 60
    lines = [
        "# Training the leader further (`search.continue_leader`), on and off, in a wall-clock budget",
        "",
        f"{written_by('continue_leader.py', seeds)}; {minutes:.0f} minutes in all, 2-core machine, no GPU. Bayesian "
        f"search, {args.budget:g} s of wall clock per run, train.epochs={args.epochs}, otherwise params.yaml. Best "
        "val: the best validation accuracy among models that ended within the budget; test: that model's test "
        "accuracy; means over seeds, p: paired Wilcoxon signed-rank, two-sided; models: models that ended within "
        "the budget; further: of the models proposed, those that trained the leader further.",
        "",
        "| data | best val, on | off | p | test, on | off | p | models (on / off) | further (on) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    summary: dict[str, dict[str, dict[str, list[Any]]]] = {}
    for dataset in args.datasets:
        val = {v: [best_at(results[(dataset, s, v)]["curve"], args.budget) or 0.0 for s in seeds] for v in VARIANTS}
        test = {v: [results[(dataset, s, v)]["test_accuracy"] or 0.0 for s in seeds] for v in VARIANTS}
        models = {
            v: np.mean([sum(t <= args.budget for t, _, _ in results[(dataset, s, v)]["curve"]) for s in seeds])
            for v in VARIANTS
        }
        further = np.mean([results[(dataset, s, "true")]["further"] for s in seeds])
        lines.append(
            f"| {dataset} | {np.mean(val['true']):.4f} | {np.mean(val['false']):.4f} | "
            f"{paired_p(val['true'], val['false']):.3f} | {np.mean(test['true']):.4f} | {np.mean(test['false']):.4f} | "
            f"{paired_p(test['true'], test['false']):.3f} | {models['true']:.1f} / {models['false']:.1f} | "
            f"{further:.1f} |"
        )
        summary[dataset] = {"best_val": val, "test": test}
    lines.append("")
    (RESULTS / f"{args.out}.md").write_text("\n".join(lines))
    (RESULTS / f"{args.out}.json").write_text(
        json.dumps({"seeds": [seeds.start, seeds.stop], "budget_s": args.budget, "results": summary}, indent=2) + "\n"
    )
    print("\n".join(lines))


if __name__ == "__main__":
    main()

"""Ablation on real data: does one setting pay, in a wall-clock budget? Two values of it, the same seeds, paired.

The same Bayesian search, the same seeds, with ``--setting`` at each of two ``--values`` (the first is the one
tried, the second the baseline), everything else from params.yaml. A run is `bench/search_efficiency.py`'s run
of our search; its results are the best validation accuracy among the models that ended within the budget and
that model's test accuracy. Pairs share the seed, so the comparison is paired (Wilcoxon signed-rank,
two-sided); the two runs of a seed go in alternating order, so the process's warm-up falls on each side alike.
Each run is appended to the runs file as it ends; ``--resume`` keeps the runs already there (same setting, same
``--set``) and runs only the missing ones, so seeds can be spread over several sittings.

    .venv/bin/python bench/ablation.py     # train.schedule cosine vs constant, MNIST-5k, 90 s, 6 seeds: ~20 min
    .venv/bin/python bench/ablation.py --datasets fashion_mnist_official --budget 300 --epochs 3 --seeds 3
    .venv/bin/python bench/ablation.py --set train.epochs=6 --out schedule-6   # both sides train 6 epochs
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
from search_efficiency import RESULTS, ROOT, best_at, code_commit, commits_line, official_fashion_mnist, run_ours


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", default=["mnist5k"])
    parser.add_argument("--budget", type=float, default=90.0, help="wall-clock seconds per run")
    parser.add_argument("--epochs", type=int, default=2, help="train.epochs")
    parser.add_argument("--seeds", type=int, default=6)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--setting", default="train.schedule", help="GROUP.KEY")
    parser.add_argument("--values", nargs=2, default=["cosine", "constant"], metavar=("TRIED", "BASELINE"))
    parser.add_argument("--out", default="schedule")
    parser.add_argument(
        "--set", dest="sets", action="append", default=[], metavar="GROUP.KEY=VALUE", help="fixed for both sides"
    )
    parser.add_argument("--resume", action="store_true", help="keep the runs file's runs of this comparison, skip them")
    args = parser.parse_args()
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    key, (tried, baseline) = args.setting, args.values
    tmp = Path(tempfile.mkdtemp(prefix="nas-bench-ablation-"))
    os.chdir(tmp)
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp / 'mlflow.db'}"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from nas.drivers.config import load
    from nas.drivers.runner import splits_for

    RESULTS.mkdir(exist_ok=True)
    runs_file = RESULTS / f"{args.out}.runs.jsonl"
    started, commit = time.time(), code_commit()
    results: dict[tuple[str, int, str], dict[str, Any]] = {}
    if args.resume and runs_file.exists():
        for row in map(json.loads, runs_file.read_text().splitlines()):
            if row["setting"] == key and row.get("fixed", []) == args.sets:
                results[(row["dataset"], row["seed"], row["value"])] = row
    else:
        runs_file.write_text("")
    for dataset in args.datasets:
        source = str(official_fashion_mnist(tmp / dataset)) if dataset == "fashion_mnist_official" else dataset
        splits = splits_for(load(ROOT / "params.yaml", [f"data.dataset={source}"]))
        for seed in seeds:
            for value in args.values if seed % 2 == 0 else args.values[::-1]:
                if (dataset, seed, value) in results:
                    continue
                settings = [*args.sets, f"{key}={value}"]
                r = run_ours("bayesian", dataset, source, seed, args.budget, args.epochs, splits, settings, value)
                row = {"dataset": dataset, "seed": seed, "setting": key, "value": value, "fixed": args.sets}
                row.update(commit=commit, **r)
                results[(dataset, seed, value)] = row
                with runs_file.open("a") as f:
                    f.write(json.dumps(row) + "\n")
                print(f"{dataset} seed {seed} {key}={value:<8}  models {len(r['curve']):>3}  further "
                      f"{r['further']:>2}  best val {best_at(r['curve'], args.budget)}  test {r['test_accuracy']}",
                      flush=True)  # fmt: skip
    minutes = (time.time() - started) / 60
    lines = [
        f"# `{key}`: {tried} against {baseline}, in a wall-clock budget",
        "",
        f"{written_by('ablation.py', seeds)}; {minutes:.0f} minutes (this sitting), 2-core machine, no GPU. Bayesian "
        f"search, {args.budget:g} s of wall clock per run, train.epochs={args.epochs}, "
        f"{''.join(f'`{s}`, ' for s in args.sets)}`{key}` as below, otherwise params.yaml. Best val: the best "
        "validation accuracy among models that ended within the budget; test: that model's test accuracy; means "
        "over seeds, p: paired Wilcoxon signed-rank, two-sided; models: models that ended within the budget; "
        "further: of the models proposed, those that trained the leader further.",
        "",
        "Code (the commit each run recorded): "
        + "; ".join(
            f"`{v}` side {commits_line([results[(d, s, v)] for d in args.datasets for s in seeds])}"
            for v in args.values
        )
        + ".",
        "",
        f"| data | best val, {tried} | {baseline} | p | test, {tried} | {baseline} | p | models ({tried} / {baseline}) "
        f"| further ({tried} / {baseline}) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    summary: dict[str, dict[str, dict[str, list[Any]]]] = {}
    for dataset in args.datasets:
        runs = {v: [results[(dataset, s, v)] for s in seeds] for v in args.values}
        val = {v: [best_at(r["curve"], args.budget) or 0.0 for r in runs[v]] for v in args.values}
        test = {v: [r["test_accuracy"] or 0.0 for r in runs[v]] for v in args.values}
        models = {v: np.mean([sum(t <= args.budget for t, _, _ in r["curve"]) for r in runs[v]]) for v in args.values}
        further = {v: np.mean([r["further"] for r in runs[v]]) for v in args.values}
        lines.append(
            f"| {dataset} | {np.mean(val[tried]):.4f} | {np.mean(val[baseline]):.4f} | "
            f"{paired_p(val[tried], val[baseline]):.3f} | {np.mean(test[tried]):.4f} | {np.mean(test[baseline]):.4f} | "
            f"{paired_p(test[tried], test[baseline]):.3f} | {models[tried]:.1f} / {models[baseline]:.1f} | "
            f"{further[tried]:.1f} / {further[baseline]:.1f} |"
        )
        summary[dataset] = {"best_val": val, "test": test}
    lines.append("")
    (RESULTS / f"{args.out}.md").write_text("\n".join(lines))
    (RESULTS / f"{args.out}.json").write_text(
        json.dumps(
            {"seeds": [seeds.start, seeds.stop], "budget_s": args.budget, "setting": key, "results": summary}, indent=2
        )
        + "\n"
    )
    print("\n".join(lines))


if __name__ == "__main__":
    main()

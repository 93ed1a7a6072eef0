"""Proposers compared on NAS-Bench-201 without training: which finds better cells for the same budget?

Each run starts from a random cell (fixed by the seed, the same for every strategy), proposes one
cell at a time, and "trains" it by looking it up: the observed score is the validation accuracy of
one of the table's 3 training seeds, drawn at random (so observations are noisy, as real ones are),
and the cell's training time is charged to the budget. The run stops when the summed training time
exceeds the budget. A run's result is the mean (over the 3 seeds) validation accuracy of the cell it
observed best; the table has no test accuracy, so none is reported.

Strategies: this project's ``bayesian``, ``random`` (random walks from trained cells) and ``evolution``
(regularised evolution), plus ``uniform``, classic random search (cells drawn uniformly), as the
literature's baseline.

    .venv/bin/python bench/nb201.py             # 30 seeds x 3 datasets, about 10 minutes on 2 cores
    .venv/bin/python bench/nb201.py --quick     # 5 seeds, CIFAR-10 only
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.stats import mannwhitneyu

from nas.strategy.nb201 import DATASETS, EDGES, OPS, Cell, CellSpace, Table, load_table
from nas.strategy.proposers import Batch, History, Observation, Proposal, make_proposer

RESULTS = Path(__file__).parent / "results"
STRATEGIES = ("bayesian", "evolution", "random", "uniform")


@dataclass(frozen=True)
class UniformSearch:
    """Classic random search: uniformly drawn cells never seen before."""

    def propose(self, history: History, k: int, rng: np.random.Generator) -> Batch:
        taken, out = history.excluded(), []
        while len(out) < k:
            cell = Cell(tuple(OPS[int(i)] for i in rng.integers(0, len(OPS), EDGES)))
            if cell.id not in taken:
                out.append(Proposal(None, (), cell))
                taken.add(cell.id)
        return Batch(out)


def run(table: Table, strategy: str, seed: int, budget: float) -> dict:
    """One simulated search; returns its trajectory and summary."""
    space = CellSpace.random_start(np.random.default_rng(seed))
    proposer = UniformSearch() if strategy == "uniform" else make_proposer(strategy, space)
    rng = np.random.default_rng([seed, STRATEGIES.index(strategy)])
    history, spent, trajectory = History(), 0.0, []
    best_observed, best_true = -np.inf, 0.0
    while spent < budget:
        (p,) = proposer.propose(history, 1, rng).proposals
        cell = p.point
        seeds = table.val_acc[cell.key]  # most cells have 3 training seeds, a few fewer
        observed = float(seeds[rng.integers(len(seeds))])
        spent += table.train_time[cell.key]
        if observed > best_observed:
            best_observed, best_true = observed, table.mean_val_acc(cell)
        trajectory.append((spent, best_true, table.mean_val_acc(cell)))
        obs = Observation(f"m{len(history.observations)}", cell, observed)
        history = History((*history.observations, obs), (), history.seen | {cell.id})
    target = 0.99 * table.optimum
    reach = next((i + 1 for i, t in enumerate(trajectory) if t[2] >= target), None)
    return {"best": best_true, "queries": len(trajectory), "queries_to_99": reach, "trajectory": trajectory}


def plot(results: dict, budgets: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 4), squeeze=False)
    for ax, (dataset, by_strategy) in zip(axes[0], results.items(), strict=True):
        grid = np.linspace(0, budgets[dataset], 100)
        for strategy, runs in by_strategy.items():
            curves = []
            for r in runs:
                spent = np.array([t[0] for t in r["trajectory"]])
                best = np.array([t[1] for t in r["trajectory"]])
                idx = np.searchsorted(spent, grid, side="right") - 1
                curves.append(np.where(idx >= 0, best[np.maximum(idx, 0)], np.nan))
            ax.plot(grid / 3600, np.nanmedian(np.array(curves), 0), label=strategy)
        ax.set_title(f"NAS-Bench-201 {dataset}")
        ax.set_xlabel("summed training time (hours)")
        ax.set_ylabel("val accuracy of best cell found (%, median)")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=30)
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    parser.add_argument(
        "--budget-cells",
        type=float,
        default=100.0,
        help="budget = this many times the median training time of the dataset's cells",
    )
    parser.add_argument("--quick", action="store_true", help="5 seeds, CIFAR-10 only, no timing sweep")
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.datasets = 5, ["cifar10"]

    results: dict[str, dict[str, list[dict]]] = {}
    budgets: dict[str, float] = {}
    lines = [
        "# NAS-Bench-201: best cell found for the same training-time budget",
        "",
        f"Written by `bench/nb201.py{' --quick' if args.quick else ''}` on {platform.machine()} "
        f"({platform.python_implementation()} {platform.python_version()}). {args.seeds} seeds per strategy; "
        f"each seed starts all strategies from the same random cell. Budget: {args.budget_cells:g} x the median "
        "training time (200 epochs) of the dataset's cells, summed over queried cells (about "
        f"{args.budget_cells:g} queries). Score: mean validation accuracy (%) over the table's 3 training seeds "
        "of the cell each run observed best (observations are one random training seed, so noisy). "
        "The tables carry no test accuracy. Queries to 99%: first query of a cell within 1% of the best "
        "cell's accuracy (median over the runs that got there).",
        "",
    ]
    for dataset in args.datasets:
        table = load_table(dataset)
        budget = args.budget_cells * float(np.median(list(table.train_time.values())))
        budgets[dataset] = budget
        results[dataset] = {}
        lines += [
            f"## {dataset} (optimum {table.optimum:.2f}%, budget {budget:,.0f} s)",
            "",
            "| strategy | best val acc, mean +- std | median | queries made | queries to 99% (reached) |",
            "|---|---:|---:|---:|---:|",
        ]
        for strategy in STRATEGIES:
            start = time.perf_counter()
            runs = [run(table, strategy, seed, budget) for seed in range(args.seeds)]
            results[dataset][strategy] = runs
            best = np.array([r["best"] for r in runs])
            reached = [r["queries_to_99"] for r in runs if r["queries_to_99"] is not None]
            reach = f"{np.median(reached):.0f} ({len(reached)}/{len(runs)})" if reached else f"- (0/{len(runs)})"
            lines.append(
                f"| {strategy} | {best.mean():.2f} +- {best.std():.2f} | {np.median(best):.2f} "
                f"| {np.mean([r['queries'] for r in runs]):.0f} | {reach} |"
            )
            print(
                f"{dataset} {strategy}: {best.mean():.2f} +- {best.std():.2f} ({time.perf_counter() - start:.0f} s)",
                flush=True,
            )
        lines += [
            "",
            "Bayesian against each peer (difference of mean best accuracy, two-sided Mann-Whitney U p-value):",
            "",
        ]
        mine = [r["best"] for r in results[dataset]["bayesian"]]
        for peer in STRATEGIES[1:]:
            theirs = [r["best"] for r in results[dataset][peer]]
            p_value = mannwhitneyu(mine, theirs).pvalue
            verdict = "better" if np.mean(mine) > np.mean(theirs) else "worse"
            verdict += "" if p_value < 0.05 else ", not significant at 5%"
            lines.append(f"- vs {peer}: {np.mean(mine) - np.mean(theirs):+.2f} points, p = {p_value:.3f} ({verdict})")
        lines.append("")
    RESULTS.mkdir(exist_ok=True)
    plot(results, budgets, RESULTS / "nb201.png")
    lines += ["![best-so-far against budget](nb201.png)", ""]
    lines += ["Proposal time against history size: `bench/proposal_speed.py` (`proposal_speed.md`).", ""]
    (RESULTS / "nb201.md").write_text("\n".join(lines))
    summary = {
        d: {
            s: {"best": [r["best"] for r in runs], "queries_to_99": [r["queries_to_99"] for r in runs]}
            for s, runs in by.items()
        }
        for d, by in results.items()
    }
    (RESULTS / "nb201.json").write_text(json.dumps({"results": summary}, indent=2) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

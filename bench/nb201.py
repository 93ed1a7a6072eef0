"""Proposers compared on NAS-Bench-201 without training: which finds better cells for the same budget?

Each run starts from a random cell (fixed by the seed, the same for every strategy), proposes one
cell at a time, and "trains" it by looking it up: the observed score is the validation accuracy of
one of the table's 3 training seeds, drawn at random (so observations are noisy, as real ones are;
a re-measurement draws a seed of that cell not drawn yet, as a real retraining uses a new seed), and
the cell's training time is charged to the budget. The run stops when the summed training time
exceeds the budget. A run's result is the mean (over the 3 seeds) validation accuracy of the cell it
observed best (the highest mean of its observations, where it measured a cell more than once); the
table has no test accuracy, so none is reported.

Two budgets: exactly ``--queries`` table queries per run (the literature's evaluation-count budget), and
a training-time budget (``--budget-cells`` x the median cell's training time, so each query costs its
cell's seconds). Under the query budget a run's *true regret* is the optimum minus the mean over the
table's training seeds (3, or 2 for 7,456 cells) of the cell it observed best.

Strategies: this project's ``bayesian``, ``random`` (random walks from trained cells) and ``evolution``
(regularised evolution), plus the literature's baselines: ``uniform`` (cells drawn uniformly), ``rea``
(textbook regularised evolution: population 10, tournament 3, 10 random initial cells, one-edge
mutations) and ``local`` (local search: query every one-edge neighbour of the current cell, move to
the best if it beats the current one, else restart at a random cell). Every strategy but ``bayesian``
queries a cell at most once; ``bayesian`` measures a leading cell again (another of its training
seeds, one more query charged its training time) before it may lead, unless it leads the runner-up by
more than twice the measurement noise of their difference: one lucky seed cannot win. Under
the query budget it is told how many queries remain, and spends the last 10% of them re-measuring the
best few cells while their confidence bands overlap the leader's (``BayesianProposer.remeasure``).

    .venv/bin/python bench/nb201.py             # 30 seeds x 3 datasets x 2 budgets, about 12 minutes
    OMP_NUM_THREADS=1 .venv/bin/python bench/nb201.py  # as measured: BLAS threads only contend on these small GPs
    .venv/bin/python bench/nb201.py --quick     # 5 seeds, CIFAR-10 only
    .venv/bin/python bench/nb201.py --first-seed 1000 --out nb201-seeds1000   # seeds the method was not tuned on
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import mannwhitneyu

from nas.strategy.nb201 import DATASETS, EDGES, OPS, Cell, CellSpace, Table, load_table
from nas.strategy.proposals import Batch, History, Observation, Proposal, Proposer
from nas.strategy.strategies import make_proposer

RESULTS = Path(__file__).parent / "results"
STRATEGIES = ("bayesian", "evolution", "random", "uniform", "rea", "local")
ALL_MOVES = [(e, op) for e in range(EDGES) for op in OPS]


def _random_cell(rng: np.random.Generator) -> Cell:
    return Cell(tuple(OPS[int(i)] for i in rng.integers(0, len(OPS), EDGES)))


def _unseen_random_cell(rng: np.random.Generator, taken: set[str]) -> Cell:
    while (cell := _random_cell(rng)).id in taken:
        pass
    return cell


def _one_edge(cell: Cell, edge: int, op: str) -> Cell:
    return Cell((*cell.ops[:edge], op, *cell.ops[edge + 1 :]))


@dataclass(frozen=True)
class UniformSearch:
    """Classic random search: uniformly drawn cells never seen before."""

    def propose(self, history: History, k: int, rng: np.random.Generator) -> Batch:
        taken, out = history.excluded(), list[Proposal]()
        while len(out) < k:
            cell = _unseen_random_cell(rng, taken)
            out.append(Proposal(None, (), cell))
            taken.add(cell.id)
        return Batch(out)


@dataclass(frozen=True)
class TextbookREA:
    """Regularised evolution as Real et al. (2019) run it on NAS-Bench-201: ``initial`` random cells, then
    the best of ``tournament`` cells drawn from the ``population`` most recent is mutated on one edge."""

    start: Cell
    population: int = 10
    tournament: int = 3
    initial: int = 10

    def propose(self, history: History, k: int, rng: np.random.Generator) -> Batch:
        taken, out = history.excluded(), list[Proposal]()
        while len(out) < k:
            n = len(history.observations) + len(out)
            if n == 0 and self.start.id not in taken:
                cell = self.start
            elif n < self.initial:
                cell = _unseen_random_cell(rng, taken)
            else:
                alive = history.observations[-self.population :]
                drawn = rng.choice(len(alive), size=min(self.tournament, len(alive)), replace=False)
                parent = max((alive[int(i)] for i in drawn), key=lambda o: o.score).point
                moves = [(e, op) for e, op in ALL_MOVES if op != parent.ops[e]]
                children = [_one_edge(parent, e, op) for e, op in (moves[int(i)] for i in rng.permutation(len(moves)))]
                cell = next((c for c in children if c.id not in taken), None) or _unseen_random_cell(rng, taken)
            out.append(Proposal(None, (), cell))
            taken.add(cell.id)
        return Batch(out)


@dataclass
class LocalSearch:
    """Local search: query every one-edge neighbour of the current cell (in random order); then move to the
    best of them if it beats the current cell, else restart at an unseen random cell (a local optimum)."""

    start: Cell
    here: Cell | None = None  # the current cell
    queue: list[Cell] = field(default_factory=list)  # its one-edge neighbours, in random order

    def propose(self, history: History, k: int, rng: np.random.Generator) -> Batch:
        taken, out = history.excluded(), list[Proposal]()
        scores = {o.point.id: o.score for o in history.observations}
        while len(out) < k:
            cell = self._next(scores, taken, rng)
            out.append(Proposal(None, (), cell))
            taken.add(cell.id)
        return Batch(out)

    def _next(self, scores: dict[str, float], taken: set[str], rng: np.random.Generator) -> Cell:
        if self.here is None:
            self.here = self.start
            if self.start.id not in taken:
                return self.start
        while True:
            if not self.queue:
                moves = [(e, op) for e, op in ALL_MOVES if op != self.here.ops[e]]
                self.queue = [_one_edge(self.here, *moves[int(i)]) for i in rng.permutation(len(moves))]
            fresh = next((c for c in self.queue if c.id not in taken), None)
            if fresh is not None:
                return fresh
            best = max(((scores[c.id], c) for c in self.queue if c.id in scores), key=lambda sc: sc[0], default=None)
            self.queue = []
            if best is not None and best[0] > scores.get(self.here.id, -np.inf):
                self.here = best[1]  # move, and query its neighbours next
                continue
            self.here = _unseen_random_cell(rng, taken)  # a local optimum: start again elsewhere
            return self.here


def written_by(script: str, seeds: range) -> str:
    """A result page's first words: the command that wrote it (this process's arguments), where, and the seeds."""
    flags = " ".join(sys.argv[1:])
    return (
        f"Written by `bench/{script}{' ' + flags if flags else ''}` on {platform.machine()} "
        f"({platform.python_implementation()} {platform.python_version()}). Seeds {seeds.start}..{seeds.stop - 1}"
    )


def make(strategy: str, space: CellSpace, **options: Any) -> Proposer:
    """A fresh proposer for one run of ``strategy`` from the space's start cell (``options``: this project's
    proposer's settings, e.g. ``identify=0`` for bayesian)."""
    if strategy == "uniform":
        return UniformSearch()
    if strategy == "rea":
        return TextbookREA(space.start)
    if strategy == "local":
        return LocalSearch(space.start)
    return make_proposer(strategy, space, **options)


def measure(seeds: np.ndarray, drawn: list[int], rng: np.random.Generator) -> float:
    """One measurement of a cell whose training seeds' accuracies are ``seeds``: one of the seeds not in
    ``drawn`` (appended to it) at random, as a real retraining uses a new seed; once every seed is drawn, a new
    round starts. A first measurement is ``seeds[rng.integers(len(seeds))]``."""
    if len(drawn) == len(seeds):
        drawn.clear()
    unused = [i for i in range(len(seeds)) if i not in drawn]
    drawn.append(unused[int(rng.integers(len(unused)))])
    return float(seeds[drawn[-1]])


def run(table: Table, strategy: str, seed: int, budget: float, queries: int | None = None, **options: Any) -> dict:
    """One simulated search, stopped once ``budget`` training seconds are spent or after exactly ``queries``
    queries; returns its trajectory and summary (``regret``: optimum minus the best observed cell's mean)."""
    space = CellSpace.random_start(np.random.default_rng(seed))
    proposer = make(strategy, space, **options)
    rng = np.random.default_rng([seed, STRATEGIES.index(strategy)])
    history, spent = History(remaining=queries), 0.0
    trajectory: list[tuple[float, float, float]] = []  # (spent, best observed cell's true mean, this cell's)
    measured: dict[str, list[float]] = {}  # each queried cell's observations (several where it was re-measured)
    drawn: dict[str, list[int]] = {}  # each queried cell's training seeds drawn in its current round
    while (len(trajectory) < queries) if queries is not None else (spent < budget):
        (p,) = proposer.propose(history, 1, rng).proposals
        cell = p.point
        observed = measure(table.val_acc[cell.key], drawn.setdefault(cell.key, []), rng)
        spent += table.train_time[cell.key]
        measured.setdefault(cell.key, []).append(observed)
        leader = max(measured, key=lambda key: float(np.mean(measured[key])))  # the first observed on ties
        trajectory.append((spent, float(np.mean(table.val_acc[leader])), table.mean_val_acc(cell)))
        obs = Observation(f"m{len(history.observations)}", cell, observed)
        left = None if queries is None else queries - len(trajectory)  # a query budget is a count it can plan on
        history = History((*history.observations, obs), (), history.seen | {cell.id}, left)
    best_true = trajectory[-1][1] if trajectory else 0.0
    target = 0.99 * table.optimum
    reach = next((i + 1 for i, t in enumerate(trajectory) if t[2] >= target), None)
    return {
        "best": best_true,
        "regret": table.optimum - best_true,
        "queried_regret": table.optimum - max(t[2] for t in trajectory),
        "queries": len(trajectory),
        "remeasured": len(trajectory) - len(measured),
        "queries_to_99": reach,
        "trajectory": trajectory,
    }


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


def plot_queries(results: dict, queries: int, path: Path) -> None:
    """Median true regret of the best observed cell against queries made, per dataset."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 4), squeeze=False)
    for ax, (dataset, by_strategy) in zip(axes[0], results.items(), strict=True):
        for strategy, runs in by_strategy.items():
            curves = np.array([[r["optimum"] - t[1] for t in r["trajectory"]] for r in runs])
            ax.plot(np.arange(1, queries + 1), np.median(curves, 0), label=strategy)
        ax.set_yscale("log")
        ax.set_title(f"NAS-Bench-201 {dataset}")
        ax.set_xlabel("queries")
        ax.set_ylabel("true regret of best observed cell (points, median)")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def versus(mine: list[float], peers: dict[str, list[float]], higher_is_better: bool) -> list[str]:
    """Markdown lines: bayesian's mean against each peer's, with the two-sided Mann-Whitney U p-value."""
    out = []
    for peer, theirs in peers.items():
        p_value = mannwhitneyu(mine, theirs).pvalue
        ahead = np.mean(mine) > np.mean(theirs) if higher_is_better else np.mean(mine) < np.mean(theirs)
        verdict = ("better" if ahead else "worse") + ("" if p_value < 0.05 else ", not significant at 5%")
        out.append(f"- vs {peer}: {np.mean(mine) - np.mean(theirs):+.2f} points, p = {p_value:.3f} ({verdict})")
    return out


def target_line(peer: str, peer_regret: float, mine: float) -> str:
    """The verdict on #13's target (Bayesian's mean regret at most half the best peer's), with as many decimals
    (2 to 4) as it takes for the two figures to differ where they do: a tie in print is not a verdict."""
    target = peer_regret / 2
    digits = next((d for d in (2, 3, 4) if f"{target:.{d}f}" != f"{mine:.{d}f}"), 4)
    return (
        f"Target (half the best other method's mean regret, {peer}): {target:.{digits}f}; bayesian "
        f"{mine:.{digits}f}, {'met' if mine <= target else 'not met'}."
    )


def query_budget(args: argparse.Namespace, seeds: range) -> tuple[list[str], dict]:
    """The evaluation-count section: exactly ``args.queries`` queries per run, true regret."""
    results: dict[str, dict[str, list[dict]]] = {}
    lines = [
        f"## Exactly {args.queries} queries per run: true regret",
        "",
        "True regret: the optimum (best mean validation accuracy of any cell) minus the mean over the table's "
        "training seeds (3, or 2 for 7,456 cells) of the cell the run observed best, in points. Lower is better. "
        "The last column is not the score: it is the true regret of the best cell the run queried (by its mean over "
        "the training seeds), so the gap between the two is what picking the best by noisy observations costs. "
        "Re-measured: queries a run spent measuring a cell it had measured before (bayesian confirms each leader, "
        "and spends the last 10% of the queries telling the best five cells apart).",
        "",
    ]
    for dataset in args.datasets:
        table = load_table(dataset)
        results[dataset] = {}
        lines += [
            f"### {dataset} (optimum {table.optimum:.2f}%)",
            "",
            "| strategy | true regret, mean +- std | median | runs at the optimum | re-measured | best cell queried: regret |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for strategy in STRATEGIES:
            start = time.perf_counter()
            runs = [run(table, strategy, seed, np.inf, args.queries) for seed in seeds]
            for r in runs:
                r["optimum"] = table.optimum
            results[dataset][strategy] = runs
            regret = np.array([r["regret"] for r in runs])
            lines.append(
                f"| {strategy} | {regret.mean():.2f} +- {regret.std():.2f} | {np.median(regret):.2f} "
                f"| {int(np.sum(regret < 1e-9))}/{len(runs)} | {np.mean([r['remeasured'] for r in runs]):.1f} "
                f"| {np.mean([r['queried_regret'] for r in runs]):.2f} |"
            )
            print(
                f"{dataset} {args.queries} queries, {strategy}: regret {regret.mean():.2f} +- {regret.std():.2f} "
                f"({time.perf_counter() - start:.0f} s)",
                flush=True,
            )
        by = {s: [r["regret"] for r in runs] for s, runs in results[dataset].items()}
        others = {s: v for s, v in by.items() if s != "bayesian"}
        best_other = min(others, key=lambda s: float(np.mean(others[s])))
        lines += [
            "",
            target_line(best_other, float(np.mean(others[best_other])), float(np.mean(by["bayesian"]))),
            "Bayesian against each peer (difference of mean true regret, two-sided Mann-Whitney U p-value):",
            "",
            *versus(by["bayesian"], others, higher_is_better=False),
            "",
        ]
    return lines, results


def time_budget(args: argparse.Namespace, seeds: range) -> tuple[list[str], dict, dict]:
    """The training-time section: each query costs its cell's training seconds."""
    results: dict[str, dict[str, list[dict]]] = {}
    budgets: dict[str, float] = {}
    lines = [
        "## The same training-time budget",
        "",
        f"Budget: {args.budget_cells:g} x the median training time (200 epochs) of the dataset's cells, summed "
        f"over queried cells (about {args.budget_cells:g} queries). Score: mean validation accuracy (%) over the "
        "table's training seeds of the cell each run observed best. Queries to 99%: first query of a cell within "
        "1% of the best cell's accuracy (median over the runs that got there).",
        "",
    ]
    for dataset in args.datasets:
        table = load_table(dataset)
        budget = args.budget_cells * float(np.median(list(table.train_time.values())))
        budgets[dataset] = budget
        results[dataset] = {}
        lines += [
            f"### {dataset} (optimum {table.optimum:.2f}%, budget {budget:,.0f} s)",
            "",
            "| strategy | best val acc, mean +- std | median | queries made | queries to 99% (reached) |",
            "|---|---:|---:|---:|---:|",
        ]
        for strategy in STRATEGIES:
            start = time.perf_counter()
            runs = [run(table, strategy, seed, budget) for seed in seeds]
            results[dataset][strategy] = runs
            best = np.array([r["best"] for r in runs])
            reached = [r["queries_to_99"] for r in runs if r["queries_to_99"] is not None]
            reach = f"{np.median(reached):.0f} ({len(reached)}/{len(runs)})" if reached else f"- (0/{len(runs)})"
            lines.append(
                f"| {strategy} | {best.mean():.2f} +- {best.std():.2f} | {np.median(best):.2f} "
                f"| {np.mean([r['queries'] for r in runs]):.0f} | {reach} |"
            )
            print(
                f"{dataset} time budget, {strategy}: {best.mean():.2f} +- {best.std():.2f} "
                f"({time.perf_counter() - start:.0f} s)",
                flush=True,
            )
        by = {s: [r["best"] for r in runs] for s, runs in results[dataset].items()}
        lines += [
            "",
            "Bayesian against each peer (difference of mean best accuracy, two-sided Mann-Whitney U p-value):",
            "",
            *versus(by["bayesian"], {s: v for s, v in by.items() if s != "bayesian"}, higher_is_better=True),
            "",
        ]
    return lines, results, budgets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=30)
    parser.add_argument("--first-seed", type=int, default=0, help="seeds are first-seed, first-seed + 1, ...")
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    parser.add_argument("--queries", type=int, default=100, help="the evaluation-count budget")
    parser.add_argument(
        "--budget-cells",
        type=float,
        default=100.0,
        help="time budget = this many times the median training time of the dataset's cells",
    )
    parser.add_argument("--quick", action="store_true", help="5 seeds, CIFAR-10 only")
    parser.add_argument(
        "--out", default="nb201", help="results/OUT.md, OUT.json and the plots OUT-queries.png, OUT.png (default nb201)"
    )
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.datasets = 5, ["cifar10"]
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    head = [
        "# NAS-Bench-201: best cell found for the same number of queries, and for the same training time",
        "",
        f"{written_by('nb201.py', seeds)} per strategy; each seed starts every strategy from the same random cell "
        "(REA's first initial cell, local search's first cell). Observations are the validation accuracy of one of the cell's training seeds drawn "
        "at random (noisy, as real ones are); a re-measurement draws one of the cell's seeds not drawn yet, as a "
        "real retraining uses a new seed. The tables carry no test accuracy.",
        "",
    ]
    count_lines, count_results = query_budget(args, seeds)
    time_lines, time_results, budgets = time_budget(args, seeds)
    RESULTS.mkdir(exist_ok=True)
    plot_queries(count_results, args.queries, RESULTS / f"{args.out}-queries.png")
    plot(time_results, budgets, RESULTS / f"{args.out}.png")
    lines = [
        *head,
        *count_lines,
        f"![true regret against queries]({args.out}-queries.png)",
        "",
        *time_lines,
        f"![best-so-far against budget]({args.out}.png)",
        "",
        "Proposal time against history size: `bench/proposal_speed.py` (`proposal_speed.md`).",
        "",
    ]
    (RESULTS / f"{args.out}.md").write_text("\n".join(lines))
    summary = {
        "queries": {d: {s: [r["regret"] for r in runs] for s, runs in by.items()} for d, by in count_results.items()},
        "time": {
            d: {
                s: {"best": [r["best"] for r in runs], "queries_to_99": [r["queries_to_99"] for r in runs]}
                for s, runs in by.items()
            }
            for d, by in time_results.items()
        },
    }
    (RESULTS / f"{args.out}.json").write_text(
        json.dumps({"seeds": [seeds.start, seeds.stop], **summary}, indent=2) + "\n"
    )
    print("\n".join(lines))


if __name__ == "__main__":
    main()

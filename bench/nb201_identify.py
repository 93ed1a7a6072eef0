"""Ablation on NAS-Bench-201: does spending the end of a counted budget on telling the best cells apart pay,
at budgets other than the 100 queries it was built at?

The same Bayesian proposer, the same seeds, with and without the end-of-budget identification
(``BayesianProposer(identify=0.1)``, the default, against ``identify=0``: only the confirmation of each
new leader), at several query budgets. A run is `bench/nb201.py`'s query-budget run; its result is the
true regret of the cell it observed best. Pairs share the seed, so the comparison is paired (Wilcoxon
signed-rank, two-sided).

    .venv/bin/python bench/nb201_identify.py                   # 30 seeds x 3 tables x 50/100/200 queries, ~45 min
    .venv/bin/python bench/nb201_identify.py --seeds 5 --budgets 50 --datasets cifar10   # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from multiprocessing import Pool
from pathlib import Path

import numpy as np
from scipy.stats import wilcoxon

sys.path.insert(0, str(Path(__file__).parent))

from nb201 import RESULTS, run, written_by

from nas.strategy.bayesian import BayesianProposer
from nas.strategy.nb201 import DATASETS, Table, load_table

VARIANTS = {"identify": BayesianProposer.identify, "confirm only": 0.0}  # the default share, and none
_TABLES: dict[str, Table] = {}


def one(job: tuple[str, int, int, float]) -> tuple[float, int]:
    """(true regret, re-measured queries) of one run: table, queries, seed, identify share."""
    dataset, queries, seed, identify = job
    if dataset not in _TABLES:
        _TABLES[dataset] = load_table(dataset)
    result = run(_TABLES[dataset], "bayesian", seed, float("inf"), queries, identify=identify)
    return float(result["regret"]), int(result["remeasured"])


def paired_p(a: list[float], b: list[float]) -> float:
    """Two-sided Wilcoxon signed-rank p-value of paired runs; 1.0 where every pair is equal."""
    return 1.0 if all(x == y for x, y in zip(a, b, strict=True)) else float(wilcoxon(a, b).pvalue)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=30)
    parser.add_argument("--first-seed", type=int, default=6000, help="first seed (default 6000: not used by nb201.py)")
    parser.add_argument("--budgets", default="50,100,200", help="query budgets, comma-separated")
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    parser.add_argument("--processes", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", default="nb201-identify")
    args = parser.parse_args()
    budgets = [int(b) for b in args.budgets.split(",")]
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    jobs = [(d, q, s, share) for d in args.datasets for q in budgets for share in VARIANTS.values() for s in seeds]
    with Pool(args.processes) as pool:
        outcomes = dict(zip(jobs, pool.map(one, jobs, chunksize=2), strict=True))
    lines = [
        "# NAS-Bench-201: the end-of-budget identification, on and off, at several query budgets",
        "",
        f"{written_by('nb201_identify.py', seeds)}, each run once with the identification (the last "
        f"{VARIANTS['identify']:.0%} of the queries re-measure the best five cells while a rival's band reaches the "
        "leader's) and once without (only new leaders confirmed, where their lead is not clear). Mean true "
        "regret in points, lower is better; p: paired Wilcoxon signed-rank, two-sided; re-measured: queries per "
        "run spent on a cell measured before.",
        "",
        "| table | queries | identify | confirm only | p | re-measured (identify / confirm only) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    summary: dict[str, dict[str, dict[str, list[float]]]] = {}
    for d in args.datasets:
        for q in budgets:
            regret = {name: [outcomes[(d, q, s, share)][0] for s in seeds] for name, share in VARIANTS.items()}
            again = {name: np.mean([outcomes[(d, q, s, share)][1] for s in seeds]) for name, share in VARIANTS.items()}
            on, off = regret["identify"], regret["confirm only"]
            lines.append(
                f"| {d} | {q} | {np.mean(on):.3f} | {np.mean(off):.3f} | {paired_p(on, off):.3f} | "
                f"{again['identify']:.1f} / {again['confirm only']:.1f} |"
            )
            summary.setdefault(d, {})[str(q)] = regret
    lines.append("")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.out}.md").write_text("\n".join(lines))
    (RESULTS / f"{args.out}.json").write_text(
        json.dumps({"seeds": [seeds.start, seeds.stop], "regret": summary}, indent=2) + "\n"
    )
    print("\n".join(lines))


if __name__ == "__main__":
    main()

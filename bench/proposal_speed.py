"""Seconds per Bayesian proposal against the number of observations, in the NAS-Bench-201 cell space and in the
network-morphism space, with a peer in the same run. Morphism space: the same proposer embedding architectures
one edit distance at a time (the pairwise function the batched one replaced); both must propose the same point.
NAS-Bench-201: the method the exhaustive one replaced, the anchor embedding with the annealed UCB search (the
same cells without ``encode`` and ``points``); they propose different cells.

History: NB201 cells drawn at random with their table accuracy; morphism networks from a random walk from the
default initial CNN (28x28x1, 32 filters) scored by log parameter count (no Keras needed). Each figure is the
median of ``--repeats`` proposals, each from a fresh proposer in a new process (no cache warmed by an earlier
proposal: the worst case, as the first round of a resumed search).

    .venv/bin/python bench/proposal_speed.py                 # 50, 100, 200, 500 observations (~15 min)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nas.architectures.edit_distance import edit_distance
from nas.architectures.initial import initial_cnn
from nas.strategy.bayesian import BayesianProposer
from nas.strategy.kernel import AnchorEmbedding, anchors_from_walks
from nas.strategy.nb201 import Cell, CellSpace, load_table
from nas.strategy.proposals import History, Observation
from nas.strategy.space import MorphismSpace
from nas.strategy.strategies import make_proposer

RESULTS = Path(__file__).parent / "results"


def nb201_history(n: int) -> tuple[Any, History]:
    table = load_table("cifar10")
    keys = list(table.val_acc)
    rng = np.random.default_rng(0)
    cells = [Cell.from_key(keys[int(i)]) for i in rng.choice(len(keys), n, replace=False)]
    return CellSpace(cells[0]), History(
        tuple(Observation(f"m{i}", c, table.mean_val_acc(c)) for i, c in enumerate(cells))
    )


def morphism_history(n: int) -> tuple[Any, History]:
    space = MorphismSpace(initial_cnn((28, 28, 1), 10, filters=32), max_params=2_000_000, max_layers=60)
    walker, rng, history = make_proposer("random", space), np.random.default_rng(0), History()
    while len(history.observations) < n:
        (p,) = walker.propose(history, 1, rng).proposals
        obs = Observation(f"m{len(history.observations)}", p.point, float(np.log(p.point.param_count)))
        history = History((*history.observations, obs), (), history.seen | {p.point.id})
    return space, history


@dataclass(frozen=True)
class AnchorCellSpace:
    """NAS-Bench-201 cells without ``encode``, ``groups`` and ``points``: the Bayesian proposer falls back to the
    anchor embedding and the annealed UCB search over neighbours, as before the exhaustive search."""

    cells: CellSpace

    def initial(self) -> Cell:
        return self.cells.initial()

    def neighbours(self, point: Cell, rng: np.random.Generator, n: int = 8, tries: int = 16) -> list:
        return self.cells.neighbours(point, rng, n, tries)

    def descriptor(self, point: Cell) -> tuple[str, ...]:
        return self.cells.descriptor(point)

    def distances(self, a: Sequence[Any], b: Sequence[Any]) -> np.ndarray:
        return self.cells.distances(a, b)


def time_one(space: Any, history: History, seed: int, peer: bool) -> tuple[float, float, str]:
    """(seconds, of which refit, proposed id) of one proposal by a fresh proposer (or by the space's peer)."""
    if peer and isinstance(space, CellSpace):
        space = AnchorCellSpace(space)
    proposer = BayesianProposer(space, anchor_seed=0, confirm=1)  # an EI proposal; re-measuring a leader is cheap
    if peer and not isinstance(space, AnchorCellSpace):
        anchors = anchors_from_walks(space, proposer.n_anchors, proposer.anchor_seed)

        def one_by_one(a: Sequence[Any], b: Sequence[Any]) -> np.ndarray:
            return np.array([[edit_distance(x, y) for y in b] for x in a])

        proposer._embedding = AnchorEmbedding(one_by_one, anchors)
    else:
        proposer.embedding  # noqa: B018 (the anchors' walks are not part of either figure)
    start = time.perf_counter()
    batch = proposer.propose(history, 1, np.random.default_rng(seed))
    seconds = time.perf_counter() - start
    return seconds, batch.refit.seconds if batch.refit else 0.0, batch.proposals[0].point.id


def one_run(space_name: str, n: int, seed: int, how: str) -> None:
    """Time one proposal in this (fresh) process and print it as JSON: seconds, refit seconds, proposed id."""
    space, history = SPACES[space_name](n)
    seconds, refit, point = time_one(space, history, seed, peer=how == "peer")
    print(json.dumps([seconds, refit, point]))


def in_fresh_process(space_name: str, n: int, seed: int, how: str) -> tuple[float, float, str]:
    """``one_run`` in a new interpreter, so no cache of an earlier proposal (distances, shapes, matchings) helps."""
    out = subprocess.run(
        [sys.executable, __file__, "--one", space_name, str(n), str(seed), how],
        check=True,
        capture_output=True,
        text=True,
    )
    seconds, refit, point = json.loads(out.stdout.strip().splitlines()[-1])
    return float(seconds), float(refit), str(point)


SPACES = {"nb201": nb201_history, "morphism": morphism_history}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[50, 100, 200, 500])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--one", nargs=4, metavar=("SPACE", "N", "SEED", "HOW"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        space_name, n, seed, how = args.one
        one_run(space_name, int(n), int(seed), how)
        return
    rows = []
    for name in SPACES:
        for n in args.sizes:
            runs: dict[str, list[tuple[float, float, str]]] = {"mine": [], "peer": []}
            for seed in range(args.repeats):
                for how in ("mine", "peer"):
                    runs[how].append(in_fresh_process(name, n, seed, how))
            same = all(a[2] == b[2] for a, b in zip(runs["mine"], runs["peer"], strict=True))
            assert same or name == "nb201", (
                f"{name} at {n}: the batched and pairwise distances proposed different points"
            )
            row = {
                "space": name,
                "observations": n,
                "seconds": statistics.median(r[0] for r in runs["mine"]),
                "refit_seconds": statistics.median(r[1] for r in runs["mine"]),
                "peer_seconds": statistics.median(r[0] for r in runs["peer"]),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    lines = [
        "# Bayesian proposal time against history size",
        "",
        f"Produced by `bench/proposal_speed.py --repeats {args.repeats}` ({platform.node()}, {os.cpu_count()} cores, "
        f"{time.strftime('%Y-%m-%d')}); median of {args.repeats} proposals, each by a fresh proposer in a new process (no cache warmed by an earlier proposal). Peers, in "
        "the same run: in the morphism space the same proposer computing each edit distance on its own (as before "
        "the batched distance), which proposed the same point every time; in NAS-Bench-201 the method the "
        "exhaustive expected improvement replaced (anchor embedding, annealed UCB over neighbours), which proposes "
        "other cells.",
        "",
        "| space | observations | seconds per proposal | of which GP refit | peer | peer / this |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['space']} | {r['observations']} | {r['seconds']:.3f} | {r['refit_seconds']:.3f} | "
            f"{r['peer_seconds']:.3f} | {r['peer_seconds'] / r['seconds']:.1f}x |"
        )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "proposal_speed.md").write_text("\n".join(lines) + "\n")
    (RESULTS / "proposal_speed.json").write_text(json.dumps(rows, indent=1) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

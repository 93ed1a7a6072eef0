"""bench/nb201.py's evaluation-count budget and its literature baselines, on the real CIFAR-10 table."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from nas.strategy.nb201 import Cell, CellSpace, load_table


@pytest.fixture(scope="module")
def nb201() -> ModuleType:
    path = Path(__file__).parents[2] / "bench" / "nb201.py"
    spec = importlib.util.spec_from_file_location("bench_nb201", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _cells(module: ModuleType, strategy: str, seed: int, queries: int) -> list:
    """The cells a run of ``strategy`` queries, in order."""
    table = load_table("cifar10")
    space = CellSpace.random_start(np.random.default_rng(seed))
    proposer = module.make(strategy, space)
    rng = np.random.default_rng(seed)
    history = module.History()
    cells = []
    for i in range(queries):
        (p,) = proposer.propose(history, 1, rng).proposals
        seeds = table.val_acc[p.point.key]
        obs = module.Observation(f"m{i}", p.point, float(seeds[rng.integers(len(seeds))]))
        history = module.History((*history.observations, obs), (), history.seen | {p.point.id})
        cells.append((p.point, obs.score))
    return cells


@pytest.mark.parametrize("strategy", ["bayesian", "evolution", "random", "uniform", "rea", "local"])
def test_every_strategy_makes_exactly_the_queries_asked(nb201: ModuleType, strategy: str) -> None:
    table = load_table("cifar10")
    queries = 30 if strategy == "bayesian" else 100
    result = nb201.run(table, strategy, 7, np.inf, queries)
    assert result["queries"] == queries == len(result["trajectory"])
    # distinct cells, except that bayesian measures each new leader a second time
    assert (result["remeasured"] > 0) if strategy == "bayesian" else (result["remeasured"] == 0)
    assert 0 <= result["regret"] == pytest.approx(table.optimum - result["best"])
    best_so_far = [t[1] for t in result["trajectory"]]
    assert max(t[2] for t in result["trajectory"]) >= result["best"]  # the best observed is one of those queried
    assert result["queried_regret"] == pytest.approx(table.optimum - max(t[2] for t in result["trajectory"]))
    assert 0 <= result["queried_regret"] <= result["regret"]
    assert best_so_far[-1] == result["best"]


def test_the_query_budget_tells_bayesian_what_remains_and_only_its_end_changes(nb201: ModuleType) -> None:
    """Told the queries left, bayesian spends the last 10% re-measuring contenders; until then the run is the
    same as one without the identification (``identify=0``), query for query."""
    table = load_table("imagenet")
    on = nb201.run(table, "bayesian", 0, np.inf, 60)
    off = nb201.run(table, "bayesian", 0, np.inf, 60, identify=0)
    assert on["trajectory"][:54] == off["trajectory"][:54]  # 60 - 6: the last 10% starts at 6 left
    assert on["remeasured"] > off["remeasured"]
    budget = 30 * float(np.median(list(table.train_time.values())))  # 30 median cells' training seconds
    timed, timed_off = (nb201.run(table, "bayesian", 3, budget, identify=share) for share in (0.1, 0))
    assert timed["trajectory"] == timed_off["trajectory"]  # a training-time budget is not a count: nothing changes


def _one_apart(a: Cell, b: Cell) -> bool:
    return sum(x != y for x, y in zip(a.ops, b.ops, strict=True)) == 1


def test_local_search_queries_all_neighbours_then_moves_to_the_best_or_restarts(nb201: ModuleType) -> None:
    cells = _cells(nb201, "local", 3, 100)
    assert len({c.id for c, _ in cells}) == 100
    scores = {c.id: score for c, score in cells}
    here, seen, moves, restarts = cells[0][0], {cells[0][0].id}, 0, 0
    for cell, _ in cells[1:]:
        neighbours = [c for _, c in CellSpace(here).neighbours(here, np.random.default_rng(0), n=24, tries=24)]
        while all(n.id in seen for n in neighbours):  # the neighbourhood is done: move, or restart below
            best = max(neighbours, key=lambda n: scores[n.id])
            if scores[best.id] <= scores[here.id]:
                break
            here, moves = best, moves + 1
            neighbours = [c for _, c in CellSpace(here).neighbours(here, np.random.default_rng(0), n=24, tries=24)]
        if all(n.id in seen for n in neighbours):
            here, restarts = cell, restarts + 1  # a local optimum: a random restart
        else:
            assert _one_apart(here, cell), f"query {cell.id} is not a neighbour of the current cell {here.id}"
        seen.add(cell.id)
    assert moves >= 1  # 100 queries see at least one move (the random start is rarely a local optimum)


def test_textbook_rea_starts_random_then_mutates_one_edge_of_a_recent_cell(nb201: ModuleType) -> None:
    cells = _cells(nb201, "rea", 5, 60)
    assert cells[0][0] == CellSpace.random_start(np.random.default_rng(5)).start
    for j in range(10, 60):
        population = [c for c, _ in cells[j - 10 : j]]
        assert any(_one_apart(p, cells[j][0]) for p in population)


def test_the_target_line_shows_the_decimals_that_decide_it(nb201: ModuleType) -> None:
    line = nb201.target_line("rea", 0.26, 0.12)
    assert line == "Target (half the best other method's mean regret, rea): 0.13; bayesian 0.12, met."
    assert nb201.target_line("rea", 0.2612, 0.1312).endswith("0.1306; bayesian 0.1312, not met.")  # 0.13 and 0.13
    assert nb201.target_line("rea", 0.2, 0.1).endswith("0.1000; bayesian 0.1000, met.")  # a true tie meets it


def test_a_remeasurement_draws_a_training_seed_not_drawn_yet(nb201: ModuleType) -> None:
    """A real retraining uses a new seed: a cell's n measurements draw each of its n seeds once, then a new
    round starts; a first measurement is the draw every strategy has always made (their runs are unchanged)."""
    seeds = np.array([71.0, 72.0, 73.0])
    for s in range(20):
        drawn: list[int] = []
        first = nb201.measure(seeds, drawn, np.random.default_rng(s))
        assert first == seeds[np.random.default_rng(s).integers(3)]
        rng = np.random.default_rng(s)
        drawn = []
        rounds = [[nb201.measure(seeds, drawn, rng) for _ in range(3)] for _ in range(3)]
        assert all(sorted(r) == [71.0, 72.0, 73.0] for r in rounds)
    two: list[int] = []
    rng = np.random.default_rng(0)
    assert sorted(nb201.measure(np.array([1.0, 2.0]), two, rng) for _ in range(2)) == [1.0, 2.0]

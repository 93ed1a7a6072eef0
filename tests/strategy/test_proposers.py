"""Proposers: one interface, no history of their own, distinct and repeatable proposals."""

from __future__ import annotations

import numpy as np
import pytest

from nas.architectures.initial import initial_cnn
from nas.architectures.morphisms import apply_chain
from nas.strategy.acquisition import AnnealingConfig, expected_improvement, maximize_over_space, optimize_acquisition
from nas.strategy.bayesian import CLEAR_LEAD, BayesianProposer
from nas.strategy.gp import GroupedGaussianProcess
from nas.strategy.nb201 import Cell, CellSpace, Table, load_table
from nas.strategy.proposals import History, Observation
from nas.strategy.space import MorphismSpace
from nas.strategy.strategies import STRATEGIES, make_proposer

FAST = AnnealingConfig(t_min=0.05)  # ~28 expansions instead of ~88: same algorithm, shorter test


def morphism_space() -> MorphismSpace:
    return MorphismSpace(initial_cnn((12, 12, 1), 3, filters=8, dense_units=8), max_params=30_000, max_layers=40)


def options(strategy: str) -> dict:
    return {"annealing": FAST, "n_anchors": 8} if strategy == "bayesian" else {}


def score(point) -> float:
    """A made-up objective that rewards size, with diminishing returns."""
    return float(np.log(point.param_count))


def grow(strategy: str, space, n: int, seed: int) -> History:
    proposer = make_proposer(strategy, space, **options(strategy))
    rng = np.random.default_rng(seed)
    history = History()
    for i in range(n):
        batch = proposer.propose(history, 1, rng)
        p = batch.proposals[0]
        obs = Observation(f"m{i}", p.point, score(p.point))
        history = History((*history.observations, obs), (), history.seen | {p.point.id})
    return history


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_first_proposal_is_the_initial_architecture(strategy: str) -> None:
    space = morphism_space()
    batch = make_proposer(strategy, space, **options(strategy)).propose(History(), 1, np.random.default_rng(0))
    assert [p.point for p in batch.proposals] == [space.initial()]
    assert batch.proposals[0].parent_id is None and batch.proposals[0].steps == ()


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_batches_are_distinct_new_within_caps_and_replayable(strategy: str) -> None:
    space = morphism_space()
    history = grow(strategy, space, 4, seed=0)
    proposer = make_proposer(strategy, space, **options(strategy))
    batch = proposer.propose(history, 3, np.random.default_rng(1))
    points = [p.point for p in batch.proposals]
    assert len(points) == 3 and len({p.id for p in points}) == 3
    assert not {p.id for p in points} & history.excluded()
    parents = {o.model_id: o.point for o in history.observations}
    for p in batch.proposals:
        assert p.point.param_count <= 30_000 and p.point.n_layers <= 40
        assert apply_chain(parents[p.parent_id], None, p.steps)[0] == p.point  # the recorded chain replays


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_same_history_and_seed_give_the_same_proposals(strategy: str) -> None:
    space = morphism_space()
    history = grow(strategy, space, 3, seed=2)
    first = make_proposer(strategy, space, **options(strategy)).propose(history, 2, np.random.default_rng(5))
    second = make_proposer(strategy, space, **options(strategy)).propose(history, 2, np.random.default_rng(5))
    assert [p.point.id for p in first.proposals] == [p.point.id for p in second.proposals]
    assert [p.steps for p in first.proposals] == [p.steps for p in second.proposals]


def test_bayesian_records_its_refit_and_search() -> None:
    space = morphism_space()
    history = grow("random", space, 5, seed=3)
    # raw targets: the acquisition is in the scores' units (with rank targets, in the surrogate's: test_targets)
    batch = BayesianProposer(space, FAST, n_anchors=8, targets="raw").propose(history, 2, np.random.default_rng(0))
    assert batch.refit is not None and batch.refit.observations == 5
    assert batch.refit.length_scale > 0 and np.isfinite(batch.refit.log_marginal_likelihood)
    for p in batch.proposals:
        assert p.candidates > 0 and p.acquisition is not None and p.std is not None
        assert p.acquisition == pytest.approx(p.mean + 2.576 * p.std)


def test_pending_points_are_fantasised_not_reproposed() -> None:
    space = morphism_space()
    history = grow("random", space, 4, seed=4)
    proposer = BayesianProposer(space, FAST, n_anchors=8)
    first = proposer.propose(history, 1, np.random.default_rng(0)).proposals[0]
    with_pending = History(history.observations, (first.point,), history.seen | {first.point.id})
    second = proposer.propose(with_pending, 1, np.random.default_rng(0)).proposals[0]
    assert second.point.id != first.point.id


def test_evolution_tournament_picks_from_recent_models_only() -> None:
    space = CellSpace(Cell(("none",) * 6))
    rng = np.random.default_rng(0)
    best_old = Observation("old", Cell(("nor_conv_3x3",) * 6), 100.0)
    recent = [Observation(f"m{i}", Cell(("skip_connect",) * 5 + ("none",)), 1.0) for i in range(3)]
    history = History((best_old, *recent), (), frozenset())
    proposer = make_proposer("evolution", space, population=3, sample=3)
    for p in proposer.propose(history, 5, rng).proposals:
        assert p.parent_id != "old"  # aged out of the population


def test_acquisition_search_never_returns_excluded_points() -> None:
    space = CellSpace(Cell(("none",) * 6))
    start = space.initial()
    excluded = {start.id} | {c.id for _, c in space.neighbours(start, np.random.default_rng(0), n=24, tries=24)}

    def flat(points):
        return np.zeros(len(points)), np.ones(len(points))

    result = optimize_acquisition(space, [("m0", start)], flat, excluded, np.random.default_rng(0))
    assert result.best is not None and result.best.point.id not in excluded
    assert len(result.best.steps) >= 2  # it had to chain through an excluded neighbour


def test_unknown_strategy_is_named() -> None:
    with pytest.raises(ValueError, match="unknown strategy 'greedy'; choose one of bayesian, random, evolution"):
        make_proposer("greedy", morphism_space())
    with pytest.raises(ValueError, match="t0 > t_min"):
        AnnealingConfig(t_min=2.0)


def nb201_history(table: Table, n: int, seed: int) -> History:
    rng = np.random.default_rng(seed)
    keys = list(table.val_acc)
    cells = [Cell.from_key(keys[int(i)]) for i in rng.choice(len(keys), n, replace=False)]
    return History(tuple(Observation(f"m{i}", c, table.mean_val_acc(c)) for i, c in enumerate(cells)))


def test_expected_improvement_closed_form() -> None:
    ei = expected_improvement(np.array([0.0, 1.0, -1.0, 2.0]), np.array([1.0, 1.0, 0.0, 0.0]), 0.0)
    draws = np.random.default_rng(0).normal(1.0, 1.0, 400_000)
    assert ei[0] == pytest.approx(1 / np.sqrt(2 * np.pi))  # at the best: std * pdf(0)
    assert ei[1] == pytest.approx(np.maximum(draws, 0).mean(), abs=5e-3)
    assert list(ei[2:]) == [0.0, 2.0]  # no uncertainty: the improvement itself


def test_bayesian_on_nb201_proposes_the_best_expected_improvement_of_all_cells() -> None:
    table = load_table("cifar10")
    history = nb201_history(table, 30, seed=0)
    space = CellSpace(history.observations[0].point)
    proposer = BayesianProposer(space, confirm=1)  # no re-measurement of the leader: only new cells
    batch = proposer.propose(history, 3, np.random.default_rng(0))
    again = BayesianProposer(space, confirm=1).propose(history, 3, np.random.default_rng(99))
    assert [p.point.id for p in batch.proposals] == [p.point.id for p in again.proposals]  # no randomness left
    first = batch.proposals[0]
    ids = {p.point.id for p in batch.proposals}
    assert len(ids) == 3 and not ids & history.excluded()
    # the first is the argmax of expected improvement over the 15,625 cells, from the GP as refitted
    gp, _ = proposer.refit(history)
    mean, std = gp.predict(space.encode(space.points()))
    ei = expected_improvement(mean, std, float(np.max(gp.y_)))
    ei[[c.id in history.excluded() for c in space.points()]] = -np.inf
    assert first.point == space.points()[int(np.argmax(ei))] and first.candidates == 5**6
    assert first.acquisition == pytest.approx(float(np.max(ei)))
    # it is reached from its nearest observed cell by the recorded edge changes
    parent = next(o.point for o in history.observations if o.model_id == first.parent_id)
    nearest = min(space.distance(o.point.ops, first.point.ops) for o in history.observations)
    assert space.distance(parent.ops, first.point.ops) == nearest == len(first.steps)
    assert batch.refit is not None and batch.refit.observations == 30 and batch.refit.length_scale > 0


class CountingGP(GroupedGaussianProcess):
    """The GP as the proposer fits it, counting the points whose standard deviation it computes."""

    deviations = 0

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.deviations += len(np.atleast_2d(x))
        return super().predict(x)


@pytest.mark.parametrize(("dataset", "n", "seed"), [("cifar10", 10, 0), ("cifar100", 60, 1), ("imagenet", 150, 2)])
def test_exhaustive_search_finds_the_argmax_without_every_deviation(dataset: str, n: int, seed: int) -> None:
    table = load_table(dataset)
    history = nb201_history(table, n, seed)
    space = CellSpace(history.observations[0].point)
    x, y = BayesianProposer(space)._data(history)
    gp = CountingGP(space.groups).fit(x, y)
    excluded = history.excluded()
    best = float(np.max(gp.y_))
    mean, std = gp.predict(space.encode(space.points()))  # every point, for reference
    ei = expected_improvement(mean, std, best)
    ei[[c.id in excluded for c in space.points()]] = -np.inf
    gp.deviations = 0
    roots = [(o.model_id, o.point) for o in history.observations]
    found = maximize_over_space(space, roots, gp, excluded, best, chunk=256).best
    assert found is not None and found.point == space.points()[int(np.argmax(ei))]
    assert found.acquisition == pytest.approx(float(np.max(ei)))
    assert 0 < gp.deviations < 5**6 // 2  # the deviations of most points could not change the answer


def test_bayesian_on_nb201_measures_the_leader_again_before_it_may_lead() -> None:
    table = load_table("cifar10")
    history = nb201_history(table, 20, seed=1)
    space = CellSpace(history.observations[0].point)
    ranked = sorted(history.observations, key=lambda o: -o.score)
    first, second = ranked[0], ranked[1]
    proposer = BayesianProposer(space)
    assert proposer.remeasure(history) == first
    batch = proposer.propose(history, 3, np.random.default_rng(0))
    again, *new = batch.proposals
    assert (again.point, again.parent_id, again.steps, again.acquisition) == (first.point, first.model_id, (), None)
    assert again.mean is not None and again.std is not None and again.std > 0
    assert len({p.point.id for p in new}) == 2 and not {p.point.id for p in new} & history.excluded()

    def measured(h: History, obs: Observation, score: float) -> History:
        return History((*h.observations, Observation(f"m{len(h.observations)}", obs.point, score)), (), h.seen)

    # measured again lower, it falls behind the runner-up, which is measured again next
    history = measured(history, first, 2 * second.score - first.score - 1.0)  # mean: half a point behind
    assert proposer.remeasure(history) == second
    assert proposer.propose(history, 1, np.random.default_rng(0)).proposals[0].point == second.point
    # confirmed (two measurements, still ahead): the search moves on to new cells
    history = measured(history, second, second.score)
    assert proposer.remeasure(history) is None
    (p,) = proposer.propose(history, 1, np.random.default_rng(0)).proposals
    assert p.point.id not in history.excluded() and p.acquisition is not None
    # a leader already pending is not proposed twice; confirm=1 never re-measures; confirm=0 is refused
    leader_pending = History(history.observations[:20], (first.point,), history.seen)
    assert proposer.remeasure(leader_pending) is None
    assert BayesianProposer(space, confirm=1).remeasure(nb201_history(table, 5, seed=2)) is None
    with pytest.raises(ValueError, match="confirm must be at least 1"):
        BayesianProposer(space, confirm=0)


def test_the_end_of_a_counted_budget_tells_the_best_cells_apart() -> None:
    """In the last ``identify`` share of the budget the least-measured cell whose band reaches the leader's is
    measured again: the noise is pooled from re-measured cells, and a clear leader is left alone."""
    table = load_table("cifar10")
    cells = [o.point for o in nb201_history(table, 23, seed=3).observations]
    a, b, c, fillers = cells[0], cells[1], cells[2], cells[3:]
    space = CellSpace(a)

    def history(measurements: list[tuple[Cell, float]], remaining: int | None, pending: tuple = ()) -> History:
        scored = [*((f, 80.0) for f in fillers), *measurements]
        obs = tuple(Observation(f"m{i}", cell, score) for i, (cell, score) in enumerate(scored))
        return History(obs, pending, frozenset(o.point.id for o in obs), remaining)

    # a: 90.0, 90.4 (mean 90.2); b: 89.9, 90.3 (90.1); c: 85 once. Noise pooled from a and b: 0.28, so the
    # half-bands of a and b are 0.2: b's reaches 90.3, over a's floor of 90.0; c's does not.
    close = [(a, 90.0), (b, 89.9), (c, 85.0), (a, 90.4), (b, 90.3)]  # 25 observations
    proposer = BayesianProposer(space)
    assert proposer.remeasure(history(close, None)) is None  # no count to plan on: as before
    assert proposer.remeasure(history(close, 3)) is None  # 3 of 28 left: more than the last 10%
    pick = proposer.remeasure(history(close, 2))  # 2 of 27: a and b measured twice each, a has the higher mean
    assert pick is not None and (pick.point, pick.model_id) == (a, "m23")
    again = [*close, (a, 90.2)]  # a measured a third time (mean unchanged): b is now the least measured
    assert proposer.remeasure(history(again, 2)).point == b
    assert proposer.remeasure(history(again, 2, pending=(b,))).point == a  # b is pending: a, still open
    capped = [*close, *((a, 90.2) for _ in range(4))]  # a measured 6 times: at the cap
    assert proposer.remeasure(history(capped, 2, pending=(b,))) is None
    # the proposal itself: the cell's own model as parent, no steps, then new cells
    first, *new = proposer.propose(history(again, 2), 2, np.random.default_rng(0)).proposals
    assert (first.point, first.parent_id, first.steps, first.acquisition) == (b, "m24", (), None)
    assert new[0].point.id not in history(again, 2).excluded()
    # a clear leader (b two points behind, bands 0.2 wide), too little noise to pool (one re-measured cell),
    # or no share for identification: nothing is measured again
    assert proposer.remeasure(history([(a, 90.0), (b, 88.0), (c, 85.0), (a, 90.4), (b, 88.4)], 2)) is None
    assert proposer.remeasure(history([(a, 90.0), (b, 89.9), (a, 90.4)], 2)) is None
    assert BayesianProposer(space, identify=0).remeasure(history(close, 1)) is None
    with pytest.raises(ValueError, match="identify must be a share of the budget"):
        BayesianProposer(space, identify=1)


def test_a_new_leader_is_confirmed_only_where_noise_could_have_put_it_ahead() -> None:
    """A new leader is measured again unless it leads the runner-up by more than ``CLEAR_LEAD`` noise
    deviations of the difference of their means; before the noise can be pooled (2 degrees of freedom), always."""
    table = load_table("cifar10")
    cells = [o.point for o in nb201_history(table, 23, seed=3).observations]
    a, b, c, fillers = cells[0], cells[1], cells[2], cells[3:]
    proposer = BayesianProposer(CellSpace(a))

    def history(measurements: list[tuple[Cell, float]]) -> History:
        scored = [*((f, 80.0) for f in fillers), *measurements]
        obs = tuple(Observation(f"m{i}", cell, score) for i, (cell, score) in enumerate(scored))
        return History(obs, (), frozenset(o.point.id for o in obs))

    # a: 90.0, 90.4 (mean 90.2) and b: 89.9, 90.3 pool a noise of 0.28; the difference of c's single
    # measurement and a's mean of two then has a deviation of 0.28 * sqrt(1 + 1/2) = 0.35, so 0.69 is clear
    noise = [(a, 90.0), (b, 89.9), (a, 90.4), (b, 90.3)]
    assert CLEAR_LEAD == 2.0
    assert proposer.remeasure(history([*noise, (c, 91.0)])) is None  # 0.8 ahead: clear, c is not measured again
    assert proposer.remeasure(history([*noise, (c, 90.8)])).point == c  # 0.6 ahead: noise could do that
    assert proposer.remeasure(history([(a, 90.0), (b, 89.9), (a, 90.4), (c, 95.0)])).point == c  # noise unknown
    assert BayesianProposer(CellSpace(a), confirm=3).remeasure(history([*noise, (c, 91.0), (c, 91.0)])) is None


def test_the_morphism_space_never_measures_a_network_twice() -> None:
    history = grow("bayesian", morphism_space(), 4, seed=0)
    proposer = BayesianProposer(morphism_space(), annealing=FAST, n_anchors=8)
    assert proposer.remeasure(history) is None
    assert proposer.remeasure(History(history.observations, (), history.seen, remaining=1)) is None
    batch = proposer.propose(history, 2, np.random.default_rng(0))
    assert not {p.point.id for p in batch.proposals} & history.excluded()


def test_bayesian_on_nb201_beats_uniform_draws_at_forty_queries() -> None:
    """On the real CIFAR-10 table, noisy observations (one training seed drawn at random), seeds 0-3."""
    table = load_table("cifar10")
    regret: dict[str, list[float]] = {"bayesian": [], "uniform": []}
    for seed in range(4):
        space = CellSpace.random_start(np.random.default_rng(seed))
        for name in regret:
            rng, history = np.random.default_rng(seed), History()
            measured: dict[str, list[float]] = {}
            proposer = BayesianProposer(space)
            for i in range(40):
                if name == "uniform":
                    cell = Cell.from_key(list(table.val_acc)[int(rng.integers(5**6))])
                else:
                    cell = proposer.propose(history, 1, rng).proposals[0].point
                seeds = table.val_acc[cell.key]
                seen = float(seeds[rng.integers(len(seeds))])
                measured.setdefault(cell.key, []).append(seen)
                obs = Observation(f"m{i}", cell, seen)
                history = History((*history.observations, obs), (), history.seen | {cell.id})
            best = max(measured, key=lambda key: float(np.mean(measured[key])))  # the best mean observed
            regret[name].append(table.optimum - table.mean_val_acc(Cell.from_key(best)))
    assert np.mean(regret["bayesian"]) < 0.5 * np.mean(regret["uniform"])


def test_in_a_continuable_space_the_gp_sees_each_network_at_its_best() -> None:
    space = morphism_space()
    assert space.continuable and not CellSpace(Cell(("none",) * 6)).continuable
    grown = grow("random", space, 4, seed=7)
    a, b = grown.observations[0].point, grown.observations[1].point
    obs = (*grown.observations, Observation("m5", a, 99.0), Observation("m6", b, -1.0))
    history = History(obs, (), grown.seen)
    proposer = BayesianProposer(space, FAST, n_anchors=8, targets="raw")
    observed = proposer.observed(history)
    assert [o.model_id for o in observed] == ["m5", "m1", "m2", "m3"]  # a at its further training, b at its first
    batch = proposer.propose(history, 1, np.random.default_rng(0))
    assert batch.refit is not None and batch.refit.observations == 4
    assert batch.proposals[0].parent_id in {"m5", "m1", "m2", "m3"}  # morphisms start from the best-trained model
    assert batch.proposals[0].point.id not in history.excluded()

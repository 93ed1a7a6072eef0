"""The surrogate's targets: rank quantiles keep the order of the scores and nothing else."""

from __future__ import annotations

import numpy as np
import pytest

from nas.strategy.bayesian import BayesianProposer
from nas.strategy.nb201 import CellSpace, load_table
from nas.strategy.proposals import History, Observation
from nas.strategy.targets import Targets


def test_rank_targets_are_normal_quantiles_of_the_ranks_with_ties_sharing() -> None:
    scores = np.array([0.9, 0.1, 0.5, 0.5, 0.95])
    z = Targets.fit("rank", scores)(scores)
    assert list(np.argsort(z, kind="stable")) == list(np.argsort(scores, kind="stable"))  # the order kept
    assert z[2] == z[3]  # a tie shares its mean rank
    assert z[4] == pytest.approx(1.2815515655, rel=1e-9)  # the best of 5: the 0.9 quantile
    assert z[2] == pytest.approx(-0.2533471031, rel=1e-9)  # ranks 2 and 3 of 5 share 2.5: the 0.4 quantile


def test_rank_targets_ignore_the_scale_of_the_scores_raw_ones_do_not() -> None:
    scores = np.array([0.91, 0.12, 0.88, 0.93, 0.90])
    for transform in (lambda s: 100 * s, np.log, lambda s: s**3):  # percent, log, any increasing map
        mapped = transform(scores)
        assert np.array_equal(Targets.fit("rank", scores)(scores), Targets.fit("rank", mapped)(mapped))
    assert np.array_equal(Targets.fit("raw", scores)(scores), scores)


def test_targets_go_back_to_scores_through_the_observed_pairs_and_beyond_them() -> None:
    scores = np.array([0.2, 0.6, 0.7, 0.9])
    t = Targets.fit("rank", scores)
    assert np.allclose(t.to_scores(t(scores)), scores)
    back = t.to_scores(np.linspace(-4, 4, 81))
    assert np.all(np.diff(back) > 0)  # increasing, also past the best and the worst seen
    assert back[-1] > 0.9 and back[0] < 0.2
    assert Targets.fit("rank", np.array([0.5])).to_scores(np.array([1.0]))[0] == 0.5


def test_a_prediction_goes_back_as_its_mean_and_half_its_interval() -> None:
    t = Targets.fit("rank", np.array([0.2, 0.6, 0.7, 0.9]))
    low, mid, high = t.to_scores(np.array([0.1, 0.4, 0.7]))
    assert t.prediction(0.4, 0.3) == (mid, (high - low) / 2)
    assert Targets.fit("raw", np.array([0.2, 0.6])).prediction(0.5, 0.1) == pytest.approx((0.5, 0.1))


def test_an_unknown_kind_names_the_choices() -> None:
    with pytest.raises(ValueError, match="unknown surrogate targets 'log'; choose one of rank, raw"):
        Targets.fit("log", np.array([1.0]))


def _history(space: CellSpace, scores: dict[str, float], scale: float) -> History:
    rng = np.random.default_rng(0)
    cells = [space.start, *(c for _, c in space.neighbours(space.start, rng, n=9))]
    obs = tuple(Observation(f"m{i}", c, scale * scores[c.key]) for i, c in enumerate(cells))
    return History(obs, (), frozenset(c.id for c in cells))


def test_with_rank_targets_the_search_is_the_same_for_accuracies_in_percent_or_in_fractions() -> None:
    """The proposer sees only the order of the scores: a search on accuracies in [0, 1] proposes what one on
    percent does, and reports its predictions in the scores' units."""
    table = load_table("cifar10")
    scores = {k: float(np.mean(v)) for k, v in table.val_acc.items()}
    space = CellSpace.random_start(np.random.default_rng(3))
    runs = {}
    for scale in (1.0, 0.01):
        batch = BayesianProposer(space).propose(_history(space, scores, scale), 3, np.random.default_rng(7))
        runs[scale] = batch
    percent, fraction = runs[1.0], runs[0.01]
    assert [p.point.id for p in percent.proposals] == [p.point.id for p in fraction.proposals]
    assert percent.refit is not None and fraction.refit is not None
    assert percent.refit.length_scale == fraction.refit.length_scale
    for p, f in zip(percent.proposals, fraction.proposals, strict=True):
        assert f.mean == pytest.approx(p.mean / 100) and f.std == pytest.approx(p.std / 100)
        assert 0 < p.mean < 100 and p.std > 0

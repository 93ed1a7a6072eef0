"""Edit distance: against brute force on tiny inputs, and its metric properties."""

from __future__ import annotations

import itertools

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from nas.architectures.edit_distance import (
    describe,
    edit_distance,
    layer_cost,
    layer_distance,
    skip_cost,
    skip_distance,
)
from nas.architectures.initial import initial_cnn
from nas.architectures.morphisms import plan_skip, random_morphism

layer = st.tuples(st.sampled_from(["Conv2D", "Dense"]), st.integers(1, 64))
layers = st.lists(layer, max_size=4).map(tuple)
skip = st.tuples(st.integers(0, 5), st.integers(1, 5), st.sampled_from(["Add", "Concatenate"])).map(
    lambda s: (min(s[0], s[1] - 1), s[1], s[2])
)
skips = st.lists(skip, max_size=4).map(tuple)


def brute_layer_distance(a: tuple, b: tuple) -> float:
    """Cheapest alignment found by enumerating every set of order-preserving matched pairs."""
    best = float(len(a) + len(b))
    for k in range(1, min(len(a), len(b)) + 1):
        for ia in itertools.combinations(range(len(a)), k):
            for ib in itertools.combinations(range(len(b)), k):
                cost = sum(layer_cost(a[i], b[j]) for i, j in zip(ia, ib, strict=True)) + len(a) + len(b) - 2 * k
                best = min(best, cost)
    return best


def brute_skip_distance(a: tuple, b: tuple) -> float:
    """Cheapest matching found by trying every injection of the smaller set into the larger."""
    small, large = (a, b) if len(a) <= len(b) else (b, a)
    if not small:
        return float(len(large))
    return min(
        sum(skip_cost(s, large[j]) for s, j in zip(small, perm, strict=True)) + len(large) - len(small)
        for perm in itertools.permutations(range(len(large)), len(small))
    )


@settings(max_examples=300, deadline=None)
@given(a=layers, b=layers)
def test_layer_distance_matches_brute_force(a: tuple, b: tuple) -> None:
    assert abs(layer_distance(a, b) - brute_layer_distance(a, b)) < 1e-9


@settings(max_examples=300, deadline=None)
@given(a=skips, b=skips)
def test_skip_distance_matches_brute_force(a: tuple, b: tuple) -> None:
    assert abs(skip_distance(a, b) - brute_skip_distance(a, b)) < 1e-9


@settings(max_examples=300, deadline=None)
@given(a=layers, b=layers, c=layers)
def test_layer_distance_is_a_metric(a: tuple, b: tuple, c: tuple) -> None:
    # Levenshtein with a metric substitution cost and unit indels is a metric.
    assert layer_distance(a, a) == 0
    assert abs(layer_distance(a, b) - layer_distance(b, a)) < 1e-12  # equal up to summation order
    assert layer_distance(a, c) <= layer_distance(a, b) + layer_distance(b, c) + 1e-9


def test_dense_widths_count() -> None:
    assert layer_distance((("Dense", 64),), (("Dense", 128),)) == 0.5
    assert layer_distance((("Dense", 64),), (("Conv2D", 64),)) == 1.0


def test_distance_on_real_networks_is_symmetric_with_zero_self_distance() -> None:
    rng = np.random.default_rng(0)
    arch = initial_cnn((16, 16, 1), 3, filters=8, dense_units=8)
    nets = [arch]
    for _ in range(12):
        found = random_morphism(nets[-1], rng)
        assert found is not None
        nets.append(found[1])
    descs = [describe(n) for n in nets]
    for a in descs:
        assert edit_distance(a, a) == 0
        for b in descs:
            assert abs(edit_distance(a, b) - edit_distance(b, a)) < 1e-12
    assert edit_distance(descs[0], descs[-1]) > 0


def test_descriptor_positions_of_skips() -> None:
    arch = initial_cnn((16, 16, 1), 3, filters=8, dense_units=8)
    rng = np.random.default_rng(0)
    child, _ = plan_skip(arch, rng, "add_skip", src="conv2d_3", dst="conv2d_11").apply(arch)
    desc = describe(child)
    assert desc.layers == (("Conv2D", 8),) * 3 + (("Dense", 8), ("Dense", 3))
    assert desc.skips == ((1, 3, "Add"),)
    child2, _ = plan_skip(child, rng, "concat_skip", src="relu_1", dst="conv2d_7").apply(child)
    # the concat's merging 1x1 conv joins the main chain, so the Add now ends one layer later
    assert describe(child2).skips == ((0, 2, "Concatenate"), (1, 4, "Add"))
    assert describe(child2).layers[:4] == (("Conv2D", 8),) * 4

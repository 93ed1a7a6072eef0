"""Morphisms on the graph alone (no Keras): structure, caps, planning, bad targets."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nas.architectures.anatomy import skip_pairs
from nas.architectures.graph import INPUT, Architecture, Layer
from nas.architectures.initial import initial_cnn, initial_mlp
from nas.architectures.morphisms import (
    KINDS,
    Morphism,
    apply_chain,
    deeper,
    plan_deeper,
    plan_skip,
    plan_wider,
    random_morphism,
    wider,
)
from nas.architectures.weights import check_weights, init_weights


def test_deeper_inserts_identity_block_after_target(small_cnn: Architecture) -> None:
    rng = np.random.default_rng(0)
    m = plan_deeper(small_cnn, rng, after="relu_1", kernel_size=3)
    assert m.exact and m.arg("relu")  # relu_1's output is never negative, so a ReLU keeps the function
    child, _ = m.apply(small_cnn)
    new_ids = set(child.by_id) - set(small_cnn.by_id)
    assert sorted(child.by_id[i].kind for i in new_ids) == ["BatchNormalization", "Conv2D", "ReLU"]
    assert child.by_id["batchnormalization_2"].inputs != ("relu_1",)  # old consumer now reads the new block
    assert child.n_layers == small_cnn.n_layers + 3


def test_deeper_on_signed_input_adds_no_relu_unless_asked(small_cnn: Architecture) -> None:
    rng = np.random.default_rng(0)
    auto = plan_deeper(small_cnn, rng, after="conv2d_3")
    assert auto.exact and not auto.arg("relu")
    forced = plan_deeper(small_cnn, rng, after="conv2d_3", relu=True)
    assert not forced.exact


def test_deeper_at_random_adds_a_nonlinearity_and_stays_exact_where_it_can(
    small_cnn: Architecture, small_mlp: Architecture
) -> None:
    """Planned at random, deeper always adds a ReLU (a linear layer beside a Dense or Conv composes to one linear
    map: no capacity). Where the network has a layer whose output is never negative, it goes there, exactly."""
    for arch in (small_cnn, small_mlp):
        rng = np.random.default_rng(0)
        chosen = set()
        for _ in range(40):
            m = plan_deeper(arch, rng)
            assert m.arg("relu") and m.exact
            chosen.add(m.arg("after"))
        assert chosen and all(arch.by_id[a].kind in ("ReLU", "Dropout") for a in chosen)
        assert len(chosen) > 1
    # A body with no non-negative output (Dense straight after the input): approximate, as in Auto-Keras.
    linear = Architecture(
        (6,),
        (
            Layer.make("dense_1", "Dense", ["input"], units=4),
            Layer.make("dense_2", "Dense", ["dense_1"], units=3),
            Layer.make("softmax_3", "Softmax", ["dense_2"]),
        ),
    )
    m = plan_deeper(linear, np.random.default_rng(0))
    assert m.arg("relu") and not m.exact and m.arg("after") == "dense_1"


def test_wider_grows_target_and_keeps_consumers(small_cnn: Architecture) -> None:
    child, _ = wider(small_cnn, None, np.random.default_rng(0), layer="conv2d_3", n_add=5)
    assert child.by_id["conv2d_3"].get("filters") == 13
    assert child.shapes["batchnormalization_6"] == (6, 6, 13)
    assert child.by_id["conv2d_7"].get("filters") == 8


def test_skip_morphisms_copy_pooling(small_cnn: Architecture) -> None:
    rng = np.random.default_rng(0)
    child, _ = plan_skip(small_cnn, rng, "add_skip", src="conv2d_3", dst="conv2d_11").apply(small_cnn)
    new = [child.by_id[i] for i in set(child.by_id) - set(small_cnn.by_id)]
    assert sorted(lay.kind for lay in new) == ["Add", "Conv2D", "MaxPooling2D", "MaxPooling2D"]
    add = next(lay for lay in new if lay.kind == "Add")
    assert add.inputs[0] == "conv2d_11" and add in [child.by_id[n] for n in child.main_chain if n != INPUT]
    cat, _ = plan_skip(small_cnn, rng, "concat_skip", src="conv2d_3", dst="conv2d_11").apply(small_cnn)
    assert cat.shapes[cat.consumers["conv2d_11"][0]] == (3, 3, 16)


def test_wider_follows_add_and_concatenate(small_cnn: Architecture) -> None:
    rng = np.random.default_rng(1)
    arch, _ = plan_skip(small_cnn, rng, "add_skip", src="conv2d_3", dst="conv2d_7").apply(small_cnn)
    arch, _ = plan_skip(arch, rng, "concat_skip", src="relu_1", dst="conv2d_11").apply(arch)
    child, _ = wider(arch, None, rng, layer="conv2d_7", n_add=3)
    skip_conv = next(i for i in arch.by_id if i.startswith("conv2d_") and arch.by_id[i].get("kernel_size") == 1)
    # the zero conv on the add-skip widens with conv2d_7 so the Add still sees one shape
    assert child.by_id[skip_conv].get("filters") == 11
    assert child.by_id["conv2d_7"].get("filters") == 11


def test_skip_pairs_need_a_mixing_layer_and_equal_rank(small_cnn: Architecture) -> None:
    pairs = skip_pairs(small_cnn)
    assert ("conv2d_3", "conv2d_7") in pairs
    assert ("relu_1", "batchnormalization_2") not in pairs  # nothing learnt in between
    assert all(len(small_cnn.shapes[s]) == len(small_cnn.shapes[d]) for s, d in pairs)
    assert not any(d in small_cnn.head or s in small_cnn.head for s, d in pairs)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda a, r: plan_deeper(a, r, after="ghost"), "no layer 'ghost'"),
        (lambda a, r: plan_wider(a, r, layer="ghost"), "no layer 'ghost'"),
        (lambda a, r: plan_skip(a, r, "add_skip", src="ghost", dst="conv2d_7"), "no layer 'ghost'"),
        (lambda a, r: plan_deeper(a, r, after="softmax_18"), "not a main-chain layer outside the classifier head"),
        (lambda a, r: plan_wider(a, r, layer="dense_17"), "not a main-chain layer outside the classifier head"),
        (lambda a, r: plan_wider(a, r, layer="relu_1"), None),
        (lambda a, r: plan_deeper(a, r, after="relu_1", kernel_size=2), "positive odd number"),
        (lambda a, r: plan_skip(a, r, "add_skip", src="conv2d_7", dst="conv2d_3"), "must come before"),
        (lambda a, r: plan_skip(a, r, "add_skip", src="conv2d_11", dst="dense_15"), "one is an image tensor"),
        (lambda a, r: plan_skip(a, r, "mul_skip"), "must be 'add_skip' or 'concat_skip'"),
        (lambda a, r: Morphism("shrink", ()).apply(a), "unknown morphism kind 'shrink'"),
        (lambda a, r: Morphism("wider", (("dup", (99,)), ("layer", "conv2d_3"))).apply(a), "dup indices"),
        (lambda a, r: random_morphism(a, r, kinds=["twist"]), "unknown morphism kinds"),
    ],
)
def test_bad_morphism_targets_raise_clear_errors(call, message: str | None) -> None:
    arch = initial_cnn((12, 12, 2), 5, filters=8, dense_units=8)
    rng = np.random.default_rng(0)
    if message is None:  # a layer that exists but is the wrong kind
        arch = arch  # relu_1 is in the body but not widenable
        with pytest.raises(ValueError, match="needs a Conv2D or Dense layer"):
            call(arch, rng).apply(arch)
        return
    with pytest.raises(ValueError, match=message):
        call(arch, rng)


def test_planning_is_deterministic(small_cnn: Architecture) -> None:
    def chain(seed: int) -> list[Morphism]:
        rng, arch, out = np.random.default_rng(seed), small_cnn, []
        for _ in range(6):
            m, arch = random_morphism(arch, rng)
            out.append(m)
        return out

    assert chain(7) == chain(7)
    assert chain(7) != chain(8)


def test_morphism_json_round_trip_replays_the_same_child(small_cnn: Architecture) -> None:
    rng = np.random.default_rng(5)
    arch, chain = small_cnn, []
    for _ in range(5):
        m, arch = random_morphism(arch, rng)
        chain.append(m)
    logged = json.loads(json.dumps([m.to_dict() for m in chain]))
    replayed = [Morphism.from_dict(d) for d in logged]
    assert replayed == chain
    assert apply_chain(small_cnn, None, replayed)[0] == arch


def test_caps_are_respected(small_cnn: Architecture) -> None:
    rng = np.random.default_rng(0)
    assert random_morphism(small_cnn, rng, max_params=small_cnn.param_count) is None
    for _ in range(10):  # with no room for layers only widening can fit
        found = random_morphism(small_cnn, rng, max_layers=small_cnn.n_layers)
        assert found is not None and found[0].kind == "wider" and found[1].n_layers == small_cnn.n_layers
    found = random_morphism(small_cnn, rng, max_params=small_cnn.param_count + 2_000, max_layers=30)
    assert found is not None
    assert found[1].param_count <= small_cnn.param_count + 2_000 and found[1].n_layers <= 30


def test_weights_follow_every_morphism(small_cnn: Architecture) -> None:
    rng = np.random.default_rng(2)
    arch, weights = small_cnn, init_weights(small_cnn, rng)
    for kind in KINDS:
        m, _ = random_morphism(arch, rng, kinds=[kind])
        arch, weights = m.apply(arch, weights)
        check_weights(arch, weights)


def test_deeper_leaves_parent_weights_untouched(small_mlp: Architecture) -> None:
    rng = np.random.default_rng(0)
    weights = init_weights(small_mlp, rng)
    before = {k: [a.copy() for a in v] for k, v in weights.items()}
    wider(small_mlp, weights, rng, layer="dense_2", n_add=4)
    deeper(small_mlp, weights, rng, after="dense_2")
    assert all(all(np.array_equal(a, b) for a, b in zip(weights[k], before[k], strict=True)) for k in weights)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), length=st.integers(1, 10), image=st.booleans())
def test_random_chains_stay_valid(seed: int, length: int, image: bool) -> None:
    arch = initial_cnn((12, 12, 2), 5, filters=8, dense_units=8) if image else initial_mlp((20,), 4, units=8)
    rng = np.random.default_rng(seed)
    weights = init_weights(arch, rng)
    for _ in range(length):
        found = random_morphism(arch, rng, max_params=200_000, max_layers=80)
        assert found is not None
        m, planned = found
        arch, weights = m.apply(arch, weights)
        assert arch == planned
        assert Architecture.from_json(arch.to_json()).id == arch.id
        check_weights(arch, weights)
        assert arch.param_count <= 200_000 and arch.n_layers <= 80
        assert arch.output_shape == (5,) if image else (4,)


def test_layer_constructor_sorts_config() -> None:
    assert Layer.make("c", "Conv2D", [INPUT], strides=1, filters=2, kernel_size=3) == Layer.make(
        "c", "Conv2D", [INPUT], filters=2, kernel_size=3, strides=1
    )

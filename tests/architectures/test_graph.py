"""The architecture graph: validation, canonical JSON, content hash, sizes, initial networks."""

from __future__ import annotations

import hashlib
import heapq
import json
import random

import numpy as np
import pytest

from nas.architectures.graph import INPUT, Architecture, Layer
from nas.architectures.initial import initial_architecture, initial_cnn, initial_mlp
from nas.architectures.morphisms import random_morphism


def chain(*specs: tuple[str, dict]) -> tuple[Layer, ...]:
    layers, last = [], INPUT
    for i, (kind, cfg) in enumerate(specs):
        layers.append(Layer.make(f"l{i}", kind, [last], **cfg))
        last = f"l{i}"
    return tuple(layers)


def test_json_round_trip_is_exact(small_cnn: Architecture) -> None:
    text = small_cnn.to_json()
    back = Architecture.from_json(text)
    assert back == small_cnn
    assert back.to_json() == text
    assert back.id == small_cnn.id


def test_id_ignores_insertion_order_and_names(small_cnn: Architecture) -> None:
    shuffled = list(small_cnn.layers)
    random.Random(3).shuffle(shuffled)
    same = Architecture(small_cnn.input_shape, tuple(shuffled))
    assert same.to_json() == small_cnn.to_json()
    assert same.id == small_cnn.id
    renamed_ids = {lay.id: f"x{i}" for i, lay in enumerate(reversed(small_cnn.layers))}
    renamed = Architecture(
        small_cnn.input_shape,
        tuple(
            Layer(renamed_ids[lay.id], lay.kind, tuple(renamed_ids.get(i, i) for i in lay.inputs), lay.config)
            for lay in small_cnn.layers
        ),
    )
    assert renamed.id == small_cnn.id
    assert renamed.to_json() != small_cnn.to_json()


def test_id_is_stable_across_versions() -> None:
    # Pinned: a change here silently breaks duplicate detection and every logged architecture id.
    arch = initial_cnn((28, 28, 1), 10)
    assert arch.id == "b61ef31e1c53" + arch.id[12:]
    assert len(arch.id) == 64


def _reference_order(layers: tuple[Layer, ...]) -> list[Layer]:
    """The canonical order as specified: Kahn's algorithm, smallest repr((kind, config, input positions)) first."""
    by_id = {lay.id: lay for lay in layers}
    rank, ordered, ready = {INPUT: -1}, [], []
    waiting = {lay.id: len(set(lay.inputs)) for lay in layers}

    def release(node: str) -> None:
        for lay in layers:
            if node in lay.inputs:
                waiting[lay.id] -= 1
                if waiting[lay.id] == 0:
                    heapq.heappush(ready, (repr((lay.kind, lay.config, tuple(rank[i] for i in lay.inputs))), lay.id))

    release(INPUT)
    while ready:
        lay = by_id[heapq.heappop(ready)[1]]
        rank[lay.id] = len(ordered)
        ordered.append(lay)
        release(lay.id)
    return ordered


def _reference_id(arch: Architecture) -> str:
    rank = {INPUT: -1, **{lay.id: i for i, lay in enumerate(arch.layers)}}
    structure = {
        "format": 1,
        "input_shape": list(arch.input_shape),
        "layers": [[lay.kind, dict(lay.config), [rank[i] for i in lay.inputs]] for lay in arch.layers],
    }
    return hashlib.sha256(json.dumps(structure, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def test_order_id_and_size_match_their_definitions_on_grown_networks() -> None:
    # The graph builds them from cached pieces (signatures, JSON fragments, shapes and sizes by layer); on networks
    # grown by hundreds of morphisms (merges, pooled skips, float configs) they must equal the plain definitions.
    rng, shuffle = np.random.default_rng(4), random.Random(4)
    for start in (initial_cnn((16, 16, 3), 5, filters=8), initial_mlp((11,), 3, units=16)):
        grown = [start]
        for _ in range(120):
            found = random_morphism(grown[int(rng.integers(len(grown)))], rng, max_params=2_000_000, max_layers=70)
            if found is not None:
                grown.append(found[1])
        for arch in grown[::7]:
            shuffled = list(arch.layers)
            shuffle.shuffle(shuffled)
            again = Architecture(arch.input_shape, tuple(shuffled))
            assert list(again.layers) == _reference_order(tuple(shuffled)) == list(arch.layers)
            assert again.id == _reference_id(arch) == arch.id
            assert again.param_count == sum(arch.layer_params(lay.id) for lay in arch.layers) == arch.param_count


def test_id_changes_with_structure(small_cnn: Architecture) -> None:
    wider = initial_cnn((12, 12, 2), 5, blocks=3, filters=9, dense_units=8)
    deeper = initial_cnn((12, 12, 2), 5, blocks=4, filters=8, dense_units=8)
    assert len({small_cnn.id, wider.id, deeper.id}) == 3


def test_param_count_by_hand() -> None:
    arch = Architecture(
        (8, 8, 3),
        chain(
            ("Conv2D", {"filters": 4, "kernel_size": 3, "strides": 1}),
            ("BatchNormalization", {}),
            ("GlobalAveragePooling2D", {}),
            ("Dense", {"units": 5}),
        ),
    )
    assert arch.param_count == (3 * 3 * 3 * 4 + 4) + 4 * 4 + (4 * 5 + 5)
    assert arch.output_shape == (5,)


def test_shapes_follow_pooling_and_concat() -> None:
    layers = (
        Layer.make("c", "Conv2D", [INPUT], filters=4, kernel_size=3, strides=2),
        Layer.make("p", "MaxPooling2D", ["c"], pool_size=2),
        Layer.make("q", "MaxPooling2D", ["c"], pool_size=2),
        Layer.make("cat", "Concatenate", ["p", "q"]),
        Layer.make("f", "Flatten", ["cat"]),
    )
    arch = Architecture((9, 9, 1), layers)
    assert arch.shapes["c"] == (5, 5, 4)
    assert arch.shapes["p"] == (3, 3, 4)
    assert arch.shapes["cat"] == (3, 3, 8)
    assert arch.output_shape == (72,)


def test_initial_cnn_is_the_auto_keras_default() -> None:
    arch = initial_cnn((28, 28, 1), 10)
    kinds = [lay.kind for lay in arch.layers]
    assert kinds == ["ReLU", "BatchNormalization", "Conv2D", "MaxPooling2D"] * 3 + [
        "GlobalAveragePooling2D",
        "Dropout",
        "Dense",
        "ReLU",
        "Dense",
        "Softmax",
    ]
    assert arch.output_shape == (10,)
    assert arch.main_chain[0] == INPUT and len(arch.main_chain) == arch.n_layers + 1
    assert arch.head == {arch.layers[-2].id, arch.layers[-1].id}


def test_initial_architecture_picks_by_input_rank() -> None:
    assert initial_architecture((8, 8, 1), 3).layers[2].kind == "Conv2D"
    mlp = initial_architecture((30,), 3, dense_layers=2, units=16)
    assert mlp == initial_mlp((30,), 3, layers=2, units=16)
    with pytest.raises(ValueError, match="initial_cnn needs an image input shape"):
        initial_cnn((30,), 3)
    with pytest.raises(ValueError, match="filters=0 must be a positive integer"):
        initial_cnn((8, 8, 1), 3, filters=0)


@pytest.mark.parametrize(
    ("layers", "message"),
    [
        (chain(("Conv3D", {})), "unknown kind 'Conv3D'"),
        (chain(("Dense", {"units": 0})), "units=0 must be a positive integer"),
        (chain(("Dense", {"units": 4, "bias": 1})), "expected exactly \\['units'\\]"),
        (chain(("Dropout", {"rate": 1.5})), "rate=1.5 must be a number in \\[0, 1\\)"),
        (chain(("Conv2D", {"filters": 2, "kernel_size": 3, "strides": 1})), "needs an image tensor"),
        ((Layer.make("a", "Dense", ["b"], units=2), Layer.make("b", "Dense", ["a"], units=2)), "cycle"),
        ((Layer.make("a", "Dense", ["nowhere"], units=2),), "reads 'nowhere'"),
        ((Layer.make("a", "Dense", [INPUT], units=2), Layer.make("a", "ReLU", ["a"])), "used twice"),
        (
            (Layer.make("a", "Dense", [INPUT], units=2), Layer.make("b", "Dense", [INPUT], units=2)),
            "exactly one output",
        ),
        (
            (
                Layer.make("a", "Dense", [INPUT], units=2),
                Layer.make("b", "Dense", [INPUT], units=3),
                Layer.make("s", "Add", ["a", "b"]),
            ),
            "'s' \\(Add\\) needs inputs of one shape.*\\(2,\\), \\(3,\\)",
        ),
        ((Layer.make("s", "Add", [INPUT]),), "at least 2 inputs"),
        ((Layer.make(INPUT, "ReLU", [INPUT]),), "not allowed"),
    ],
)
def test_bad_graphs_are_refused_with_the_reason(layers: tuple[Layer, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Architecture((6,), layers)


def test_bad_json_is_refused() -> None:
    with pytest.raises(ValueError, match="does not parse"):
        Architecture.from_json("{not json")
    with pytest.raises(ValueError, match="format 7 is not supported"):
        Architecture.from_json('{"format": 7, "input_shape": [3], "layers": []}')
    with pytest.raises(ValueError, match="malformed"):
        Architecture.from_json('{"format": 1, "input_shape": [3], "layers": [{"kind": "ReLU"}]}')
    with pytest.raises(ValueError, match="input_shape"):
        Architecture((0, 3), ())


def test_missing_layer_is_named(small_mlp: Architecture) -> None:
    with pytest.raises(ValueError, match="no layer 'ghost'"):
        small_mlp.layer("ghost")

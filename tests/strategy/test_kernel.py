"""The kernel over architectures is PSD and the embedding is a contraction of the edit distance."""

from __future__ import annotations

import numpy as np

from nas.architectures.edit_distance import edit_distance
from nas.architectures.initial import initial_cnn, initial_mlp
from nas.strategy.kernel import AnchorEmbedding, anchors_from_walks, rbf
from nas.strategy.space import MorphismSpace


def random_networks(space: MorphismSpace, n: int, seed: int) -> list:
    rng = np.random.default_rng(seed)
    out, frontier = [space.initial()], [space.initial()]
    while len(out) < n:
        parent = frontier[int(rng.integers(len(frontier)))]
        moves = space.neighbours(parent, rng, n=1)
        if moves:
            out.append(moves[0][1])
            frontier.append(moves[0][1])
    return out


def test_kernel_matrix_is_psd_on_200_random_architectures() -> None:
    for start in (initial_cnn((16, 16, 1), 4, filters=8, dense_units=8), initial_mlp((10,), 3, units=8)):
        space = MorphismSpace(start, max_params=200_000, max_layers=60)
        nets = random_networks(space, 200, seed=1)
        embed = AnchorEmbedding(space.distances, anchors_from_walks(space, 16, seed=0))
        x = embed([space.descriptor(a) for a in nets])
        for length_scale in (0.1, 1.0, 10.0):
            k = rbf(x, x, length_scale)
            assert np.allclose(k, k.T)
            assert np.linalg.eigvalsh(k).min() > -1e-8


def test_embedding_never_stretches_the_distance() -> None:
    space = MorphismSpace(initial_cnn((16, 16, 1), 4, filters=8, dense_units=8), max_params=200_000)
    nets = random_networks(space, 30, seed=2)
    descs = [space.descriptor(a) for a in nets]
    embed = AnchorEmbedding(space.distances, descs[:10])
    x = embed(descs) * np.sqrt(10)  # undo the 1/sqrt(M) scale: each coordinate is one anchor distance
    for i in range(len(descs)):
        for j in range(len(descs)):
            d = edit_distance(descs[i], descs[j])
            assert np.max(np.abs(x[i] - x[j])) <= d + 1e-9
            if i < 10:  # exact in the coordinate of an anchor
                assert abs(x[i, i] - x[j, i]) == d or np.isclose(abs(x[i, i] - x[j, i]), d)


def test_embedding_is_cached_and_repeatable() -> None:
    space = MorphismSpace(initial_mlp((10,), 3, units=8))
    calls = []

    def counting(a, b):
        calls.append(len(a) * len(b))
        return space.distances(a, b)

    embed = AnchorEmbedding(counting, anchors_from_walks(space, 8, seed=0))
    desc = space.descriptor(space.initial())
    first = embed([desc, desc])
    assert calls == [8]  # one call, for the one new descriptor
    assert np.array_equal(embed([desc]), first[:1]) and calls == [8]
    again = AnchorEmbedding(space.distances, anchors_from_walks(space, 8, seed=0))
    assert np.array_equal(again([desc]), first[:1])


def test_the_distance_matrix_equals_the_pairwise_distance_exactly() -> None:
    """The batched edit distance (padded Wagner-Fischer rows for many pairs at once, cached skip matchings) gives
    bit for bit what the pairwise one gives, on networks with and without skips, empty ones and both lambdas, so
    proposals (and replays of logs written before it) do not change."""
    from nas.architectures.edit_distance import NetworkDescriptor, distance_matrix

    descs = [NetworkDescriptor((), ()), NetworkDescriptor((("Dense", 3),), ((0, 1, "Add"),))]
    for start in (initial_cnn((16, 16, 1), 4, filters=8, dense_units=8), initial_mlp((10,), 3, units=8)):
        space = MorphismSpace(start, max_params=200_000, max_layers=60)
        descs += [space.descriptor(a) for a in random_networks(space, 60, seed=3)]
    assert sum(bool(d.skips) for d in descs) > 20
    for lam in (1.0, 0.3):
        want = np.array([[edit_distance(x, y, lam) for y in descs[:40]] for x in descs])
        assert np.array_equal(distance_matrix(descs, descs[:40], lam), want)
        back = np.array([[edit_distance(x, y, lam) for y in descs] for x in descs[:40]])
        assert np.array_equal(distance_matrix(descs[:40], descs, lam), back)

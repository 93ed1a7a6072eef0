"""Training repeats exactly from its seed, whatever other threads do to the global random generators."""

from __future__ import annotations

import random

import numpy as np

from nas.architectures.graph import Architecture
from nas.architectures.weights import init_weights
from nas.training.fit import TrainConfig, fit, make_deterministic


def test_training_ignores_global_random_state(small_mlp: Architecture) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 20)).astype("f4")
    y = (x[:, 0] > 0).astype("i8") + 2 * (x[:, 1] > 0).astype("i8")
    weights = init_weights(small_mlp, np.random.default_rng(1))
    config = TrainConfig(epochs=2, batch_size=16, early_stopping_patience=0)
    make_deterministic(0)
    results = []
    for global_seed in (1, 2):  # as a Prefect thread naming a task run would move them
        random.seed(global_seed)
        np.random.seed(global_seed)
        results.append(fit(small_mlp, weights, x[:200], y[:200], x[200:], y[200:], config, seed=7))
    first, second = results
    assert first.history == second.history
    for layer_id, arrays in first.weights.items():
        for a, b in zip(arrays, second.weights[layer_id], strict=True):
            np.testing.assert_array_equal(a, b)
    assert first.weights.keys() == init_weights(small_mlp, np.random.default_rng(1)).keys()

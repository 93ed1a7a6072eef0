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


def test_small_data_trains_for_at_least_min_steps(small_mlp: Architecture) -> None:
    """An epoch of 100 rows is 2 steps of 64: with min_steps=150 the training may run 75 epochs; large data
    keeps train.epochs; early stopping still ends it when validation stops improving."""
    config = TrainConfig(epochs=2, batch_size=64, early_stopping_patience=0, min_steps=150)
    assert config.epochs_for(100) == 75 and config.epochs_for(64) == 150 and config.epochs_for(10_000) == 2
    assert TrainConfig(epochs=2).epochs_for(100) == 2  # min_steps 0: epochs as given
    rng = np.random.default_rng(0)
    x = rng.normal(size=(130, 20)).astype("f4")
    y = (x[:, 0] > 0).astype("i8")
    weights = init_weights(small_mlp, np.random.default_rng(1))
    few = TrainConfig(epochs=2, batch_size=64, early_stopping_patience=0, min_steps=12)
    result = fit(small_mlp, weights, x[:100], y[:100], x[100:], y[100:], few, seed=0)
    assert len(result.history) == 6  # 12 steps of 2 per epoch

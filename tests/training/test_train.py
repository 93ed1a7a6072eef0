"""Training repeats exactly from its seed, whatever other threads do to the global random generators."""

from __future__ import annotations

import random

import numpy as np
import pytest

from nas.architectures.graph import Architecture
from nas.architectures.initial import initial_mlp
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


def test_the_cosine_schedule_decays_the_rate_keras_uses_and_records_it() -> None:
    """On real digits, ``schedule="cosine"`` trains at Keras' CosineDecay from the learning rate to 0 over the
    training's steps: each epoch records the rate of its first step, the constant schedule records the learning
    rate throughout, and the two trainings from the same weights and seed differ only by the rates."""
    import keras
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = (x / 16).astype("f4")
    arch = initial_mlp((64,), 10, layers=1, units=16)
    weights = init_weights(arch, np.random.default_rng(0))
    results = {}
    for schedule in ("constant", "cosine", "cosine"):
        config = TrainConfig(epochs=6, batch_size=50, learning_rate=0.01, early_stopping_patience=0, schedule=schedule)
        result = fit(arch, weights, x[:1400], y[:1400], x[1400:], y[1400:], config, seed=3)
        assert schedule not in results or results[schedule].history == result.history  # it repeats exactly
        results[schedule] = result
    keras_rates = keras.optimizers.schedules.CosineDecay(0.01, decay_steps=6 * 28)  # 28 steps of 50 per epoch
    cosine = [h["learning_rate"] for h in results["cosine"].history]
    assert cosine == pytest.approx([float(keras_rates(e * 28)) for e in range(6)], rel=1e-5)
    assert cosine[0] == 0.01 and cosine == sorted(cosine, reverse=True) and cosine[-1] < 0.001
    assert [h["learning_rate"] for h in results["constant"].history] == [0.01] * 6
    assert results["cosine"].history[0]["loss"] == pytest.approx(results["constant"].history[0]["loss"], rel=0.05)
    assert results["cosine"].history[-1]["loss"] != results["constant"].history[-1]["loss"]
    assert results["cosine"].val_accuracy > 0.75  # it learns the digits (chance: 0.1)


def test_an_unknown_schedule_is_refused() -> None:
    with pytest.raises(ValueError, match=r"train.schedule='linear' must be one of constant, cosine"):
        TrainConfig(schedule="linear")


def test_a_search_trains_on_its_schedule_and_an_older_one_on_a_constant_rate() -> None:
    """``train_config`` reads a search's settings as its fold completes them: an older log's as it ran."""
    from nas.ledger.events import logged_config
    from nas.training.task import train_config

    train = {"epochs": 3, "batch_size": 64, "learning_rate": 0.001, "early_stopping_patience": 2}
    old = logged_config({"train": train})["train"]  # logged before train.schedule and train.min_steps existed
    assert train_config({**old, "schedule": "cosine"}) == TrainConfig(3, 64, 0.001, 2, 0, "cosine")
    assert train_config(old).schedule == "constant" and train_config(old).min_steps == 0
    assert train_config(old, learning_rate=0.01).learning_rate == 0.01  # the rate a proposal chose

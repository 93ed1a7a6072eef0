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

    train = {"epochs": 3, "batch_size": 64, "learning_rate": 0.001, "early_stopping_patience": 2, "lr_decay": 0.5}
    old = logged_config({"train": train})["train"]  # logged before train.schedule, augment and weight_decay existed
    assert train_config({**old, "schedule": "cosine"}, 2) == TrainConfig(3, 64, 0.00025, 2, 0, "cosine")
    assert train_config(old).schedule == "constant" and train_config(old).min_steps == 0
    assert train_config({**old, "augment": "shift"}).augment == "shift"
    assert train_config(old).augment == "none" and train_config(old).weight_decay == 0.0
    assert train_config({**old, "weight_decay": 0.05}).weight_decay == 0.05


def test_augment_mirrors_and_shifts_each_image_from_its_generator_alone() -> None:
    """``flip`` mirrors about half the images, exactly; ``shift`` moves each by at most a tenth of its size (here
    3 pixels of 28), keeping what stays in the frame and zeroing the border; the same generator, the same batch."""
    from nas.training.fit import augment

    x = np.random.default_rng(0).random((64, 28, 28, 1)).astype("f4") + 0.5  # no zeros of its own
    assert augment(x, "none", np.random.default_rng(1)) is x
    flipped = augment(x, "flip", np.random.default_rng(1))
    mirrored = [bool(np.array_equal(f, a[:, ::-1])) for f, a in zip(flipped, x, strict=True)]
    kept = [bool(np.array_equal(f, a)) for f, a in zip(flipped, x, strict=True)]
    assert all(m != k for m, k in zip(mirrored, kept, strict=True)) and 16 < sum(mirrored) < 48
    shifted = augment(x, "shift", np.random.default_rng(1))
    assert shifted.shape == x.shape and shifted.dtype == x.dtype
    for s, a in zip(shifted, x, strict=True):
        rows, cols = np.nonzero(s[..., 0])  # the image's part still in the frame
        top, left = rows.min(), cols.min()
        dy, dx = (top if top else -(28 - rows.max() - 1)), (left if left else -(28 - cols.max() - 1))
        assert abs(dy) <= 3 and abs(dx) <= 3
        inside = (slice(rows.min(), rows.max() + 1), slice(cols.min(), cols.max() + 1))
        assert np.array_equal(np.roll(a, (dy, dx), axis=(0, 1))[inside], s[inside])
    assert np.array_equal(
        augment(x, "flip_shift", np.random.default_rng(2)), augment(x, "flip_shift", np.random.default_rng(2))
    )
    with pytest.raises(ValueError, match=r"train.augment='rotate' must be one of none, flip, shift, flip_shift"):
        TrainConfig(augment="rotate")


def test_an_augmented_training_repeats_exactly_and_differs_from_a_plain_one(small_mlp: Architecture) -> None:
    """Real Keras on scikit-learn's 8x8 digits: with train.augment the same seed gives the same training, bit for
    bit, and not the plain one's; on feature vectors the setting changes nothing."""
    from sklearn.datasets import load_digits

    from nas.architectures.initial import initial_cnn

    digits = load_digits()
    x = (digits.images / 16.0).astype("f4")[..., None]
    y = digits.target.astype("i8")
    arch = initial_cnn((8, 8, 1), 10, filters=4, dense_units=8)
    start = init_weights(arch, np.random.default_rng(1))
    make_deterministic(0)
    runs = {}
    for kind in ("flip_shift", "flip_shift", "none"):
        config = TrainConfig(epochs=2, batch_size=64, early_stopping_patience=0, augment=kind)
        runs.setdefault(kind, []).append(fit(arch, start, x[:1200], y[:1200], x[1200:], y[1200:], config, seed=3))
    assert runs["flip_shift"][0].history == runs["flip_shift"][1].history
    assert runs["flip_shift"][0].history != runs["none"][0].history
    rows = np.random.default_rng(0).normal(size=(200, 20)).astype("f4")
    labels = (rows[:, 0] > 0).astype("i8")
    weights = init_weights(small_mlp, np.random.default_rng(1))
    flat = [
        fit(small_mlp, weights, rows, labels, None, None,
            TrainConfig(epochs=1, early_stopping_patience=0, augment=kind), seed=3).history
        for kind in ("none", "flip_shift")
    ]  # fmt: skip
    assert flat[0] == flat[1]


def test_weight_decay_shrinks_the_weights_repeats_exactly_and_zero_is_plain_adam() -> None:
    """Real Keras on scikit-learn's 8x8 digits, from the same weights and seed: ``weight_decay`` > 0 trains with
    AdamW and ends with smaller weights than plain Adam, the same both times; an explicit 0 is Adam bit for bit;
    a negative value is refused with the setting's name."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = (x / 16).astype("f4")
    arch = initial_mlp((64,), 10, layers=1, units=32)
    start = init_weights(arch, np.random.default_rng(0))
    make_deterministic(0)

    def trained(weight_decay: float | None) -> tuple[float, list[dict[str, float]]]:
        extra = {} if weight_decay is None else {"weight_decay": weight_decay}
        config = TrainConfig(epochs=4, batch_size=50, learning_rate=0.01, early_stopping_patience=0, **extra)
        result = fit(arch, start, x[:1400], y[:1400], x[1400:], y[1400:], config, seed=3)
        norm = sum(float(np.sum(np.square(a))) for arrays in result.weights.values() for a in arrays)
        return norm, result.history

    plain, decayed, again, zero = trained(None), trained(2.0), trained(2.0), trained(0.0)
    assert decayed == again
    assert zero == plain
    assert decayed[0] < 0.8 * plain[0]  # 4 x 28 steps at up to 0.01 x 2.0 shrink each weight by at most 2% a step
    assert decayed[1][-1]["val_accuracy"] > 0.75  # it still learns the digits (chance: 0.1)
    for bad in (-0.1, True):
        with pytest.raises(ValueError, match=r"train.weight_decay=.* must be a non-negative number \(0: none\)"):
            TrainConfig(weight_decay=bad)

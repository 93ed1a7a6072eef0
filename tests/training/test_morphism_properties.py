"""Property tests: random morphism chains keep the function, count parameters right, and train."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nas.architectures.graph import Architecture
from nas.architectures.initial import initial_cnn, initial_mlp
from nas.architectures.morphisms import KINDS, plan_deeper, random_morphism
from nas.training.builder import build_model, predict, preservation_error
from tests.conftest import trained_like_weights

TOLERANCE = 1e-4


def _start(image: bool) -> Architecture:
    return initial_cnn((12, 12, 2), 5, filters=8, dense_units=8) if image else initial_mlp((20,), 4, units=8)


@pytest.mark.slow
@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), length=st.integers(1, 10), image=st.booleans())
def test_exact_morphism_chains_keep_the_function_and_train(seed: int, length: int, image: bool) -> None:
    keras.backend.clear_session()
    rng = np.random.default_rng(seed)
    arch = _start(image)
    weights = trained_like_weights(arch, rng)
    x = rng.normal(size=(32, *arch.input_shape)).astype("f4")
    before = predict(arch, weights, x)
    for _ in range(length):
        found = random_morphism(arch, rng, max_params=100_000, max_layers=80)
        assert found is not None
        m, _ = found
        assert m.exact
        arch, weights = m.apply(arch, weights)
        after = predict(arch, weights, x)
        assert np.max(np.abs(after - before)) <= TOLERANCE, m.describe()
        before = after
    model = build_model(arch, weights)
    assert model.count_params() == arch.param_count
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    y = rng.integers(0, arch.output_shape[0], len(x))
    loss = model.train_on_batch(x, y)
    assert np.isfinite(loss)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("image", [True, False])
def test_each_kind_is_exact_on_trained_like_weights(kind: str, image: bool) -> None:
    rng = np.random.default_rng(11)
    arch = _start(image)
    weights = trained_like_weights(arch, rng)
    found = random_morphism(arch, rng, kinds=[kind])
    assert found is not None
    child, child_weights = found[0].apply(arch, weights)
    x = rng.normal(size=(64, *arch.input_shape)).astype("f4")
    assert preservation_error(arch, weights, child, child_weights, x) <= TOLERANCE


def test_approximate_deeper_is_measured_not_hidden() -> None:
    rng = np.random.default_rng(4)
    arch = _start(image=True)
    weights = trained_like_weights(arch, rng)
    # BatchNorm's output is signed and feeds a conv: a ReLU there changes the function
    m = plan_deeper(arch, rng, after="batchnormalization_2", relu=True)
    assert not m.exact
    child, child_weights = m.apply(arch, weights)
    x = rng.normal(size=(64, *arch.input_shape)).astype("f4")
    assert preservation_error(arch, weights, child, child_weights, x) > TOLERANCE


def test_corrupted_weights_would_be_caught(small_cnn: Architecture) -> None:
    """The tolerance check is sensitive: a morphism whose new weights were not zero is detected."""
    rng = np.random.default_rng(5)
    weights = trained_like_weights(small_cnn, rng)
    found = random_morphism(small_cnn, rng, kinds=["add_skip"])
    assert found is not None
    child, child_weights = found[0].apply(small_cnn, weights)
    new_conv = next(k for k in child_weights if k not in weights)
    kernel, bias = child_weights[new_conv]
    broken = {**child_weights, new_conv: (kernel + 0.5, bias)}
    x = rng.normal(size=(64, *small_cnn.input_shape)).astype("f4")
    assert preservation_error(small_cnn, weights, child, broken, x) > TOLERANCE

"""Architecture -> Keras model -> weights: counts, exact round trip, kernel layout against numpy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from nas.architectures.graph import INPUT, Architecture, Layer
from nas.architectures.initial import initial_mlp
from nas.architectures.morphisms import plan_skip
from nas.architectures.weights import init_weights, standardize
from nas.training.builder import (
    build_ensemble,
    build_model,
    load_ensemble,
    predict,
    predict_ensemble,
    read_weights,
    save_ensemble,
)
from tests.conftest import trained_like_weights


def test_param_count_equals_keras(small_cnn: Architecture, small_mlp: Architecture) -> None:
    rng = np.random.default_rng(0)
    skipped, _ = plan_skip(small_cnn, rng, "concat_skip", src="conv2d_3", dst="conv2d_11").apply(small_cnn)
    for arch in (small_cnn, small_mlp, skipped):
        assert build_model(arch).count_params() == arch.param_count


def test_weight_round_trip_is_exact(small_cnn: Architecture) -> None:
    weights = trained_like_weights(small_cnn, np.random.default_rng(1))
    back = read_weights(build_model(small_cnn, weights), small_cnn)
    assert back.keys() == weights.keys()
    for layer_id, arrays in weights.items():
        for a, b in zip(arrays, back[layer_id], strict=True):
            assert a.dtype == b.dtype and np.array_equal(a, b)


def _numpy_conv_same(x: np.ndarray, kernel: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """Reference 'same' cross-correlation, stride 1, written from the definition."""
    n, h, w, _ = x.shape
    k = kernel.shape[0]
    pad = k // 2
    xp = np.pad(x, ((0, 0), (pad, k - 1 - pad), (pad, k - 1 - pad), (0, 0)))
    out = np.zeros((n, h, w, kernel.shape[3]), np.float64)
    for dy in range(k):
        for dx in range(k):
            out += np.einsum("nhwc,cf->nhwf", xp[:, dy : dy + h, dx : dx + w, :], kernel[dy, dx])
    return out + bias


def test_conv_kernel_layout_matches_reference() -> None:
    arch = Architecture((7, 6, 3), (Layer.make("c", "Conv2D", [INPUT], filters=4, kernel_size=3, strides=1),))
    rng = np.random.default_rng(2)
    kernel = rng.normal(size=(3, 3, 3, 4)).astype("f4")
    bias = rng.normal(size=4).astype("f4")
    x = rng.normal(size=(2, 7, 6, 3)).astype("f4")
    got = predict(arch, {"c": (kernel, bias)}, x)
    np.testing.assert_allclose(got, _numpy_conv_same(x, kernel, bias), atol=1e-5)


def test_dense_and_batchnorm_match_reference() -> None:
    arch = Architecture(
        (5,), (Layer.make("d", "Dense", [INPUT], units=3), Layer.make("bn", "BatchNormalization", ["d"]))
    )
    rng = np.random.default_rng(3)
    kernel, bias = rng.normal(size=(5, 3)).astype("f4"), rng.normal(size=3).astype("f4")
    gamma, beta, mean = (rng.normal(size=3).astype("f4") for _ in range(3))
    var = rng.uniform(0.5, 2, 3).astype("f4")
    x = rng.normal(size=(4, 5)).astype("f4")
    got = predict(arch, {"d": (kernel, bias), "bn": (gamma, beta, mean, var)}, x)
    want = gamma * ((x @ kernel + bias) - mean) / np.sqrt(var + 1e-3) + beta
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_layers_carry_the_architecture_ids(small_mlp: Architecture) -> None:
    model = build_model(small_mlp)
    assert [lay.name for lay in model.layers[1:]] == [lay.id for lay in small_mlp.layers]


def test_wrong_weights_are_refused(small_mlp: Architecture) -> None:
    weights = dict(trained_like_weights(small_mlp, np.random.default_rng(0)))
    kernel, bias = weights["dense_2"]
    with pytest.raises(ValueError, match="'dense_2' have shapes"):
        build_model(small_mlp, {**weights, "dense_2": (kernel[:3], bias)})
    with pytest.raises(ValueError, match="weights for layer 'dense_2' are missing"):
        build_model(small_mlp, {k: v for k, v in weights.items() if k != "dense_2"})
    with pytest.raises(ValueError, match="not weighted layers"):
        build_model(small_mlp, {**weights, "relu_3": (kernel,)})


def test_the_normalization_layer_standardises_raw_features_and_survives_a_keras_file(tmp_path: Path) -> None:
    """The initial MLP's Normalization gets the training split's mean and variance; built, saved as .keras and
    loaded back, the network sees standardised features (a constant feature becomes 0 and stays finite)."""
    rng = np.random.default_rng(0)
    x = np.column_stack([rng.normal(1000, 250, 400), rng.normal(0.01, 0.002, 400), np.full(400, 7.0)]).astype("f4")
    arch = initial_mlp((3,), 2, layers=1, units=4)
    assert arch.layers[0].kind == "Normalization" and arch.layers[0].inputs == (INPUT,)
    weights = standardize(arch, init_weights(arch, rng), x)
    mean, variance, count = weights["normalization_1"]
    np.testing.assert_allclose(mean, x.mean(axis=0), rtol=1e-5)
    assert variance[2] == 1.0 and int(count) == 400
    model = build_model(arch, weights)
    inner = model.get_layer("normalization_1")
    z = np.asarray(inner(x))
    np.testing.assert_allclose(z[:, :2].mean(axis=0), 0, atol=1e-3)
    np.testing.assert_allclose(z[:, :2].std(axis=0), 1, atol=1e-3)
    assert np.all(z[:, 2] == 0) and np.all(np.isfinite(np.asarray(inner(x + 5))))
    save_ensemble([("m1", arch, weights)], tmp_path / "m.keras")  # an ensemble of one: the plain model
    (back,) = load_ensemble(tmp_path / "m.keras", [("m1", arch)])
    for layer_id, arrays in weights.items():
        for a, b in zip(arrays, back[layer_id], strict=True):
            np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(predict(arch, back, x), predict(arch, weights, x), atol=1e-6)


def test_an_ensemble_averages_its_members_and_survives_a_keras_file(small_cnn: Architecture, tmp_path: Path) -> None:
    """Two members of one architecture and a deeper one: the saved ensemble predicts the mean of the members'
    probabilities, gives back each member's exact weights by model id, and an ensemble of one is the model."""
    rng = np.random.default_rng(3)
    deeper, _ = plan_skip(small_cnn, rng, "concat_skip", src="conv2d_3", dst="conv2d_11").apply(small_cnn)
    members = [
        ("m4", small_cnn, trained_like_weights(small_cnn, rng)),
        ("m2", deeper, trained_like_weights(deeper, rng)),
        ("m7", small_cnn, trained_like_weights(small_cnn, rng)),
    ]
    x = rng.normal(size=(20, *small_cnn.input_shape)).astype("float32")
    by_hand = np.mean([predict(arch, w, x) for _, arch, w in members], axis=0)
    save_ensemble(members, tmp_path / "e.keras")
    import keras

    loaded = keras.saving.load_model(tmp_path / "e.keras", compile=False)
    np.testing.assert_allclose(np.asarray(loaded.predict(x, verbose=0)), by_hand, atol=1e-6)
    np.testing.assert_allclose(predict_ensemble(members, x), by_hand, atol=1e-7)
    back = load_ensemble(tmp_path / "e.keras", [(i, arch) for i, arch, _ in members])
    for (_, _, weights), read in zip(members, back, strict=True):
        assert read.keys() == weights.keys()
        assert all(np.array_equal(a, b) for k in weights for a, b in zip(weights[k], read[k], strict=True))
    one = build_ensemble(members[:1])
    assert one.name == build_model(small_cnn).name and len(one.layers) == len(build_model(small_cnn).layers)
    with pytest.raises(ValueError, match="does not hold the ensemble"):
        load_ensemble(tmp_path / "e.keras", [("m4", small_cnn), ("m9", small_cnn)])
    with pytest.raises(ValueError, match="at least one member"):
        build_ensemble([])

"""Architecture + weights -> keras.Model, and back."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from nas.architectures.graph import BN_EPSILON, BN_MOMENTUM, INPUT, Architecture, Layer
from nas.architectures.weights import Weights, check_weights, weight_shapes
from nas.training.backend import keras


def _keras_layer(layer: Layer, seed: int | None) -> keras.layers.Layer:
    cfg = dict(layer.config)
    name = layer.id
    match layer.kind:
        case "Conv2D":
            return keras.layers.Conv2D(
                cfg["filters"], cfg["kernel_size"], strides=cfg["strides"], padding="same", name=name
            )
        case "Dense":
            return keras.layers.Dense(cfg["units"], name=name)
        case "BatchNormalization":
            return keras.layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=name)
        case "Normalization":
            return keras.layers.Normalization(axis=-1, name=name)
        case "ReLU":
            return keras.layers.ReLU(name=name)
        case "MaxPooling2D":
            p = cfg["pool_size"]
            return keras.layers.MaxPooling2D(p, strides=p, padding="same", name=name)
        case "GlobalAveragePooling2D":
            return keras.layers.GlobalAveragePooling2D(name=name)
        case "Flatten":
            return keras.layers.Flatten(name=name)
        case "Dropout":
            return keras.layers.Dropout(cfg["rate"], seed=seed, name=name)
        case "Add":
            return keras.layers.Add(name=name)
        case "Concatenate":
            return keras.layers.Concatenate(axis=-1, name=name)
        case "Softmax":
            return keras.layers.Softmax(name=name)
    raise ValueError(f"layer {layer.id!r} has kind {layer.kind!r}, which the Keras builder cannot build")


def build_model(
    arch: Architecture, weights: Weights | None = None, *, seed: int | None = None, name: str | None = None
) -> keras.Model:
    """A functional Keras model of ``arch`` whose layers are named by layer id.

    With ``weights`` the model carries them exactly (ValueError if any shape disagrees); without,
    Keras initialises it (seed it with ``keras.utils.set_random_seed`` for repeatable runs).
    ``seed`` gives every Dropout layer its own seed, so its masks do not depend on global random
    state (which concurrent trainings in one process would share).
    """
    if weights is not None:
        check_weights(arch, weights)
    tensors = {INPUT: keras.Input(shape=arch.input_shape, name=INPUT)}
    for lay in arch.layers:
        inputs = [tensors[i] for i in lay.inputs]
        layer_seed = None if seed is None else seed + len(tensors)
        tensors[lay.id] = _keras_layer(lay, layer_seed)(inputs if len(inputs) > 1 else inputs[0])
    model = keras.Model(tensors[INPUT], tensors[arch.output], name=name or f"arch_{arch.id[:12]}")
    if weights is not None:
        for layer_id, arrays in weights.items():
            layer = model.get_layer(layer_id)
            layer.set_weights([np.asarray(a) for a in arrays])
            if isinstance(layer, keras.layers.Normalization):
                layer.finalize_state()  # Keras reads mean and variance into the tensors it normalises with
    return model


def read_weights(model: keras.Model, arch: Architecture) -> dict[str, tuple[np.ndarray, ...]]:
    """The weights of ``model`` as numpy arrays keyed by the layer ids of ``arch``."""
    out = {}
    for layer_id in weight_shapes(arch):
        try:
            layer = model.get_layer(layer_id)
        except ValueError:
            raise ValueError(
                f"model {model.name!r} has no layer {layer_id!r}; was it built from this architecture?"
            ) from None
        out[layer_id] = tuple(np.array(a) for a in layer.get_weights())
    check_weights(arch, out)
    return out


# An ensemble's members: (model id, architecture, weights), best first.
Member = tuple[str, Architecture, Weights]


def member_name(model_id: str) -> str:
    """The name of model ``model_id``'s sub-model inside an ensemble."""
    return f"member_{model_id}"


def build_ensemble(members: Sequence[Member]) -> keras.Model:
    """One Keras model whose output is the mean of the members' class probabilities (each member a sub-model
    named ``member_<model id>``, with its weights). A single member is built as ``build_model`` builds it, so
    an ensemble of one is the plain model. ValueError if there is no member or the inputs differ."""
    if not members:
        raise ValueError("an ensemble needs at least one member")
    shapes = {arch.input_shape for _, arch, _ in members}
    if len(shapes) > 1:
        raise ValueError(f"the members of an ensemble must take the same input; they take {sorted(shapes)}")
    if len(members) == 1:
        return build_model(members[0][1], members[0][2])
    x = keras.Input(shape=members[0][1].input_shape, name=INPUT)
    outputs = [build_model(arch, weights, name=member_name(model_id))(x) for model_id, arch, weights in members]
    return keras.Model(x, keras.layers.Average(name="mean_probabilities")(outputs), name="ensemble")


def save_ensemble(members: Sequence[Member], path: str | Path) -> keras.Model:
    """Write ``build_ensemble(members)`` as a Keras ``.keras`` file (loadable with ``keras.saving.load_model``)."""
    model = build_ensemble(members)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    model.save(path)
    return model


def load_ensemble(path: str | Path, members: Sequence[tuple[str, Architecture]]) -> list[Weights]:
    """The weights of each of ``members`` (model id, architecture) in the ``.keras`` file at ``path``, which
    must hold ``build_ensemble`` of them (a plain model for one member)."""
    try:
        model = keras.saving.load_model(path, compile=False)
    except (OSError, ValueError) as e:
        raise ValueError(f"{path} is not a readable Keras model ({e}); run the stage that writes it again") from e
    if len(members) == 1:
        return [read_weights(model, members[0][1])]
    try:
        return [read_weights(model.get_layer(member_name(model_id)), arch) for model_id, arch in members]
    except ValueError as e:
        raise ValueError(f"{path} does not hold the ensemble its models file names ({e})") from e


def predict_ensemble(members: Sequence[Member], x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Inference-mode class probabilities of the ensemble of ``members``: the mean of theirs."""
    return np.mean([predict(arch, weights, x, batch_size) for _, arch, weights in members], axis=0)


def predict(arch: Architecture, weights: Weights, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Inference-mode outputs of ``arch`` with ``weights`` on ``x``."""
    model = build_model(arch, weights)
    # Calling the model (not model.predict) avoids tracing a tf.function for every new architecture.
    parts = [np.asarray(model(x[i : i + batch_size], training=False)) for i in range(0, len(x), batch_size)]
    return np.concatenate(parts) if parts else np.empty((0, *arch.output_shape), "f4")


def preservation_error(
    parent: Architecture, parent_weights: Weights, child: Architecture, child_weights: Weights, x: np.ndarray
) -> float:
    """``max |child(x) - parent(x)|`` in inference mode: how far a morphism changed the function."""
    return float(np.max(np.abs(predict(child, child_weights, x) - predict(parent, parent_weights, x))))

"""Initial architectures: where every search starts."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nas.architectures.graph import INPUT, Architecture, Layer, Shape

CONV_DROPOUT_RATE = 0.25  # Auto-Keras' Constant.CONV_DROPOUT_RATE
MLP_DROPOUT_RATE = 0.25


class _Chain:
    """Appends layers one after another, naming them ``<kind>_<n>``."""

    def __init__(self) -> None:
        self.layers: list[Layer] = []
        self.last = INPUT

    def add(self, kind: str, **config: int | float) -> None:
        layer_id = f"{kind.lower()}_{len(self.layers) + 1}"
        self.layers.append(Layer.make(layer_id, kind, [self.last], **config))
        self.last = layer_id


def initial_cnn(
    input_shape: Shape, num_classes: int, *, blocks: int = 3, filters: int = 64, dense_units: int = 64
) -> Architecture:
    """The Auto-Keras default CNN for images of ``input_shape`` (H, W, C).

    ``blocks`` times ReLU -> BatchNorm -> Conv 3x3 -> MaxPool 2, then global average pooling,
    dropout, Dense ``dense_units``, ReLU and a Dense softmax classifier.
    """
    if len(input_shape) != 3:
        raise ValueError(f"initial_cnn needs an image input shape (H, W, C), got {input_shape}; use initial_mlp")
    _check_positive(num_classes=num_classes, blocks=blocks, filters=filters, dense_units=dense_units)
    chain = _Chain()
    for _ in range(blocks):
        chain.add("ReLU")
        chain.add("BatchNormalization")
        chain.add("Conv2D", filters=filters, kernel_size=3, strides=1)
        chain.add("MaxPooling2D", pool_size=2)
    chain.add("GlobalAveragePooling2D")
    chain.add("Dropout", rate=CONV_DROPOUT_RATE)
    chain.add("Dense", units=dense_units)
    chain.add("ReLU")
    chain.add("Dense", units=num_classes)
    chain.add("Softmax")
    return Architecture(tuple(input_shape), tuple(chain.layers))


def initial_mlp(input_shape: Shape, num_classes: int, *, layers: int = 2, units: int = 64) -> Architecture:
    """An MLP for flat feature vectors: a Normalization (set to the training split's statistics before the first
    training, so the model takes raw features), ``layers`` times Dense -> ReLU -> Dropout, then softmax."""
    if len(input_shape) != 1:
        raise ValueError(f"initial_mlp needs a flat input shape (D,), got {input_shape}; use initial_cnn")
    _check_positive(num_classes=num_classes, layers=layers, units=units)
    chain = _Chain()
    chain.add("Normalization")
    for _ in range(layers):
        chain.add("Dense", units=units)
        chain.add("ReLU")
        chain.add("Dropout", rate=MLP_DROPOUT_RATE)
    chain.add("Dense", units=num_classes)
    chain.add("Softmax")
    return Architecture(tuple(input_shape), tuple(chain.layers))


def initial_architecture(
    input_shape: Shape, num_classes: int, *, depth: int = 3, width: int = 64, dense_layers: int = 2, units: int = 256
) -> Architecture:
    """The default start for data of ``input_shape``: a CNN of ``depth`` blocks of ``width`` filters for images,
    an MLP of ``dense_layers`` layers of ``units`` for vectors."""
    if len(input_shape) == 3:
        return initial_cnn(input_shape, num_classes, blocks=depth, filters=width)
    return initial_mlp(input_shape, num_classes, layers=dense_layers, units=units)


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}={value!r} must be a positive integer")


def initial_for(config: Mapping[str, Any], input_shape: tuple[int, ...], num_classes: int) -> Architecture:
    """The initial network of a search with ``config`` on data of this shape; ValueError, naming the fix,
    when it does not fit the size cap. Called before anything is written, so bad settings log nothing."""
    s = config["search"]
    arch = initial_architecture(
        input_shape,
        num_classes,
        depth=s["initial_depth"],
        width=s["initial_width"],
        dense_layers=s["initial_dense_layers"],
        units=s["initial_units"],
    )
    knob = "search.initial_width" if len(input_shape) == 3 else "search.initial_units"
    if arch.param_count > s["max_params"]:
        raise ValueError(
            f"the initial network has {arch.param_count:,} parameters, above search.max_params={s['max_params']:,}; "
            f"raise search.max_params or lower {knob}"
        )
    return arch

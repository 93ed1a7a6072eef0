"""Weights beside the graph: numpy arrays keyed by layer id, in Keras' own order and layout.

Conv2D: (kernel[kh, kw, c_in, c_out], bias[c_out]); Dense: (kernel[d_in, d_out], bias[d_out]);
BatchNormalization: (gamma, beta, moving_mean, moving_variance); Normalization: (mean[c], variance[c],
count[]), the statistics of the training split (``standardize``). Other layers have none.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from nas.architectures.graph import INPUT, Architecture, Shape

Weights = Mapping[str, tuple[np.ndarray, ...]]


def weight_shapes(arch: Architecture) -> dict[str, tuple[Shape, ...]]:
    """The array shapes every weighted layer of ``arch`` must have."""
    out: dict[str, tuple[Shape, ...]] = {}
    for lay in arch.layers:
        c_in = arch.shapes[lay.inputs[0]][-1]
        if lay.kind == "Conv2D":
            k, f = lay.get("kernel_size"), lay.get("filters")
            out[lay.id] = ((k, k, c_in, f), (f,))
        elif lay.kind == "Dense":
            out[lay.id] = ((c_in, lay.get("units")), (lay.get("units"),))
        elif lay.kind == "BatchNormalization":
            out[lay.id] = ((c_in,),) * 4
        elif lay.kind == "Normalization":
            out[lay.id] = ((c_in,), (c_in,), ())
    return out


def init_weights(arch: Architecture, rng: np.random.Generator) -> dict[str, tuple[np.ndarray, ...]]:
    """Fresh weights as Keras initialises them: Glorot-uniform kernels, zero biases, identity BN and
    Normalization (``standardize`` gives a Normalization the statistics of the data)."""
    out: dict[str, tuple[np.ndarray, ...]] = {}
    for layer_id, shapes in weight_shapes(arch).items():
        kind = arch.by_id[layer_id].kind
        if kind == "BatchNormalization":
            (c,) = shapes[0]
            out[layer_id] = (np.ones(c, "f4"), np.zeros(c, "f4"), np.zeros(c, "f4"), np.ones(c, "f4"))
            continue
        if kind == "Normalization":
            (c,) = shapes[0]
            out[layer_id] = (np.zeros(c, "f4"), np.ones(c, "f4"), np.array(0, dtype=np.int64))
            continue
        kernel_shape, bias_shape = shapes
        receptive = int(np.prod(kernel_shape[:-2])) if len(kernel_shape) > 2 else 1
        fan_in, fan_out = kernel_shape[-2] * receptive, kernel_shape[-1] * receptive
        limit = np.sqrt(6.0 / (fan_in + fan_out))
        kernel = rng.uniform(-limit, limit, kernel_shape).astype("f4")
        out[layer_id] = (kernel, np.zeros(bias_shape, "f4"))
    return out


def standardize(arch: Architecture, weights: Weights, x: np.ndarray) -> dict[str, tuple[np.ndarray, ...]]:
    """``weights`` with every Normalization layer that reads the network input set to the per-feature mean and
    variance of ``x`` (the training split; per channel for images), so the network standardises raw inputs
    itself. A constant feature gets variance 1: it becomes 0 and stays finite on data where it varies."""
    out = dict(weights)
    layers = [lay.id for lay in arch.layers if lay.kind == "Normalization" and lay.inputs == (INPUT,)]
    if not layers:  # an image network: nothing to compute over the whole training split
        return out
    flat = np.asarray(x).reshape(-1, arch.input_shape[-1])
    if not len(flat):
        raise ValueError("standardize needs at least one training example")
    mean, var = flat.mean(axis=0, dtype="f8"), flat.var(axis=0, dtype="f8")
    stats = (mean.astype("f4"), np.where(var > 1e-12, var, 1.0).astype("f4"), np.array(len(flat), dtype=np.int64))
    return {**out, **dict.fromkeys(layers, stats)}


def check_weights(arch: Architecture, weights: Weights) -> None:
    """ValueError naming the first layer whose arrays are missing, extra or of the wrong shape."""
    expected = weight_shapes(arch)
    extra = sorted(set(weights) - set(expected))
    if extra:
        raise ValueError(f"weights given for {extra}, which are not weighted layers of the architecture")
    for layer_id, shapes in expected.items():
        if layer_id not in weights:
            raise ValueError(f"weights for layer {layer_id!r} are missing")
        got = tuple(tuple(a.shape) for a in weights[layer_id])
        if got != shapes:
            raise ValueError(f"weights for layer {layer_id!r} have shapes {got}, expected {shapes}")


def save_weights(path: str | Path, weights: Weights) -> None:
    """Write weights to an ``.npz`` (keys ``<layer id>/<index>``): exact, backend-free."""
    arrays = {f"{layer_id}/{i}": a for layer_id, group in weights.items() for i, a in enumerate(group)}
    with open(path, "wb") as f:
        np.savez(f, **arrays)  # type: ignore[arg-type]


def load_weights(path: str | Path) -> dict[str, tuple[np.ndarray, ...]]:
    """Weights written by ``save_weights``."""
    grouped: dict[str, dict[int, np.ndarray]] = {}
    with np.load(path) as data:
        for key in data.files:
            layer_id, _, index = key.rpartition("/")
            grouped.setdefault(layer_id, {})[int(index)] = data[key]
    return {k: tuple(v[i] for i in sorted(v)) for k, v in grouped.items()}


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes (a weights file's identity in its TrainingCompleted event)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()

"""Architecture graphs: an immutable DAG of layers in the Auto-Keras style.

Nodes are tensors and edges are layers: every layer produces exactly one tensor, named by
the layer's id, and the network input is the node ``"input"``. Add and Concatenate are a
single layer with several inputs. Shapes exclude the batch axis.

Two identities matter:

- ``Architecture.to_json()`` is the exact, canonical serialisation (names included): the same
  graph always gives the same string, whatever order its layers were listed in.
- ``Architecture.id`` is the sha256 of the canonical JSON of the *structure*: layer names are
  replaced by their position in the canonical order, so two graphs that compute the same
  layers in the same arrangement share an id however their layers are named. The search
  skips duplicates by this id.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

INPUT = "input"
BN_EPSILON = 1e-3  # Keras' default; the builder passes it explicitly so morphisms can rely on it.
# PyTorch's BatchNorm momentum, as in Auto-Keras: Keras' 0.99 leaves the moving statistics far from the
# batch statistics after the few epochs a search trains for, and inference-mode accuracy collapses.
BN_MOMENTUM = 0.9
JSON_FORMAT = 1

Shape = tuple[int, ...]

# kind -> {config key: type}; every key is required.
LAYER_KINDS: dict[str, dict[str, type]] = {
    "Conv2D": {"filters": int, "kernel_size": int, "strides": int},
    "Dense": {"units": int},
    "BatchNormalization": {},
    "Normalization": {},  # standardises each feature with the training split's mean and variance (its weights)
    "ReLU": {},
    "MaxPooling2D": {"pool_size": int},
    "GlobalAveragePooling2D": {},
    "Flatten": {},
    "Dropout": {"rate": float},
    "Add": {},
    "Concatenate": {},
    "Softmax": {},
}
MERGE_KINDS = frozenset({"Add", "Concatenate"})
MIXING_KINDS = frozenset({"Conv2D", "Dense"})  # layers whose weights mix input channels


@dataclass(frozen=True)
class Layer:
    """One layer: its id (also the id of the tensor it produces), kind, inputs and config."""

    id: str
    kind: str
    inputs: tuple[str, ...]
    config: tuple[tuple[str, int | float], ...] = ()

    @staticmethod
    def make(id: str, kind: str, inputs: Iterable[str], **config: int | float) -> Layer:
        """Build a layer with its config given as keywords (stored sorted, so order is free)."""
        return Layer(id, kind, tuple(inputs), tuple(sorted(config.items())))

    def get(self, key: str) -> Any:
        """The config value ``key``; KeyError if the kind has no such key."""
        for k, v in self.config:
            if k == key:
                return v
        raise KeyError(f"layer {self.id!r} ({self.kind}) has no config key {key!r}")

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "inputs": list(self.inputs), "config": dict(self.config)}

    def __hash__(self) -> int:  # computed once: graphs are hashed whole, often (caches keyed by architecture)
        return self._hash

    @cached_property
    def _hash(self) -> int:
        return hash((self.id, self.kind, self.inputs, self.config))

    @cached_property
    def _structure_prefix(self) -> str:
        """This layer's entry in the JSON behind ``Architecture.id``, up to its input positions."""
        return json.dumps([self.kind, dict(self.config)], sort_keys=True, separators=(",", ":"))[:-1] + ",["

    @cached_property
    def _signature_prefix(self) -> str:
        """The start of this layer's signature in ``Architecture._canonical_order``: the part that does not depend
        on where its inputs are."""
        return f"({self.kind!r}, {self.config!r}, "

    @staticmethod
    def from_dict(d: Mapping[str, Any]) -> Layer:
        try:
            return Layer.make(d["id"], d["kind"], d["inputs"], **d.get("config", {}))
        except (KeyError, TypeError) as e:
            raise ValueError(f"layer entry {dict(d)!r} is malformed ({e}); it needs id, kind, inputs, config") from e


_VALID_CONFIGS: set[tuple[str, tuple[tuple[str, int | float], ...]]] = set()  # (kind, config) pairs checked


def _check_config(layer: Layer) -> None:
    if (layer.kind, layer.config) in _VALID_CONFIGS:
        return
    spec = LAYER_KINDS.get(layer.kind)
    if spec is None:
        raise ValueError(f"layer {layer.id!r} has unknown kind {layer.kind!r}; known kinds: {', '.join(LAYER_KINDS)}")
    given = dict(layer.config)
    if set(given) != set(spec):
        raise ValueError(
            f"layer {layer.id!r} ({layer.kind}) has config keys {sorted(given)}, expected exactly {sorted(spec)}"
        )
    for key, typ in spec.items():
        value = given[key]
        if typ is int and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"layer {layer.id!r}: {key}={value!r} must be a positive integer")
        if typ is float and (isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1):
            raise ValueError(f"layer {layer.id!r}: {key}={value!r} must be a number in [0, 1)")
    _VALID_CONFIGS.add((layer.kind, layer.config))


def _out_shape(layer: Layer, shapes: list[Shape]) -> Shape:
    """The output shape of ``layer`` given its input shapes; ValueError naming the layer on a mismatch."""
    kind = layer.kind

    def need_rank(rank: int) -> Shape:
        (shape,) = shapes
        if len(shape) != rank:
            what = "an image tensor (H, W, C)" if rank == 3 else "a flat vector"
            raise ValueError(f"layer {layer.id!r} ({kind}) needs {what} but gets shape {shape}")
        return shape

    if kind in MERGE_KINDS:
        if len(shapes) < 2:
            raise ValueError(f"layer {layer.id!r} ({kind}) needs at least 2 inputs, got {len(shapes)}")
    elif len(shapes) != 1:
        raise ValueError(f"layer {layer.id!r} ({kind}) takes exactly 1 input, got {len(shapes)}")

    if kind == "Conv2D":
        h, w, _ = need_rank(3)
        s = layer.get("strides")
        return (math.ceil(h / s), math.ceil(w / s), layer.get("filters"))
    if kind == "Dense":
        need_rank(1)
        return (layer.get("units"),)
    if kind == "MaxPooling2D":
        h, w, c = need_rank(3)
        p = layer.get("pool_size")
        return (math.ceil(h / p), math.ceil(w / p), c)
    if kind == "GlobalAveragePooling2D":
        return (need_rank(3)[2],)
    if kind == "Flatten":
        return (math.prod(need_rank(3)),)
    if kind == "Add":
        if any(s != shapes[0] for s in shapes):
            raise ValueError(f"layer {layer.id!r} (Add) needs inputs of one shape, got {shapes} from {layer.inputs}")
        return shapes[0]
    if kind == "Concatenate":
        if any(len(s) != len(shapes[0]) or s[:-1] != shapes[0][:-1] for s in shapes):
            raise ValueError(
                f"layer {layer.id!r} (Concatenate) needs inputs equal but for the last axis, "
                f"got {shapes} from {layer.inputs}"
            )
        return (*shapes[0][:-1], sum(s[-1] for s in shapes))
    return shapes[0]  # BatchNormalization, Normalization, ReLU, Dropout, Softmax keep the shape


def _params(layer: Layer, in_shape: Shape) -> int:
    """Parameters of ``layer`` reading a tensor of ``in_shape``, as Keras counts them (BatchNorm's moving
    statistics included)."""
    in_dim = in_shape[-1]
    if layer.kind == "Conv2D":
        k = layer.get("kernel_size")
        return k * k * in_dim * layer.get("filters") + layer.get("filters")
    if layer.kind == "Dense":
        return in_dim * layer.get("units") + layer.get("units")
    if layer.kind == "BatchNormalization":
        return 4 * in_dim
    if layer.kind == "Normalization":
        return 2 * in_dim + 1  # mean, variance and Keras' sample count
    return 0


# Output shape and parameters by (layer, input shapes), a cache only: morphisms rebuild graphs that share
# most of their layers.
_SHAPES: dict[tuple[Layer, tuple[Shape, ...]], tuple[Shape, int]] = {}
_SHAPES_MAX = 1 << 16


@dataclass(frozen=True)
class Architecture:
    """An immutable, validated network graph.

    Constructing one checks everything a builder relies on (known kinds, valid configs,
    existing inputs, no cycle, consistent shapes, a single output) and stores the layers in
    canonical topological order. A bad graph raises ``ValueError`` naming the problem.
    """

    input_shape: Shape
    layers: tuple[Layer, ...]
    shapes: Mapping[str, Shape] = field(init=False, repr=False, compare=False)
    _param_count: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        shape = tuple(self.input_shape)
        if len(shape) not in (1, 3) or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in shape):
            raise ValueError(f"input_shape {self.input_shape!r} must be (H, W, C) or (D,) with positive integers")
        object.__setattr__(self, "input_shape", shape)
        by_id: dict[str, Layer] = {}
        for layer in self.layers:
            if not isinstance(layer.id, str) or not layer.id or layer.id == INPUT:
                raise ValueError(f"layer id {layer.id!r} is not allowed: use a non-empty name other than {INPUT!r}")
            if layer.id in by_id:
                raise ValueError(f"layer id {layer.id!r} is used twice; layer ids must be unique")
            _check_config(layer)
            by_id[layer.id] = layer
        for layer in self.layers:
            for src in layer.inputs:
                if src != INPUT and src not in by_id:
                    raise ValueError(f"layer {layer.id!r} reads {src!r}, which is neither a layer nor {INPUT!r}")
        ordered, shapes, params = self._canonical_order(by_id)
        read = {src for lay in ordered for src in lay.inputs}
        sinks = [lay.id for lay in ordered if lay.id not in read]
        if len(sinks) != 1:
            raise ValueError(f"the graph must have exactly one output layer, found {sinks or 'none'}")
        object.__setattr__(self, "layers", tuple(ordered))
        object.__setattr__(self, "shapes", shapes)
        object.__setattr__(self, "_param_count", params)

    def _canonical_order(self, by_id: Mapping[str, Layer]) -> tuple[list[Layer], dict[str, Shape], int]:
        """Kahn's algorithm; among ready layers the smallest structural signature goes first.

        A layer's signature is the repr of ``(kind, config, input positions)``, its inputs given by their place
        in the canonical order rather than by name (repr keeps the ordering total across int and float configs);
        it is fixed once all its inputs are placed, so ready layers wait in a heap. The id breaks exact ties.
        Returns the layers in that order, every node's shape and the parameter count.
        """
        rank = {INPUT: -1}
        shapes: dict[str, Shape] = {INPUT: self.input_shape}
        waiting: dict[str, int] = {}
        readers: dict[str, list[Layer]] = {}
        for lay in by_id.values():
            sources = lay.inputs if len(lay.inputs) == 1 else set(lay.inputs)
            waiting[lay.id] = len(sources)
            for src in sources:
                readers.setdefault(src, []).append(lay)
        ready: list[tuple[str, str, Layer]] = []  # (signature, id, layer): ids are unique, layers never compared
        push, pop = heapq.heappush, heapq.heappop
        ordered: list[Layer] = []
        params = 0
        placed = INPUT
        while True:
            for lay in readers.get(placed, ()):  # release the readers of the node just placed
                left = waiting[lay.id] - 1
                waiting[lay.id] = left
                if not left:
                    inputs = lay.inputs
                    if len(inputs) == 1:
                        positions = f"({rank[inputs[0]]},)"
                    else:
                        positions = "(" + ", ".join([str(rank[i]) for i in inputs]) + ")"
                    push(ready, (lay._signature_prefix + positions + ")", lay.id, lay))
            if not ready:
                break
            nxt = pop(ready)[2]
            key = (nxt, tuple([shapes[i] for i in nxt.inputs]))
            known = _SHAPES.get(key)
            if known is None:
                known = (_out_shape(nxt, list(key[1])), _params(nxt, key[1][0]))
                if len(_SHAPES) >= _SHAPES_MAX:
                    _SHAPES.clear()
                _SHAPES[key] = known
            shapes[nxt.id] = known[0]
            params += known[1]
            rank[nxt.id] = len(ordered)
            ordered.append(nxt)
            placed = nxt.id
        if len(ordered) < len(by_id):
            raise ValueError(f"the graph has a cycle through layers {sorted(set(by_id) - set(rank))}")
        return ordered, shapes, params

    def __hash__(self) -> int:  # computed once: architectures key the morphisms' caches
        return self._hash

    @cached_property
    def _hash(self) -> int:
        return hash((self.input_shape, self.layers))

    # --- look-up -----------------------------------------------------------------------

    @cached_property
    def by_id(self) -> Mapping[str, Layer]:
        return {lay.id: lay for lay in self.layers}

    def layer(self, layer_id: str) -> Layer:
        """The layer named ``layer_id``; ValueError naming the id when there is none."""
        try:
            return self.by_id[layer_id]
        except KeyError:
            raise ValueError(f"no layer {layer_id!r} in architecture {self.id[:12]}") from None

    @cached_property
    def consumers(self) -> Mapping[str, tuple[str, ...]]:
        """Node id -> ids of the layers that read it, in canonical order."""
        out: dict[str, list[str]] = {INPUT: [], **{lay.id: [] for lay in self.layers}}
        for lay in self.layers:
            for src in lay.inputs:
                out[src].append(lay.id)
        return {k: tuple(v) for k, v in out.items()}

    @property
    def output(self) -> str:
        return self.layers[-1].id

    @property
    def output_shape(self) -> Shape:
        return self.shapes[self.output]

    @cached_property
    def main_chain(self) -> tuple[str, ...]:
        """Node ids from the input to the output following each layer's first input.

        Morphisms always put the original path first in a merge, so this is the network's
        trunk; skip branches hang off it.
        """
        chain = [self.output]
        while chain[-1] != INPUT:
            chain.append(self.by_id[chain[-1]].inputs[0])
        return tuple(reversed(chain))

    @cached_property
    def head(self) -> frozenset[str]:
        """The classifier head: the last mixing layer of the main chain and everything after it.

        Morphisms leave the head alone so the number and meaning of the outputs never change.
        """
        chain = self.main_chain
        last = max((i for i, n in enumerate(chain) if n != INPUT and self.by_id[n].kind in MIXING_KINDS), default=0)
        return frozenset(n for n in chain[last:] if n != INPUT)

    # --- size ----------------------------------------------------------------------------

    def layer_params(self, layer_id: str) -> int:
        """Parameters of one layer as Keras counts them (BatchNorm's moving statistics included)."""
        lay = self.by_id[layer_id]
        return _params(lay, self.shapes[lay.inputs[0]])

    @property
    def param_count(self) -> int:
        """Total parameters, equal to ``keras.Model.count_params()`` of the built model."""
        return self._param_count

    @cached_property
    def work(self) -> int:
        """What a forward pass of one example costs, a proxy of training seconds: the multiply-adds of Conv2D
        and Dense layers, plus one operation per input element of every other layer (normalisation,
        activation, pooling, merging)."""
        total = 0
        for lay in self.layers:
            inputs = [self.shapes[i] for i in lay.inputs]
            if lay.kind == "Conv2D":
                total += math.prod(self.shapes[lay.id]) * lay.get("kernel_size") ** 2 * inputs[0][-1]
            elif lay.kind == "Dense":
                total += lay.get("units") * inputs[0][-1]
            else:
                total += sum(math.prod(shape) for shape in inputs)
        return total

    @property
    def n_layers(self) -> int:
        return len(self.layers)

    # --- identity and serialisation ----------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": JSON_FORMAT,
            "input_shape": list(self.input_shape),
            "layers": [lay.to_dict() for lay in self.layers],
        }

    def to_json(self) -> str:
        """Canonical JSON: sorted keys, no spaces, layers in canonical order; exact round trip."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @staticmethod
    def from_dict(d: Mapping[str, Any]) -> Architecture:
        if d.get("format") != JSON_FORMAT:
            raise ValueError(f"architecture format {d.get('format')!r} is not supported; expected {JSON_FORMAT}")
        if not isinstance(d.get("layers"), list) or "input_shape" not in d:
            raise ValueError("architecture JSON needs 'input_shape' and a list of 'layers'")
        return Architecture(tuple(d["input_shape"]), tuple(Layer.from_dict(x) for x in d["layers"]))

    @staticmethod
    def from_json(text: str) -> Architecture:
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"architecture JSON does not parse: {e}") from e
        if not isinstance(d, dict):
            raise ValueError("architecture JSON must be an object")
        return Architecture.from_dict(d)

    @cached_property
    def id(self) -> str:
        """sha256 of the canonical JSON of the structure (names replaced by canonical positions): the string
        ``json.dumps({"format", "input_shape", "layers": [[kind, config, input positions], ...]}, sort_keys=True,
        separators=(",", ":"))``, put together from each layer's cached piece."""
        rank = {INPUT: -1, **{lay.id: i for i, lay in enumerate(self.layers)}}
        entries = ",".join(
            lay._structure_prefix + ",".join([str(rank[i]) for i in lay.inputs]) + "]]" for lay in self.layers
        )
        shape = json.dumps(list(self.input_shape), separators=(",", ":"))
        canonical = f'{{"format":{JSON_FORMAT},"input_shape":{shape},"layers":[{entries}]}}'
        return hashlib.sha256(canonical.encode()).hexdigest()

    def fresh_ids(self, *kinds: str) -> list[str]:
        """New layer ids ``<kind>_<n>``, numbered on from the largest numeric suffix in use."""
        suffixes = [int(s) for lay in self.layers if (s := lay.id.rpartition("_")[2]).isdigit()]
        start = max(suffixes, default=0) + 1
        return [f"{kind.lower()}_{start + i}" for i, kind in enumerate(kinds)]

    def replace(self, layers: Iterable[Layer]) -> Architecture:
        """A new architecture with the same input and the given layers (validated anew)."""
        return Architecture(self.input_shape, tuple(layers))

"""Function-preserving network morphisms: (architecture, weights, rng) -> (architecture, weights).

Four kinds, as in Auto-Keras:

- ``deeper``: insert an identity Conv2D (or Dense) after a layer of the main chain, optionally
  followed by an identity BatchNorm and a ReLU. The ReLU keeps the function only where its
  input is never negative; a deeper morphism that adds one elsewhere is declared approximate.
  Planned at random, it always adds the ReLU, after a layer whose output is never negative
  where the network has one.
- ``wider``: give a Conv2D or Dense more units by duplicating existing ones; every layer that
  mixes those channels gets zero weights for the new inputs. BatchNorm, pooling, Flatten and
  Concatenate pass the new channels on; an Add widens the producers of its other inputs with
  the same duplicated units so shapes agree.
- ``add_skip`` / ``concat_skip``: connect the output of main-chain layer ``src`` to that of a
  later one, ``dst``, through copies of the max-pooling in between and a 1x1 convolution (a
  Dense for flat tensors) whose new weights are zero.

Every morphism is planned first (``plan_*``: all random choices are drawn then and written into
a ``Morphism``), then applied. A ``Morphism`` is JSON-able and applying it uses no randomness,
so a logged chain replays exactly. ``weights=None`` applies the change to the graph alone,
which is what a proposer needs. "Exact" means exact in inference mode (BatchNorm uses its
moving statistics), up to float32 rounding.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, overload

import numpy as np

from nas.architectures.anatomy import check_body, deeper_targets, nonnegative, rewire, skip_pairs, wider_targets
from nas.architectures.graph import BN_EPSILON, INPUT, MIXING_KINDS, Architecture, Layer
from nas.architectures.weights import Weights

KINDS = ("deeper", "wider", "add_skip", "concat_skip")
DEEPER_KERNEL_SIZES = (1, 3, 5)
# Layers that pass each channel through on its own, so a widened channel stays one channel.
_CHANNELWISE = frozenset({"BatchNormalization", "ReLU", "Dropout", "MaxPooling2D", "GlobalAveragePooling2D"})

Layout = list[tuple[int, bool]]  # per channel of a widened tensor: (source channel in the old tensor, is new)


@dataclass(frozen=True)
class Morphism:
    """One fully planned morphism; ``apply`` is deterministic and needs no random generator."""

    kind: str
    args: tuple[tuple[str, Any], ...]
    exact: bool = True

    def arg(self, key: str) -> Any:
        return dict(self.args)[key]

    @overload
    def apply(self, arch: Architecture, weights: None = None) -> tuple[Architecture, None]: ...
    @overload
    def apply(self, arch: Architecture, weights: Weights) -> tuple[Architecture, Weights]: ...
    def apply(self, arch: Architecture, weights: Weights | None = None) -> tuple[Architecture, Weights | None]:
        """The child architecture and, when parent weights are given, its weights."""
        a = dict(self.args)
        if self.kind == "deeper":
            return _apply_deeper(arch, weights, a["after"], a["kernel_size"], a["bn"], a["relu"])
        if self.kind == "wider":
            return _apply_wider(arch, weights, a["layer"], tuple(a["dup"]))
        if self.kind in ("add_skip", "concat_skip"):
            return _apply_skip(arch, weights, self.kind, a["src"], a["dst"])
        raise ValueError(f"unknown morphism kind {self.kind!r}; known kinds: {', '.join(KINDS)}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "args": {k: list(v) if isinstance(v, tuple) else v for k, v in self.args},
            "exact": self.exact,
        }

    @staticmethod
    def from_dict(d: dict[str, Any]) -> Morphism:
        args = {k: tuple(v) if isinstance(v, list) else v for k, v in d["args"].items()}
        return Morphism(d["kind"], tuple(sorted(args.items())), bool(d["exact"]))

    def describe(self) -> str:
        """A short human label, e.g. ``wider(conv2d_3,+32)``."""
        a = dict(self.args)
        if self.kind == "deeper":
            return f"deeper({a['after']})"
        if self.kind == "wider":
            return f"wider({a['layer']},+{len(a['dup'])})"
        return f"{self.kind}({a['src']}->{a['dst']})"


def _morphism(kind: str, exact: bool = True, **args: Any) -> Morphism:
    return Morphism(kind, tuple(sorted(args.items())), exact)


@overload
def apply_chain(arch: Architecture, weights: None, chain: Iterable[Morphism]) -> tuple[Architecture, None]: ...
@overload
def apply_chain(arch: Architecture, weights: Weights, chain: Iterable[Morphism]) -> tuple[Architecture, Weights]: ...
def apply_chain(
    arch: Architecture, weights: Weights | None, chain: Iterable[Morphism]
) -> tuple[Architecture, Weights | None]:
    """Apply morphisms in order; the result of a logged chain is the logged child."""
    for m in chain:
        arch, weights = m.apply(arch, weights)  # type: ignore[call-overload]
    return arch, weights


# --- deeper --------------------------------------------------------------------------------


def plan_deeper(
    arch: Architecture,
    rng: np.random.Generator,
    *,
    after: str | None = None,
    kernel_size: int | None = None,
    relu: bool | None = None,
) -> Morphism:
    """Plan an identity layer after ``after``.

    Conv gets a random odd kernel and an identity BatchNorm. With ``after`` given, a ReLU is added where
    it keeps the function, unless ``relu`` says otherwise (``relu=True`` on a signed input is approximate).
    With ``after`` None the new layer always ends in a ReLU, as in Auto-Keras, so it adds a nonlinearity
    rather than a linear map that composes with its neighbour: it goes after a random body layer whose
    output is never negative (the morphism stays exact), or, where there is none, after any body layer
    (approximate).
    """
    targets = deeper_targets(arch)
    if after is None:
        if not targets:
            raise ValueError("the architecture has no layer a deeper morphism can follow")
        safe_targets = [n for n in targets if nonnegative(arch, n)]
        pool = safe_targets or targets
        after = pool[int(rng.integers(len(pool)))]
        relu = True if relu is None else relu
    check_body(arch, after, "deeper after")
    image = len(arch.shapes[after]) == 3
    if kernel_size is None:
        kernel_size = int(rng.choice(DEEPER_KERNEL_SIZES)) if image else 1
    if image and (kernel_size < 1 or kernel_size % 2 == 0):
        raise ValueError(f"kernel_size={kernel_size} must be a positive odd number for an identity convolution")
    safe = nonnegative(arch, after)
    relu = safe if relu is None else relu
    return _morphism("deeper", exact=safe or not relu, after=after, kernel_size=kernel_size, bn=image, relu=relu)


def _apply_deeper(
    arch: Architecture, weights: Weights | None, after: str, kernel_size: int, bn: bool, relu: bool
) -> tuple[Architecture, Weights | None]:
    check_body(arch, after, "deeper after")
    shape = arch.shapes[after]
    c = shape[-1]
    kinds = ["Conv2D" if len(shape) == 3 else "Dense"] + ["BatchNormalization"] * bn + ["ReLU"] * relu
    ids = arch.fresh_ids(*kinds)
    if len(shape) == 3:
        new = [Layer.make(ids[0], "Conv2D", [after], filters=c, kernel_size=kernel_size, strides=1)]
    else:
        new = [Layer.make(ids[0], "Dense", [after], units=c)]
    new += [Layer.make(ids[i], kinds[i], [ids[i - 1]]) for i in range(1, len(ids))]
    layers = rewire(arch.layers, after, ids[-1], skip=set(ids)) + new
    child = arch.replace(layers)
    if weights is None:
        return child, None
    out = dict(weights)
    kernel: np.ndarray
    if len(shape) == 3:
        kernel = np.zeros((kernel_size, kernel_size, c, c), "f4")
        kernel[kernel_size // 2, kernel_size // 2] = np.eye(c, dtype="f4")
    else:
        kernel = np.eye(c, dtype="f4")
    out[ids[0]] = (kernel, np.zeros(c, "f4"))
    if bn:
        # moving_variance + epsilon == 1, so inference-mode BatchNorm is the identity.
        out[ids[1]] = (np.ones(c, "f4"), np.zeros(c, "f4"), np.zeros(c, "f4"), np.full(c, 1 - BN_EPSILON, "f4"))
    return child, out


# --- wider ---------------------------------------------------------------------------------


def plan_wider(
    arch: Architecture, rng: np.random.Generator, *, layer: str | None = None, n_add: int | None = None
) -> Morphism:
    """Plan ``n_add`` more units for ``layer`` (random if None), copying randomly chosen units."""
    if layer is None:
        targets = wider_targets(arch)
        if not targets:
            raise ValueError("the architecture has no Conv2D or Dense layer a wider morphism can widen")
        layer = targets[int(rng.integers(len(targets)))]
    check_body(arch, layer, "wider layer")
    width = arch.shapes[layer][-1]
    if n_add is None:
        n_add = max(1, width // int(rng.choice([1, 2, 4])))
    if isinstance(n_add, bool) or not isinstance(n_add, int) or n_add < 1:
        raise ValueError(f"n_add={n_add!r} must be a positive integer")
    dup = tuple(int(i) for i in rng.integers(0, width, n_add))
    return _morphism("wider", layer=layer, dup=dup)


def _widening_producers(arch: Architecture, node: str) -> set[str]:
    """The Conv/Dense layers that must widen so ``node`` (an Add input) gains the new channels."""
    if node != INPUT:
        lay = arch.by_id[node]
        if lay.kind in MIXING_KINDS:
            return {node}
        if lay.kind in _CHANNELWISE - {"GlobalAveragePooling2D"}:
            return _widening_producers(arch, lay.inputs[0])
        if lay.kind == "Add":
            return set().union(*(_widening_producers(arch, i) for i in lay.inputs))
    raise ValueError(f"cannot widen: an Add also reads {node!r}, whose channels no Conv2D or Dense produces")


class _MoreProducers(Exception):
    def __init__(self, producers: set[str]) -> None:
        self.producers = producers


def _layouts(arch: Architecture, producers: set[str], dup: Sequence[int], width: int) -> dict[str, Layout]:
    """Channel layout of every tensor that the widening of ``producers`` changes."""
    new_layout: Layout = [(i, False) for i in range(width)] + [(d, True) for d in dup]
    layouts: dict[str, Layout] = {}
    for lay in arch.layers:
        if lay.id in producers:
            if lay.id in arch.head or arch.shapes[lay.id][-1] != width:
                raise ValueError(f"cannot widen: {lay.id!r} would have to widen too, and it cannot")
            layouts[lay.id] = new_layout
            continue
        changed = [layouts.get(i) for i in lay.inputs]
        if not any(changed):
            continue
        if lay.kind in MIXING_KINDS:
            continue  # zero weights for the new inputs: its own output is unchanged
        if lay.kind in _CHANNELWISE:
            layouts[lay.id] = changed[0]  # type: ignore[assignment]
        elif lay.kind == "Flatten":
            c_old = arch.shapes[lay.inputs[0]][-1]
            spatial = arch.shapes[lay.id][0] // c_old
            layouts[lay.id] = [(s * c_old + src, new) for s in range(spatial) for src, new in changed[0]]  # type: ignore[union-attr]
        elif lay.kind == "Concatenate":
            offset, merged = 0, []
            for src_id, lay_in in zip(lay.inputs, changed, strict=True):
                c_old = arch.shapes[src_id][-1]
                merged += [(offset + s, n) for s, n in (lay_in or [(i, False) for i in range(c_old)])]
                offset += c_old
            layouts[lay.id] = merged
        elif lay.kind == "Add":
            missing = [i for i, lay_in in zip(lay.inputs, changed, strict=True) if lay_in is None]
            if missing:
                raise _MoreProducers(set().union(*(_widening_producers(arch, i) for i in missing)))
            if any(lay_in != changed[0] for lay_in in changed):
                raise ValueError(f"cannot widen: the inputs of Add {lay.id!r} would get different channel orders")
            layouts[lay.id] = changed[0]  # type: ignore[assignment]
        else:
            raise ValueError(f"cannot widen: the new channels would reach {lay.kind} layer {lay.id!r}")
    return layouts


def _apply_wider(
    arch: Architecture, weights: Weights | None, layer: str, dup: tuple[int, ...]
) -> tuple[Architecture, Weights | None]:
    check_body(arch, layer, "wider layer")
    if arch.by_id[layer].kind not in MIXING_KINDS:
        raise ValueError(f"wider needs a Conv2D or Dense layer, {layer!r} is {arch.by_id[layer].kind}")
    width = arch.shapes[layer][-1]
    if not dup or any(not 0 <= d < width for d in dup):
        raise ValueError(f"wider dup indices {dup} must be a non-empty list of units of {layer!r} (0..{width - 1})")
    producers = {layer}
    while True:
        try:
            layouts = _layouts(arch, producers, dup, width)
            break
        except _MoreProducers as more:
            producers |= more.producers
    grow = {"Conv2D": "filters", "Dense": "units"}
    layers = []
    for lay in arch.layers:
        if lay.id in producers:
            key = grow[lay.kind]
            lay = Layer.make(lay.id, lay.kind, lay.inputs, **{**dict(lay.config), key: width + len(dup)})
        layers.append(lay)
    child = arch.replace(layers)
    if weights is None:
        return child, None
    out = dict(weights)
    for lay in arch.layers:
        in_layout = layouts.get(lay.inputs[0])
        if lay.kind in MIXING_KINDS and (in_layout or lay.id in producers):
            kernel, bias = weights[lay.id]
            if in_layout:
                src = [s for s, _ in in_layout]
                kernel = np.take(kernel, src, axis=-2)
                kernel[..., [j for j, (_, new) in enumerate(in_layout) if new], :] = 0
            if lay.id in producers:
                kernel = np.concatenate([kernel, kernel[..., list(dup)]], axis=-1)
                bias = np.concatenate([bias, bias[list(dup)]])
            out[lay.id] = (kernel, bias)
        elif lay.kind == "BatchNormalization" and in_layout:
            src = [s for s, _ in in_layout]
            out[lay.id] = tuple(p[src] for p in weights[lay.id])
    return child, out


# --- skip connections -------------------------------------------------------------------------


def _skip_branch_pools(arch: Architecture, src: str, dst: str) -> list[Layer]:
    """The pooling layers to copy onto a src -> dst skip; ValueError when no skip can join them."""
    chain = arch.main_chain
    i, j = chain.index(src), chain.index(dst)
    if i >= j:
        raise ValueError(f"skip source {src!r} must come before its destination {dst!r} on the main chain")
    between = [arch.by_id[n] for n in chain[i + 1 : j + 1]]
    if not any(lay.kind in MIXING_KINDS for lay in between):
        raise ValueError(f"no Conv2D or Dense lies between {src!r} and {dst!r}; a skip there would add nothing")
    s_shape, d_shape = arch.shapes[src], arch.shapes[dst]
    if len(s_shape) != len(d_shape):
        raise ValueError(f"cannot join {src!r} {s_shape} to {dst!r} {d_shape}: one is an image tensor, one is flat")
    pools = [lay for lay in between if lay.kind == "MaxPooling2D"]
    spatial = s_shape[:-1]
    for p in pools:
        spatial = tuple(-(-d // p.get("pool_size")) for d in spatial)
    if spatial != d_shape[:-1]:
        raise ValueError(f"cannot join {src!r} {s_shape} to {dst!r} {d_shape}: copying the pooling gives {spatial}")
    return pools


def plan_skip(
    arch: Architecture, rng: np.random.Generator, kind: str, *, src: str | None = None, dst: str | None = None
) -> Morphism:
    """Plan an ``add_skip`` or ``concat_skip`` from ``src`` to ``dst`` (a random valid pair if None)."""
    if kind not in ("add_skip", "concat_skip"):
        raise ValueError(f"skip kind {kind!r} must be 'add_skip' or 'concat_skip'")
    if src is None or dst is None:
        pairs = skip_pairs(arch)
        if src is not None or dst is not None:
            pairs = tuple((s, d) for s, d in pairs if src in (None, s) and dst in (None, d))
        if not pairs:
            raise ValueError("the architecture has no pair of layers a skip connection can join")
        src, dst = pairs[int(rng.integers(len(pairs)))]
    check_body(arch, src, "skip source")
    check_body(arch, dst, "skip destination")
    _skip_branch_pools(arch, src, dst)
    return _morphism(kind, src=src, dst=dst)


def _apply_skip(
    arch: Architecture, weights: Weights | None, kind: str, src: str, dst: str
) -> tuple[Architecture, Weights | None]:
    check_body(arch, src, "skip source")
    check_body(arch, dst, "skip destination")
    pools = _skip_branch_pools(arch, src, dst)
    image = len(arch.shapes[dst]) == 3
    c_dst, c_src = arch.shapes[dst][-1], arch.shapes[src][-1]
    mix = "Conv2D" if image else "Dense"
    merge = "Add" if kind == "add_skip" else "Concatenate"
    ids = arch.fresh_ids(*(["MaxPooling2D"] * len(pools)), mix, merge)
    *pool_ids, mix_id, merge_id = ids
    new = []
    last = src
    for pid, p in zip(pool_ids, pools, strict=True):
        new.append(Layer.make(pid, "MaxPooling2D", [last], pool_size=p.get("pool_size")))
        last = pid
    conv_cfg: dict[str, int] = {"filters": c_dst, "kernel_size": 1, "strides": 1} if image else {"units": c_dst}
    if kind == "add_skip":
        # dst + zero-conv(pooled src): the merge is the new output of dst.
        new += [Layer.make(mix_id, mix, [last], **conv_cfg), Layer.make(merge_id, "Add", [dst, mix_id])]
        out_id = merge_id
    else:
        # 1x1 conv over concat(dst, pooled src): identity on dst's channels, zero on src's.
        new += [Layer.make(merge_id, "Concatenate", [dst, last]), Layer.make(mix_id, mix, [merge_id], **conv_cfg)]
        out_id = mix_id
    child = arch.replace(rewire(arch.layers, dst, out_id, skip=set(ids)) + new)
    if weights is None:
        return child, None
    out = dict(weights)
    if kind == "add_skip":
        kernel = np.zeros((1, 1, c_src, c_dst) if image else (c_src, c_dst), "f4")
    else:
        kernel = np.zeros((1, 1, c_dst + c_src, c_dst) if image else (c_dst + c_src, c_dst), "f4")
        kernel[..., :c_dst, :] = np.eye(c_dst, dtype="f4")
    out[mix_id] = (kernel, np.zeros(c_dst, "f4"))
    return child, out


# --- the pure-function forms and random choice ------------------------------------------------


def deeper(arch: Architecture, weights: Weights | None, rng: np.random.Generator, **where: Any):
    """Insert an identity layer (see ``plan_deeper``); returns (architecture, weights)."""
    return plan_deeper(arch, rng, **where).apply(arch, weights)


def wider(arch: Architecture, weights: Weights | None, rng: np.random.Generator, **where: Any):
    """Widen a Conv2D or Dense layer (see ``plan_wider``); returns (architecture, weights)."""
    return plan_wider(arch, rng, **where).apply(arch, weights)


def add_skip(arch: Architecture, weights: Weights | None, rng: np.random.Generator, **where: Any):
    """Add a zero-initialised additive skip (see ``plan_skip``); returns (architecture, weights)."""
    return plan_skip(arch, rng, "add_skip", **where).apply(arch, weights)


def concat_skip(arch: Architecture, weights: Weights | None, rng: np.random.Generator, **where: Any):
    """Add a concatenating skip merged by a 1x1 conv (see ``plan_skip``); returns (architecture, weights)."""
    return plan_skip(arch, rng, "concat_skip", **where).apply(arch, weights)


def plan(arch: Architecture, rng: np.random.Generator, kind: str) -> Morphism:
    """Plan a morphism of ``kind`` at a random valid place; ValueError when there is none."""
    if kind == "deeper":
        return plan_deeper(arch, rng)
    if kind == "wider":
        return plan_wider(arch, rng)
    return plan_skip(arch, rng, kind)


def _added_layers(arch: Architecture, m: Morphism) -> int:
    """How many layers ``m`` adds to ``arch``."""
    if m.kind == "deeper":
        return 1 + m.arg("bn") + m.arg("relu")
    if m.kind == "wider":
        return 0
    return len(_skip_branch_pools(arch, m.arg("src"), m.arg("dst"))) + 2


def random_morphism(
    arch: Architecture,
    rng: np.random.Generator,
    *,
    max_params: int | None = None,
    max_layers: int | None = None,
    kinds: Sequence[str] = KINDS,
    tries: int = 16,
) -> tuple[Morphism, Architecture] | None:
    """A random exact morphism whose child stays within the caps, with that child; None if none is found.

    Kinds are tried in a random order, each at up to ``tries`` random places, so None means no
    kind fitted anywhere it was tried. Morphisms that would exceed ``max_params`` parameters or
    ``max_layers`` layers are never returned.
    """
    unknown = set(kinds) - set(KINDS)
    if unknown:
        raise ValueError(f"unknown morphism kinds {sorted(unknown)}; known kinds: {', '.join(KINDS)}")
    for kind in rng.permutation(list(kinds)):
        for _ in range(tries):
            try:
                m = plan(arch, rng, str(kind))
                if max_layers is not None and arch.n_layers + _added_layers(arch, m) > max_layers:
                    continue  # known without building the child
                child, _ = m.apply(arch)
            except ValueError:
                continue  # no valid place for this kind, or an Add stops this widening
            if (max_params is None or child.param_count <= max_params) and (
                max_layers is None or child.n_layers <= max_layers
            ):
                return m, child
    return None

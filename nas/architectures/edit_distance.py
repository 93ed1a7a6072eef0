"""Network descriptors and the Auto-Keras edit distance between them.

A descriptor keeps what the distance compares: the Conv2D and Dense layers of the main chain with
their widths, and the skip connections as (from, to, kind) positions counted in those layers.

    d(a, b) = layer_distance(a, b) + lambda * skip_distance(a, b)

``layer_distance`` is a Levenshtein distance: inserting or deleting a layer costs 1, turning one
layer into another costs ``|w_a - w_b| / max(w_a, w_b)`` when they are of one kind and 1 otherwise.
Unlike the original, Dense widths count too. ``skip_distance`` matches the two sets of skips with
``scipy.optimize.linear_sum_assignment`` and counts each unmatched skip as 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from nas.architectures.graph import INPUT, MERGE_KINDS, MIXING_KINDS, Architecture

LayerDesc = tuple[str, int]  # (kind, width)
SkipDesc = tuple[int, int, str]  # (from position, to position, "Add" or "Concatenate")


@dataclass(frozen=True)
class NetworkDescriptor:
    """What the kernel compares of a network: main-chain layer widths and skip connections."""

    layers: tuple[LayerDesc, ...]
    skips: tuple[SkipDesc, ...]


def describe(arch: Architecture) -> NetworkDescriptor:
    """The descriptor of ``arch``; positions count main-chain Conv2D/Dense layers up to a node."""
    chain = arch.main_chain
    on_chain = set(chain)
    position: dict[str, int] = {}
    layers: list[LayerDesc] = []
    for node in chain:
        if node != INPUT:
            lay = arch.by_id[node]
            if lay.kind in MIXING_KINDS:
                layers.append((lay.kind, arch.shapes[node][-1]))
        position[node] = len(layers)
    skips: list[SkipDesc] = []
    for node in chain:
        if node == INPUT or arch.by_id[node].kind not in MERGE_KINDS:
            continue
        merge = arch.by_id[node]
        for branch in merge.inputs[1:]:
            origin = branch
            while origin not in on_chain:
                origin = arch.by_id[origin].inputs[0]
            skips.append((position[origin], position[node], merge.kind))
    return NetworkDescriptor(tuple(layers), tuple(sorted(skips)))


def layer_cost(a: LayerDesc, b: LayerDesc) -> float:
    """Cost of turning layer ``a`` into ``b``: relative width change, or 1 across kinds."""
    if a[0] != b[0]:
        return 1.0
    return abs(a[1] - b[1]) / max(a[1], b[1])


def layer_distance(a: tuple[LayerDesc, ...], b: tuple[LayerDesc, ...]) -> float:
    """Levenshtein distance with width-aware substitution (Wagner-Fischer, one numpy row at a time)."""
    if not a or not b:
        return float(len(a) + len(b))
    kind_a, width_a = np.array([k for k, _ in a]), np.array([w for _, w in a], float)
    kind_b, width_b = np.array([k for k, _ in b]), np.array([w for _, w in b], float)
    relative = np.abs(width_a[:, None] - width_b[None, :]) / np.maximum(width_a[:, None], width_b[None, :])
    substitute = np.where(kind_a[:, None] == kind_b[None, :], relative, 1.0)  # layer_cost for every pair
    cols = np.arange(len(b) + 1, dtype=float)
    prev = cols.copy()
    for i in range(1, len(a) + 1):
        cur = np.empty_like(prev)
        cur[0] = i
        cur[1:] = np.minimum(prev[1:] + 1, prev[:-1] + substitute[i - 1])  # delete or substitute
        # inserts chain along the row: cur[j] = min over k <= j of cur[k] + (j - k)
        prev = np.minimum.accumulate(cur - cols) + cols
    return float(prev[-1])


def skip_cost(a: SkipDesc, b: SkipDesc) -> float:
    """Auto-Keras' distance between two skips: start offset and length, relative; 1 across kinds."""
    if a[2] != b[2]:
        return 1.0
    len_a, len_b = abs(a[1] - a[0]), abs(b[1] - b[0])
    denominator = max(a[0], b[0]) + max(len_a, len_b)
    return 0.0 if denominator == 0 else (abs(a[0] - b[0]) + abs(len_a - len_b)) / denominator


def skip_distance(a: tuple[SkipDesc, ...], b: tuple[SkipDesc, ...]) -> float:
    """Cost of the best matching of the two skip sets plus 1 for every skip left unmatched."""
    if not a or not b:
        return float(len(a) + len(b))
    cost = np.array([[skip_cost(x, y) for y in b] for x in a])
    rows, cols = linear_sum_assignment(cost)
    return float(cost[rows, cols].sum()) + abs(len(a) - len(b))


def edit_distance(a: NetworkDescriptor, b: NetworkDescriptor, lam: float = 1.0) -> float:
    """The Auto-Keras distance: layer edit distance plus ``lam`` times the skip distance."""
    return layer_distance(a.layers, b.layers) + lam * skip_distance(a.skips, b.skips)

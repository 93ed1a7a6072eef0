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

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

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


def _padded(seqs: Sequence[tuple[LayerDesc, ...]], codes: dict[str, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Kind codes (-1 as padding), widths (1 as padding) and lengths of ``seqs``, as arrays of equal rows."""
    longest = max((len(q) for q in seqs), default=0)
    kinds = np.full((len(seqs), longest), -1)
    widths = np.ones((len(seqs), longest))
    for i, q in enumerate(seqs):
        kinds[i, : len(q)] = [codes.setdefault(k, len(codes)) for k, _ in q]
        widths[i, : len(q)] = [w for _, w in q]
    return kinds, widths, np.array([len(q) for q in seqs], dtype=int)


MAX_CELLS = 1 << 21  # about 16 MB of float64 per work array


def layer_distance_matrix(a: Sequence[tuple[LayerDesc, ...]], b: Sequence[tuple[LayerDesc, ...]]) -> np.ndarray:
    """``layer_distance`` of every pair (n, m): the same Wagner-Fischer rows, run for many pairs at once on padded
    sequences (a pair's answer is read at its own lengths; padding never reaches it), so every entry equals
    ``layer_distance(a[i], b[j])`` exactly. Rows of ``a`` go in chunks that keep the work arrays small."""
    longest = max((len(q) for q in (*a, *b)), default=0) + 1
    chunk = max(1, MAX_CELLS // max(1, len(b) * longest * longest))
    parts = [_layer_distance_block(a[i : i + chunk], b) for i in range(0, len(a), chunk)]
    return np.vstack(parts) if parts else np.empty((0, len(b)))


def _layer_distance_block(a: Sequence[tuple[LayerDesc, ...]], b: Sequence[tuple[LayerDesc, ...]]) -> np.ndarray:
    codes: dict[str, int] = {}
    kind_a, width_a, len_a = _padded(a, codes)
    kind_b, width_b, len_b = _padded(b, codes)
    out = np.empty((len(a), len(b)))
    out[len_a == 0] = len_b[None, :]
    if not len(a) or not len(b) or not len_a.max():
        return out
    wa, wb = width_a[:, None, :, None], width_b[None, :, None, :]
    relative = np.abs(wa - wb) / np.maximum(wa, wb)
    substitute = np.where(kind_a[:, None, :, None] == kind_b[None, :, None, :], relative, 1.0)  # (n, m, La, Lb)
    cols = np.arange(kind_b.shape[1] + 1, dtype=float)
    prev = np.broadcast_to(cols, (len(a), len(b), len(cols))).copy()
    pick = (slice(None), np.arange(len(b)), len_b)  # each pair's column at b's own length
    for i in range(1, kind_a.shape[1] + 1):
        cur = np.empty_like(prev)
        cur[..., 0] = i
        cur[..., 1:] = np.minimum(prev[..., 1:] + 1, prev[..., :-1] + substitute[:, :, i - 1, :])
        prev = np.minimum.accumulate(cur - cols, axis=-1) + cols
        done = len_a == i
        if done.any():
            out[done] = prev[done][pick]
    return out


def distance_matrix(a: Sequence[NetworkDescriptor], b: Sequence[NetworkDescriptor], lam: float = 1.0) -> np.ndarray:
    """``edit_distance`` of every pair (n, m), equal to it entry by entry, computed in a few array passes."""
    layers = layer_distance_matrix([d.layers for d in a], [d.layers for d in b])
    skips = np.array([[_skip_distance_cached(x.skips, y.skips) for y in b] for x in a]).reshape(layers.shape)
    return layers + lam * skips


# Neighbours share most of their skips with their parents and with each other: each matching is made once.
_skip_distance_cached = lru_cache(maxsize=1 << 16)(skip_distance)

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


_CODES: dict[str, int] = {}  # layer and skip kinds -> small integers, one numbering for every call (cached arrays)


def _padded(seqs: Sequence[tuple[LayerDesc, ...]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Kind codes (-1 as padding), widths (1 as padding) and lengths of ``seqs``, as arrays of equal rows."""
    longest = max((len(q) for q in seqs), default=0)
    kinds = np.full((len(seqs), longest), -1)
    widths = np.ones((len(seqs), longest))
    for i, q in enumerate(seqs):
        kinds[i, : len(q)] = [_CODES.setdefault(k, len(_CODES)) for k, _ in q]
        widths[i, : len(q)] = [w for _, w in q]
    return kinds, widths, np.array([len(q) for q in seqs], dtype=int)


def _read_only(arrays: tuple[np.ndarray, ...]) -> tuple[np.ndarray, ...]:
    for x in arrays:
        x.setflags(write=False)
    return arrays


@lru_cache(maxsize=8)
def _padded_cached(seqs: tuple[tuple[LayerDesc, ...], ...]) -> tuple[np.ndarray, ...]:
    """``_padded``, read-only and kept: the right-hand side of a distance matrix is the same few sequences
    call after call (the anchors)."""
    return _read_only(_padded(seqs))


MAX_CELLS = 1 << 21  # about 16 MB of float64 per work array


def layer_distance_matrix(a: Sequence[tuple[LayerDesc, ...]], b: Sequence[tuple[LayerDesc, ...]]) -> np.ndarray:
    """``layer_distance`` of every pair (n, m): the same Wagner-Fischer rows, run for many pairs at once on padded
    sequences (a pair's answer is read at its own lengths; padding never reaches it), so every entry equals
    ``layer_distance(a[i], b[j])`` exactly. Rows of ``a`` go in chunks that keep the work arrays small."""
    longest = max((len(q) for q in (*a, *b)), default=0) + 1
    chunk = max(1, MAX_CELLS // max(1, len(b) * longest * longest))
    b = tuple(b)
    parts = [_layer_distance_block(a[i : i + chunk], b) for i in range(0, len(a), chunk)]
    return np.vstack(parts) if parts else np.empty((0, len(b)))


def _layer_distance_block(a: Sequence[tuple[LayerDesc, ...]], b: tuple[tuple[LayerDesc, ...], ...]) -> np.ndarray:
    kind_a, width_a, len_a = _padded(a)
    kind_b, width_b, len_b = _padded_cached(b)
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
    return layers + lam * skip_distance_matrix([d.skips for d in a], [d.skips for d in b]).reshape(layers.shape)


def _skip_columns(seqs: Sequence[tuple[SkipDesc, ...]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Start, length and kind code of every skip of ``seqs``, as (len(seqs), longest) arrays (padding unread)."""
    longest = max((len(q) for q in seqs), default=0)
    start, length, kind = np.zeros((3, len(seqs), longest))
    for i, q in enumerate(seqs):
        start[i, : len(q)] = [s[0] for s in q]
        length[i, : len(q)] = [abs(s[1] - s[0]) for s in q]
        kind[i, : len(q)] = [_CODES.setdefault(s[2], len(_CODES)) for s in q]
    return start, length, kind


@lru_cache(maxsize=8)
def _skip_columns_cached(seqs: tuple[tuple[SkipDesc, ...], ...]) -> tuple[np.ndarray, ...]:
    """``_skip_columns``, read-only and kept (the anchors, as for ``_padded_cached``)."""
    return _read_only(_skip_columns(seqs))


def skip_distance_matrix(a: Sequence[tuple[SkipDesc, ...]], b: Sequence[tuple[SkipDesc, ...]]) -> np.ndarray:
    """``skip_distance`` of every pair (n, m), equal to it entry by entry: the ``skip_cost`` matrices of all
    pairs are computed as one array (the same integer sums, divided once), and each pair's matching is made once
    (neighbours share most of their skips with their parents and with each other)."""
    out = np.empty((len(a), len(b)))
    todo: list[tuple[int, int]] = []
    for i, x in enumerate(a):
        for j, y in enumerate(b):
            if not x or not y:
                out[i, j] = float(len(x) + len(y))
            elif (found := _MATCHINGS.get((x, y))) is not None:
                out[i, j] = found
            else:
                todo.append((i, j))
    if not todo:
        return out
    rows = sorted({i for i, _ in todo})
    cols = sorted({j for _, j in todo})
    s_a, l_a, k_a = (v[:, None, :, None] for v in _skip_columns([a[i] for i in rows]))  # (n, 1, Sa, 1)
    s_b, l_b, k_b = (v[cols][None, :, None, :] for v in _skip_columns_cached(tuple(b)))  # (1, m, 1, Sb)
    numerator = np.abs(s_a - s_b) + np.abs(l_a - l_b)
    denominator = np.maximum(s_a, s_b) + np.maximum(l_a, l_b)
    relative = np.divide(numerator, denominator, out=np.zeros(numerator.shape), where=denominator != 0)
    cost = np.where(k_a == k_b, relative, 1.0)  # skip_cost of every pair of skips of every pair of networks
    row_of, col_of = {i: r for r, i in enumerate(rows)}, {j: c for c, j in enumerate(cols)}
    for i, j in todo:
        x, y = a[i], b[j]
        block = cost[row_of[i], col_of[j], : len(x), : len(y)]
        matched_rows, matched_cols = linear_sum_assignment(block)
        out[i, j] = float(block[matched_rows, matched_cols].sum()) + abs(len(x) - len(y))
        if len(_MATCHINGS) >= _MATCHINGS_MAX:
            _MATCHINGS.clear()
        _MATCHINGS[(x, y)] = out[i, j]
    return out


# The matchings made so far, by pair of skip sets (a cache only: the same pair always gives the same value).
_MATCHINGS: dict[tuple[tuple[SkipDesc, ...], tuple[SkipDesc, ...]], float] = {}
_MATCHINGS_MAX = 1 << 16

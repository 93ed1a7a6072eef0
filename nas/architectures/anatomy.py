"""Where morphisms may act: the main chain's body, the layers each kind may target, the pairs a skip may join, and
whether a tensor can be negative (a ReLU after it is then the identity)."""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache

from nas.architectures.graph import INPUT, MIXING_KINDS, Architecture, Layer

# layers whose output is never negative where all their inputs are not
SIGN_KEEPING = frozenset({"MaxPooling2D", "GlobalAveragePooling2D", "Dropout", "Flatten", "Add", "Concatenate"})


@lru_cache(maxsize=4096)
def main_body(arch: Architecture) -> tuple[str, ...]:
    """Main-chain layers outside the classifier head, input to output."""
    return tuple(n for n in arch.main_chain if n != INPUT and n not in arch.head)


def deeper_targets(arch: Architecture) -> list[str]:
    """Layers after which ``deeper`` may insert a layer."""
    return list(main_body(arch))


def wider_targets(arch: Architecture) -> list[str]:
    """Layers ``wider`` may widen (some may still be refused when an Add cannot follow)."""
    return [n for n in main_body(arch) if arch.by_id[n].kind in MIXING_KINDS]


@lru_cache(maxsize=4096)
def skip_pairs(arch: Architecture) -> tuple[tuple[str, str], ...]:
    """(src, dst) pairs a skip may join: same rank, a Conv/Dense between, shapes that copied pooling matches.

    The same rules as ``_skip_branch_pools``, walked once per source instead of checked per pair.
    """
    body = main_body(arch)
    # per body layer: the pool size it divides the spatial shape by (0: none), whether it mixes, its node id
    steps = []
    for node in body:
        lay = arch.by_id[node]
        steps.append((lay.get("pool_size") if lay.kind == "MaxPooling2D" else 0, lay.kind in MIXING_KINDS, node))
    pairs = []
    for i, src in enumerate(body):
        s_shape = arch.shapes[src]
        spatial, mixed, rank = s_shape[:-1], False, len(s_shape)
        for pool, mixing, dst in steps[i + 1 :]:
            if pool:
                spatial = tuple(-(-d // pool) for d in spatial)
            mixed = mixed or mixing
            d_shape = arch.shapes[dst]
            if mixed and len(d_shape) == rank and spatial == d_shape[:-1]:
                pairs.append((src, dst))
    return tuple(pairs)


def nonnegative(arch: Architecture, node: str) -> bool:
    """True when ``node`` can never hold a negative value (a ReLU after it is then the identity)."""
    if node == INPUT:
        return False
    lay = arch.by_id[node]
    if lay.kind in ("ReLU", "Softmax"):
        return True
    return lay.kind in SIGN_KEEPING and all(nonnegative(arch, i) for i in lay.inputs)


def check_body(arch: Architecture, node: str, role: str) -> None:
    arch.layer(node)  # names a missing id
    if node not in main_body(arch):
        raise ValueError(
            f"{role} {node!r} is not a main-chain layer outside the classifier head; "
            f"choose one of {list(main_body(arch))}"
        )


def rewire(layers: Iterable[Layer], old: str, new: str, skip: set[str]) -> list[Layer]:
    """Make every layer that read ``old`` read ``new`` instead (except the layers in ``skip``)."""
    out = []
    for lay in layers:
        if lay.id not in skip and old in lay.inputs:
            lay = Layer(lay.id, lay.kind, tuple(new if i == old else i for i in lay.inputs), lay.config)
        out.append(lay)
    return out

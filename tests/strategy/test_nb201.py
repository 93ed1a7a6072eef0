"""The NAS-Bench-201 cell space and its tables."""

from __future__ import annotations

import numpy as np
import pytest

from nas.strategy.nb201 import OPS, Cell, CellSpace, load_table


def test_table_has_every_cell() -> None:
    table = load_table("cifar10")
    assert len(table.val_acc) == 5**6
    assert 90 < table.optimum < 95  # CIFAR-10 validation accuracy of the best cell, in %
    cell = Cell(("nor_conv_3x3",) * 6)
    assert table.val_acc[cell.key].shape == (3,) and table.train_time[cell.key] > 0


def test_neighbours_change_exactly_one_edge() -> None:
    space = CellSpace(Cell(("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3", "none")))
    moves = space.neighbours(space.initial(), np.random.default_rng(0), n=24, tries=24)
    assert len({c.id for _, c in moves}) == 24
    for step, cell in moves:
        assert space.distance(space.descriptor(space.initial()), space.descriptor(cell)) == 1
        assert cell.ops[step.edge] == step.op


def test_bad_cells_and_datasets_are_refused() -> None:
    with pytest.raises(ValueError, match="must have 6 operations"):
        Cell(("conv",) * 6)
    with pytest.raises(ValueError, match="unknown NAS-Bench-201 dataset 'svhn'"):
        load_table("svhn")
    assert Cell.from_key("012340").ops == (OPS[0], OPS[1], OPS[2], OPS[3], OPS[4], OPS[0])

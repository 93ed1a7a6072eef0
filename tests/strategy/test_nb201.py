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


def test_encoding_distance_is_the_hamming_distance_and_steps_replay() -> None:
    space = CellSpace(Cell(("none",) * 6))
    cells = space.points()
    assert len(cells) == 5**6 and len({c.id for c in cells}) == 5**6
    rng = np.random.default_rng(0)
    for i, j in rng.integers(0, len(cells), size=(50, 2)):
        a, b = cells[int(i)], cells[int(j)]
        x = space.encode([a, b])
        assert np.sum((x[0] - x[1]) ** 2) == pytest.approx(space.distance(a.ops, b.ops))
        ops = list(a.ops)
        for step in space.steps(a, b):
            ops[step.edge] = step.op
        assert tuple(ops) == b.ops and len(space.steps(a, b)) == space.distance(a.ops, b.ops)
    np.testing.assert_array_equal(space.encode(cells[:7]), space.encode(list(cells[:7])))
    assert len(space.groups) == space.encode([cells[0]]).shape[1] == 6 * len(OPS)

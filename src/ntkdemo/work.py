"""Loops whose items cost unequal work, so that progress reports the work done.

The row blocks of an upper triangle shrink from the first to the last (block ``k`` of
``b`` rows holds ``b (n - k b)`` entries), so counting blocks would put the time left of
a triangle at twice the truth when it starts. :class:`WeightedItems` carries each item's
work beside it; the progress reports of the command line read it
(:func:`ntkdemo.cli.options.progress_lines`), and any other consumer iterates it as the
plain sequence it is.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Generic, TypeVar, overload

import numpy as np

Item = TypeVar("Item")


class WeightedItems(Sequence[Item], Generic[Item]):
    """The ``items`` of a loop and the work ``weights`` of each (any unit, >= 0).

    Parameters
    ----------
    items : sequence
    weights : array-like of shape (len(items),)
    """

    def __init__(self, items: Sequence[Item], weights: np.ndarray) -> None:
        if len(items) != len(weights):
            raise ValueError(f"{len(items)} items but {len(weights)} weights")
        self.items = items
        self.weights = np.asarray(weights)

    def __len__(self) -> int:
        return len(self.items)

    @overload
    def __getitem__(self, index: int) -> Item: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[Item]: ...

    def __getitem__(self, index):
        return self.items[index]

    def __iter__(self) -> Iterator[Item]:
        return iter(self.items)


def work_weights(iterable: object) -> np.ndarray | None:
    """The work of each item of ``iterable`` where it carries some
    (:class:`WeightedItems` with a positive total), else None: count its items."""
    weights = getattr(iterable, "weights", None)
    return weights if weights is not None and weights.sum() > 0 else None


def upper_row_blocks(n: int, block_rows: int) -> WeightedItems[int]:
    """The first rows ``0, b, 2b, ...`` of the row blocks of an ``n x n`` upper triangle
    (each block its rows against the columns from its first row on), weighted by their
    entries :math:`\\min(b, n - s)\\,(n - s)` (int64)."""
    starts = np.arange(0, n, block_rows, dtype=np.int64)
    return WeightedItems(range(0, n, block_rows), np.minimum(block_rows, n - starts) * (n - starts))

"""Sequences whose items are made when asked for: memory holds the item in use, not the cohort (subjects
read from disk by index, and read again by a second pass)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

Item = TypeVar("Item")


def position(index: int, length: int) -> int:
    """``index`` as a position in ``0..length-1`` (negative counts from the end), else IndexError."""
    at = index + length if index < 0 else index
    if not 0 <= at < length:
        raise IndexError(f"item {index} of {length}")
    return at


class Mapped(Sequence[Item]):
    """``function(source[k])`` for every ``k``, computed each time it is indexed (nothing is kept).

    Example::

        cases = Mapped(subjects, lambda s: load_case(s.label))
        for case in cases: ...   # one case in memory at a time; iterate again for a second pass
    """

    def __init__(self, source: Sequence[Any], function: Callable[[Any], Item]) -> None:
        self.source = source
        self.function = function

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int | slice) -> Any:  # type: ignore[override]
        if isinstance(index, slice):
            return Mapped(self.source[index], self.function)
        return self.function(self.source[position(index, len(self))])

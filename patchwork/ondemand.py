"""Sequences whose items are made when asked for: memory holds the item in use, not the cohort (subjects
read from disk by index, and read again by a second pass). :class:`Spilled` keeps what a pass made in a
scratch folder, so that later passes read it back instead of making it again."""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable, Sequence
from pathlib import Path
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


class Spilled(Sequence[Item]):
    """``source[k]``, made once and then read back from ``folder`` (one uncompressed pickle per item).

    For searches that pass over a cohort many times: making an item (decompressing NIfTIs, cropping) can
    cost far more than reading its pickle back. Memory still holds one item; the disk holds every item
    made so far. ``folder`` is scratch space of the caller's (a temporary directory): it is trusted, as
    pickles are.

    Example::

        with tempfile.TemporaryDirectory() as scratch:
            cases = Spilled(Mapped(subjects, load_case), Path(scratch))
            tune(cases)   # pass 1 loads and spills each case, later passes read the spill
    """

    def __init__(self, source: Sequence[Item], folder: Path) -> None:
        self.source = source
        self.folder = folder

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int | slice) -> Any:  # type: ignore[override]
        if isinstance(index, slice):  # lazy too, and reading the same spill files
            return Mapped(range(len(self))[index], self.__getitem__)
        k = position(index, len(self))
        path = self.folder / f"{k}.pickle"
        if path.exists():
            return pickle.loads(path.read_bytes())
        item = self.source[k]
        partial = path.with_suffix(".partial")
        partial.write_bytes(pickle.dumps(item, protocol=pickle.HIGHEST_PROTOCOL))
        os.replace(partial, path)
        return item

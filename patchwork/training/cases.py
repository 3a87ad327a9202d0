"""Training cases read when they are used, and the bounded caches that keep training memory flat.

A training job must not hold its whole fold in memory: at 1 mm, ATLAS alone is tens of GB. Preprocessing
writes each labelled subject's arrays uncompressed (:func:`patchwork.data.preprocess.open_preprocessed` maps
them), and :class:`LazyCases` holds only the subjects' names: case ``k`` is memory-mapped when it is used, and
only the ``open_cases`` most recently used cases stay mapped, so the pages a training touched are released
when their case leaves the cache. Its :attr:`~LazyCases.images`, :attr:`~LazyCases.labels` and
:attr:`~LazyCases.affines` are read-only sequences that the trainers take wherever they take lists of arrays;
a trainer that needs something costly per case (the DNP's prepared volumes, the U-Net's foreground voxels)
keeps it in a :class:`BoundedCache` and computes it again, identically, after eviction.

Example::

    cases = LazyCases(partial(open_preprocessed, Path("results/preprocessed")), ["sub-01", "sub-02"])
    image, label, affine = cases[0]  # image [C, X, Y, Z] float32 and label uint8, memory-mapped
    train_unet(params, cases.images, cases.labels, cases.affines, out_dir, seed)
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping, Sequence
from operator import itemgetter
from typing import Any, Generic, TypeVar, overload

import numpy as np

from patchwork.ondemand import Mapped, position

Key = TypeVar("Key", bound=Hashable)
Value = TypeVar("Value")

OPEN_CASES = 8  # cases a LazyCases keeps mapped


class BoundedCache(Generic[Key, Value]):
    """``load(key)``, remembered for the most recently used keys: at most ``max_items`` values and at most
    ``max_bytes`` bytes of them (``size(value)`` each; a single value larger than that is still returned,
    just not kept). ``None`` leaves a bound off. Results never depend on the bounds, only the time spent
    loading: ``load`` must give equal values for equal keys."""

    def __init__(
        self,
        load: Callable[[Key], Value],
        max_items: int | None = None,
        max_bytes: int | None = None,
        size: Callable[[Value], int] | None = None,
    ) -> None:
        self.load = load
        self.max_items = max_items
        self.max_bytes = max_bytes
        self.size = size or (lambda _: 0)
        self.held: OrderedDict[Key, tuple[Value, int]] = OrderedDict()
        self.nbytes = 0

    def __len__(self) -> int:
        return len(self.held)

    def __getitem__(self, key: Key) -> Value:
        if key in self.held:
            self.held.move_to_end(key)
            return self.held[key][0]
        value = self.load(key)
        self.put(key, value)
        return value

    def put(self, key: Key, value: Value) -> None:
        """Remember ``value`` for ``key`` (newest), then forget the oldest values beyond the bounds."""
        if key in self.held:
            self.nbytes -= self.held.pop(key)[1]
        nbytes = self.size(value)
        self.held[key] = (value, nbytes)
        self.nbytes += nbytes
        while self.held and (self._too_many() or self._too_large()):
            self.nbytes -= self.held.popitem(last=False)[1][1]

    def _too_many(self) -> bool:
        return self.max_items is not None and len(self.held) > self.max_items

    def _too_large(self) -> bool:
        return self.max_bytes is not None and self.nbytes > self.max_bytes

    def clear(self) -> None:
        """Forget every value."""
        self.held.clear()
        self.nbytes = 0


class LazyCases(Sequence[tuple[np.ndarray, np.ndarray | None, np.ndarray]]):
    """The ``subjects``, opened on use by ``open_case(subject) -> (image, label, record)`` (e.g.
    ``partial(open_preprocessed, root)``): item ``k`` is ``(image [C, X, Y, Z], label [X, Y, Z] or None,
    affine [4, 4])``, memory-mapped read-only where the opener maps its arrays.

    Pickles as its opener and names (a worker process opens the cases itself).
    """

    def __init__(
        self,
        open_case: Callable[[str], tuple[np.ndarray, np.ndarray | None, Mapping[str, Any]]],
        subjects: Sequence[str],
        open_cases: int = OPEN_CASES,
    ) -> None:
        self.open_case = open_case
        self.subjects = list(subjects)
        self.open_cases = open_cases
        self.cache: BoundedCache[int, tuple[np.ndarray, np.ndarray | None, np.ndarray]] = BoundedCache(
            self._open, max_items=open_cases
        )

    def _open(self, index: int) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        image, label, record = self.open_case(self.subjects[index])
        return image, label, np.asarray(record["affine"], dtype=np.float64)

    def __len__(self) -> int:
        return len(self.subjects)

    @overload
    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[tuple[np.ndarray, np.ndarray | None, np.ndarray]]: ...
    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            return LazyCases(self.open_case, self.subjects[index], self.open_cases)
        return self.cache[position(index, len(self))]

    def __getstate__(self) -> dict[str, Any]:
        return {"open_case": self.open_case, "subjects": self.subjects, "open_cases": self.open_cases}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["open_case"], state["subjects"], state["open_cases"])  # type: ignore[misc]

    @property
    def images(self) -> Mapped[Any]:
        """The images, ``[C, X, Y, Z]`` float32."""
        return Mapped(self, itemgetter(0))

    @property
    def labels(self) -> Mapped[Any]:
        """The label maps, ``[X, Y, Z]`` uint8 (None for an unlabelled subject)."""
        return Mapped(self, itemgetter(1))

    @property
    def affines(self) -> Mapped[Any]:
        """The grid affines, ``[4, 4]`` float64."""
        return Mapped(self, itemgetter(2))

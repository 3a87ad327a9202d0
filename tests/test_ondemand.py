"""On-demand sequences: items made when asked for; a spilled sequence makes each item once."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from patchwork.ensembling.tuning import Case
from patchwork.ondemand import Mapped, Spilled


def test_spilled_makes_each_item_once_and_gives_it_back_equal(tmp_path: Path) -> None:
    made: list[int] = []

    def make(k: int) -> Case:
        made.append(k)
        rng = np.random.default_rng(k)
        return Case(rng.uniform(size=(2, 4, 5, 6)).astype(np.float32), rng.uniform(size=(4, 5, 6)) > 0.5)

    cases = Spilled(Mapped(range(3), make), tmp_path)
    first, second = list(cases), list(cases)
    assert made == [0, 1, 2] and len(cases) == 3
    for a, b in zip(first, second, strict=True):
        assert a.probs.dtype == b.probs.dtype and np.array_equal(a.probs, b.probs)
        assert np.array_equal(a.reference, b.reference)
    assert np.array_equal(cases[-1].probs, first[2].probs) and made == [0, 1, 2]
    tail = cases[1:]
    assert len(tail) == 2
    assert all(np.array_equal(c.probs, f.probs) for c, f in zip(tail, first[1:], strict=True))
    assert made == [0, 1, 2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["0.pickle", "1.pickle", "2.pickle"]

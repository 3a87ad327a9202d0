"""Fixtures shared by the DNP cropping tests: run a test in 2D and 3D."""

from __future__ import annotations

import pytest
from dnp_images import SHAPES


@pytest.fixture(params=[2, 3], ids=["2d", "3d"])
def ndim(request: pytest.FixtureRequest) -> int:
    """The number of spatial dimensions."""
    return request.param


@pytest.fixture
def shape(ndim: int) -> tuple[int, ...]:
    """A small, non-cubic image shape for ``ndim``."""
    return SHAPES[ndim]

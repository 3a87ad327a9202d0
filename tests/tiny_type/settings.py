"""The tiny type's settings: what training uses and how the trained threshold is applied."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from patchwork.settings import Settings, setting


@dataclass(frozen=True)
class TinyParams(Settings):
    """A learnt intensity threshold, smoothed into a probability."""

    what: ClassVar[str] = "tiny params"
    sharpness: float = setting(4.0, exclusiveMinimum=0, doc="slope of the logistic around the threshold")


@dataclass(frozen=True)
class TinyApply(Settings):
    """How the learnt threshold is applied."""

    what: ClassVar[str] = "tiny apply"
    shift: float = setting(0.0, doc="added to the learnt threshold")

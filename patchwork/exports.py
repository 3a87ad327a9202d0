"""Lazy public names of a package (PEP 562): each name's module is imported on its first use.

``patchwork.models.unet`` and ``patchwork.models.dnp`` export their names this way, so that importing the
package for its torch-free settings (what the workflow does when it checks a config) does not import torch.

Example (in a package's ``__init__.py``)::

    __getattr__, __dir__, __all__ = lazy_exports(__name__, {"UNetParams": "patchwork.models.unet.settings"})
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(
    package: str, homes: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]], list[str]]:
    """``__getattr__``, ``__dir__`` and ``__all__`` of ``package``, whose public names live in the modules
    ``homes`` names (``{name: module}``)."""
    names = sorted(homes)

    def __getattr__(name: str) -> Any:
        if name not in homes:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(homes[name]), name)

    def __dir__() -> list[str]:
        return names

    return __getattr__, __dir__, names

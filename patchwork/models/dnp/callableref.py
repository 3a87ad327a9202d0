"""A researcher's function (a DNP's own blocks) stored by name: :class:`CallableRef`, torch-free.

A model file must load with ``torch.load(weights_only=True)``, so it holds no pickled code: a function the
settings take (``blockCreator``, ``finalBlock``) is stored as ``"package.module:function"`` and JSON-able
keyword arguments, and imported again where the model is loaded.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from patchwork.errors import PatchworkError
from patchwork.settings import Settings, plain, setting


@dataclass(frozen=True)
class CallableRef(Settings):
    """A researcher's function stored by name, so a model file holds no pickled code and loads with
    ``torch.load(weights_only=True)``: ``target`` is ``"package.module:function"`` (an importable module and
    the function's qualified name in it), ``kwargs`` JSON-able keyword arguments bound to it.

    Example::

        CallableRef("mylab.blocks:my_blocks", {"width": 16})
        CallableRef.of(my_blocks, "blockCreator")  # == CallableRef("mylab.blocks:my_blocks")
    """

    what: ClassVar[str] = "callable"
    target: str = setting(pattern=r"^[^:]+:.+$", description="'package.module:function'", doc="the function")
    kwargs: dict[str, Any] = setting({}, doc="JSON-able keyword arguments bound to it")

    def normalise(self) -> None:
        """``kwargs`` as plain JSON builtins."""
        try:
            json.dumps(self.kwargs, allow_nan=False)
        except (TypeError, ValueError) as err:
            raise PatchworkError(f"kwargs of {self.target} must be JSON-able: {err}") from None
        object.__setattr__(self, "kwargs", plain(self.kwargs))

    @classmethod
    def coerce(cls, value: Any, what: str) -> CallableRef:
        """A reference in a config or given in Python (see :meth:`of`)."""
        return cls.of(value, what)  # type: ignore[return-value]

    @classmethod
    def of(cls, value: Any, what: str) -> CallableRef | None:
        """``value`` as a reference: ``None``, a reference, its mapping, a ``target`` string, or a function
        defined at the top level of an importable module (``__main__`` is not: the model would not load
        in another program)."""
        if value is None or isinstance(value, cls):
            return value
        if isinstance(value, str):
            return cls(value)
        if isinstance(value, Mapping):
            return cls.from_dict(value, what)
        target = f"{getattr(value, '__module__', None)}:{getattr(value, '__qualname__', None)}"
        try:
            found = callable(value) and not target.startswith("__main__:") and cls(target).load(what) is value
        except PatchworkError:  # a lambda, a nested function, a module not on the path
            found = False
        if not found:
            raise PatchworkError(
                f"{what} {value!r} cannot be stored by name: define it at the top level of an importable "
                "module, or give 'package.module:function'"
            )
        return cls(target)

    def load(self, what: str) -> Callable[..., Any]:
        """Import the function (without ``kwargs``); one line naming ``what`` if that fails."""
        module, _, name = self.target.partition(":")
        try:
            value: Any = importlib.import_module(module)
            for part in name.split("."):
                value = getattr(value, part)
        except (ImportError, AttributeError) as err:
            raise PatchworkError(f"{what} {self.target!r} cannot be imported: {err}") from None
        return value

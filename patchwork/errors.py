"""The one exception type users see: a message that names the file and the problem."""

from __future__ import annotations

from collections.abc import Iterable


class PatchworkError(Exception):
    """A problem with the user's input or configuration.

    The command line prints each line of ``problems`` (or the message) as ``error: ...`` and exits
    with status 1, without a traceback. Raise it with the offending path in the message, e.g.
    ``PatchworkError(f"{path}: image contains NaN values")``.
    """

    def __init__(self, message: str | None = None, problems: list[str] | None = None) -> None:
        self.problems = list(problems) if problems else [message or "unknown error"]
        super().__init__("\n".join(self.problems))


def check_keys(given: Iterable[str], known: Iterable[str], what: str) -> None:
    """Raise one error if ``given`` (a settings mapping's keys) holds a key not in ``known``, naming the
    unknown keys and the known ones (``what`` says whose settings they are)."""
    known = list(known)
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise PatchworkError(f"{what}: unknown key(s) {', '.join(unknown)} (known: {', '.join(known)})")

"""Time and peak memory of one piece of work (a case of ``patchwork infer``).

Peak resident memory per case, not per process: on Linux writing ``5`` to ``/proc/self/clear_refs``
resets the kernel's high-water mark of the resident set (``VmHWM`` in ``/proc/self/status``), so each
case's peak is measured from its own start. Where that is not allowed (other systems, some sandboxes)
the process's peak so far (``getrusage``'s ``ru_maxrss``) is given, marked as such. On CUDA devices the
peak of torch's allocator is measured too.
"""

from __future__ import annotations

import resource
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

CLEAR_REFS = Path("/proc/self/clear_refs")
STATUS = Path("/proc/self/status")


@dataclass
class Usage:
    """What :func:`measure` found: seconds, peak resident bytes (``per_case`` False: the process's peak
    so far) and, on CUDA, the peak bytes torch allocated."""

    seconds: float = 0.0
    peak_rss: int = 0
    per_case: bool = False
    peak_cuda: int | None = None


def _reset_peak_rss() -> bool:
    try:
        CLEAR_REFS.write_text("5")
        return True
    except OSError:
        return False


def _peak_rss() -> int:
    """The resident high-water mark in bytes (``VmHWM``), else ``ru_maxrss`` (KiB on Linux, B on macOS)."""
    try:
        for line in STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


@contextmanager
def measure(device: str | None) -> Iterator[Usage]:
    """Measure the block's wall time and peak memory into the yielded :class:`Usage`."""
    usage = Usage(per_case=_reset_peak_rss())
    cuda = None
    if device is None or str(device).startswith("cuda"):
        import torch

        cuda = torch.cuda if torch.cuda.is_available() else None
    if cuda is not None:
        cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    try:
        yield usage
    finally:
        usage.seconds = time.perf_counter() - start
        usage.peak_rss = _peak_rss()
        usage.peak_cuda = cuda.max_memory_allocated() if cuda is not None else None

"""GPU leases on a multi-GPU workstation: every training or prediction job holds one GPU for its lifetime.

Snakemake assigns no GPU ids to local jobs, so without this every job would run on ``cuda:0``. A job that
runs on CUDA takes a lease on one of the machine's N device slots: an exclusive ``flock`` on the slot's
file ``gpu{i}.lock`` in a lock folder shared by the machine's jobs (``$PATCHWORK_GPU_LOCKS``, default
``/tmp/patchwork-gpu-locks``). The job then sees only that device (``CUDA_VISIBLE_DEVICES`` is set before
CUDA starts, so ``cuda`` is the leased GPU). The kernel drops an ``flock`` when its process ends, so a job
that is killed (even by SIGKILL) releases its slot at once and no stale lock survives. With more jobs than
GPUs the extra jobs wait for a free slot; ``snakemake --resources gpu=N`` keeps them from starting at all.

Not leased: a CPU job, a job given one device by name (``cuda:1``), and a job whose scheduler already
chose its GPUs (SLURM sets ``SLURM_JOB_GPUS``/``SLURM_STEP_GPUS`` and ``CUDA_VISIBLE_DEVICES``).

Example::

    with job_device("cuda") as device:  # e.g. CUDA_VISIBLE_DEVICES=2 now, device == "cuda"
        train(..., device=device)
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)

LOCK_DIR_ENV = "PATCHWORK_GPU_LOCKS"
DEFAULT_LOCK_DIR = Path("/tmp/patchwork-gpu-locks")
SCHEDULER_GPU_ENV = ("SLURM_JOB_GPUS", "SLURM_STEP_GPUS")
NVIDIA_PROC = Path("/proc/driver/nvidia/gpus")
POLL_SECONDS = 1.0


def visible_devices() -> list[str]:
    """Ids of the GPUs a job may lease: the entries of ``CUDA_VISIBLE_DEVICES`` when set, else one per GPU
    the NVIDIA driver lists (``/proc/driver/nvidia/gpus``), counted without starting CUDA."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [d.strip() for d in visible.split(",") if d.strip()]
    count = len(list(NVIDIA_PROC.iterdir())) if NVIDIA_PROC.is_dir() else 0
    return [str(i) for i in range(count)]


def _try_lock(path: Path) -> int | None:
    """An open descriptor holding the exclusive lock of ``path``, or None when another process holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _lock_free_slot(lock_dir: Path, n_slots: int, start: int) -> tuple[int, int] | None:
    """``(slot, descriptor)`` of the first free slot from ``start`` on (cyclically); None: all held."""
    for k in range(n_slots):
        slot = (start + k) % n_slots
        fd = _try_lock(lock_dir / f"gpu{slot}.lock")
        if fd is not None:
            return slot, fd
    return None


@contextmanager
def gpu_lease(devices: Sequence[str], lock_dir: Path, poll_seconds: float = POLL_SECONDS) -> Iterator[str]:
    """Hold one of ``devices`` (slot ``i`` = lock file ``gpu{i}.lock``) until the block ends; yield its id.

    Slots are tried starting at ``pid mod N`` (concurrent starts spread out); when all are held, the
    caller waits and tries again every ``poll_seconds``.
    """
    if not devices:
        raise ValueError("gpu_lease: no devices to lease")
    lock_dir = Path(lock_dir)
    lock_dir.mkdir(parents=True, exist_ok=True)
    start = os.getpid() % len(devices)
    held = _lock_free_slot(lock_dir, len(devices), start)
    if held is None:
        log.info("all %d GPU slots in %s are leased: waiting for one", len(devices), lock_dir)
    while held is None:
        time.sleep(poll_seconds)
        held = _lock_free_slot(lock_dir, len(devices), start)
    slot, fd = held
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())  # who holds it, for a person looking
        log.info("leased GPU %s (slot %d of %d)", devices[slot], slot, len(devices))
        yield devices[slot]
    finally:
        os.close(fd)  # closing the descriptor drops the lock


@contextmanager
def job_device(device: str | None) -> Iterator[str | None]:
    """The device a job runs on, holding a GPU lease for the block when the job runs on CUDA.

    ``device`` None (CUDA when present) or ``cuda``: lease one visible GPU, restrict the process to it and
    yield ``cuda`` (None when there is no GPU). Anything else (``cpu``, ``cuda:1``), or GPUs already chosen
    by the scheduler: yielded unchanged, nothing leased.
    """
    scheduled = any(os.environ.get(name) for name in SCHEDULER_GPU_ENV)
    devices = visible_devices() if device in (None, "cuda") and not scheduled else []
    if not devices:
        yield device
        return
    lock_dir = Path(os.environ.get(LOCK_DIR_ENV) or DEFAULT_LOCK_DIR)
    with gpu_lease(devices, lock_dir) as leased:
        os.environ["CUDA_VISIBLE_DEVICES"] = leased
        yield "cuda"

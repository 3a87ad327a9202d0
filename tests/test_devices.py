"""GPU leases (patchwork/training/devices.py) with a faked device count: CUDA_VISIBLE_DEVICES lists ids that
need not exist, since a lease only locks a slot file and restricts the job to that id."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from patchwork.training.devices import LOCK_DIR_ENV, gpu_lease, job_device

# A job: lease a GPU, print the id it was given, hold it until the file `release` exists.
JOB = """
import sys, time
from pathlib import Path
from patchwork.training.devices import job_device
with job_device("cuda") as device:
    import os
    print(os.environ["CUDA_VISIBLE_DEVICES"], device, flush=True)
    while not Path(sys.argv[1]).exists():
        time.sleep(0.02)
"""


def start_job(tmp_path: Path, devices: str) -> subprocess.Popen:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": devices, LOCK_DIR_ENV: str(tmp_path / "locks")}
    env.pop("SLURM_JOB_GPUS", None)
    env.pop("SLURM_STEP_GPUS", None)
    return subprocess.Popen(
        [sys.executable, "-c", JOB, str(tmp_path / "release")], stdout=subprocess.PIPE, text=True, env=env
    )


def leased(job: subprocess.Popen, timeout: float = 30) -> str | None:
    """The device id a job printed once it holds its lease (None if it is still waiting at ``timeout``)."""
    os.set_blocking(job.stdout.fileno(), False)
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        line = job.stdout.readline()
        if line:
            device_id, device = line.split()
            assert device == "cuda"
            return device_id
        time.sleep(0.02)
    return None


def test_concurrent_jobs_never_share_a_gpu_and_a_third_waits(tmp_path: Path) -> None:
    first, second = start_job(tmp_path, "3,5"), start_job(tmp_path, "3,5")
    third = None
    try:
        ids = {leased(first), leased(second)}
        assert ids == {"3", "5"}  # one job per device, whatever order they started in
        third = start_job(tmp_path, "3,5")
        assert leased(third, timeout=1.0) is None  # both slots held: it waits
        (tmp_path / "release").touch()
        assert first.wait(30) == 0 and second.wait(30) == 0
        assert leased(third) in {"3", "5"}
        assert third.wait(30) == 0
    finally:
        for job in (first, second, third):
            if job is not None and job.poll() is None:
                job.kill()


def test_a_killed_job_releases_its_lease(tmp_path: Path) -> None:
    holder = start_job(tmp_path, "0")
    assert leased(holder) == "0"
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait(30)
    start = time.monotonic()
    with gpu_lease(["0"], tmp_path / "locks", poll_seconds=0.05) as device:
        assert device == "0"
    assert time.monotonic() - start < 5


def test_no_lease_on_cpu_named_device_or_scheduler_gpus(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    monkeypatch.setenv(LOCK_DIR_ENV, str(tmp_path / "locks"))
    for device in ("cpu", "cuda:1"):
        with job_device(device) as chosen:
            assert chosen == device
    monkeypatch.setenv("SLURM_JOB_GPUS", "2")
    with job_device("cuda") as chosen:
        assert chosen == "cuda"
    assert not (tmp_path / "locks").exists()
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "0,1"
    monkeypatch.delenv("SLURM_JOB_GPUS")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with job_device(None) as chosen:  # no GPU: auto stays auto (CPU)
        assert chosen is None

"""Training speed on a shared machine: the demo U-Net's training alone and beside a busy neighbour.

Users run the workflow on workstations where other programs run too. A PyTorch job whose threads wait for
each other at every parallel region slows down far more than its share of the CPU when one core is taken:
with OpenMP's default spin-waiting, a 2-thread training on 2 cores beside one busy process ran about 10x
slower. This script measures it for the real command the workflow runs, ``patchwork train`` with the demo's
sigmoid U-Net (``config/demo.yaml``) for a fixed number of iterations (``--steps``) on a small generated,
preprocessed cohort, once alone and once while a busy-looping process holds one core, for each thread
setting:

* ``--threads`` CPU threads per training (the config's ``threads.train``);
* the OpenMP wait policy: ``passive`` (threads sleep at once at a barrier; what ``patchwork`` sets unless
  the environment sets ``OMP_WAIT_POLICY`` itself) or ``active`` (threads spin while they wait).

Each row prints the wall seconds alone and beside the neighbour and their ratio; the last line is the ratio
of the setting the workflow uses (passive, the demo's ``threads.train``), the number the goal (<= 2.5x) is
about. The same thread setting gives the same weights alone and beside the neighbour (checked here: the
model files' digests are compared)::

    python benchmarks/contention.py --steps 40
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def prepare(work: Path, n_train: int) -> dict:
    """A small demo cohort, ingested, preprocessed as the demo preprocesses it and split (reused when there);
    returns the demo config."""
    from patchwork.config import IngestSettings, PreprocessSettings
    from patchwork.data.demo import make_demo_dataset
    from patchwork.io import write_json
    from patchwork.stages import data

    config = yaml.safe_load((ROOT / "config" / "demo.yaml").read_text())
    ids = [f"demo_{i + 1:03d}" for i in range(n_train)]
    if not (work / "splits.json").exists():
        make_demo_dataset(work / "raw", n_train=n_train, n_test=0)
        data.ingest(str(work / "raw"), work / "subjects.tsv", work / "fingerprint.json", IngestSettings())
        settings = PreprocessSettings.from_dict(config.get("preprocess", {}))
        for subject in ids:
            data.preprocess(
                work / "subjects.tsv",
                subject,
                work / "fingerprint.json",
                work / "preprocessed" / subject,
                settings,
            )
        write_json(work / "splits.json", [{"train": ids[1:], "val": ids[:1]}])
    return config


def train_once(work: Path, spec: dict, threads: int, policy: str, tag: str) -> tuple[float, str]:
    """Run ``patchwork train`` in a fresh process; return its wall seconds and the model file's digest."""
    out = work / "runs" / tag
    shutil.rmtree(out, ignore_errors=True)
    env = {**os.environ, "OMP_WAIT_POLICY": policy.upper()}
    command = [
        sys.executable, "-m", "patchwork.cli", "train", "--spec", json.dumps(spec),
        "--subjects", str(work / "subjects.tsv"), "--preprocessed", str(work / "preprocessed"),
        "--splits", str(work / "splits.json"), "--fold", "0", "--out-dir", str(out), "--seed", "0",
        "--threads", str(threads), "--device", "cpu",
    ]  # fmt: skip
    start = time.perf_counter()
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    seconds = time.perf_counter() - start
    return seconds, hashlib.sha256((out / "model.pt").read_bytes()).hexdigest()[:16]


def busy_neighbour() -> subprocess.Popen:
    """A process that keeps one core busy until it is killed."""
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/patchwork-contention"))
    parser.add_argument("--steps", type=int, default=40, help="training iterations per run")
    parser.add_argument("--n-train", type=int, default=4)
    parser.add_argument("--threads", type=int, nargs="*", default=[1, 2])
    parser.add_argument("--policies", nargs="*", default=["active", "passive"])
    args = parser.parse_args()

    args.work.mkdir(parents=True, exist_ok=True)
    config = prepare(args.work, args.n_train)
    model = next(m for m in config["models"] if m["name"] == "unet_sigmoid")
    params = {**model["params"], "iterations": args.steps, "warmup_iterations": 1, "val_every": args.steps}
    spec = {"name": "unet_sigmoid", "type": "unet", "params": params}
    workflow_threads = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())["threads"]["train"]
    workflow_threads = config.get("threads", {}).get("train", workflow_threads)
    train_once(args.work, spec, 1, "passive", "warm-up")  # first run pays the file-system caches
    print(f"{args.steps} iterations of the demo's sigmoid U-Net, {os.cpu_count()} cores")
    print(f"{'threads':>8}{'policy':>9}{'alone s':>9}{'busy s':>9}{'ratio':>7}  weights alone = busy")
    ratios = {}
    for threads in args.threads:
        for policy in args.policies:
            alone, digest = train_once(args.work, spec, threads, policy, f"{threads}-{policy}-alone")
            neighbour = busy_neighbour()
            try:
                busy, busy_digest = train_once(args.work, spec, threads, policy, f"{threads}-{policy}-busy")
            finally:
                neighbour.kill()
                neighbour.wait()
            ratios[threads, policy] = busy / alone
            same = "yes" if digest == busy_digest else "NO"
            print(f"{threads:>8}{policy:>9}{alone:>9.1f}{busy:>9.1f}{busy / alone:>7.2f}  {same}", flush=True)
    key = (workflow_threads, "passive")
    if key in ratios:
        print(
            f"slowdown beside a busy neighbour, workflow setting ({workflow_threads} threads, passive): "
            f"{ratios[key]:.2f}x"
        )


if __name__ == "__main__":
    main()

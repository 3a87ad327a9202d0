"""Peak memory of a training job against the size of its cohort: flat, not growing with the subjects.

Writes a synthetic cohort once (``--voxels``³ noisy volumes, a bright ball of random size and place as the
label, 1 mm), preprocessed by the package's own writer (:func:`patchwork.data.preprocess.preprocess_subject`:
NIfTI files, the uncompressed ``.npy`` arrays training memory-maps, ``record.json``). For every cohort size
(its first N subjects) and model type it trains in a fresh process, through the workflow's entry
(:func:`patchwork.stages.models.train`, fold ``all``, CPU), and reports that process's peak resident memory
(``ru_maxrss``) and the ratio of the largest to the smallest peak per model: flat means within 1.10.

The models are tiny and train a few steps: what is measured is the data a job holds, not the network.
The DNP runs with its default memory settings: each outer iteration draws from ``cases_per_iteration``
images (64; the paper's ``--dnp-train cases_per_iteration=null`` draws from all of them, and the trees in
flight then grow with the cohort), with prepared images cached up to ``volume_cache_mb`` and that count.
``--pythonpath DIR`` runs the training processes on another copy of the package (e.g. an older commit,
``git archive HEAD patchwork | tar -x -C DIR``) to compare; settings that copy does not know are left
out. Run::

    python benchmarks/train_memory.py --sizes 20 200 2000
    python benchmarks/train_memory.py --sizes 20 200 --pythonpath /tmp/old
    python benchmarks/train_memory.py --models dnp --dnp-train cases_per_iteration=null
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

UNET = {
    "patch_size": [16, 16, 16], "n_stages": 2, "base_features": 4, "max_features": 8, "batch_size": 2,
    "iterations": 4, "val_every": 2, "checkpoint_every": 1000, "augment": False,
}  # fmt: skip
DNP = {
    "crop": {"depth": 2, "ndim": 3, "scheme": {"patch_size": [8, 8, 8], "fov_rel": 0.9, "destvox_rel": 1.0}},
    "model": {"block_features": 4, "block_max_features": 8, "block_stages": 2, "intermediate_out": 2},
    "train": {"num_its": 3, "num_patches": 2, "epochs": 1, "batch_size": 8},
}  # fmt: skip


def write_cohort(root: Path, count: int, voxels: int) -> None:
    """``count`` synthetic subjects, preprocessed into ``root/preprocessed`` (the raw files are removed)."""
    from patchwork.config import PreprocessSettings
    from patchwork.data.cohort import Subject
    from patchwork.data.preprocess import preprocess_subject
    from patchwork.io import save_image

    settings = PreprocessSettings(target_spacing=None, crop_nonzero=False)
    grid = np.stack(np.meshgrid(*[np.arange(voxels)] * 3, indexing="ij"), axis=-1)
    for i in range(count):
        name = f"sub-{i:05d}"
        if (root / "preprocessed" / name / "record.json").exists():
            continue
        rng = np.random.default_rng(i)
        centre, radius = rng.uniform(voxels / 4, 3 * voxels / 4, 3), rng.uniform(3, voxels / 5)
        label = (np.linalg.norm(grid - centre, axis=-1) <= radius).astype(np.uint8)
        image = (rng.normal(1.0, 0.3, label.shape) + 2 * label).astype(np.float32)
        paths = root / "raw" / f"{name}_0000.nii.gz", root / "raw" / f"{name}_seg.nii.gz"
        save_image(image, np.eye(4), paths[0], np.float32)
        save_image(label, np.eye(4), paths[1], np.uint8)
        subject = Subject(name, "train", (paths[0],), paths[1])
        preprocess_subject(subject, root / "preprocessed" / name, settings)
        for path in paths:
            path.unlink()


def write_table(root: Path, count: int) -> Path:
    """``subjects.tsv`` of the first ``count`` subjects (all training)."""
    path = root / f"subjects_{count}.tsv"
    rows = [f"sub-{i:05d}\ttrain\tunused\tunused" for i in range(count)]
    path.write_text("subject\trole\tlabel\timage_0000\n" + "\n".join(rows) + "\n")
    return path


def known_settings(model: str, params: dict) -> dict:
    """``params`` without the keys this copy of the package does not know (an older commit)."""
    if model != "dnp":
        return params
    from patchwork.models.dnp.settings import TrainParams

    names = {f.name for f in dataclasses.fields(TrainParams)}
    return {**params, "train": {k: v for k, v in params["train"].items() if k in names}}


def child(model: str, root: Path, count: int, dnp_train: dict) -> None:
    """Train ``model`` on the first ``count`` subjects in this process (``dnp_train`` overrides DNP training
    settings); print its peak RSS as JSON."""
    import torch

    from patchwork.models import parse_spec
    from patchwork.stages.models import train

    torch.set_num_threads(1)
    dnp = {**DNP, "train": {**DNP["train"], **dnp_train}}
    params = known_settings(model, UNET if model == "unet" else dnp)
    spec = parse_spec({"name": model, "type": model, "params": params}, "train_memory")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        table, splits = write_table(root, count), root / "unused.json"  # fold "all" reads no splits
        train(spec, table, root / "preprocessed", splits, "all", Path(out), 0, "cpu")
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"peak_mb": peak_mb, "seconds": time.perf_counter() - started}))


def measure(model: str, root: Path, count: int, pythonpath: str | None, dnp_train: dict) -> dict:
    """Run :func:`child` in a fresh interpreter; its JSON report."""
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join([pythonpath, env.get("PYTHONPATH", "")])
    command = [sys.executable, __file__, "--child", model, str(count), "--root", str(root)]
    command += ["--dnp-train", json.dumps(dnp_train)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"{model} on {count} subjects failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[20, 200, 2000])
    parser.add_argument("--models", nargs="+", default=["unet", "dnp"], choices=["unet", "dnp"])
    parser.add_argument("--voxels", type=int, default=32, help="edge of the synthetic volumes")
    parser.add_argument("--root", type=Path, help="cohort folder (default: a temporary one)")
    parser.add_argument("--pythonpath", help="train with the package found here instead")
    parser.add_argument(
        "--dnp-train", nargs="*", default=[], metavar="KEY=JSON", help="override a DNP training setting"
    )
    parser.add_argument("--child", nargs=2, metavar=("MODEL", "COUNT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], args.root, int(args.child[1]), json.loads(args.dnp_train[0]))
        return
    dnp_train = {k: json.loads(v) for k, v in (item.split("=", 1) for item in args.dnp_train)}
    with tempfile.TemporaryDirectory() as tmp:
        root = args.root or Path(tmp)
        started = time.perf_counter()
        write_cohort(root, max(args.sizes), args.voxels)
        print(f"cohort of {max(args.sizes)} subjects ({args.voxels}^3) written in "
              f"{time.perf_counter() - started:.0f} s", flush=True)  # fmt: skip
        print(f"{'model':<6}{'subjects':>10}{'peak RSS MB':>14}{'seconds':>10}", flush=True)
        for model in args.models:
            peaks = []
            for count in args.sizes:
                report = measure(model, root, count, args.pythonpath, dnp_train)
                peaks.append(report["peak_mb"])
                row = f"{model:<6}{count:>10}{report['peak_mb']:>14.0f}{report['seconds']:>10.1f}"
                print(row, flush=True)
            print(f"{model:<6}{'max/min':>10}{max(peaks) / min(peaks):>14.3f}", flush=True)


if __name__ == "__main__":
    main()

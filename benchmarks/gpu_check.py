"""CUDA check: train the U-Net and the DNP for a few hundred iterations, predict a held-out case, on CUDA and
on the CPU side by side: iterations per second, peak memory and the Dice of the prediction.

The demo cohort (``--train`` + 1 subjects at ``--spacing`` mm) is ingested and preprocessed with the
package's stages; every model trains on all but the last subject (seeded: ``--seed``) and predicts the last
one in its original grid, exactly as the workflow's ``train``/``predict`` jobs do. On CUDA the U-Net trains
with float16 autocast and a GradScaler (its trainer's own AMP); the DNP trainer has no AMP of its own, so
on CUDA it runs inside bfloat16 autocast (no loss scaling needed). Peak memory: ``max_memory_allocated``
on CUDA, the process's peak resident memory on the CPU. Without CUDA only the CPU rows are printed.

Example::

    python benchmarks/gpu_check.py --iterations 300            # a GPU machine: CUDA and CPU rows
    python benchmarks/gpu_check.py --iterations 20 --devices cpu  # quick CPU-only run
"""

from __future__ import annotations

import argparse
import contextlib
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from patchwork.config import DemoSettings, IngestSettings, PreprocessSettings
from patchwork.data.cohort import read_subjects
from patchwork.io import read_image, write_json
from patchwork.models import parse_spec
from patchwork.stages import data, models


def model_specs(iterations: int) -> list[dict]:
    """A demo-sized U-Net (``iterations`` steps) and DNP (``iterations`` outer iterations, one epoch)."""
    unet = {"patch_size": [32, 32, 32], "base_features": 8, "n_stages": 4, "batch_size": 4}
    dnp = {
        "crop": {
            "depth": 2,
            "ndim": 3,
            "scheme": {"patch_size": [16, 16, 16], "fov_rel": [0.9], "destvox_rel": [1]},
        },
        "model": {"block_stages": 3, "block_features": 8, "block_max_features": 32},
        "train": {"num_its": iterations, "num_patches": 4, "epochs": 1, "batch_size": 8},
    }
    return [
        {"name": "unet", "type": "unet", "params": {**unet, "iterations": iterations}},
        {"name": "dnp", "type": "dnp", "params": dnp},
    ]


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """``2 |A ∩ B| / (|A| + |B|)`` of two masks (1 when both are empty)."""
    total = int(a.sum() + b.sum())
    return 2 * int((a & b).sum()) / total if total else 1.0


def prepare(workdir: Path, n_train: int, spacing: float, seed: int) -> str:
    """Demo cohort, cohort table, preprocessed subjects and a split (fold 0) that holds out the last subject,
    whose id is returned."""
    source = data.demo(workdir / "raw", DemoSettings(n_train=n_train + 1, n_test=0, spacing=spacing), seed)
    subjects_tsv, fingerprint = workdir / "subjects.tsv", workdir / "fingerprint.json"
    data.ingest(str(source), subjects_tsv, fingerprint, IngestSettings())
    ids = [s.subject for s in read_subjects(subjects_tsv, role="train")]
    for subject in ids:
        data.preprocess(
            subjects_tsv, subject, fingerprint, workdir / "preprocessed" / subject, PreprocessSettings()
        )
    write_json(
        workdir / "splits.json", [{"train": ids[:-1], "val": ids[-1:]}, {"train": ids[-1:], "val": ids[:-1]}]
    )
    return ids[-1]


def peak_memory_mb(device: str) -> float:
    """Peak memory so far: CUDA allocations since the last reset, else the process's peak RSS."""
    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def check(spec_dict: dict, device: str, workdir: Path, held_out: str, seed: int, iterations: int) -> dict:
    """Train one model on ``device`` (fold 0), predict the held-out subject; the row of the table."""
    subjects_tsv, splits_json = workdir / "subjects.tsv", workdir / "splits.json"
    spec = parse_spec(spec_dict, "gpu_check")
    out = workdir / "models" / f"{spec.name}_{device}"
    amp = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if device == "cuda" and spec.type == "dnp"
        else contextlib.nullcontext()
    )
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    with amp:
        model = models.train(
            spec, subjects_tsv, workdir / "preprocessed", splits_json, "0", out, seed, device
        )
    if device == "cuda":
        torch.cuda.synchronize()
    train_s = time.perf_counter() - start
    start = time.perf_counter()
    prob, seg = out / "prob.nii.gz", out / "seg.nii.gz"
    models.predict(
        model, workdir / "preprocessed", held_out, {}, spec.threshold, prob, seg, seed=seed, device=device
    )
    predict_s = time.perf_counter() - start
    label = next(s.label for s in read_subjects(subjects_tsv) if s.subject == held_out)
    return {
        "model": spec.name,
        "device": device,
        "it/s": iterations / train_s,
        "train_s": train_s,
        "predict_s": predict_s,
        "peak_MiB": peak_memory_mb(device),
        "dice": dice(read_image(seg)[0] > 0, read_image(label)[0] > 0),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--train", type=int, default=6, help="training subjects (one more is held out)")
    parser.add_argument("--spacing", type=float, default=2.0, help="demo voxel size (mm)")
    parser.add_argument("--devices", nargs="+", default=["cuda", "cpu"], choices=["cuda", "cpu"])
    parser.add_argument("--threads", type=int, default=2, help="CPU threads of torch")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    devices = [d for d in args.devices if d != "cuda" or torch.cuda.is_available()]
    if "cuda" in args.devices and "cuda" not in devices:
        print("no CUDA device: CPU rows only")
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        workdir = Path(tmp)
        held_out = prepare(workdir, args.train, args.spacing, args.seed)
        rows = [
            check(spec, device, workdir, held_out, args.seed, args.iterations)
            for spec in model_specs(args.iterations)
            for device in devices
        ]
    name = torch.cuda.get_device_name() if "cuda" in devices else "no GPU"
    print(f"torch {torch.__version__}, {name}, {args.iterations} iterations, {args.threads} CPU threads")
    print(
        f"{'model':<6} {'device':<6} {'it/s':>8} {'train s':>8} {'predict s':>10} {'peak MiB':>9} {'Dice':>6}"
    )
    for r in rows:
        print(
            f"{r['model']:<6} {r['device']:<6} {r['it/s']:>8.2f} {r['train_s']:>8.1f} {r['predict_s']:>10.1f}"
            f" {r['peak_MiB']:>9.0f} {r['dice']:>6.3f}"
        )


if __name__ == "__main__":
    main()

"""How long Snakemake takes to plan the workflow for a large cohort: ``snakemake -n`` on a synthetic state.

Writes the state a run has after ingest and splits, for ``--subjects`` subjects (a tenth of them test
subjects unless ``--test`` says otherwise), ``--folds`` folds and ``--models`` models, without any image:
a dataset folder holding only ``dataset.json`` (older than everything else, so ingest is done), then
``results/subjects.tsv``, ``results/fingerprint.json`` (1 mm grids of 160 x 192 x 160) and
``results/splits.json``; with ``--preprocessed`` also every subject's ``record.json`` (preprocessing
done). It then times ``snakemake -n`` of the repository's Snakefile (or ``--snakefile``) and prints the
jobs per rule and, on its last line, the seconds.

Example (the issue's scale; ``--touch-images`` also creates empty image files, which the workflow before
batching needed as inputs of its per-subject evaluation)::

    python benchmarks/dag_scale.py --subjects 5000 --folds 5 --models 3
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SHAPE, SPACING = [160, 192, 160], [1.0, 1.0, 1.0]
# A dry run trains nothing: each model type's default settings (a sigmoid and a softmax head) suffice.
MODEL_KINDS = (("unet", {"head": "sigmoid"}), ("unet", {"head": "softmax"}), ("dnp", {}))


def model_specs(n: int) -> list[dict]:
    """``n`` models cycling through a sigmoid U-Net, a softmax U-Net and a DNP (which writes spreads)."""
    return [
        {"name": f"{kind}_{i}", "type": kind, "params": params}
        for i, (kind, params) in enumerate(MODEL_KINDS[i % len(MODEL_KINDS)] for i in range(n))
    ]


def write_state(
    workdir: Path, n_subjects: int, n_test: int, n_folds: int, n_models: int, preprocessed: bool, images: bool
) -> Path:
    """The dataset folder, config and ``results/`` files of a cohort whose ingest and splits are done."""
    raw, results = workdir / "raw", workdir / "results"
    raw.mkdir(parents=True)
    (raw / "dataset.json").write_text("{}")
    old = time.time() - 86400
    os.utime(raw / "dataset.json", (old, old))
    results.mkdir()
    ids = [f"sub-{i:06d}" for i in range(n_subjects)]
    train, test = ids[: n_subjects - n_test], ids[n_subjects - n_test :]
    rows = ["subject\trole\timage_0000\tlabel"]
    for subject in ids:
        image, label = raw / f"{subject}_0000.nii.gz", raw / f"{subject}.nii.gz"
        is_train = subject not in test
        rows.append(f"{subject}\t{'train' if is_train else 'test'}\t{image}\t{label if is_train else ''}")
        if images:
            for path in [image, label] if is_train else [image]:
                path.touch()
                os.utime(path, (old, old))
    (results / "subjects.tsv").write_text("\n".join(rows) + "\n")
    fingerprint = {
        "source": str(raw),
        "channels": {"0": "T1"},
        "labels": {"background": 0, "lesion": 1},
        "n_train": len(train),
        "n_test": len(test),
        "spacings": {s: SPACING for s in ids},
        "median_spacing": SPACING,
        "shapes": {s: SHAPE for s in ids},
        "median_shape": SHAPE,
        "foreground_voxels": {s: 1000 for s in train},
    }
    (results / "fingerprint.json").write_text(json.dumps(fingerprint))
    folds = [train[k::n_folds] for k in range(n_folds)]
    splits = [{"train": sorted(s for f in folds if f is not val for s in f), "val": val} for val in folds]
    (results / "splits.json").write_text(json.dumps(splits))
    if preprocessed:
        for subject in ids:
            (results / "preprocessed" / subject).mkdir(parents=True)
            (results / "preprocessed" / subject / "record.json").write_text("{}")
    config = {
        "dataset": str(raw),
        "preprocess": {"target_spacing": SPACING},
        "splits": {"n_folds": n_folds},
        "models": model_specs(n_models),
    }
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def dry_run(snakefile: Path, workdir: Path, config: Path) -> tuple[float, dict[str, int], str]:
    """Seconds of ``snakemake -n``, its jobs per rule, and its output."""
    cmd = [sys.executable, "-m", "snakemake", "-n", "--cores", "2", "-s", str(snakefile), "-d", str(workdir)]
    cmd += ["--configfile", str(config)]
    start = time.perf_counter()
    run = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    text = run.stdout + run.stderr
    if run.returncode != 0:
        sys.exit(f"snakemake -n failed:\n{text[-3000:]}")
    table = text.split("Job stats:", 1)[1].split("\n\n", 1)[0] if "Job stats:" in text else ""
    jobs = {rule: int(n) for rule, n in re.findall(r"^(\w+)\s+(\d+)\s*$", table, flags=re.MULTILINE)}
    return seconds, jobs, text


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, required=True, help="subjects in all (train + test)")
    parser.add_argument("--test", type=int, default=None, help="test subjects among them (default: 10 %%)")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--models", type=int, default=3)
    parser.add_argument("--preprocessed", action="store_true", help="preprocessing done (records written)")
    parser.add_argument("--touch-images", action="store_true", help="create the (empty) image files")
    parser.add_argument("--snakefile", type=Path, default=REPO / "Snakefile")
    parser.add_argument("--keep", type=Path, default=None, help="write the state here and keep it")
    args = parser.parse_args(argv)
    n_test = args.subjects // 10 if args.test is None else args.test

    workdir = args.keep or Path(tempfile.mkdtemp(prefix="dag_scale_"))
    try:
        config = write_state(
            workdir, args.subjects, n_test, args.folds, args.models, args.preprocessed, args.touch_images
        )
        seconds, jobs, _ = dry_run(args.snakefile, workdir, config)
    finally:
        if args.keep is None:
            shutil.rmtree(workdir, ignore_errors=True)
    print(f"{args.subjects} subjects ({n_test} test), {args.folds} folds, {args.models} models")
    print(f"snakemake -n of {args.snakefile}, jobs per rule:")
    for rule, n in jobs.items():
        print(f"  {rule:<20} {n}")
    print(f"{seconds:.1f}")


if __name__ == "__main__":
    main()

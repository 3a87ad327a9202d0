"""The REAL Snakefile run end to end on a tiny generated cohort, plus dry-run and lint checks."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import yaml

from patchwork.cli import main
from patchwork.data.cohort import read_subjects
from patchwork.evaluation.report import unresolved_links
from patchwork.models import parse_spec
from patchwork.models.plans import planned_spec

TINY_UNET = {"patch_size": [16, 16, 16], "base_features": 4, "n_stages": 3, "batch_size": 2, "iterations": 6}
TINY_DNP = {
    "crop": {
        "depth": 2,
        "ndim": 3,
        "scheme": {"patch_size": [8, 8, 8], "fov_rel": [0.9], "destvox_rel": [1.0]},
    },
    "model": {"block_stages": 2, "block_features": 4, "block_max_features": 8},
    "train": {"num_its": 2, "num_patches": 2, "epochs": 1, "batch_size": 4},
}
MODELS = ["unet_sigmoid", "unet_softmax", "dnp"]
# Threads of the tiny run: training jobs take both cores, so no other job may run beside one.
CORES = 2
N_TRAIN, N_TEST = 4, 1
THREADS = {"train": 2, "predict": 1}


def snakemake(
    repo: Path, workdir: Path, *args: str, env: dict[str, str] | None = None, timeout: int = 900
) -> subprocess.CompletedProcess:
    """Run the repository's Snakefile in ``workdir`` (so results stay in the test's folder)."""
    cmd = [sys.executable, "-m", "snakemake", "-s", str(repo / "Snakefile"), "-d", str(workdir), *args]
    # The jobs call the `patchwork` console script of this Python's environment.
    env = {**os.environ, **(env or {})}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


def planned_jobs(run: subprocess.CompletedProcess) -> dict[str, int]:
    """Jobs per rule of a dry run (its "Job stats" table); empty when there is nothing to be done."""
    text = run.stdout + run.stderr
    assert run.returncode == 0, text[-5000:]
    if "Nothing to be done" in text:
        return {}
    table = text.split("Job stats:", 1)[1].split("\n\n", 1)[0]
    jobs = dict(re.findall(r"^(\w+)\s+(\d+)\s*$", table, flags=re.MULTILINE))
    return {rule: int(n) for rule, n in jobs.items() if rule != "total"}


def tiny_config(workdir: Path, **overrides: object) -> Path:
    """A config for 4 + 1 demo subjects at 4 mm with the symmetry channel, 2 folds, two U-Nets and a DNP of a
    few iterations."""
    config = {
        "dataset": "demo",
        "demo": {"n_train": N_TRAIN, "n_test": N_TEST, "spacing": 4.0},
        # the cohort's own 4 mm (config/cpu.yaml says 3 mm); the symmetry channel as the demo has it, so
        # training, prediction and the entry's infer/verify all see a second channel made the same way
        "preprocess": {"target_spacing": None, "symmetry": True},
        "splits": {"n_folds": 2},
        "threads": THREADS,
        "models": [
            {"name": "unet_sigmoid", "type": "unet", "params": {"head": "sigmoid", **TINY_UNET}},
            {"name": "unet_softmax", "type": "unet", "params": {"head": "softmax", **TINY_UNET}},
            {"name": "dnp", "type": "dnp", "threshold": 0.35, "params": TINY_DNP},
        ],
        "ensemble": {"weights": {"unet_sigmoid": 2.0}, "min_component_voxels": 2},
        **overrides,
    }
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


# --- threads in use, from the benchmark files ---------------------------------------------------------

# Benchmark files are written when a job's command ends; its `s` column is the command's wall time. The
# next job of a core starts only after that, so intervals of jobs that ran one after the other touch at
# most; this slack only absorbs the rounding of `s` and of file times.
SLACK_S = 0.25


def job_intervals(benchmarks: Path, threads: dict[str, int]) -> list[tuple[float, float, int, str]]:
    """``(start, end, threads, file)`` of every job: end = the benchmark file's mtime, start = end - s.

    Files lie in ``benchmarks/{rule}/...``; a rule's threads are ``threads[rule]`` (train, predict; the
    test batch's predict_test as predict), else 1.
    """
    jobs = []
    for path in sorted(benchmarks.rglob("*.tsv")):
        rule = path.relative_to(benchmarks).parts[0]
        end = path.stat().st_mtime
        seconds = float(pd.read_csv(path, sep="\t")["s"].iloc[-1])
        jobs.append((end - seconds, end, threads.get(rule.removesuffix("_test"), 1), str(path)))
    return jobs


def peak_threads(jobs: list[tuple[float, float, int, str]], slack: float = SLACK_S) -> tuple[int, list[str]]:
    """Most threads in use at any moment (a sweep over the job intervals) and the jobs running then."""
    events = []
    for start, end, threads, name in jobs:
        if end - start > 2 * slack:
            events += [(start + slack, 1, threads, name), (end - slack, 0, threads, name)]
    running: dict[str, int] = {}
    peak, peak_jobs = 0, []
    for _, is_start, threads, name in sorted(events):  # at one instant, ends (0) before starts (1)
        if is_start:
            running[name] = threads
            if sum(running.values()) > peak:
                peak, peak_jobs = sum(running.values()), sorted(running)
        else:
            running.pop(name)
    return peak, peak_jobs


def test_peak_threads_sweep() -> None:
    one_after_other = [(0.0, 10.0, 2, "a"), (10.0, 20.0, 2, "b"), (10.0, 15.0, 0, "c")]
    assert peak_threads(one_after_other)[0] == 2
    together = [(0.0, 10.0, 2, "a"), (5.0, 20.0, 2, "b"), (6.0, 7.0, 1, "c")]
    assert peak_threads(together) == (5, ["a", "b", "c"])
    assert peak_threads([(0.0, 10.0, 1, "a"), (9.9, 20.0, 1, "b")])[0] == 1  # within the slack


# --- dry runs ------------------------------------------------------------------------------------------


def test_dry_run_and_lint_of_default_config(repo: Path, tmp_path: Path) -> None:
    dry = snakemake(repo, tmp_path, "-n", "--cores", "1")
    assert dry.returncode == 0, dry.stderr
    lint = snakemake(repo, tmp_path, "--lint")
    assert lint.returncode == 0, lint.stdout + lint.stderr
    assert "Congratulations" in lint.stdout + lint.stderr, lint.stdout + lint.stderr


def fake_finished_ingest(
    workdir: Path,
    n_train: int = 4,
    n_test: int = 1,
    n_folds: int = 2,
    shape: tuple[int, int, int] = (20, 20, 20),
) -> None:
    """The demo folder, cohort table, fingerprint (every image ``shape`` voxels of 4 mm) and splits of a run
    whose ingest and splits are done (image files empty)."""
    results = workdir / "results"
    (results / "demo").mkdir(parents=True)
    ids = [f"s{i}" for i in range(n_train + n_test)]
    rows = ["subject\trole\timage_0000\tlabel"]
    for i, subject in enumerate(ids):
        image = results / "demo" / f"{subject}_0000.nii.gz"
        image.touch()
        label = results / "demo" / f"{subject}.nii.gz" if i < n_train else ""
        if label:
            label.touch()
        rows.append(f"{subject}\t{'train' if label else 'test'}\t{image}\t{label}")
    (results / "subjects.tsv").write_text("\n".join(rows) + "\n")
    spacing = [4.0, 4.0, 4.0]
    fingerprint = {
        "channels": {"0": "T1"},
        "labels": {"background": 0, "lesion": 1},
        "n_train": n_train,
        "n_test": n_test,
        "spacings": {s: spacing for s in ids},
        "median_spacing": spacing,
        "shapes": {s: list(shape) for s in ids},
        "median_shape": list(shape),
        "foreground_voxels": {s: 10 for s in ids[:n_train]},
    }
    (results / "fingerprint.json").write_text(json.dumps(fingerprint))
    folds = [ids[:n_train][k::n_folds] for k in range(n_folds)]
    splits = [{"train": [s for f in folds if f is not val for s in f], "val": val} for val in folds]
    (results / "splits.json").write_text(json.dumps(splits))


# Started by Python before Snakemake (a sitecustomize module on PYTHONPATH): any import of torch or pandas
# while code of this repository is on the stack fails. Snakemake's own plugins may import pandas (the
# SLURM executor plugin does, for its efficiency report): those imports are theirs, not the workflow's.
IMPORT_GUARD = """
import builtins, sys
_import = builtins.__import__

def _guarded(name, globals=None, locals=None, fromlist=(), level=0):
    if level == 0 and name.partition(".")[0] in {blocked}:
        frame = sys._getframe(1)
        while frame is not None:
            if frame.f_code.co_filename.startswith({repo!r}):
                raise ImportError(name + " imported while the workflow was planned")
            frame = frame.f_back
    return _import(name, globals, locals, fromlist, level)

builtins.__import__ = _guarded
"""


def test_snakefile_parses_without_torch_or_pandas(repo: Path, tmp_path: Path) -> None:
    """The environment that runs Snakemake (a cluster's login node, say) needs neither torch nor pandas for
    the workflow: parsing the Snakefile, checking every model spec and building the whole DAG (input
    functions that read the cohort table and the splits, resource functions that read the fingerprint)
    import neither."""
    guard = tmp_path / "guard"
    guard.mkdir()
    (guard / "sitecustomize.py").write_text(IMPORT_GUARD.format(blocked={"torch", "pandas"}, repo=str(repo)))
    workdir = tmp_path / "run"
    fake_finished_ingest(workdir)
    config = tiny_config(workdir)
    dry = snakemake(
        repo, workdir, "-n", "--cores", "2", "--configfile", str(config), env={"PYTHONPATH": str(guard)}
    )
    assert planned_jobs(dry)["train"] == 3 * 3, dry.stdout + dry.stderr  # every fold and the final model
    assert "imported while the workflow was planned" not in dry.stdout + dry.stderr


def test_import_guard_catches_the_workflow_importing_torch(repo: Path, tmp_path: Path) -> None:
    """The guard of the test above fails a workflow that imports torch while it is planned."""
    guard = tmp_path / "guard"
    guard.mkdir()
    (guard / "sitecustomize.py").write_text(IMPORT_GUARD.format(blocked={"json"}, repo=str(repo)))
    dry = snakemake(repo, tmp_path, "-n", "--cores", "1", env={"PYTHONPATH": str(guard)})
    assert dry.returncode != 0 and "json imported while the workflow was planned" in dry.stdout + dry.stderr


def planned_resources(run: subprocess.CompletedProcess, rule: str) -> list[dict[str, str]]:
    """The resources of every job of ``rule`` that a dry run prints, each with its wildcards as ``job``."""
    blocks = re.findall(
        rf"^rule {rule}:\n(.*?)(?:\n\n|\Z)", run.stdout + run.stderr, flags=re.MULTILINE | re.DOTALL
    )
    jobs = []
    for block in blocks:
        line = re.search(r"resources: (.*)", block).group(1)
        wildcards = re.search(r"wildcards: (.*)", block)
        jobs.append(
            {**dict(item.split("=", 1) for item in line.split(", ")), "job": wildcards and wildcards.group(1)}
        )
    return jobs


def test_requests_follow_cohort_and_settings(repo: Path, tmp_path: Path) -> None:
    """Memory and time requests grow with the images (fingerprint), the batch and the model's iterations;
    GPUs are requested by training and prediction only, and by none with `device: cpu`."""

    def plan(name: str, shape: tuple[int, int, int], n_train: int, **overrides: object) -> dict[str, list]:
        workdir = tmp_path / name
        fake_finished_ingest(workdir, n_train=n_train, shape=shape)
        config = tiny_config(workdir, **overrides)
        dry = snakemake(repo, workdir, "-n", "--cores", "2", "--configfile", str(config))
        assert dry.returncode == 0, dry.stderr[-3000:]
        return {rule: planned_resources(dry, rule) for rule in ("preprocess", "train", "predict", "evaluate")}

    small = plan("small", (20, 20, 20), 4)
    large = plan("large", (200, 200, 200), 40)
    for rule in ("preprocess", "train", "predict", "evaluate"):  # the same job (wildcards) in both cohorts
        small_jobs = {r["job"]: int(r["mem_mb"]) for r in small[rule]}
        large_jobs = {r["job"]: int(r["mem_mb"]) for r in large[rule]}
        assert small_jobs.keys() & large_jobs.keys(), rule
        for job in small_jobs.keys() & large_jobs.keys():
            assert large_jobs[job] > small_jobs[job], (rule, job)
    assert max(int(r["runtime"]) for r in large["evaluate"]) > max(
        int(r["runtime"]) for r in small["evaluate"]
    )
    assert all(r["gpu"] == "1" for rule in ("train", "predict") for r in small[rule])
    assert all("gpu" not in r for r in small["preprocess"] + small["evaluate"])
    models = [{"name": "u", "type": "unet", "params": {"head": "sigmoid", **TINY_UNET, "iterations": 50_000}}]
    cpu = plan("cpu", (20, 20, 20), 4, device="cpu", models=models, ensemble={})
    assert all(r["gpu"] == "0" for rule in ("train", "predict") for r in cpu[rule])
    assert min(int(r["runtime"]) for r in cpu["train"]) > max(int(r["runtime"]) for r in small["train"])


def test_training_requests_follow_the_plans(repo: Path, tmp_path: Path) -> None:
    """A model that leaves its sizes to the plan is costed with the planned ones once plans.json exists
    (a job's resources are evaluated again when it is ready to run, after the plan)."""
    fake_finished_ingest(tmp_path)
    models = [{"name": "u", "type": "unet", "params": {"head": "sigmoid", "iterations": 2000}}]
    config = tiny_config(tmp_path, device="cpu", models=models, ensemble={})

    def train_request() -> tuple[int, int]:
        target = "results/models/u/fold_0/model.pt"
        dry = snakemake(repo, tmp_path, target, "-n", "--cores", "2", "--configfile", str(config))
        job = planned_resources(dry, "train")[0]
        return int(job["mem_mb"]), int(job["runtime"])

    unplanned = train_request()  # before planning: the class defaults (48^3 patches, batch 2)
    planned = {"patch_size": [96, 96, 96], "batch_size": 8, "n_stages": 4, "base_features": 8}
    (tmp_path / "results" / "plans.json").write_text(json.dumps({"models": {"unet": {"params": planned}}}))
    assert train_request()[1] > 10 * unplanned[1]


def test_dnp_requests_follow_its_planned_sizes(repo: Path, tmp_path: Path) -> None:
    """A DNP that leaves its sizes to the plan (as config/config.yaml's does) is costed with the planned
    patch per level, depth, blocks and batch: larger planned sizes ask for more memory and time."""
    fake_finished_ingest(tmp_path)
    models = [{"name": "d", "type": "dnp", "params": {"train": {"num_its": 200}}}]
    config = tiny_config(tmp_path, device="cpu", models=models, ensemble={})

    def train_request(crop: dict, batch: int) -> tuple[int, int]:
        blocks = {"block_features": 16, "block_max_features": 128, "block_stages": 4}
        planned = {"crop": crop, "model": blocks, "train": {"batch_size": batch}}
        (tmp_path / "results" / "plans.json").write_text(json.dumps({"models": {"dnp": {"params": planned}}}))
        target = "results/models/d/fold_0/model.pt"
        dry = snakemake(repo, tmp_path, target, "-n", "--cores", "2", "--configfile", str(config))
        assert dry.returncode == 0, dry.stdout + dry.stderr
        job = planned_resources(dry, "train")[0]
        return int(job["mem_mb"]), int(job["runtime"])

    def crop(patch: int, depth: int) -> dict:
        return {"depth": depth, "scheme": {"patch_size": [patch] * 3, "fov_rel": 1.0, "destvox_rel": 1.0}}

    small = train_request(crop(16, 2), 2)
    large = train_request(crop(48, 3), 8)
    assert large[0] > small[0] and large[1] > small[1]


@pytest.mark.parametrize("overlay", [None, "atlas2.yaml", "demo_dnp.yaml"])
def test_shipped_configs_plan(repo: Path, tmp_path: Path, overlay: str | None) -> None:
    """Every model of a shipped config (the default with the demo overlay, atlas2, demo_dnp) parses (the
    Snakefile parses them all) and the DAG builds."""
    extra = ["--configfile", str(repo / "config" / overlay)] if overlay else []
    dry = snakemake(repo, tmp_path, "-n", "--cores", "1", *extra, "--config", "dataset=demo")
    assert dry.returncode == 0, dry.stdout + dry.stderr


def test_the_default_config_on_a_dataset_plans_the_dnp_beside_the_u_nets(repo: Path, tmp_path: Path) -> None:
    """config/config.yaml alone, on a dataset of one's own (no demo overlay): the DAG trains a DNP on every
    fold and for the entry, beside the two U-Nets."""
    from patchwork.data.demo import make_demo_dataset

    source = make_demo_dataset(tmp_path / "raw", n_train=5, n_test=0, spacing=8.0, seed=2)
    dataset = f"dataset={source}"
    first = snakemake(repo, tmp_path, "--cores", "2", "--config", dataset, "--", "results/plans.json",
                      "results/splits.json")  # fmt: skip
    assert first.returncode == 0, first.stdout + first.stderr
    plans = json.loads((tmp_path / "results" / "plans.json").read_text())["models"]
    assert plans["dnp"]["params"]["crop"]["depth"] >= 1 and plans["dnp"]["params"]["train"]["batch_size"] >= 2
    dry = snakemake(repo, tmp_path, "-n", "--cores", "1", "--config", dataset)
    jobs = planned_jobs(dry)
    assert jobs["train"] == 3 * (5 + 1)  # three models, five folds and the entry's final training
    assert "results/models/dnp/fold_all/model.pt" in dry.stdout + dry.stderr


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"splits": {"n_folds": 1}}, "n_folds"),
        ({"models": [{"name": "dnp", "type": "dnp", "apply": {"windows": "cos"}}]}, "windows"),
        ({"models": [{"name": "u", "type": "unet", "params": {"patch_size": [30, 32, 32]}}]}, "patch_size"),
        ({"models": [{"name": "u", "type": "unet", "threshold": 1.5}]}, "threshold"),
    ],
)
def test_bad_config_is_rejected_before_any_job(repo: Path, tmp_path: Path, overrides, message) -> None:
    config = tiny_config(tmp_path, **overrides)
    run = snakemake(repo, tmp_path, "-n", "--cores", "1", "--configfile", str(config))
    assert run.returncode != 0
    assert message in run.stdout + run.stderr
    assert not (tmp_path / "results").exists()


# --- ingest's inputs are the dataset's files ---------------------------------------------------------------


def load_workflow_inputs(repo: Path):
    """The workflow's helper module workflow/inputs.py (not part of the installed package)."""
    spec = importlib.util.spec_from_file_location("workflow_inputs", repo / "workflow" / "inputs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_dataset_files_of_folder_and_manifest(repo: Path, tmp_path: Path) -> None:
    inputs = load_workflow_inputs(repo)
    folder = tmp_path / "raw"
    (folder / "imagesTr").mkdir(parents=True)
    (folder / ".cache").mkdir()
    for name in ("dataset.json", "imagesTr/a_0000.nii.gz", ".cache/x", ".DS_Store"):
        (folder / name).write_text("x")
    assert inputs.dataset_files(folder) == [
        str(folder / "dataset.json"),
        str(folder / "imagesTr/a_0000.nii.gz"),
    ]
    assert inputs.dataset_files(tmp_path / "missing") == [str(tmp_path / "missing")]

    manifest = tmp_path / "cohort.csv"
    manifest.write_text(
        "Subject,t1,flair,label,group\n"
        "a,raw/imagesTr/a_0000.nii.gz,/nowhere/a_flair.nii.gz,raw/dataset.json,site1\n"
        "b,raw/imagesTr/a_0000.nii.gz,,,raw/dataset.json\n"
    )
    named = [str(folder / "dataset.json"), str(folder / "imagesTr/a_0000.nii.gz")]
    # The manifest and the files it names that exist (a group cell is no file; missing files are ingest's).
    assert inputs.dataset_files(manifest) == [str(manifest), *named]


def test_new_or_replaced_dataset_file_reruns_ingest(repo: Path, tmp_path: Path) -> None:
    from patchwork.data.demo import make_demo_dataset

    source = make_demo_dataset(tmp_path / "raw", n_train=3, n_test=0, spacing=4.0, seed=1)
    images = sorted((source / "imagesTr").glob("*.nii.gz"))
    labels = sorted((source / "labelsTr").glob("*.nii.gz"))
    manifest = tmp_path / "cohort.csv"
    rows = "".join(f"m{i},{image},{label}\n" for i, (image, label) in enumerate(zip(images, labels)))
    manifest.write_text("subject,image,label\n" + rows)

    def replace(path: Path) -> None:
        """The image written anew with other intensities (Snakemake ignores a newer file of equal content)."""
        image = nib.load(path)
        nib.save(nib.Nifti1Image(np.asanyarray(image.dataobj) * 2, image.affine, image.header), path)

    def ingest(workdir: Path, dry: bool) -> subprocess.CompletedProcess:
        """Run (or plan) the workflow up to the cohort table."""
        config = ("--configfile", str(workdir / "config.yaml"))
        return snakemake(
            repo, workdir, "results/subjects.tsv", *(["-n"] if dry else []), "--cores", "1", *config
        )

    for dataset in (manifest, source):
        workdir = tmp_path / f"run_{dataset.name}"
        workdir.mkdir()
        tiny_config(workdir, dataset=str(dataset))
        run = ingest(workdir, dry=False)
        assert run.returncode == 0, run.stdout + run.stderr
        assert planned_jobs(ingest(workdir, dry=True)) == {}

        replace(images[0])  # a file the manifest names, or one of the folder
        dry = ingest(workdir, dry=True)
        assert planned_jobs(dry) == {"ingest": 1} and "Updated input files" in dry.stdout, dry.stdout
        run = ingest(workdir, dry=False)
        assert run.returncode == 0, run.stdout + run.stderr

    # A file added to the folder: a test image, older than the cohort table (copy2 keeps its time).
    (source / "imagesTs").mkdir()
    shutil.copy2(images[1], source / "imagesTs" / "test_001_0000.nii.gz")
    dry = ingest(tmp_path / "run_raw", dry=True)
    assert planned_jobs(dry) == {"ingest": 1}, dry.stdout
    assert "Set of input files has changed" in dry.stdout, dry.stdout


def test_broken_dataset_stops_at_ingest_with_one_line(repo: Path, tmp_path: Path) -> None:
    from patchwork.data.demo import make_demo_dataset

    source = make_demo_dataset(tmp_path / "raw", n_train=3, n_test=0, spacing=4.0, seed=1)
    label = next((source / "labelsTr").glob("*.nii.gz"))
    label.unlink()
    config = tiny_config(tmp_path, dataset=str(source))
    run = snakemake(repo, tmp_path, "--cores", "1", "--configfile", str(config))
    assert run.returncode != 0
    assert label.name in run.stdout + run.stderr
    log = (tmp_path / "logs" / "ingest.log").read_text()
    assert label.name in log and "Traceback" not in log
    assert not (tmp_path / "results" / "subjects.tsv").exists()


def test_crash_of_a_command_reaches_the_rule_log(repo: Path, tmp_path: Path) -> None:
    """Even a command line that fails to import writes its traceback, once, into the rule's log file."""
    broken = tmp_path / "broken" / "patchwork"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text("raise RuntimeError('the package is broken')\n")
    workdir = tmp_path / "run"
    workdir.mkdir()
    config = tiny_config(workdir)
    run = snakemake(
        repo, workdir, "--cores", "1", "--configfile", str(config), env={"PYTHONPATH": str(broken.parent)}
    )
    assert run.returncode != 0
    log = (workdir / "logs" / "demo.log").read_text()
    assert log.count("Traceback") == 1 and log.count("RuntimeError: the package is broken") == 1, log


# --- the whole workflow ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_whole_workflow_on_tiny_cohort(repo: Path, tmp_path: Path) -> None:
    config = tiny_config(tmp_path)
    run = snakemake(repo, tmp_path, "--cores", str(CORES), "--configfile", str(config))
    assert run.returncode == 0, run.stderr[-5000:]
    results = tmp_path / "results"

    # Jobs together never used more threads than --cores (snakemake 9.15 started two `threads: 2`
    # trainings at once on 2 cores: snakemake/snakemake#3913).
    jobs = job_intervals(results / "benchmarks", THREADS)
    peak, together = peak_threads(jobs)
    assert peak <= CORES, f"{peak} threads in use on {CORES} cores: {together}"
    # A benchmark file for every rule (but `all`).
    rules = {Path(j[3]).relative_to(results / "benchmarks").parts[0] for j in jobs}
    assert rules == {
        "demo", "ingest", "preprocess", "plan", "splits", "train", "predict", "predict_test", "ensemble",
        "ensemble_test", "tune_ensemble", "ensemble_tuned", "tune_postprocessing", "postprocess", "evaluate",
        "summarise", "report", "package_entry",
    }  # fmt: skip

    subjects = read_subjects(results / "subjects.tsv")
    train = [s for s in subjects if s.role == "train"]
    test = [s for s in subjects if s.role == "test"]
    assert len(train) == N_TRAIN and len(test) == N_TEST

    # Preprocessing writes one declared folder per subject.
    for s in subjects:
        folder = results / "preprocessed" / s.subject
        assert (folder / "record.json").is_file() and (folder / "image_0000.nii.gz").is_file()
        assert (folder / "seg.nii.gz").is_file() == (s.role == "train")

    splits = json.loads((results / "splits.json").read_text())
    assert len(splits) == 2
    assert sorted(sum((f["val"] for f in splits), [])) == sorted(s.subject for s in train)
    # Out-of-fold work runs per batch: fold K's validation subjects, in predictions/{model}/fold_K/.
    batch = {subject: f"fold_{k}" for k, fold in enumerate(splits) for subject in fold["val"]}

    for model in MODELS:
        for fold in ["0", "1", "all"]:
            fold_dir = results / "models" / model / f"fold_{fold}"
            for name in ("model.pt", "train_log.tsv", "curve.png", "spec.json"):
                assert (fold_dir / name).is_file(), fold_dir / name
            assert not (fold_dir / "checkpoint.pt").exists()

    def assert_same_grid(path: Path, reference: Path) -> None:
        pred, ref = nib.load(path), nib.load(reference)
        assert pred.shape == ref.shape, path
        np.testing.assert_allclose(pred.affine, ref.affine, atol=1e-6, err_msg=str(path))

    for s in train:
        for model in [*MODELS, "ensemble", "ensemble_tuned"]:
            for kind in ("prob", "seg"):
                path = results / "predictions" / model / batch[s.subject] / f"{s.subject}_{kind}.nii.gz"
                assert_same_grid(path, s.images[0])
        assert_same_grid(
            results / "predictions" / "dnp" / batch[s.subject] / f"{s.subject}_std.nii.gz", s.images[0]
        )
        seg_path = results / "predictions" / "ensemble" / batch[s.subject] / f"{s.subject}_seg.nii.gz"
        assert set(np.unique(np.asarray(nib.load(seg_path).dataobj))) <= {0, 1}
        page = results / "reports" / batch[s.subject] / f"{s.subject}.html"
        assert s.subject in page.read_text() and "data:image/png;base64," in page.read_text()
        assert unresolved_links(page) == []

    metrics = pd.concat(pd.read_csv(results / "metrics" / f"fold_{k}.tsv", sep="\t") for k in range(2))
    assert sorted(set(metrics["subject"])) == sorted(s.subject for s in train)
    for s in test:
        for model in [*MODELS, "ensemble"]:
            for kind in ("prob", "seg"):
                path = results / "entry" / "predictions" / model / f"{s.subject}_{kind}.nii.gz"
                assert_same_grid(path, s.images[0])
        assert_same_grid(
            results / "entry" / "predictions" / "ensemble" / f"{s.subject}_seg.nii.gz", s.images[0]
        )

    summary = pd.read_csv(results / "summary.tsv", sep="\t")
    postprocessed = [f"{m}_pp" for m in MODELS]
    assert set(summary["model"]) == {*MODELS, "ensemble", "ensemble_tuned", *postprocessed}
    dice = summary[summary["metric"] == "dice"]
    assert len(dice) == 5 + len(MODELS) and dice["n"].eq(N_TRAIN).all()
    # Each model's post-processing: tuned on its out-of-fold predictions, applied to its masks, shipped.
    for model in MODELS:
        chosen = json.loads((results / "postprocessing" / f"{model}.json").read_text())
        assert chosen["mean_dice"] >= chosen["untouched"]["mean_dice"] - 1e-9
        for s in train:
            path = results / "predictions" / f"{model}_pp" / batch[s.subject] / f"{s.subject}_seg.nii.gz"
            assert_same_grid(path, s.images[0])
        shipped = results / "entry" / "models" / model / "postprocessing.json"
        assert json.loads(shipped.read_text()) == chosen
    tuned = json.loads((results / "ensemble_params.json").read_text())
    assert tuned["mean_dice"] >= tuned["hand_set"]["mean_dice"] - 1e-9

    # Every size the config leaves out comes from the plans; what it writes wins (spec.json: what was used).
    plans = json.loads((results / "plans.json").read_text())
    written = {m["name"]: m for m in yaml.safe_load(config.read_text())["models"]}
    for model in MODELS:
        used = json.loads((results / "models" / model / "fold_0" / "spec.json").read_text())
        raw = {k: written[model][k] for k in ("name", "type", "params")}
        assert used == parse_spec(planned_spec(raw, plans), "test").training_dict()
    assert "max_features" not in TINY_UNET  # so the U-Nets' comes from the plan
    unet_used = json.loads((results / "models" / "unet_softmax" / "fold_0" / "spec.json").read_text())
    assert unet_used["params"]["max_features"] == plans["models"]["unet"]["params"]["max_features"]

    assert unresolved_links(results / "report.html") == []
    cohort = (results / "report.html").read_text()
    assert 'id="plans-table"' in cohort
    convergence = cohort[cohort.index('id="convergence-table"') :]
    convergence = convergence[: convergence.index("</table>")]
    assert all(f'<td class="name">{model}</td>' in convergence for model in MODELS)  # every fold validated
    assert all(f"reports/{batch[s.subject]}/{s.subject}.html" in cohort for s in train)
    assert (results / "plots" / "metrics.png").is_file() and (
        results / "plots" / "learning_curves.png"
    ).is_file()

    manifest = json.loads((results / "entry" / "manifest.json").read_text())
    assert manifest["models"] == sorted(MODELS)
    packaged = {f"models/{m}/model.pt" for m in MODELS}
    assert packaged <= set(manifest["files"])
    assert all(len(v["sha256"]) == 64 for v in manifest["files"].values())
    # The entry is complete: its checksums hold and, at its default thread count (the one the workflow
    # predicted with, recorded in the entry), it re-predicts its example case byte for byte, with
    # the tuned ensemble the workflow used for the test images.
    assert "ensemble_params.json" in manifest["files"]
    assert main(["verify", str(results / "entry")]) == 0

    again = snakemake(repo, tmp_path, "-n", "--cores", str(CORES), "--configfile", str(config))
    assert planned_jobs(again) == {}

    # A model's threshold and application settings are prediction's: changing them re-predicts that
    # model (and what depends on its predictions), and retrains nothing.
    changed = yaml.safe_load(config.read_text())
    changed["models"][0]["threshold"] = 0.4
    changed["models"][2]["apply"] = {"num_patches": 2}
    (tmp_path / "changed.yaml").write_text(yaml.safe_dump(changed))
    dry = snakemake(
        repo, tmp_path, "-n", "--cores", str(CORES), "--configfile", str(tmp_path / "changed.yaml")
    )
    planned = planned_jobs(dry)
    assert "train" not in planned, dry.stdout
    # unet_sigmoid and dnp: every batch (the two folds' and the test subjects'), one job each.
    assert planned["predict"] == 2 * 2 and planned["predict_test"] == 2, planned
    assert re.search(r"reason: .*Params have changed", dry.stdout), dry.stdout

    # A model added to a finished run trains on every fold and joins the ensemble.
    extra = yaml.safe_load(config.read_text())
    extra["models"].append({"name": "unet_extra", "type": "unet", "params": {"head": "sigmoid", **TINY_UNET}})
    config.write_text(yaml.safe_dump(extra))
    grown = snakemake(repo, tmp_path, "--cores", str(CORES), "--configfile", str(config))
    assert grown.returncode == 0, grown.stderr[-5000:]
    assert (
        planned_jobs(snakemake(repo, tmp_path, "-n", "--cores", str(CORES), "--configfile", str(config)))
        == {}
    )
    for s in train:
        path = results / "predictions" / "unet_extra" / batch[s.subject] / f"{s.subject}_prob.nii.gz"
        assert_same_grid(path, s.images[0])
    assert "unet_extra" in set(pd.read_csv(results / "summary.tsv", sep="\t")["model"])
    peak, together = peak_threads(job_intervals(results / "benchmarks", THREADS))
    assert peak <= CORES, f"{peak} threads in use on {CORES} cores: {together}"

"""Killed jobs: SIGKILL mid-training resumes to the very weights, leftovers of killed writes are removed,
writes reach the disk before their rename, a checkpoint is resumed only on the very same data, and a killed
workflow run again redoes only its unfinished jobs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from test_workflow import TINY_DNP, TINY_UNET, planned_jobs, snakemake, tiny_config

from patchwork import io
from patchwork.config import IngestSettings, PreprocessSettings, SplitSettings
from patchwork.errors import PatchworkError
from patchwork.models import parse_spec
from patchwork.stages import data, models
from patchwork.training.modelfile import read_checkpoint

SEED = 7
# One thread everywhere: the same arithmetic in every process, and no more than one core per process.
ONE_THREAD = {var: "1" for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
SPECS = {
    "unet": {"name": "unet", "type": "unet", "params": {
        **TINY_UNET, "iterations": 12, "checkpoint_every": 2, "val_every": 4, "val_patches": 2}},
    "dnp": {"name": "dnp", "type": "dnp", "params": {
        **TINY_DNP, "train": {**TINY_DNP["train"], "num_its": 6, "checkpoint_every": 1, "hard_mining": 0.5}}},
}  # fmt: skip
SPECS["dnp_parallel"] = json.loads(json.dumps(SPECS["dnp"]))
SPECS["dnp_parallel"]["params"]["train"]["parallel"] = True  # the very trees of "dnp", cropped ahead


def cube_case(seed: int, scale: float = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A 24^3 image ``[1, X, Y, Z]`` of noise with a bright 8^3 cube, its label map and a 2 mm affine;
    ``scale`` changes the intensities and no count."""
    image = np.random.default_rng(seed).normal(0, 0.3, (1, 24, 24, 24)).astype(np.float32)
    label = np.zeros((24, 24, 24), np.uint8)
    corner = 6 + 2 * seed
    label[corner : corner + 8, 8:16, 8:16] = 1
    image[0][label == 1] += 2.0
    return image * np.float32(scale), label, np.diag([2.0, 2.0, 2.0, 1.0])


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two cube subjects (a CSV manifest), ingested, preprocessed and split in 2 folds by the stages."""
    root = tmp_path_factory.mktemp("cohort")
    rows = ["subject,image,label"]
    for seed in (1, 2):
        image, label, affine = cube_case(seed)
        io.save_image(image[0], affine, root / f"c{seed}_image.nii.gz")
        io.save_image(label, affine, root / f"c{seed}_label.nii.gz", dtype=np.uint8)
        rows.append(f"c{seed},{root / f'c{seed}_image.nii.gz'},{root / f'c{seed}_label.nii.gz'}")
    (root / "cohort.csv").write_text("\n".join(rows) + "\n")
    files = {
        "subjects": root / "subjects.tsv",
        "preprocessed": root / "preprocessed",
        "splits": root / "splits.json",
    }
    fingerprint = root / "fingerprint.json"
    data.ingest(str(root / "cohort.csv"), files["subjects"], fingerprint, IngestSettings())
    for subject in ("c1", "c2"):
        out = files["preprocessed"] / subject
        data.preprocess(files["subjects"], subject, fingerprint, out, PreprocessSettings())
    data.splits(files["subjects"], files["splits"], SplitSettings(n_folds=2), seed=SEED)
    return files


def train_here(cohort: dict[str, Path], spec: dict, out_dir: Path) -> Path:
    """What ``patchwork train`` of :func:`start_training` does, run in this process on one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return models.train(
            parse_spec(spec, "test"), cohort["subjects"], cohort["preprocessed"], cohort["splits"], "0",
            out_dir, seed=SEED, device="cpu",
        )  # fmt: skip
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def uninterrupted(cohort: dict[str, Path], tmp_path_factory: pytest.TempPathFactory):
    """The weights and log of an uninterrupted training of a spec (a DNP's the same with ``parallel``)."""
    done: dict[str, tuple[dict[str, torch.Tensor], list[list[str]]]] = {}

    def result(kind: str) -> tuple[dict[str, torch.Tensor], list[list[str]]]:
        serial = kind.removesuffix("_parallel")
        if serial not in done:
            out_dir = tmp_path_factory.mktemp(f"uninterrupted_{serial}")
            done[serial] = state_dict(train_here(cohort, SPECS[serial], out_dir)), log_without_time(out_dir)
        return done[serial]

    return result


def start_training(cohort: dict[str, Path], spec: dict, out_dir: Path) -> subprocess.Popen:
    """``patchwork train`` of fold 0 (one training, one validation subject) as its own process, on one CPU
    thread; its output goes to :func:`training_log`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable, "-m", "patchwork.cli", "train", "--spec", json.dumps(spec),
        "--subjects", str(cohort["subjects"]), "--preprocessed", str(cohort["preprocessed"]),
        "--splits", str(cohort["splits"]), "--fold", "0", "--out-dir", str(out_dir),
        "--seed", str(SEED), "--threads", "1", "--device", "cpu",
    ]  # fmt: skip
    with open(training_log(out_dir), "a") as log:
        return subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **ONE_THREAD}
        )


def training_log(out_dir: Path) -> Path:
    """Where :func:`start_training` writes the output of the processes training into ``out_dir``."""
    return out_dir.parent / f"{out_dir.name}.log"


def finish(process: subprocess.Popen, out_dir: Path, timeout: float = 120) -> None:
    """Wait for a training process; fail with its log when it did not succeed."""
    assert process.wait(timeout=timeout) == 0, training_log(out_dir).read_text()[-3000:]


def children(pid: int) -> list[int]:
    """Ids of the processes whose parent is ``pid`` (Linux ``/proc``)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # ended meanwhile
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def kill_after_checkpoint(process: subprocess.Popen, checkpoint: Path, timeout: float = 120) -> list[int]:
    """SIGKILL ``process`` (not its children) as soon as ``checkpoint`` exists; return the ids of the
    children it had then."""
    deadline = time.monotonic() + timeout
    while not checkpoint.exists():
        assert process.poll() is None, f"training ended (status {process.returncode}) before a checkpoint"
        assert time.monotonic() < deadline, "no checkpoint written in time"
        time.sleep(0.01)
    orphans = children(process.pid)
    process.send_signal(signal.SIGKILL)
    process.wait()
    return orphans


def state_dict(model: Path) -> dict[str, torch.Tensor]:
    return torch.load(model, map_location="cpu", weights_only=True)["state_dict"]


def log_without_time(out_dir: Path) -> list[list[str]]:
    """``train_log.tsv`` without its wall-time column."""
    rows = [line.split("\t") for line in (out_dir / "train_log.tsv").read_text().splitlines()]
    keep = [i for i, name in enumerate(rows[0]) if name != "seconds"]
    return [[row[i] for i in keep] for row in rows]


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc to find the cropping worker")
@pytest.mark.parametrize("kind", list(SPECS))
def test_sigkill_mid_training_resumes_to_the_uninterrupted_weights(
    cohort: dict[str, Path], uninterrupted, tmp_path: Path, kind: str
) -> None:
    """A real ``patchwork train`` process killed with SIGKILL after a checkpoint and started again ends with
    bitwise the weights (and training log) of a training that was never interrupted; no process of the
    killed one lives on (the DNP's cropping worker of ``parallel`` included)."""
    out_dir = tmp_path / "killed"
    killed = start_training(cohort, SPECS[kind], out_dir)
    with ThreadPoolExecutor(1) as pool:  # kill at the first checkpoint while the reference trains here
        workers = pool.submit(kill_after_checkpoint, killed, out_dir / "checkpoint.pt")
        expected_weights, expected_log = uninterrupted(kind)
        workers = workers.result()
    assert not (out_dir / "model.pt").exists(), "killed too late: training had finished"
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = [pid for pid in workers if alive(pid)]
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert not left, f"processes of the killed training still run: {left}"

    finish(start_training(cohort, SPECS[kind], out_dir), out_dir)
    assert "resuming" in training_log(out_dir).read_text()
    assert not (out_dir / "checkpoint.pt").exists()
    assert not [p for p in out_dir.iterdir() if io.is_partial(p)]
    resumed = state_dict(out_dir / "model.pt")
    assert expected_weights.keys() == resumed.keys()
    for name, value in expected_weights.items():
        assert torch.equal(value, resumed[name]), name
    assert log_without_time(out_dir) == expected_log


# --- leftovers of killed writes ---------------------------------------------------------------------------

HOLD_WRITE = """
import sys, time
from patchwork.io import atomic_path
with atomic_path(sys.argv[1]) as tmp:
    tmp.write_bytes(b"half a checkpoint")
    print(tmp, flush=True)
    time.sleep(600)
"""


def killed_write(target: Path) -> Path:
    """The temporary file a process SIGKILLed in the middle of writing ``target`` leaves behind."""
    process = subprocess.Popen(
        [sys.executable, "-c", HOLD_WRITE, str(target)], stdout=subprocess.PIPE, text=True
    )
    partial = Path(process.stdout.readline().strip())
    process.send_signal(signal.SIGKILL)
    process.wait()
    process.stdout.close()
    assert partial.exists()
    return partial


def test_leftover_of_a_killed_write_is_removed_by_the_next_write(tmp_path: Path) -> None:
    target = tmp_path / "checkpoint.pt"
    partial = killed_write(target)
    assert partial.name.startswith(".checkpoint.") and partial.name.endswith(".pt")
    assert io.partial_target(partial) == target and io.is_partial(partial)
    legacy = tmp_path / ".checkpoint.ab_9xyzq.pt"  # a name of the mkstemp-based writer before
    legacy.write_bytes(b"")
    others = [
        tmp_path / n for n in ("checkpoint.pt.bak", ".checkpoint.ab12cd34.best.pt", ".cache", "model.pt")
    ]
    for other in others:
        other.write_bytes(b"keep")
    assert [io.is_partial(p) for p in others] == [False, True, False, False]  # .best.pt: another file's

    io.write_text(target, "new")
    assert target.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([target.name, *(p.name for p in others)])


def test_checkpoint_reader_removes_leftovers_and_names_an_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.pt"
    partial = killed_write(path)
    assert read_checkpoint(path, "patchwork-unet-checkpoint", 1, "U-Net checkpoint", {}) is None
    assert not partial.exists()

    for content in (b"", b"PK\x03\x04 truncated", None):
        if content is None:
            torch.save({"format": Path("not a tensor")}, path)  # refused by weights_only, over many lines
        else:
            path.write_bytes(content)
        with pytest.raises(PatchworkError) as err:
            read_checkpoint(path, "patchwork-unet-checkpoint", 1, "U-Net checkpoint", {})
        [line] = err.value.problems
        assert line.startswith(f"{path}: cannot read") and line.endswith(
            "delete it to start this training over"
        )
        assert "\n" not in line


def test_write_reaches_the_disk_before_the_rename_and_the_folder_after(tmp_path: Path, monkeypatch) -> None:
    """fsync of the file, then the rename, then fsync of the folder: after a power cut the name holds the old
    or the new content, never an empty file."""
    events: list[tuple[str, int]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append(("fsync", os.fstat(fd).st_ino))
        real_fsync(fd)

    def replace(src, dst) -> None:
        events.append(("replace", os.stat(src).st_ino))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    target = tmp_path / "out" / "model.json"
    io.write_json(target, {"weights": [1, 2]})
    file_inode, folder_inode = target.stat().st_ino, target.parent.stat().st_ino
    assert events == [("fsync", file_inode), ("replace", file_inode), ("fsync", folder_inode)]


# --- checkpoint identity: the data themselves -----------------------------------------------------------


class Stop(Exception):
    """Raised where training would write its curve, after the last checkpoint."""


def _stop(*args, **kwargs) -> None:
    raise Stop


def data_of(scale: float) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """Training images, label maps and affines of one cube subject, intensities times ``scale``."""
    image, label, affine = cube_case(1, scale)
    return [image], [label], [affine]


@pytest.mark.parametrize("kind", ["unet", "dnp"])
def test_checkpoint_is_not_resumed_on_other_data_of_the_same_counts(
    tmp_path: Path, monkeypatch, kind
) -> None:
    short = {"unet": {"iterations": 4}, "dnp": {"train": {**SPECS["dnp"]["params"]["train"], "num_its": 3}}}
    spec = parse_spec({**SPECS[kind], "params": {**SPECS[kind]["params"], **short[kind]}}, "test")
    train, module = spec.model_type.train_function, sys.modules[spec.model_type.train.split(":")[0]]
    monkeypatch.setattr(module, "plot_curve", _stop)
    with pytest.raises(Stop):
        train(spec.params, *data_of(1.0), tmp_path, SEED)
    assert (tmp_path / "checkpoint.pt").exists()
    other_data = r"checkpoint.pt: written by a training with different data_sha256; delete it"
    with pytest.raises(PatchworkError, match=other_data):
        train(spec.params, *data_of(1.5), tmp_path, SEED)
    with pytest.raises(Stop):  # the same data resume
        train(spec.params, *data_of(1.0), tmp_path, SEED)


# --- a killed workflow ------------------------------------------------------------------------------------


def descendants(pid: int) -> list[int]:
    """Ids of every process below ``pid`` (children, their children ...)."""
    found = children(pid)
    return found + [grandchild for child in found for grandchild in descendants(child)]


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc to kill every process")
def test_workflow_killed_mid_run_redoes_only_unfinished_jobs(repo: Path, tmp_path: Path) -> None:
    """``snakemake`` and all its jobs SIGKILLed (a lost machine) while one training has finished and another
    has a checkpoint: the same command again is refused in one line that says to ``--unlock`` (Snakemake
    cannot tell a stale lock from a running instance); after that it runs only the unfinished trainings, the
    killed one resuming from its checkpoint, and leaves every finished output as it was."""
    model = {"name": "unet", "type": "unet", "params": {**TINY_UNET, "iterations": 40, "checkpoint_every": 2}}
    demo = {"n_train": 2, "n_test": 0, "spacing": 8.0}
    config = tiny_config(tmp_path, demo=demo, models=[model], ensemble={}, threads={"train": 1, "predict": 1})
    folds = [tmp_path / "results" / "models" / "unet" / f"fold_{fold}" for fold in ("0", "1", "all")]
    targets = [str((fold / "model.pt").relative_to(tmp_path)) for fold in folds]
    command = (*targets, "--cores", "1", "--configfile", str(config))

    env = {**os.environ, "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]])}
    with open(tmp_path / "killed_run.log", "w") as log:
        run = subprocess.Popen(
            [sys.executable, "-m", "snakemake", "-s", str(repo / "Snakefile"), "-d", str(tmp_path), *command],
            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
        )  # fmt: skip

    def done(fold: Path) -> bool:
        """Trained to the end: a training writes ``model.pt`` before it removes its checkpoint, so a fold
        with both is still running (Snakemake has not recorded it) and would be redone."""
        return (fold / "model.pt").exists() and not (fold / "checkpoint.pt").exists()

    deadline = time.monotonic() + 240
    while not (
        any(done(fold) for fold in folds)
        and any((fold / "checkpoint.pt").exists() and not (fold / "model.pt").exists() for fold in folds)
    ):
        assert run.poll() is None, (tmp_path / "killed_run.log").read_text()[-3000:]
        assert time.monotonic() < deadline, "no finished and no killed training in time"
        time.sleep(0.02)
    jobs = descendants(run.pid)
    os.killpg(run.pid, signal.SIGKILL)  # snakemake and its jobs, at once
    for pid in filter(alive, jobs):  # any job that left the process group
        os.kill(pid, signal.SIGKILL)
    run.wait()
    finished = [fold for fold in folds if done(fold)]
    killed = [fold for fold in folds if (fold / "checkpoint.pt").exists()]
    kept = {
        p: p.stat().st_mtime_ns
        for p in (tmp_path / "results").rglob("*")
        if p.is_file() and not io.is_partial(p)
    }
    kept = {
        path: mtime for path, mtime in kept.items() if path.parent not in folds or path.parent in finished
    }

    locked = snakemake(repo, tmp_path, *command)
    assert locked.returncode != 0 and "--unlock" in locked.stdout + locked.stderr
    assert snakemake(repo, tmp_path, "--unlock", *command).returncode == 0
    assert planned_jobs(snakemake(repo, tmp_path, "-n", *command)) == {"train": len(folds) - len(finished)}
    again = snakemake(repo, tmp_path, *command)
    assert again.returncode == 0, again.stderr[-3000:]

    assert all((fold / "model.pt").exists() and not (fold / "checkpoint.pt").exists() for fold in folds)
    assert {path: path.stat().st_mtime_ns for path in kept} == kept
    for fold in killed:
        assert "resuming" in (tmp_path / "logs" / "train" / "unet" / f"{fold.name}.log").read_text()

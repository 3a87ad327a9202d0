"""The same config and seed give the same bytes: two runs of the tiny workflow are compared file by file."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from test_kill_resume import log_without_time
from test_workflow import TINY_DNP, TINY_UNET, snakemake, tiny_config

from patchwork.training.modelfile import write_model_file

MODELS = [
    {"name": "unet", "type": "unet", "params": {"head": "sigmoid", **TINY_UNET}},
    {"name": "dnp", "type": "dnp", "threshold": 0.35, "params": TINY_DNP},
]


def test_model_file_bytes_depend_on_the_content_only(tmp_path: Path) -> None:
    """Two writes of the same weights, each through its own temporary file, give the same bytes."""
    weights = {"format": "test", "state_dict": {"w": torch.arange(6.0).reshape(2, 3)}}
    write_model_file(tmp_path / "a" / "model.pt", weights)
    write_model_file(tmp_path / "b" / "model.pt", weights)
    assert (tmp_path / "a" / "model.pt").read_bytes() == (tmp_path / "b" / "model.pt").read_bytes()


@pytest.mark.slow
def test_two_runs_with_the_same_seed_give_the_same_bytes(repo: Path, tmp_path: Path) -> None:
    """Demo, preprocessing, a U-Net and a DNP on 2 folds, predictions (the DNP's spread maps included),
    ensembles, tuning, metrics and reports, twice from scratch in the same folder (results hold absolute
    paths): every file is the same, byte for byte, but the timings (``benchmarks/``, the wall-time column
    of ``train_log.tsv``)."""
    workdir, first = tmp_path / "run", tmp_path / "first"
    for run in ("first", "second"):
        workdir.mkdir()
        demo = {"n_train": 2, "n_test": 0, "spacing": 4.0}
        config = tiny_config(workdir, demo=demo, models=MODELS, ensemble={}, entry={"enabled": False})
        done = snakemake(repo, workdir, "--cores", "2", "--configfile", str(config))
        assert done.returncode == 0, done.stderr[-5000:]
        if run == "first":
            workdir.rename(first)

    def files(results: Path) -> list[str]:
        return sorted(
            str(p.relative_to(results))
            for p in results.rglob("*")
            if p.is_file() and "benchmarks" not in p.relative_to(results).parts
        )

    names = files(workdir / "results")
    assert names == files(first / "results")
    assert sum(name.endswith(("_std.nii.gz", "model.pt", "metrics.tsv")) for name in names) == 2 + 4 + 1
    differ = [
        name
        for name in names
        if (workdir / "results" / name).read_bytes() != (first / "results" / name).read_bytes()
    ]
    assert {Path(name).name for name in differ} <= {"train_log.tsv"}, differ
    for log in (name for name in names if name.endswith("train_log.tsv")):
        assert log_without_time((workdir / "results" / log).parent) == log_without_time(
            (first / "results" / log).parent
        )

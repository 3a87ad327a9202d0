"""The workflow on a real single-node SLURM cluster (the kit in ../shared/slurm): every job goes through
``sbatch``/``srun`` with ``--profile profiles/slurm``, and its predictions are byte-identical to a local run
of the same workflow. Skipped, with the reason, only where the cluster cannot be started (no kit, not root,
no SLURM executor plugin); with all three present, a cluster that fails to start fails the test."""

from __future__ import annotations

import filecmp
import importlib.util
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from test_workflow import TINY_UNET, snakemake, tiny_config

from patchwork.io import read_json

REPO = Path(__file__).resolve().parents[1]
SLURM_KIT = Path(os.environ.get("SLURM_KIT", REPO.parent / "shared" / "slurm"))
PARTITION = "debug"  # the kit's one partition


def _exports(text: str) -> dict[str, str]:
    """``export NAME=value`` lines of the start script's output."""
    pairs = (
        line.removeprefix("export ").split("=", 1) for line in text.splitlines() if line.startswith("export ")
    )
    return {name: value.strip("'\"") for name, value in pairs}


@pytest.fixture(scope="module")
def slurm_env() -> Iterator[dict[str, str]]:
    """The environment of a running test cluster: started here (and stopped after) unless CI started one."""
    start, stop = SLURM_KIT / "start-test-cluster.sh", SLURM_KIT / "stop-test-cluster.sh"
    if not start.is_file():
        pytest.skip(f"no SLURM test kit at {SLURM_KIT}")
    if os.geteuid() != 0:
        pytest.skip("the SLURM test cluster's daemons run as root")
    if importlib.util.find_spec("snakemake_executor_plugin_slurm") is None:
        pytest.skip("snakemake-executor-plugin-slurm is not installed")
    ours = "SLURM_CONF" not in os.environ
    run = subprocess.run(["bash", str(start)], capture_output=True, text=True, timeout=600)
    if run.returncode != 0:
        if ours:
            subprocess.run(["bash", str(stop)], capture_output=True, timeout=120)
        # the kit is here and may run: a cluster that does not start is a failure, not a skip
        pytest.fail(f"SLURM did not start: {(run.stderr.strip().splitlines() or ['?'])[-1]}")
    try:
        yield {**os.environ, **_exports(run.stdout)}
    finally:
        if ours:
            subprocess.run(["bash", str(stop)], capture_output=True, timeout=120)


def sacct_jobs(env: dict[str, str]) -> list[dict[str, str]]:
    """Every job of the cluster's accounting: name, state, partition and allocated resources."""
    fields = ["JobName", "State", "Partition", "AllocTRES", "Comment"]
    out = subprocess.run(
        [
            "sacct",
            "-X",
            "--parsable2",
            "--noheader",
            "--starttime",
            "now-1hour",
            f"--format={','.join(fields)}",
        ],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    ).stdout
    return [dict(zip(fields, line.split("|"))) for line in out.splitlines() if line]


def jobs_per_rule(sacct: list[dict[str, str]]) -> dict[str, int]:
    """SLURM jobs per rule, from the comment the plugin gives each (``rule_{name}[_wildcards_...]``)."""
    rules = [j["Comment"].removeprefix("rule_").split("_wildcards_")[0] for j in sacct]
    return {rule: rules.count(rule) for rule in set(rules)}


def jobs_per_rule_run(benchmarks: Path) -> dict[str, int]:
    """Jobs per rule of a finished local run: every job of a rule with a command writes a benchmark file
    (``benchmarks/{rule}/...``); the target rule and the preprocessing flag run inside Snakemake."""
    rules = [path.relative_to(benchmarks).parts[0] for path in benchmarks.rglob("*.tsv")]
    return {rule: rules.count(rule) for rule in set(rules)}


@pytest.mark.slow
def test_workflow_on_slurm_matches_local_run(repo: Path, tmp_path: Path, slurm_env: dict[str, str]) -> None:
    # The tiny workflow with one model (two folds, no test subjects, no tuning or post-processing).
    config = tiny_config(
        tmp_path,
        demo={"n_train": 4, "n_test": 0, "spacing": 4.0},
        device="cpu",
        models=[{"name": "unet", "type": "unet", "params": {"head": "sigmoid", **TINY_UNET}}],
        ensemble={"tune": False},
        postprocessing={"tune": False},
        entry={"enabled": False},
    )
    local, cluster = tmp_path / "local", tmp_path / "slurm"
    run = snakemake(repo, local, "--cores", "2", "--configfile", str(config))
    assert run.returncode == 0, run.stderr[-5000:]

    partitions = tmp_path / "partitions.yaml"
    partitions.write_text(yaml.safe_dump({"partitions": {PARTITION: {"max_threads": 2}}}))
    before = {(j["JobName"], j["Comment"]) for j in sacct_jobs(slurm_env)}
    run = snakemake(
        repo,
        cluster,
        "--profile",
        str(repo / "profiles" / "slurm"),
        "--slurm-partition-config",
        str(partitions),
        "--slurm-init-seconds-before-status-checks",
        "8",
        "--jobs",
        "4",
        "--configfile",
        str(config),
        env=slurm_env,
        timeout=900,
    )
    assert run.returncode == 0, (run.stdout + run.stderr)[-5000:]

    # Every job but the target rule ran as a SLURM job, on the CPU partition, without a GPU.
    submitted = [j for j in sacct_jobs(slurm_env) if (j["JobName"], j["Comment"]) not in before]
    assert jobs_per_rule(submitted) == jobs_per_rule_run(local / "results" / "benchmarks"), submitted
    assert all(j["State"] == "COMPLETED" and j["Partition"] == PARTITION for j in submitted), submitted
    assert not any("gpu" in j["AllocTRES"] for j in submitted), submitted

    # The same predictions, byte for byte, and the same metrics.
    predictions = [
        p.relative_to(local) for p in sorted((local / "results" / "predictions").rglob("*.nii.gz"))
    ]
    assert len(predictions) == 2 * 4 * 2, predictions  # unet and ensemble: 4 subjects, prob and seg
    for path in predictions:
        assert filecmp.cmp(local / path, cluster / path, shallow=False), path
    assert (local / "results" / "metrics.tsv").read_text() == (
        cluster / "results" / "metrics.tsv"
    ).read_text()
    assert read_json(cluster / "results" / "splits.json") == read_json(local / "results" / "splits.json")

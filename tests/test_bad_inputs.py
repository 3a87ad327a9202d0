"""Every kind of bad input is refused by ``patchwork ingest`` in one line per problem; valid ones pass.

The corpus lives in ``tests/bad_inputs.py``. A bad dataset must make the command exit with status 1,
print exactly one ``error: {file}: {problem}`` line per problem (and no traceback), and write nothing:
neither the cohort table nor the fingerprint, nor anything in the dataset. A valid one must pass, and
the 4-D single-volume subject must go through preprocessing too.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from bad_inputs import BAD, VALID, Built, first_image, image_data

from patchwork.cli import main
from patchwork.config import PreprocessSettings
from patchwork.data.cohort import read_subjects
from patchwork.data.preprocess import preprocess_subject


def snapshot(root: Path) -> dict[Path, tuple[int, int]]:
    """Size and modification time of every file under ``root``."""
    return {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*")) if p.is_file()}


def ingest_argv(built: Built, out: Path) -> list[str]:
    """The ``patchwork ingest`` command line of a corpus case, writing into ``out``."""
    argv = ["ingest", str(built.source), "--out", str(out / "subjects.tsv")]
    argv += ["--fingerprint", str(out / "fingerprint.json")]
    return argv + (["--settings", json.dumps(built.settings)] if built.settings else [])


def run_cli(built: Built, out: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """Run ``patchwork ingest`` in this process; its exit status and what it printed on stderr."""
    capsys.readouterr()
    status = main(ingest_argv(built, out))
    return status, capsys.readouterr().err


def assert_one_line_per_problem(built: Built, stderr: str) -> None:
    """Each expected (file, fragment) matches exactly one ``error:`` line, and no other line exists."""
    errors = [line[len("error: ") :] for line in stderr.splitlines() if line.startswith("error: ")]
    assert "Traceback" not in stderr, stderr
    assert len(errors) == len(built.expected), errors
    for where, fragment in built.expected:
        matching = [line for line in errors if line.startswith(f"{where}: ") and fragment in line]
        assert len(matching) == 1, (where, fragment, errors)


def test_the_corpus_is_large_enough() -> None:
    assert len(BAD) >= 30 and len(VALID) >= 5


@pytest.mark.parametrize("kind", list(BAD))
def test_bad_input_is_refused_in_one_line(
    kind: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    built = BAD[kind](tmp_path / "data")
    before = snapshot(tmp_path / "data")
    status, stderr = run_cli(built, tmp_path / "out", capsys)
    assert status == 1, stderr
    assert_one_line_per_problem(built, stderr)
    assert not (tmp_path / "out").exists()
    assert snapshot(tmp_path / "data") == before


@pytest.mark.parametrize("kind", list(VALID))
def test_awkward_valid_input_passes(kind: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    built = VALID[kind](tmp_path / "data")
    status, stderr = run_cli(built, tmp_path / "out", capsys)
    assert status == 0, stderr
    subjects = read_subjects(tmp_path / "out" / "subjects.tsv")
    assert [s.role for s in subjects] == ["train"] * built.n_train + ["test"] * built.n_test
    assert json.loads((tmp_path / "out" / "fingerprint.json").read_text())["n_train"] == built.n_train


def test_manifest_ids_that_pandas_would_read_as_missing_are_kept(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    built = VALID["manifest: ids NA, null and None; group NA"](tmp_path / "data")
    assert run_cli(built, tmp_path / "out", capsys)[0] == 0
    subjects = read_subjects(tmp_path / "out" / "subjects.tsv")
    assert [(s.subject, s.group) for s in subjects] == [("NA", "NA"), ("null", "NA"), ("None", "NA")]


def test_single_volume_4d_subject_is_preprocessed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    built = VALID["4-D image and label with one volume"](tmp_path / "data")
    assert run_cli(built, tmp_path / "out", capsys)[0] == 0
    subject = read_subjects(tmp_path / "out" / "subjects.tsv")[0]
    record = preprocess_subject(subject, tmp_path / "pre", PreprocessSettings(target_spacing=(4.0, 4.0, 4.0)))
    assert record["shape"] == [4, 4, 4]


def test_real_command_prints_one_line_without_traceback(tmp_path: Path) -> None:
    built = BAD["flipped bit inside a gzip stream"](tmp_path / "data")
    argv = [sys.executable, "-m", "patchwork.cli", *ingest_argv(built, tmp_path / "out")]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 1, done.stderr
    assert_one_line_per_problem(built, done.stderr)
    assert not (tmp_path / "out").exists()


def test_flipped_bit_would_otherwise_change_a_voxel(tmp_path: Path) -> None:
    """The corpus's flipped bit alters the data nibabel returns: only the CRC check catches it."""
    built = BAD["flipped bit inside a gzip stream"](tmp_path / "data")
    read = np.asarray(nib.load(first_image(built.source)).dataobj)
    assert np.count_nonzero(read != image_data()) == 1

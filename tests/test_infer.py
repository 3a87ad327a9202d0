"""`patchwork infer`'s input folder: both namings read, every problem found before a model runs, one line
each; and the table of time and peak memory per case."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from patchwork.cli import main
from patchwork.config import EnsembleSettings, IngestSettings, PreprocessSettings
from patchwork.entry.cases import find_cases
from patchwork.entry.infer import infer, usage_table
from patchwork.entry.layout import Entry
from patchwork.entry.resources import Usage, measure
from patchwork.errors import PatchworkError
from patchwork.io import save_image


def entry_of(channels: tuple[str, ...]) -> Entry:
    """An entry without models: all that reading an input folder needs."""
    return Entry(
        root=Path("entry"),
        version="0",
        channels=channels,
        labels={"background": 0, "lesion": 1},
        ingest=IngestSettings(),
        preprocess=PreprocessSettings(),
        models=(),
        ensemble=EnsembleSettings(),
        tuned=False,
        example=None,
    )


def scan(path: Path, shape: tuple[int, int, int] = (4, 5, 6), value: float = 1.0) -> Path:
    save_image(np.full(shape, value, dtype=np.float32), np.diag([2.0, 2.0, 2.0, 1.0]), path)
    return path


def problems_of(folder: Path, entry: Entry) -> list[str]:
    with pytest.raises(PatchworkError) as err:
        find_cases(folder, entry)
    return err.value.problems


def test_nnunet_channel_naming(tmp_path: Path) -> None:
    for case in ("b", "a"):
        for channel in range(2):
            scan(tmp_path / f"{case}_{channel:04d}.nii.gz")
    (tmp_path / "inputs.json").write_text("{}")
    cases = find_cases(tmp_path, entry_of(("T1", "FLAIR")))
    assert [c.subject for c in cases] == ["a", "b"]
    assert cases[0].images == (tmp_path / "a_0000.nii.gz", tmp_path / "a_0001.nii.gz")


def test_one_file_per_case_for_one_channel(tmp_path: Path) -> None:
    scan(tmp_path / "sub-01.nii.gz")
    scan(tmp_path / "scan_2.nii")
    cases = find_cases(tmp_path, entry_of(("T1",)))
    assert [(c.subject, c.images[0].name) for c in cases] == [
        ("scan_2", "scan_2.nii"),
        ("sub-01", "sub-01.nii.gz"),
    ]


def test_every_problem_of_the_folder_one_line_each(tmp_path: Path) -> None:
    scan(tmp_path / "a_0000.nii.gz")  # a_0001 missing
    scan(tmp_path / "b_0000.nii.gz")
    scan(tmp_path / "b_0001.nii.gz", shape=(4, 5, 7))  # another grid
    scan(tmp_path / "c_0000.nii.gz", value=np.nan)
    scan(tmp_path / "c_0001.nii.gz")
    scan(tmp_path / "d_0002.nii.gz")  # a third channel
    (tmp_path / "d_0000.nii.gz").write_bytes(b"not a nifti")
    scan(tmp_path / "d_0001.nii.gz")
    problems = problems_of(tmp_path, entry_of(("T1", "FLAIR")))
    expected = [
        ("d_0002.nii.gz", "channel 0002, but the entry's models take 2 (T1, FLAIR)"),
        ("a_0001.nii.gz", "file not found"),
        ("b_0001.nii.gz", "shape (4, 5, 7) differs"),
        ("c_0000.nii.gz", "NaN or infinite"),
        ("d_0000.nii.gz", "cannot read NIfTI"),
    ]
    assert len(problems) == len(expected), problems
    for (name, what), line in zip(expected, problems, strict=True):
        assert line.startswith(str(tmp_path / name)) and what in line, line


def test_plain_names_for_several_channels_and_an_empty_folder(tmp_path: Path) -> None:
    scan(tmp_path / "a.nii.gz")
    assert problems_of(tmp_path, entry_of(("T1", "FLAIR"))) == [
        f"{tmp_path}: the entry's models take 2 channels (T1, FLAIR); "
        "name each case's files {case}_0000.nii.gz ... {case}_0001.nii.gz"
    ]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert problems_of(empty, entry_of(("T1",))) == [f"{empty}: no NIfTI file (.nii, .nii.gz) to segment"]
    assert problems_of(tmp_path / "missing", entry_of(("T1",))) == [
        f"{tmp_path / 'missing'}: input folder not found"
    ]


def test_cli_names_a_missing_entry_in_one_line(tmp_path: Path, capsys) -> None:
    scan(tmp_path / "a.nii.gz")
    assert main(["infer", str(tmp_path), str(tmp_path / "out"), "--entry", str(tmp_path / "nowhere")]) == 1
    assert capsys.readouterr().err.strip() == f"error: {tmp_path / 'nowhere'}: entry folder not found"


def test_unwritable_output_is_one_line(tmp_path: Path, capsys) -> None:
    (tmp_path / "entry.json").write_text("{}")
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(PatchworkError, match="cannot create the output folder"):
        infer(tmp_path, tmp_path, blocker / "out")


def test_entry_json_problems_name_the_file(tmp_path: Path, capsys) -> None:
    (tmp_path / "entry.json").write_text('{"format": 99}')
    assert main(["verify", str(tmp_path)]) == 1  # the manifest is checked first
    assert capsys.readouterr().err.strip() == f"error: {tmp_path / 'manifest.json'}: file not found"
    with pytest.raises(PatchworkError, match=r"entry.json: format 99; this patchwork reads format 1"):
        Entry.load(tmp_path)


def test_peak_memory_is_measured_per_case() -> None:
    with measure("cpu") as small:
        np.ones(2**20, dtype=np.uint8).sum()
    with measure("cpu") as large:
        np.ones(2**28, dtype=np.uint8).sum()  # 256 MiB
    assert large.peak_rss - small.peak_rss > 200 * 2**20 or not large.per_case
    assert large.seconds > 0
    table = usage_table({"case-a": small, "b": Usage(seconds=1.5, peak_rss=3 * 2**20, per_case=True)})
    assert table.splitlines()[2].split() == ["b", "1.50", "3"]

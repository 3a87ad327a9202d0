"""NIfTI and text I/O: atomic writes, permissions, and one-line errors for unreadable files."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from patchwork.errors import PatchworkError
from patchwork.io import atomic_path, load_nifti, read_image, read_json, save_image, write_json


def test_failed_write_leaves_neither_output_nor_temporary(tmp_path: Path) -> None:
    target = tmp_path / "out" / "model.pt"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("killed")
    assert not target.exists()
    assert list(target.parent.iterdir()) == []


def test_outputs_get_umask_permissions(tmp_path: Path) -> None:
    write_json(tmp_path / "a.json", {"x": 1})
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o666 & ~umask
    assert read_json(tmp_path / "a.json") == {"x": 1}


def test_image_round_trip_keeps_grid_and_dtype(tmp_path: Path) -> None:
    affine = np.array([[0, -2.0, 0, 10], [1.5, 0, 0, -4], [0, 0, 3.0, 7], [0, 0, 0, 1]])
    data = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    save_image(data, affine, tmp_path / "seg.nii.gz", dtype=np.uint8)
    back, back_affine = read_image(tmp_path / "seg.nii.gz")
    np.testing.assert_array_equal(back, data)
    np.testing.assert_allclose(back_affine, affine)
    assert load_nifti(tmp_path / "seg.nii.gz").get_data_dtype() == np.uint8


def test_unreadable_files_name_the_file(tmp_path: Path) -> None:
    save_image(np.zeros((4, 4, 4), np.float32), np.eye(4), tmp_path / "ok.nii.gz")
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes((tmp_path / "ok.nii.gz").read_bytes()[:60])
    with pytest.raises(PatchworkError, match=r"broken.nii.gz: cannot read NIfTI"):
        load_nifti(broken)
    with pytest.raises(PatchworkError, match=r"missing.nii.gz: file not found"):
        load_nifti(tmp_path / "missing.nii.gz")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(PatchworkError, match=r"bad.json: not valid JSON"):
        read_json(tmp_path / "bad.json")

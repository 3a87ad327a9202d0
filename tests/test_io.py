"""NIfTI and text I/O: atomic writes, permissions, one-line errors for unreadable files, checked reads."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from patchwork.errors import PatchworkError
from patchwork.io import atomic_path, load_nifti, read_image, read_json, read_volume, save_image, write_json


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


def _stored_gzip(tmp_path: Path, name: str, trailing: bytes = b"") -> tuple[Path, np.ndarray]:
    """A float32 image written as a gzip of stored blocks (level 0), so a flipped bit keeps it readable."""
    data = np.arange(16**3, dtype=np.float32).reshape(16, 16, 16)  # larger than gzip's read-ahead
    save_image(data, np.eye(4), tmp_path / "plain.nii")
    path = tmp_path / name
    path.write_bytes(gzip.compress((tmp_path / "plain.nii").read_bytes() + trailing, compresslevel=0))
    return path, data


def test_checked_read_finds_a_flipped_bit_by_the_gzip_crc(tmp_path: Path) -> None:
    path, data = _stored_gzip(tmp_path, "flipped.nii.gz")
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x01  # a voxel in the middle of the stored block
    path.write_bytes(bytes(raw))
    assert np.count_nonzero(read_image(path)[0] != data) == 1  # a lazy read takes the wrong voxel
    with pytest.raises(PatchworkError, match=r"flipped.nii.gz: cannot read NIfTI \(corrupt gzip stream: CRC"):
        load_nifti(path, max_bytes=2**20)


def test_checked_read_stops_at_max_bytes(tmp_path: Path) -> None:
    bomb, _ = _stored_gzip(tmp_path, "bomb.nii.gz", trailing=bytes(3 * 2**20))
    with pytest.raises(PatchworkError, match=r"bomb.nii.gz: decompresses to more than 2 MiB"):
        load_nifti(bomb, max_bytes=2 * 2**20)
    assert load_nifti(bomb, max_bytes=4 * 2**20).shape == (16, 16, 16)
    with pytest.raises(
        PatchworkError, match=r"header declares a 16x16x16 image of float32 \(16 KiB\), more than"
    ):
        load_nifti(tmp_path / "plain.nii", max_bytes=10_000)


def test_complex_voxels_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "complex.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((4, 4, 4), np.complex64), np.eye(4)), path)
    with pytest.raises(
        PatchworkError, match="complex.nii.gz: voxel type complex64 is not a real number type"
    ):
        load_nifti(path)


def test_json_with_a_repeated_key_is_refused(tmp_path: Path) -> None:
    (tmp_path / "d.json").write_text('{"labels": {"lesion": 1, "lesion": 2}}')
    with pytest.raises(PatchworkError, match="d.json: not valid JSON \\(key 'lesion' appears twice"):
        read_json(tmp_path / "d.json")


def test_read_volume_takes_a_4d_file_with_one_volume_as_3d(tmp_path: Path) -> None:
    data = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    save_image(data[..., None], np.eye(4), tmp_path / "one.nii.gz")
    np.testing.assert_array_equal(read_volume(tmp_path / "one.nii.gz")[0], data)
    save_image(np.stack([data, data], -1), np.eye(4), tmp_path / "two.nii.gz")
    with pytest.raises(
        PatchworkError, match=r"two.nii.gz: image has shape \(2, 3, 4, 2\); expected a 3D image"
    ):
        read_volume(tmp_path / "two.nii.gz")


def test_read_table_names_the_file_and_the_problem(tmp_path: Path) -> None:
    from patchwork.io import read_table

    (tmp_path / "t.tsv").write_text("subject\tvalue\nNA\t1\n")
    assert read_table(tmp_path / "t.tsv", ["subject"])["subject"].tolist() == ["NA"]
    with pytest.raises(PatchworkError, match=r"t\.tsv: missing columns \['metric'\]"):
        read_table(tmp_path / "t.tsv", ["subject", "metric"])
    with pytest.raises(PatchworkError, match=r"nope\.tsv: file not found"):
        read_table(tmp_path / "nope.tsv")
    with pytest.raises(PatchworkError, match=r": cannot be read"):
        read_table(tmp_path)

"""NIfTI and text I/O: reading with clear errors, and atomic writes.

Every file the package writes goes to a temporary name in the destination folder first and is then
renamed into place (``os.replace`` is atomic on POSIX), so an interrupted job never leaves a
half-written output that a later run would take for a finished one.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import zlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from patchwork.errors import PatchworkError

_UMASK = os.umask(0)
os.umask(_UMASK)

NIFTI_COMMENT = 6  # NIfTI-1 extension code of a free-text comment
LABEL_NAMES_KEY = "label_names"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` when the block succeeds.

    The temporary name keeps the suffixes of ``path`` (``.nii.gz``, ``.pt``...) so writers that
    infer the format from the name behave as for the final file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name.split('.')[0]}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    tmp_path.chmod(0o666 & ~_UMASK)  # mkstemp makes 0600; give outputs the usual permissions
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def read_json(path: str | os.PathLike[str]) -> Any:
    """Read a JSON file, naming the file in the error when it is missing or malformed."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise PatchworkError(f"{path}: file not found") from None
    except json.JSONDecodeError as err:
        raise PatchworkError(f"{path}: not valid JSON ({err.msg} at line {err.lineno})") from None


def load_nifti(path: str | os.PathLike[str]) -> nib.Nifti1Image:
    """Open a NIfTI file and read its voxels, turning every failure into a one-line error.

    The data are read here (not lazily) so that a truncated or corrupt gzip stream is reported
    with the file name instead of surfacing later inside numpy.
    """
    path = Path(path)
    if not path.exists():
        raise PatchworkError(f"{path}: file not found")
    try:
        img = nib.load(str(path))
        if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
            raise PatchworkError(f"{path}: not a NIfTI image ({type(img).__name__})")
        img.get_fdata(dtype=np.float32)
    except PatchworkError:
        raise
    except (OSError, EOFError, ValueError, zlib.error, nib.filebasedimages.ImageFileError) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise PatchworkError(f"{path}: cannot read NIfTI ({first})") from None
    return img


def read_image(path: str | os.PathLike[str], dtype: type = np.float32) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(data, affine)`` of a NIfTI file; data as ``dtype``, affine as float64 4x4."""
    img = load_nifti(path)
    return np.asarray(img.get_fdata(dtype=np.float32), dtype=dtype), np.asarray(img.affine, dtype=np.float64)


def save_image(
    data: np.ndarray,
    affine: np.ndarray,
    path: str | os.PathLike[str],
    dtype: type | None = None,
    *,
    label_names: Mapping[int, str] | None = None,
) -> None:
    """Write ``data`` with ``affine`` (sform and qform) to ``path`` atomically.

    ``dtype`` sets the on-disk type (default: the array's). Labels and masks should pass
    ``np.uint8`` so they compress well and read back as integers. ``label_names`` (label value ->
    name) go into a header extension (see :func:`read_label_names`).
    """
    arr = np.asarray(data if dtype is None else data.astype(dtype))
    img = nib.Nifti1Image(arr, np.asarray(affine, dtype=np.float64))
    img.header.set_data_dtype(arr.dtype)
    img.set_qform(img.affine, code=1)
    img.set_sform(img.affine, code=1)
    if label_names is not None:
        text = json.dumps({LABEL_NAMES_KEY: {str(int(k)): str(v) for k, v in label_names.items()}})
        img.header.extensions.append(nib.nifti1.Nifti1Extension(NIFTI_COMMENT, text.encode()))
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))


def read_label_names(path: str | os.PathLike[str]) -> dict[int, str] | None:
    """Label value -> name stored by :func:`save_image` in a NIfTI header extension, or ``None``.

    The names are a JSON object ``{"label_names": {"1": "lesion", ...}}`` in a comment extension
    (ecode 6), which any NIfTI reader keeps and ``nib-ls -H`` shows; other extensions are ignored.
    """
    for extension in load_nifti(path).header.extensions:
        if extension.get_code() != NIFTI_COMMENT:
            continue
        try:
            content = json.loads(extension.get_content())
        except (ValueError, UnicodeDecodeError):
            continue
        if isinstance(content, dict) and isinstance(content.get(LABEL_NAMES_KEY), dict):
            return {int(k): str(v) for k, v in content[LABEL_NAMES_KEY].items()}
    return None

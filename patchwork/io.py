"""NIfTI and text I/O: reading with clear errors, and atomic, durable writes.

Every file the package writes goes to a temporary name in the destination folder first and is then
renamed into place (``os.replace`` is atomic on POSIX), so an interrupted job never leaves a
half-written output that a later run would take for a finished one. The temporary file is flushed to
disk (``fsync``) before the rename and the folder after it, so that after a power cut the name holds
either the old or the new content, never an empty or partial file (ext4, XFS and btrfs may otherwise
commit the rename before the data). A job killed while writing leaves its temporary file
``.{stem}.{8 random characters}{suffixes}`` behind (``.checkpoint.3f9a0c1d.pt`` for ``checkpoint.pt``);
the next write of the same file removes it, and :func:`is_partial` tells such leftovers from outputs.
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import json
import os
import re
import secrets
import zlib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import nibabel as nib
import numpy as np

from patchwork.errors import PatchworkError

if TYPE_CHECKING:
    import pandas as pd

NIFTI_COMMENT = 6  # NIfTI-1 extension code of a free-text comment
LABEL_NAMES_KEY = "label_names"
# Affines of one grid written by different tools differ by float32 rounding; 1e-3 mm is far below any voxel
# size and far above that rounding (check_same_grid).
AFFINE_TOLERANCE_MM = 1e-3

# A temporary file of atomic_path: "." + stem + "." + 8 random characters + the suffixes of the target
# (the random part is lower-case hex; Python's mkstemp, used before, drew from [a-z0-9_]).
_PARTIAL = re.compile(r"\.(?P<stem>[^.]*)\.[a-z0-9_]{8}(?P<suffixes>\..*)?")


def partial_target(path: str | os.PathLike[str]) -> Path | None:
    """The file that ``path``, a temporary file of :func:`atomic_path`, was to become; ``None`` for any
    other file. ``.model.3f9a0c1d.pt`` -> ``model.pt``."""
    path = Path(path)
    match = _PARTIAL.fullmatch(path.name)
    return path.with_name(match["stem"] + (match["suffixes"] or "")) if match else None


def is_partial(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a temporary file of :func:`atomic_path` (a write that never finished)."""
    return partial_target(path) is not None


def remove_partials(path: str | os.PathLike[str]) -> list[Path]:
    """Delete the temporary files that killed writes of ``path`` left in its folder; return them."""
    path = Path(path)
    stem = path.name.split(".", 1)[0]
    if not path.parent.is_dir():
        return []
    removed = []
    for entry in os.scandir(path.parent):
        if entry.name.startswith(f".{stem}.") and partial_target(entry.path) == path:
            Path(entry.path).unlink(missing_ok=True)
            removed.append(Path(entry.path))
    return removed


def _create_partial(path: Path) -> Path:
    """Create a new, empty temporary file for ``path`` beside it, with the usual (umask) permissions."""
    stem, dot, rest = path.name.partition(".")
    while True:
        tmp = path.with_name(f".{stem}.{secrets.token_hex(4)}{dot}{rest}")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:  # 1 in 4 billion
            continue
        return tmp


def _fsync(path: Path) -> None:
    """Flush a file's data, or a folder's entries (POSIX only), to the disk."""
    if path.is_dir() and os.name == "nt":
        return  # Windows cannot open a folder; NTFS journals renames itself
    fd = os.open(path, os.O_RDONLY if path.is_dir() else os.O_RDWR)
    try:
        os.fsync(fd)
    except OSError as err:
        if err.errno != errno.EINVAL:  # a file system that cannot sync this (some network and FUSE ones)
            raise
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; when the block succeeds, flush it to disk and rename it
    onto ``path`` (then flush the folder). Temporary files of ``path`` left by killed writes are removed.

    The temporary name keeps the suffixes of ``path`` (``.nii.gz``, ``.pt``...) so writers that
    infer the format from the name behave as for the final file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_partials(path)
    tmp_path = _create_partial(path)
    try:
        yield tmp_path
        _fsync(tmp_path)
        os.replace(tmp_path, path)
        _fsync(path.parent)
    finally:
        tmp_path.unlink(missing_ok=True)


def write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


class _DuplicateKey(ValueError):
    """A key that appears twice in one JSON object (``json`` would silently keep the last)."""


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``object_pairs_hook`` of :func:`read_json`: a dict, or ``_DuplicateKey`` for a repeated key."""
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise _DuplicateKey(key)
        seen[key] = value
    return seen


def read_json(path: str | os.PathLike[str]) -> Any:
    """Read a JSON file, naming the file in the error when it is missing or malformed.

    A key repeated within one object is an error too: ``{"lesion": 1, "lesion": 2}`` would
    otherwise silently keep the last value.
    """
    try:
        return json.loads(Path(path).read_text(), object_pairs_hook=_unique_keys)
    except FileNotFoundError:
        raise PatchworkError(f"{path}: file not found") from None
    except UnicodeDecodeError:
        raise PatchworkError(f"{path}: not valid JSON (not UTF-8 text)") from None
    except json.JSONDecodeError as err:
        raise PatchworkError(f"{path}: not valid JSON ({err.msg} at line {err.lineno})") from None
    except _DuplicateKey as err:
        raise PatchworkError(
            f"{path}: not valid JSON (key {err.args[0]!r} appears twice in one object)"
        ) from None


def read_table(path: str | os.PathLike[str], columns: Sequence[str] = ()) -> pd.DataFrame:
    """A tab-separated table written by the workflow; only empty cells are missing values, so subject ids
    such as ``NA``, ``null`` or ``None`` stay text (pandas' default would read them as missing). A missing
    file, a file that is no table, or a table without the ``columns`` asked for is one error naming it."""
    import pandas as pd  # here: the Snakefile reads the cohort table through this module, without pandas

    try:
        table = pd.read_csv(path, sep="\t", keep_default_na=False, na_values=[""])
    except FileNotFoundError:
        raise PatchworkError(f"{path}: file not found") from None
    except OSError as err:
        raise PatchworkError(f"{path}: cannot be read ({err.strerror})") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise PatchworkError(f"{path}: not a tab-separated table ({str(err).splitlines()[0]})") from None
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise PatchworkError(f"{path}: missing columns {missing}")
    return table


def byte_size(n: int) -> str:
    """``n`` bytes for a message: ``4 GiB``, ``1.5 MiB``, ``512 B``."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.4g} {unit}"
    return f"{n} B"


def _check_gzip_stream(path: Path, max_bytes: int) -> None:
    """Decompress ``path`` to its end in 1 MiB chunks, discarding the data; raise on a bad stream.

    Reading to the end is what makes ``gzip`` compare the CRC-32 and the length stored after each
    member with what was decompressed: nibabel stops after the voxels it needs, so a flipped bit
    inside the stream would otherwise go unnoticed and give wrong voxel values. Memory stays at one
    chunk; a stream that inflates beyond ``max_bytes`` (a gzip bomb) is abandoned there.
    """
    total = 0
    try:
        with gzip.open(path, "rb") as stream:
            while chunk := stream.read(2**20):
                total += len(chunk)
                if total > max_bytes:
                    raise PatchworkError(
                        f"{path}: decompresses to more than {byte_size(max_bytes)} (the max_image_bytes "
                        "limit); not read further (raise the limit if this image is genuine)"
                    )
    except (OSError, EOFError, zlib.error) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise PatchworkError(f"{path}: cannot read NIfTI (corrupt gzip stream: {first})") from None


def load_nifti(path: str | os.PathLike[str], max_bytes: int | None = None) -> nib.Nifti1Image:
    """Open a NIfTI file and read its voxels, turning every failure into a one-line error.

    The data are read here (not lazily) so that a truncated or corrupt gzip stream is reported
    with the file name instead of surfacing later inside numpy. Voxel types that are not real
    numbers (complex, RGB) are refused: reading them as floats would silently drop a part.

    ``max_bytes`` asks for the full check that ingest makes once per file: a ``.gz`` file is first
    decompressed to its end (CRC-32 and length checked, at most ``max_bytes``), then the image its
    header declares must fit in ``max_bytes`` too. Later stages read files that passed ingest and
    leave it at ``None``.
    """
    path = Path(path)
    if not path.exists():
        raise PatchworkError(f"{path}: file not found")
    if max_bytes is not None and path.name.lower().endswith(".gz"):
        _check_gzip_stream(path, max_bytes)
    try:
        img = nib.load(str(path))
        if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
            raise PatchworkError(f"{path}: not a NIfTI image ({type(img).__name__})")
        dtype = img.get_data_dtype()
        if dtype.kind not in "biuf":
            raise PatchworkError(
                f"{path}: voxel type {dtype} is not a real number type "
                "(complex and RGB images are not supported)"
            )
        if max_bytes is not None:
            declared = int(np.prod(img.shape, dtype=np.int64)) * dtype.itemsize
            if declared > max_bytes:
                raise PatchworkError(
                    f"{path}: header declares a {'x'.join(map(str, img.shape))} image of {dtype} "
                    f"({byte_size(declared)}), more than the max_image_bytes limit of {byte_size(max_bytes)}"
                )
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


def as_volume(data: np.ndarray, path: str | os.PathLike[str]) -> np.ndarray:
    """``data`` as a 3D volume: trailing axes of length 1 are dropped (a 4D file holding one volume
    is a 3D image, as some converters write them); any other shape raises a one-line error."""
    shape = data.shape
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise PatchworkError(
            f"{path}: image has shape {tuple(shape)}; expected a 3D image (or a 4D file holding one volume)"
        )
    return data


def read_volume(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
    """``read_image`` of a file that must hold one 3D volume (see :func:`as_volume`); data float32."""
    data, affine = read_image(path)
    return as_volume(data, path), affine


def check_same_grid(
    path: Path,
    shape: tuple[int, ...],
    affine: np.ndarray,
    ref_path: Path,
    ref_shape: tuple[int, ...],
    ref_affine: np.ndarray,
) -> None:
    """Raise a :class:`PatchworkError` naming ``path`` unless it has ``ref_path``'s shape and affine.

    Affines are compared element-wise with an absolute tolerance of ``AFFINE_TOLERANCE_MM``.
    """
    if tuple(shape) != tuple(ref_shape):
        raise PatchworkError(f"{path}: shape {tuple(shape)} differs from {ref_path} {tuple(ref_shape)}")
    if not np.allclose(affine, ref_affine, rtol=0.0, atol=AFFINE_TOLERANCE_MM):
        raise PatchworkError(
            f"{path}: affine differs from {ref_path} "
            f"(largest difference {np.abs(affine - ref_affine).max():.4g}); the images are not on one grid"
        )


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

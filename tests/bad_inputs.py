"""A corpus of malformed and of awkward-but-valid cohorts, built with nibabel at 8³ in a temporary folder.

Each entry of ``BAD`` and ``VALID`` maps a kind of input (the first column of the bad-input table in
the issue) to a builder: ``builder(root)`` writes one dataset under ``root`` and returns a ``Built``,
which says what to ingest and, for a bad case, which lines the user must read: one per problem, each
starting with the file named and holding a fragment of the problem. ``tests/test_bad_inputs.py`` runs
every case through ``patchwork ingest``.

Files are written byte by byte (``nifti_bytes``) rather than with ``nibabel.save``, which would repair
the very header fields some cases break (a zero voxel size, a qform that disagrees with the sform).
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

SHAPE = (8, 8, 8)
AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])
LABELS = {"background": 0, "lesion": 1}
TRAIN_IDS = ("case_000", "case_001")
TEST_IDS = ("case_100",)


@dataclass
class Built:
    """One dataset of the corpus: the source to ingest and what ingest must say about it.

    ``expected`` holds one ``(file, fragment)`` per problem: exactly one error line must start with
    ``{file}: `` and contain ``fragment`` (empty for a valid dataset). ``settings`` are keyword
    arguments of ``ingest`` beyond the defaults. ``n_train``/``n_test`` are checked for a valid one.
    """

    source: Path
    expected: list[tuple[Path | str, str]] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    n_train: int = len(TRAIN_IDS)
    n_test: int = len(TEST_IDS)


Builder = Callable[[Path], Built]
BAD: dict[str, Builder] = {}
VALID: dict[str, Builder] = {}


def case(table: dict[str, Builder], kind: str) -> Callable[[Builder], Builder]:
    """Register a builder under ``kind`` in ``table`` (``BAD`` or ``VALID``)."""

    def register(builder: Builder) -> Builder:
        assert kind not in table, kind
        table[kind] = builder
        return builder

    return register


# --- writing files ---------------------------------------------------------------------------------


def image_data(seed: int = 0) -> np.ndarray:
    """A float32 8³ image: positive noise, so that every voxel is inside the non-zero box."""
    return np.random.default_rng(seed).uniform(1.0, 2.0, SHAPE).astype(np.float32)


def label_data() -> np.ndarray:
    """A uint8 8³ label: a 3³ cube of lesion (1) in background (0)."""
    label = np.zeros(SHAPE, np.uint8)
    label[2:5, 2:5, 2:5] = 1
    return label


def nifti_bytes(
    data: np.ndarray, affine: np.ndarray = AFFINE, edit: Callable[[nib.Nifti1Header], None] | None = None
) -> bytes:
    """An uncompressed single-file NIfTI-1 of ``data`` with qform and sform both set to ``affine``.

    ``edit`` may change the header afterwards; nothing repairs what it does.
    """
    data = np.asarray(data)
    header = nib.Nifti1Header()
    header.set_data_dtype(data.dtype)
    header.set_data_shape(data.shape)
    header.set_qform(affine, code=1)
    header.set_sform(affine, code=1)
    header["vox_offset"] = 352
    if edit is not None:
        edit(header)
    return header.binaryblock + b"\0" * 4 + data.tobytes(order="F")


def write_nifti(
    path: Path,
    data: np.ndarray,
    affine: np.ndarray = AFFINE,
    edit: Callable[[nib.Nifti1Header], None] | None = None,
    level: int = 6,
) -> Path:
    """Write ``nifti_bytes`` to ``path``, gzip-compressed at ``level`` when it ends in ``.gz``."""
    raw = nifti_bytes(data, affine, edit)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(raw, compresslevel=level, mtime=0) if path.suffix == ".gz" else raw)
    return path


def write_json(path: Path, content: Any) -> Path:
    """Write ``content`` as JSON."""
    path.write_text(json.dumps(content, indent=1))
    return path


# --- an nnU-Net v2 raw folder ------------------------------------------------------------------------


def image_path(root: Path, subject: str, channel: int = 0, ending: str = ".nii.gz") -> Path:
    """The nnU-Net file of one channel, in ``imagesTr`` or (for ids of ``TEST_IDS``) ``imagesTs``."""
    folder = "imagesTs" if subject in TEST_IDS else "imagesTr"
    return root / folder / f"{subject}_{channel:04d}{ending}"


def label_path(root: Path, subject: str, ending: str = ".nii.gz") -> Path:
    """The nnU-Net label file of a training subject."""
    return root / "labelsTr" / f"{subject}{ending}"


def folder(root: Path, ending: str = ".nii.gz", **meta: Any) -> Path:
    """Write a valid nnU-Net v2 raw folder (``TRAIN_IDS``, ``TEST_IDS``, one channel) under ``root``.

    ``meta`` overrides keys of its ``dataset.json``. Returns the folder, resolved.
    """
    root = root.resolve() / "Dataset001_Corpus"
    for index, subject in enumerate((*TRAIN_IDS, *TEST_IDS)):
        write_nifti(image_path(root, subject, ending=ending), image_data(index))
    for subject in TRAIN_IDS:
        write_nifti(label_path(root, subject, ending), label_data())
    content = {
        "channel_names": {"0": "T1"},
        "labels": LABELS,
        "numTraining": len(TRAIN_IDS),
        "file_ending": ending,
        **meta,
    }
    write_json(root / "dataset.json", content)
    return root


def broken_file(
    root: Path,
    which: Callable[[Path], Path],
    fragment: str,
    data: np.ndarray | None = None,
    **kwargs: Any,
) -> Built:
    """A valid folder whose file ``which(folder)`` is rewritten (``write_nifti(data, **kwargs)``).

    ``data`` defaults to the file's kind: an image for ``images*``, a label for ``labelsTr``. One
    problem is expected, on that file, holding ``fragment``.
    """
    source = folder(root)
    path = which(source)
    if data is None:
        data = label_data() if path.parent.name == "labelsTr" else image_data()
    write_nifti(path, data, **kwargs)
    return Built(source=source, expected=[(path, fragment)])


def first_image(source: Path) -> Path:
    """The first channel of the first training subject."""
    return image_path(source, TRAIN_IDS[0])


def first_label(source: Path) -> Path:
    """The label of the first training subject."""
    return label_path(source, TRAIN_IDS[0])


def test_image(source: Path) -> Path:
    """The first channel of the test subject."""
    return image_path(source, TEST_IDS[0])


def set_header(**fields: Any) -> Callable[[nib.Nifti1Header], None]:
    """A header edit that sets raw header fields (``pixdim=...``, ``qform_code=...``)."""

    def edit(header: nib.Nifti1Header) -> None:
        for key, value in fields.items():
            header[key] = value

    return edit


def shifted(mm: float) -> np.ndarray:
    """``AFFINE`` moved by ``mm`` along x."""
    affine = AFFINE.copy()
    affine[0, 3] += mm
    return affine


# --- bad: corrupt or oversized files ---------------------------------------------------------------


@case(BAD, "flipped bit inside a gzip stream")
def _(root: Path) -> Built:
    source = folder(root)
    path = first_image(source)
    write_nifti(path, image_data(), level=0)  # stored blocks: a flipped bit changes a voxel, no more
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x10
    path.write_bytes(bytes(raw))
    return Built(source=source, expected=[(path, "corrupt gzip stream: CRC check failed")])


@case(BAD, "truncated gzip file")
def _(root: Path) -> Built:
    source = folder(root)
    path = first_label(source)
    path.write_bytes(path.read_bytes()[:-30])
    return Built(source=source, expected=[(path, "cannot read NIfTI")])


@case(BAD, "gzip bomb: stream inflates beyond max_image_bytes")
def _(root: Path) -> Built:
    source = folder(root)
    path = test_image(source)
    path.write_bytes(gzip.compress(nifti_bytes(image_data()) + bytes(2 * 2**20), mtime=0))
    return Built(
        source=source,
        expected=[(path, "decompresses to more than 1 MiB (the max_image_bytes limit)")],
        settings={"max_image_bytes": 2**20},
    )


@case(BAD, "gzip bomb: header declares an 8 GiB image")
def _(root: Path) -> Built:
    return broken_file(
        root,
        test_image,
        "header declares a 2048x2048x512 image of float32 (8 GiB), more than the max_image_bytes limit",
        edit=lambda header: header.set_data_shape((2048, 2048, 512)),
    )


@case(BAD, "empty (0-byte) image file")
def _(root: Path) -> Built:
    source = folder(root)
    path = first_image(source)
    path.write_bytes(b"")
    return Built(source=source, expected=[(path, "cannot read NIfTI")])


@case(BAD, "text file named .nii.gz")
def _(root: Path) -> Built:
    source = folder(root)
    path = first_label(source)
    path.write_text("not an image\n")
    return Built(source=source, expected=[(path, "cannot read NIfTI")])


# --- bad: voxels and geometry ---------------------------------------------------------------------


@case(BAD, "missing label file")
def _(root: Path) -> Built:
    source = folder(root)
    first_label(source).unlink()
    return Built(source=source, expected=[(first_label(source), "file not found")])


@case(BAD, "label shape differs from the image")
def _(root: Path) -> Built:
    return broken_file(root, first_label, "shape (8, 8, 7) differs", data=label_data()[:, :, :7])


@case(BAD, "label affine differs beyond affine_tolerance")
def _(root: Path) -> Built:
    return broken_file(
        root, first_label, "affine differs from that of case_000_0000.nii.gz", affine=shifted(1.5)
    )


@case(BAD, "NaN and infinite voxels")
def _(root: Path) -> Built:
    data = image_data()
    data[0, 0, :2] = [np.nan, np.inf]
    return broken_file(root, test_image, "2 voxels are NaN or infinite", data=data)


@case(BAD, "label value not declared (2)")
def _(root: Path) -> Built:
    data = label_data()
    data[0, 0, 0] = 2
    return broken_file(root, first_label, "label values 2 are not among the declared labels", data=data)


@case(BAD, "label volume holding 300 (uint16)")
def _(root: Path) -> Built:
    data = label_data().astype(np.uint16)
    data[0, 0, 0] = 300
    return broken_file(root, first_label, "label values 300 are not among", data=data)


@case(BAD, "label volume holding -1 (int16)")
def _(root: Path) -> Built:
    data = label_data().astype(np.int16)
    data[0, 0, 0] = -1
    return broken_file(root, first_label, "label values -1 are not among", data=data)


@case(BAD, "fractional label values (float 0.5)")
def _(root: Path) -> Built:
    return broken_file(
        root, first_label, "label values 0.5 are not among", data=label_data() * np.float32(0.5)
    )


@case(BAD, "4-D image with two volumes")
def _(root: Path) -> Built:
    data = np.stack([image_data(), image_data()], axis=-1)
    return broken_file(root, first_image, "image has shape (8, 8, 8, 2); expected a 3D image", data=data)


@case(BAD, "2-D image")
def _(root: Path) -> Built:
    return broken_file(root, test_image, "image has shape (8, 8); expected a 3D image", data=image_data()[0])


@case(BAD, "zero voxel size in the header")
def _(root: Path) -> Built:
    edit = set_header(pixdim=[1, 0, 2, 2, 1, 1, 1, 1])
    return broken_file(
        root, first_image, "voxel size (0, 2, 2) in the header (pixdim) must be positive", edit=edit
    )


@case(BAD, "negative voxel size in the header")
def _(root: Path) -> Built:
    edit = set_header(pixdim=[1, 2, -2, 2, 1, 1, 1, 1])
    return broken_file(
        root, test_image, "voxel size (2, -2, 2) in the header (pixdim) must be positive", edit=edit
    )


@case(BAD, "degenerate sform (a zero-length voxel axis)")
def _(root: Path) -> Built:
    def edit(header: nib.Nifti1Header) -> None:
        header.set_sform(np.diag([0.0, 2.0, 2.0, 1.0]), code=1)
        header["qform_code"] = 0

    return broken_file(root, first_image, "the affine is degenerate", edit=edit)


@case(BAD, "complex voxel type")
def _(root: Path) -> Built:
    data = image_data().astype(np.complex64) * (1 + 1j)
    return broken_file(root, first_image, "voxel type complex64 is not a real number type", data=data)


@case(BAD, "RGB voxel type")
def _(root: Path) -> Built:
    data = np.zeros(SHAPE, dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    return broken_file(root, test_image, "is not a real number type", data=data)


@case(BAD, "qform and sform disagree")
def _(root: Path) -> Built:
    edit = lambda header: header.set_sform(shifted(5.0), code=1)  # noqa: E731
    return broken_file(root, first_image, "qform and sform disagree by up to 5", edit=edit)


# --- bad: dataset.json ---------------------------------------------------------------------------


def bad_meta(root: Path, fragment: str, content: Any = None, **meta: Any) -> Built:
    """A valid folder whose ``dataset.json`` gets ``meta`` (or is replaced by ``content``)."""
    source = folder(root, **meta)
    if content is not None:
        (source / "dataset.json").write_text(content if isinstance(content, str) else json.dumps(content))
    return Built(source=source, expected=[(source / "dataset.json", fragment)])


@case(BAD, "dataset.json holding a JSON array")
def _(root: Path) -> Built:
    return bad_meta(root, "expected a JSON object {...} at the top level, found an array", content=[1, 2])


@case(BAD, "dataset.json not valid JSON")
def _(root: Path) -> Built:
    return bad_meta(root, "not valid JSON", content='{"labels": ')


@case(BAD, "dataset.json missing")
def _(root: Path) -> Built:
    source = folder(root)
    (source / "dataset.json").unlink()
    return Built(source=source, expected=[(source / "dataset.json", "file not found")])


@case(BAD, "dataset.json with a key given twice")
def _(root: Path) -> Built:
    text = '{"channel_names": {"0": "T1"}, "labels": {"background": 0, "lesion": 1, "lesion": 2}}'
    return bad_meta(root, "key 'lesion' appears twice", content=text)


@case(BAD, "label value 300 declared in dataset.json")
def _(root: Path) -> Built:
    fragment = "label 'lesion' has value 300; expected a whole number from 0 to 255"
    return bad_meta(root, fragment, labels={"background": 0, "lesion": 300})


@case(BAD, "negative label value declared in dataset.json")
def _(root: Path) -> Built:
    return bad_meta(root, "label 'lesion' has value -1", labels={"background": 0, "lesion": -1})


@case(BAD, "fractional label value declared in dataset.json")
def _(root: Path) -> Built:
    return bad_meta(root, "label 'lesion' has value 1.5", labels={"background": 0, "lesion": 1.5})


@case(BAD, "duplicate label values in dataset.json")
def _(root: Path) -> Built:
    labels = {"background": 0, "lesion": 1, "edema": 1}
    return bad_meta(root, "labels 'lesion' and 'edema' both have value 1", labels=labels)


@case(BAD, "duplicate label names in an MSD dataset.json")
def _(root: Path) -> Built:
    labels = {"0": "background", "1": "lesion", "2": "lesion"}
    return bad_meta(root, "label name 'lesion' is given to values 1 and 2", labels=labels)


@case(BAD, "labels not a mapping")
def _(root: Path) -> Built:
    return bad_meta(root, "'labels' must be a non-empty mapping", labels=["background", "lesion"])


@case(BAD, "channel_names not a mapping of indices")
def _(root: Path) -> Built:
    return bad_meta(root, "'channel_names' must map channel indices", channel_names=["T1"])


@case(BAD, "numTraining disagrees with the files")
def _(root: Path) -> Built:
    return bad_meta(root, "numTraining is 5 but 2 were found", numTraining=5)


def msd_training() -> list[dict[str, str]]:
    """The MSD ``training`` list of the corpus folder."""
    return [{"image": f"./imagesTr/{s}.nii.gz", "label": f"./labelsTr/{s}.nii.gz"} for s in TRAIN_IDS]


@case(BAD, "MSD test entry that is neither a path nor {'image': path}")
def _(root: Path) -> Built:
    test = [{"img": "./imagesTs/case_100.nii.gz"}]
    return bad_meta(root, "test entry {'img'", training=msd_training(), test=test)


@case(BAD, "MSD training entry without an image")
def _(root: Path) -> Built:
    training = [*msd_training(), {"label": "./labelsTr/case_002.nii.gz"}]
    return bad_meta(root, "training entry {'label'", training=training, test=[], numTraining=None)


# --- bad: folder layout and subject ids ----------------------------------------------------------


@case(BAD, "image file name not {subject}_{cccc}.nii.gz")
def _(root: Path) -> Built:
    source = folder(root)
    odd = source / "imagesTr" / "case_002.nii.gz"
    write_nifti(odd, image_data())
    return Built(source=source, expected=[(odd, "file name is not {subject}_{cccc}.nii.gz")])


@case(BAD, "channel file not declared in dataset.json")
def _(root: Path) -> Built:
    source = folder(root)
    extra = write_nifti(image_path(source, TRAIN_IDS[0], channel=1), image_data())
    return Built(source=source, expected=[(extra, "channel 0001 is not declared in dataset.json")])


@case(BAD, "label without images")
def _(root: Path) -> Built:
    source = folder(root)
    orphan = write_nifti(label_path(source, "case_009"), label_data())
    return Built(source=source, expected=[(orphan, "label without images in imagesTr")])


@case(BAD, "imagesTr folder missing")
def _(root: Path) -> Built:
    source = folder(root)
    for path in (source / "imagesTr").iterdir():
        path.unlink()
    (source / "imagesTr").rmdir()
    return Built(source=source, expected=[(source / "imagesTr", "folder not found")])


def renamed(root: Path, old: str, new: str) -> tuple[Path, Path]:
    """A valid folder in which training subject ``old`` is renamed ``new``; its image and label."""
    source = folder(root)
    image, label = image_path(source, new), label_path(source, new)
    image_path(source, old).rename(image)
    label_path(source, old).rename(label)
    return image, label


@case(BAD, "subject id not safe as a file name (space)")
def _(root: Path) -> Built:
    image, _ = renamed(root, TRAIN_IDS[0], "case 000")
    return Built(source=image.parents[1], expected=[(image, "'case 000' is not safe as a file name")])


@case(BAD, "subject ids differing only in case (folder)")
def _(root: Path) -> Built:
    image, _ = renamed(root, TRAIN_IDS[0], "CASE_001")
    other = image_path(image.parents[1], TRAIN_IDS[1])
    return Built(
        source=image.parents[1], expected=[(image, f"differs only in case from 'case_001' at {other}")]
    )


# --- bad: CSV manifests and settings ---------------------------------------------------------------


def manifest(root: Path, rows: list[list[str]], name: str = "cohort.csv") -> Path:
    """A manifest ``name`` next to a valid folder, whose relative paths point into that folder."""
    source = folder(root)
    path = source.parent / name
    sep = "\t" if name.endswith(".tsv") else ","
    path.write_text("\n".join(sep.join(row) for row in rows) + "\n")
    return path


def rows(*ids: str) -> list[list[str]]:
    """Manifest rows of the corpus folder's training subjects (then the test subject), with new ids."""
    files = [
        *(
            [f"Dataset001_Corpus/imagesTr/{s}_0000.nii.gz", f"Dataset001_Corpus/labelsTr/{s}.nii.gz"]
            for s in TRAIN_IDS
        ),
        [f"Dataset001_Corpus/imagesTs/{TEST_IDS[0]}_0000.nii.gz", ""],
    ]
    return [[subject, *cells] for subject, cells in zip(ids, files, strict=False)]


@case(BAD, "manifest: extra column that would be read as a channel")
def _(root: Path) -> Built:
    table = [["subject", "image", "label", "age"], *[[*row, "63"] for row in rows("a", "b")]]
    path = manifest(root, table)
    return Built(
        source=path,
        expected=[(path, "column 'age' would be read as an image channel, but line 2 holds '63'")],
    )


@case(BAD, "manifest: no subject column")
def _(root: Path) -> Built:
    path = manifest(root, [["name", "image", "label"], *rows("a", "b")])
    return Built(source=path, expected=[(path, "a manifest needs a 'subject' (or 'id') column")])


@case(BAD, "manifest: empty image cell")
def _(root: Path) -> Built:
    table = [["subject", "image", "label"], *rows("a", "b"), ["c", "", "x.nii.gz"]]
    path = manifest(root, table)
    return Built(source=path, expected=[(path, "line 4: no path in column(s) ['image']")])


@case(BAD, "manifest: image path that does not exist")
def _(root: Path) -> Built:
    table = [["subject", "image", "label"], *rows("a", "b"), ["c", "nowhere/c.nii.gz", ""]]
    path = manifest(root, table)
    return Built(source=path, expected=[(path.parent / "nowhere" / "c.nii.gz", "file not found")])


@case(BAD, "manifest: the same id twice")
def _(root: Path) -> Built:
    path = manifest(root, [["id", "image", "label"], *rows("a", "a")])
    return Built(source=path, expected=[(path, "line 2: subject id 'a' is used more than once (also at")])


@case(BAD, "manifest: ids differing only in case")
def _(root: Path) -> Built:
    path = manifest(root, [["subject", "image", "label"], *rows("Case1", "case1")])
    return Built(
        source=path, expected=[(path, "line 2: subject id 'Case1' differs only in case from 'case1'")]
    )


@case(BAD, "manifest: no training subject")
def _(root: Path) -> Built:
    table = [["subject", "image", "label"], rows("a", "b", "t")[2]]
    path = manifest(root, table)
    return Built(source=path, expected=[(path, "no training subject")])


@case(BAD, "manifest: not UTF-8 text")
def _(root: Path) -> Built:
    path = manifest(root, [["subject", "image", "label"], *rows("a", "b")])
    path.write_bytes(path.read_bytes() + "é,x.nii.gz,\n".encode("latin-1"))
    return Built(source=path, expected=[(path, "cannot read the manifest")])


@case(BAD, "labels setting with a value of 300")
def _(root: Path) -> Built:
    path = manifest(root, [["subject", "image", "label"], *rows("a", "b")])
    return Built(
        source=path,
        expected=[("ingest", "labels.lesion=300: must be <= 255")],
        settings={"labels": {"background": 0, "lesion": 300}},
    )


@case(BAD, "labels setting that disagrees with dataset.json")
def _(root: Path) -> Built:
    source = folder(root)
    return Built(
        source=source,
        expected=[(source / "dataset.json", "declares labels")],
        settings={"labels": {"background": 0, "infarct": 1}},
    )


@case(BAD, "source neither a folder nor a manifest")
def _(root: Path) -> Built:
    root.mkdir(parents=True, exist_ok=True)
    path = root.resolve() / "cohort.xlsx"
    path.write_bytes(b"PK")
    return Built(
        source=path, expected=[(path, "not a dataset folder with dataset.json, nor a .csv/.tsv manifest")]
    )


# --- valid: awkward but fine -----------------------------------------------------------------------


def rewritten(root: Path, which: Callable[[Path], Path], data: np.ndarray, **kwargs: Any) -> Built:
    """A valid folder in which the file ``which(folder)`` is rewritten with ``data``."""
    source = folder(root)
    write_nifti(which(source), data, **kwargs)
    return Built(source=source)


@case(VALID, "empty label map (all background)")
def _(root: Path) -> Built:
    return rewritten(root, first_label, np.zeros(SHAPE, np.uint8))


@case(VALID, "float labels holding whole numbers")
def _(root: Path) -> Built:
    return rewritten(root, first_label, label_data().astype(np.float32))


@case(VALID, "int16 images")
def _(root: Path) -> Built:
    source = folder(root)
    for index, subject in enumerate((*TRAIN_IDS, *TEST_IDS)):
        write_nifti(image_path(source, subject), (image_data(index) * 1000).astype(np.int16))
    return Built(source=source)


@case(VALID, "oblique affines")
def _(root: Path) -> Built:
    angle = np.deg2rad(30.0)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    oblique = np.eye(4)
    oblique[:3, :3] = rotation @ np.diag([0.9, 1.3, 3.0])
    oblique[:3, 3] = [-120.5, 88.25, 40.0]
    source = folder(root)
    for subject in TRAIN_IDS:
        write_nifti(image_path(source, subject), image_data(), oblique)
        write_nifti(label_path(source, subject), label_data(), oblique)
    return Built(source=source)


@case(VALID, "single-subject training and test sets")
def _(root: Path) -> Built:
    source = folder(root, numTraining=1)
    image_path(source, TRAIN_IDS[1]).unlink()
    label_path(source, TRAIN_IDS[1]).unlink()
    return Built(source=source, n_train=1, n_test=1)


@case(VALID, "4-D image and label with one volume")
def _(root: Path) -> Built:
    source = folder(root)
    write_nifti(first_image(source), image_data()[..., None])
    write_nifti(first_label(source), label_data()[..., None])
    return Built(source=source)


@case(VALID, "manifest: ids NA, null and None; group NA")
def _(root: Path) -> Built:
    table = [["subject", "image", "label", "group"], *[[*row, "NA"] for row in rows("NA", "null", "None")]]
    return Built(source=manifest(root, table), n_train=2, n_test=1)


@case(VALID, "MSD dataset.json with test entries as objects")
def _(root: Path) -> Built:
    test = [{"image": f"./imagesTs/{s}.nii.gz"} for s in TEST_IDS]
    labels = {"0": "background", "1": "lesion"}
    return Built(source=folder(root, modality={"0": "T1"}, labels=labels, training=msd_training(), test=test))


@case(VALID, "qform only, or sform only")
def _(root: Path) -> Built:
    source = folder(root)
    write_nifti(first_image(source), image_data(), edit=set_header(sform_code=0))
    write_nifti(first_label(source), label_data(), edit=set_header(qform_code=0))
    return Built(source=source)


@case(VALID, "uncompressed .nii files")
def _(root: Path) -> Built:
    return Built(source=folder(root, ending=".nii"))

"""``patchwork verify``: is an entry the one its manifest describes, and does it still predict the same?

1. Every file the manifest lists must exist with its SHA-256 and size, and no other file may be there
   (a file added to ``models/`` would be used, or shipped, unchecked).
2. The stored example case (``example/``) is segmented again on the CPU and its mask compared byte
   for byte with the workflow's (``predictions/ensemble/{case}_seg.nii.gz``).

Each difference is one line naming the file; any raises :class:`~patchwork.errors.PatchworkError`
(exit status 1 on the command line). The re-prediction runs only when the checksums hold, since a
changed model or setting explains a changed mask.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from patchwork.entry import layout
from patchwork.entry.package import sha256
from patchwork.errors import PatchworkError
from patchwork.io import read_json

log = logging.getLogger(__name__)


def checksum_problems(root: Path) -> list[str]:
    """One line per file that is missing, changed, or not in the manifest."""
    manifest_path = root / layout.MANIFEST_JSON
    manifest = read_json(manifest_path)
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise PatchworkError(f"{manifest_path}: not a manifest of patchwork package (no 'files')")
    problems = []
    listed = manifest["files"]
    for rel, expected in sorted(listed.items()):
        path = root / rel
        if not path.is_file():
            problems.append(f"{path}: listed in the manifest but missing")
        elif path.stat().st_size != expected.get("bytes") or sha256(path) != expected.get("sha256"):
            problems.append(f"{path}: SHA-256 differs from the manifest (the file was changed)")
    for path in layout.packaged_files(root):
        if path.relative_to(root).as_posix() not in listed:
            problems.append(f"{path}: not in the manifest (added after packaging)")
    return problems


def verify(root: Path, threads: int | None = None) -> str:
    """Check the entry ``root`` (see the module docstring); return a one-line summary when it passes."""
    from patchwork.entry.infer import infer
    from patchwork.entry.layout import Entry

    root = Path(root)
    problems = checksum_problems(root)
    if problems:
        raise PatchworkError(problems=problems)
    n_files = len(read_json(root / layout.MANIFEST_JSON)["files"])
    entry = Entry.load(root)
    if entry.example is None:
        log.warning("%s: no stored test case; only the checksums were verified", root)
        return f"{root}: {n_files} files match the manifest (no test case to re-predict)"
    expected = layout.ensemble_mask(root, entry.example)
    if not expected.is_file():
        raise PatchworkError(f"{expected}: file not found (the workflow's mask of the stored test case)")
    with tempfile.TemporaryDirectory(prefix="patchwork-verify-") as tmp:
        usage = infer(root, root / layout.EXAMPLE, Path(tmp), device="cpu", threads=threads)
        if Path(tmp, f"{entry.example}.nii.gz").read_bytes() != expected.read_bytes():
            raise PatchworkError(
                f"{expected}: differs from the mask re-predicted on the CPU from {root / layout.EXAMPLE}"
            )
    seconds = usage[entry.example].seconds
    return (
        f"{root}: {n_files} files match the manifest; test case {entry.example} re-predicted "
        f"identically on the CPU ({seconds:.1f} s)"
    )

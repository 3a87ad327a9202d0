"""Tests of patchwork.report: self-contained HTML pages with a table and an embedded PNG overlay."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import numpy as np
import pytest

from patchwork.errors import PatchworkError
from patchwork.io import save_image
from patchwork.metrics import EMPTY_MASK_CONVENTION, evaluate_subject, summarise
from patchwork.report import cohort_summary_html, subject_report

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SHAPE = (24, 28, 20)


def write_case(
    folder: Path, affine: np.ndarray, lesion: bool = True, flip_x: bool = False
) -> dict[str, Path]:
    """An image with a bright ball, its reference and two model segmentations, written as NIfTI."""
    grid = np.indices(SHAPE, dtype=np.float32)
    dist = np.sqrt((grid[0] - 10) ** 2 + (grid[1] - 14) ** 2 + (grid[2] - 9) ** 2)
    image = 100.0 + 50.0 * (dist <= 5) + grid[2]
    ref = (dist <= 5) & lesion
    segs = {"unet": dist <= 4, "dnp": (dist <= 5) & (grid[0] >= 9)}
    arrays = {"image": image, "reference": ref, **segs}
    paths = {}
    for name, data in arrays.items():
        data = data[::-1] if flip_x else data
        paths[name] = folder / f"{name}.nii.gz"
        save_image(
            np.ascontiguousarray(data), affine, paths[name], dtype=np.float32 if name == "image" else np.uint8
        )
    return paths


def embedded_pngs(html: str) -> list[bytes]:
    return [
        base64.b64decode(m)
        for m in re.findall(r'<img [^>]*src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    ]


def report(folder: Path, paths: dict[str, Path], reference: Path | None, name: str = "s01.html") -> str:
    segs = {"unet": paths["unet"], "dnp": paths["dnp"]}
    metrics = evaluate_subject("s01", paths["reference"], segs)
    out = folder / "reports" / name
    subject_report("s01", paths["image"], reference, segs, metrics, out)
    return out.read_text()


def test_subject_report_has_table_and_png(tmp_path):
    paths = write_case(tmp_path, np.diag([1.0, 1.0, 2.0, 1.0]))
    html = report(tmp_path, paths, paths["reference"])
    assert html.startswith("<!DOCTYPE html>") and html.rstrip().endswith("</html>")
    table = html[html.index('<table id="metrics">') : html.index("</table>")]
    assert "<th>dice</th>" in table and "<th>hd95</th>" in table
    assert '<td class="name">unet</td>' in table and '<td class="name">dnp</td>' in table
    assert EMPTY_MASK_CONVENTION in html
    pngs = embedded_pngs(html)
    assert len(pngs) == 1 and pngs[0].startswith(PNG_SIGNATURE)
    assert "centre of mass of the largest reference lesion" in html


def test_subject_report_with_empty_or_missing_reference(tmp_path):
    paths = write_case(tmp_path, np.eye(4), lesion=False)
    html = report(tmp_path, paths, paths["reference"])
    assert "The reference segmentation is empty." in html and "centre of mass of the image" in html
    assert "n/a" in html  # distances are undefined when only the prediction has a lesion
    assert embedded_pngs(html)[0].startswith(PNG_SIGNATURE)
    html = report(tmp_path, paths, None, name="noref.html")
    assert "No reference segmentation was given." in html and embedded_pngs(html)[0].startswith(PNG_SIGNATURE)


def test_overlay_is_independent_of_storage_orientation(tmp_path):
    ras = np.eye(4)
    las = np.diag([-1.0, 1.0, 1.0, 1.0])
    las[0, 3] = SHAPE[0] - 1  # the same world grid, stored with x reversed
    (tmp_path / "ras").mkdir()
    (tmp_path / "las").mkdir()
    html_ras = report(tmp_path / "ras", write_case(tmp_path / "ras", ras), None)
    html_las = report(tmp_path / "las", write_case(tmp_path / "las", las, flip_x=True), None)
    assert embedded_pngs(html_ras) == embedded_pngs(html_las)


def test_subject_report_rejects_segmentation_on_another_grid(tmp_path):
    paths = write_case(tmp_path, np.eye(4))
    save_image(np.zeros(SHAPE, np.uint8), np.diag([2.0, 1.0, 1.0, 1.0]), tmp_path / "odd.nii.gz")
    metrics = evaluate_subject("s01", paths["reference"], {"unet": paths["unet"]})
    with pytest.raises(PatchworkError, match=r"odd\.nii\.gz: affine differs"):
        subject_report(
            "s01",
            paths["image"],
            paths["reference"],
            {"odd": tmp_path / "odd.nii.gz"},
            metrics,
            tmp_path / "r.html",
        )
    assert not (tmp_path / "r.html").exists()


def test_cohort_summary(tmp_path):
    paths = write_case(tmp_path, np.eye(4))
    metrics = evaluate_subject("s01", paths["reference"], {"unet": paths["unet"], "dnp": paths["dnp"]})
    out = tmp_path / "report.html"
    cohort_summary_html(summarise(metrics), out, {"s01": "reports/s01.html"}, metrics=metrics)
    html = out.read_text()
    assert '<table id="summary">' in html and "mean ± sd" in html
    assert '<a href="reports/s01.html">s01</a>' in html
    assert EMPTY_MASK_CONVENTION in html
    assert embedded_pngs(html)[0].startswith(PNG_SIGNATURE)
    cohort_summary_html(summarise(metrics), out, {})
    assert embedded_pngs(out.read_text()) == []

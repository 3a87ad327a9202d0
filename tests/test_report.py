"""Tests of patchwork.evaluation.report: self-contained HTML pages whose images and links all resolve."""

from __future__ import annotations

import base64
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from patchwork.cli import main
from patchwork.data.cohort import Subject, write_subjects
from patchwork.errors import PatchworkError
from patchwork.evaluation.metrics import EMPTY_MASK_CONVENTION, evaluate_subject, summarise
from patchwork.evaluation.report import (
    PNG_SIGNATURE,
    cohort_report,
    convergence_rows,
    read_train_logs,
    subject_report,
    unresolved_links,
)
from patchwork.io import save_image, write_json

SHAPE = (24, 28, 20)


def write_case(
    folder: Path, affine: np.ndarray, lesion: bool = True, flip_x: bool = False
) -> dict[str, Path]:
    """An image with a dark ball, its reference, two model segmentations and a spread map, as NIfTI."""
    folder.mkdir(parents=True, exist_ok=True)
    grid = np.indices(SHAPE, dtype=np.float32)
    dist = np.sqrt((grid[0] - 10) ** 2 + (grid[1] - 14) ** 2 + (grid[2] - 9) ** 2)
    image = 100.0 - 50.0 * (dist <= 5) + grid[2]
    arrays = {
        "image": image,
        "reference": (dist <= 5) & lesion,
        "unet": dist <= 4,
        "dnp": (dist <= 5) & (grid[0] >= 9),
        "dnp_std": np.exp(-((dist - 5) ** 2)),
    }
    paths = {}
    for name, data in arrays.items():
        data = data[::-1] if flip_x else data
        paths[name] = folder / f"{name}.nii.gz"
        dtype = np.float32 if name in ("image", "dnp_std") else np.uint8
        save_image(np.ascontiguousarray(data), affine, paths[name], dtype=dtype)
    return paths


def embedded_pngs(html: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)]


def report(
    folder: Path, paths: dict[str, Path], reference: Path | None, name: str = "s01.html", std: bool = False
) -> str:
    segs = {"unet": paths["unet"], "dnp": paths["dnp"]}
    metrics = evaluate_subject("s01", paths["reference"], segs)
    out = folder / "reports" / name
    uncertainty = {"dnp": paths["dnp_std"]} if std else None
    subject_report("s01", paths["image"], reference, segs, metrics, out, uncertainty, tolerance_mm=1.5)
    assert unresolved_links(out) == []
    return out.read_text()


def test_subject_report_has_tables_and_png(tmp_path):
    paths = write_case(tmp_path, np.diag([1.0, 1.0, 2.0, 1.0]))
    html = report(tmp_path, paths, paths["reference"], std=True)
    assert html.startswith("<!DOCTYPE html>") and html.rstrip().endswith("</html>")
    table = html[html.index('<table class="metrics">') : html.index("</table>")]
    assert "<th>unet</th><th>dnp</th>" in table
    for title in ("Dice", "per-blob Dice", "surface Dice at 1.5 mm", "HD95 (mm)", "ASSD (mm)", "lesion F1"):
        assert f'<td class="name">{title}</td>' in table
    assert EMPTY_MASK_CONVENTION in html and "within\n1.5 mm" in html
    assert "centre of mass of the largest reference lesion" in html
    assert "per-voxel spread of the outputs of\ndnp" in html
    pngs = embedded_pngs(html)
    assert len(pngs) == 1 and pngs[0].startswith(PNG_SIGNATURE)
    without_std = report(tmp_path, paths, paths["reference"], name="nostd.html")
    assert "spread" not in without_std
    assert len(embedded_pngs(without_std)[0]) < len(pngs[0])  # one row of slices fewer


def test_subject_report_with_empty_or_missing_reference(tmp_path):
    paths = write_case(tmp_path, np.eye(4), lesion=False)
    html = report(tmp_path, paths, paths["reference"])
    assert "The reference segmentation is empty." in html and "centre of mass of the image" in html
    assert "n/a" in html  # distances are undefined when only the prediction has a lesion
    html = report(tmp_path, paths, None, name="noref.html")
    assert "No reference segmentation was given." in html and embedded_pngs(html)[0].startswith(PNG_SIGNATURE)


def test_overlay_is_independent_of_storage_orientation(tmp_path):
    las = np.diag([-1.0, 1.0, 1.0, 1.0])
    las[0, 3] = SHAPE[0] - 1  # the same world grid, stored with x reversed
    html_ras = report(tmp_path / "ras", write_case(tmp_path / "ras", np.eye(4)), None)
    html_las = report(tmp_path / "las", write_case(tmp_path / "las", las, flip_x=True), None)
    assert embedded_pngs(html_ras) == embedded_pngs(html_las)


def test_subject_report_rejects_maps_on_another_grid(tmp_path):
    paths = write_case(tmp_path, np.eye(4))
    save_image(np.zeros(SHAPE, np.uint8), np.diag([2.0, 1.0, 1.0, 1.0]), tmp_path / "odd.nii.gz")
    metrics = evaluate_subject("s01", paths["reference"], {"unet": paths["unet"]})
    for segs, std in (({"odd": tmp_path / "odd.nii.gz"}, None), ({}, {"odd": tmp_path / "odd.nii.gz"})):
        with pytest.raises(PatchworkError, match=r"odd\.nii\.gz: affine differs"):
            subject_report("s01", paths["image"], paths["reference"], segs, metrics, tmp_path / "r.html", std)
    assert not (tmp_path / "r.html").exists()


def cohort_metrics(tmp_path: Path) -> pd.DataFrame:
    """Metrics of three subjects for two models and an ensemble whose Dice rises from s03 to s01."""
    paths = write_case(tmp_path / "case", np.eye(4))
    tables = []
    for subject, ensemble in (("s01", "reference"), ("s02", "dnp"), ("s03", "unet")):
        segs = {"unet": paths["unet"], "dnp": paths["dnp"], "ensemble": paths[ensemble]}
        tables.append(evaluate_subject(subject, paths["reference"], segs))
    return pd.concat(tables, ignore_index=True)


def train_log(path: Path, validation: bool) -> Path:
    rows = ["iteration\ttrain_loss\tval_loss\tval_dice\tlr\tseconds"]
    rows += [
        f"{i}\t{1 / i:.3f}\t{1.2 / i if validation else ''}\t{0.1 * i if validation else ''}\t0.01\t{i}"
        for i in (1, 2, 3)
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(rows) + "\n")
    return path


def test_cohort_report(tmp_path):
    metrics = cohort_metrics(tmp_path)
    logs = [
        train_log(tmp_path / f"models/unet/fold_{k}/train_log.tsv", k != "all") for k in ("0", "1", "all")
    ]
    (tmp_path / "reports").mkdir()
    for s in ("s01", "s02", "s03"):
        (tmp_path / "reports" / f"{s}.html").write_text("<!DOCTYPE html>")
    out = tmp_path / "report.html"
    figures = {"metrics": tmp_path / "plots/metrics.png", "learning_curves": tmp_path / "plots/curves.png"}
    cohort_report(
        metrics,
        summarise(metrics),
        out,
        subject_reports={s: f"reports/{s}.html" for s in ("s01", "s02", "s03")},
        train_logs=read_train_logs(logs),
        figure_paths=figures,
    )
    html = out.read_text()
    assert unresolved_links(out) == []
    table1 = html[html.index('<table class="table1">') : html.index("</table>")]
    assert "Per-blob Dice" in table1 and "Blob diff." in table1 and "HD95 (mm)" in table1
    assert [m for m in re.findall(r'<td class="name">(\w+)</td>', table1)] == ["unet", "dnp", "ensemble"]
    subjects = html[html.index('id="subjects-table"') :]
    order = re.findall(r'<a href="reports/(s\d+)\.html">', subjects)
    assert order == ["s03", "s02", "s01"]  # the ensemble's Dice, worst first
    assert len(embedded_pngs(html)) == 2 and all(p.is_file() for p in figures.values())
    assert figures["metrics"].read_bytes() in embedded_pngs(html)
    assert EMPTY_MASK_CONVENTION in html
    convergence = html[html.index('id="convergence-table"') :]
    convergence = convergence[: convergence.index("</table>")]
    assert re.findall(r"<th>(\w+)</th>", convergence) == ["fold_0", "fold_1", "mean", "spread"]
    assert re.findall(r"<td>([\d.]+)</td>", convergence) == ["0.3", "0.3", "0.3", "0"]

    dice_only = metrics[metrics["metric"] == "dice"]
    cohort_report(dice_only, summarise(dice_only), out)
    assert len(embedded_pngs(out.read_text())) == 1 and unresolved_links(out) == []
    assert '<a href="reports/' not in out.read_text()
    with pytest.raises(PatchworkError, match="learning curves"):
        cohort_report(
            dice_only, summarise(dice_only), out, figure_paths={"learning_curves": tmp_path / "c.png"}
        )
    folds = {model: list(tables) for model, tables in read_train_logs(logs).items()}
    assert folds == {"unet": ["fold_0", "fold_1", "fold_all"]}
    with pytest.raises(PatchworkError, match=r"nothing\.tsv: cannot read the training log"):
        read_train_logs([tmp_path / "nothing.tsv"])


def test_convergence_rows_give_each_folds_last_validation_dice_and_the_spread():
    def log(*dice: float) -> pd.DataFrame:
        return pd.DataFrame({"iteration": range(1, len(dice) + 1), "val_dice": dice})

    logs = {
        "unet": {"fold_0": log(0.1, 0.2), "fold_1": log(0.5, 0.4), "fold_all": log(float("nan"))},
        "dnp": {"fold_1": log(0.6), "fold_0": log(0.3, 0.62, float("nan"))},
        "no_validation": {"fold_0": pd.DataFrame({"iteration": [1], "train_loss": [0.5]})},
    }
    columns, rows = convergence_rows(logs)
    assert columns == ["fold_0", "fold_1"]
    assert rows == [
        {"model": "unet", "values": ["0.2", "0.4"], "mean": "0.3", "spread": "0.2"},
        {"model": "dnp", "values": ["0.62", "0.6"], "mean": "0.61", "spread": "0.02"},
    ]
    assert convergence_rows({}) == ([], [])


def test_unresolved_links_finds_every_kind_of_broken_target(tmp_path):
    (tmp_path / "there.html").write_text("")
    good_png = base64.b64encode(PNG_SIGNATURE + b"rest").decode()
    page = tmp_path / "page.html"
    page.write_text(
        f'<p id="top"></p><a href="there.html">ok</a><a href="#top">ok</a>'
        f'<img src="data:image/png;base64,{good_png}">'
        '<a href="missing.html">x</a><a href="#nowhere">x</a><a href="https://example.org">x</a>'
        '<img src="data:image/png;base64,bm90IGEgcG5n">'
    )
    problems = unresolved_links(page)
    assert len(problems) == 4
    assert problems[0] == "missing.html: no such file" and problems[1] == "#nowhere: no element with this id"
    assert "external" in problems[2] and "not a base64 PNG" in problems[3]


def test_command_line_writes_pages_whose_links_resolve(tmp_path):
    """`patchwork evaluate` (a batch), `summarise` and `report` as the workflow calls them."""
    paths = write_case(tmp_path / "data", np.diag([1.0, 1.0, 2.0, 1.0]))
    write_json(tmp_path / "fingerprint.json", {"labels": {"background": 0, "lesion": 1}})
    cohort = [Subject(s, "train", (paths["image"],), paths["reference"]) for s in ("a", "b")]
    write_subjects(cohort, tmp_path / "subjects.tsv")
    write_json(tmp_path / "splits.json", [{"train": [], "val": ["a", "b"]}])
    for subject in ("a", "b"):  # the batch folders of every model's segmentations and spreads
        for name, kind in (("unet", "seg"), ("dnp", "seg"), ("dnp_std", "std")):
            folder = tmp_path / "predictions" / name.removesuffix("_std")
            folder.mkdir(parents=True, exist_ok=True)
            shutil.copy(paths[name], folder / f"{subject}_{kind}.nii.gz")
    folders = {name: tmp_path / "predictions" / name for name in ("unet", "dnp")}
    tsvs, pages = [tmp_path / "metrics" / "fold_0.tsv"], [tmp_path / "reports" / "fold_0"]
    argv = ["evaluate", "--batch", "fold_0", "--subjects", str(tmp_path / "subjects.tsv")]
    argv += ["--splits", str(tmp_path / "splits.json"), "--fingerprint", str(tmp_path / "fingerprint.json")]
    argv += ["--seg", *(f"{n}={f}" for n, f in folders.items()), "--std", f"dnp={folders['dnp']}"]
    argv += ["--surface-tolerance", "1.0", "--out-tsv", str(tsvs[0]), "--out-html-dir", str(pages[0])]
    assert main(argv) == 0
    metrics, summary = tmp_path / "metrics.tsv", tmp_path / "summary.tsv"
    argv = [
        "summarise",
        "--metrics",
        *map(str, tsvs),
        "--out-metrics",
        str(metrics),
        "--out-summary",
        str(summary),
    ]
    assert main(argv) == 0
    log = train_log(tmp_path / "models/unet/fold_0/train_log.tsv", validation=True)
    out = tmp_path / "report.html"
    argv = [
        "report",
        "--metrics",
        str(metrics),
        "--summary",
        str(summary),
        "--subject-reports",
        *map(str, pages),
    ]
    argv += ["--train-logs", str(log), "--out-html", str(out)]
    argv += ["--out-metrics-png", str(tmp_path / "m.png"), "--out-curves-png", str(tmp_path / "c.png")]
    assert main(argv) == 0
    subject_pages = sorted(pages[0].glob("*.html"))
    assert [page.name for page in subject_pages] == ["a.html", "b.html"]
    for page in (out, *subject_pages):
        assert unresolved_links(page) == []
    assert '<a href="reports/fold_0/a.html">a</a>' in out.read_text()
    assert "surface Dice at 1 mm" in subject_pages[0].read_text()


def test_plans_show_each_planned_key_with_its_source() -> None:
    from patchwork.evaluation.report import plan_rows

    plans = {
        "models": {
            "unet": {"params": {"patch_size": [64, 64, 64], "batch_size": 2}},
            "dnp": {"params": {"crop": {"depth": 3, "scheme": {"patch_size": [32, 32, 32]}}}},
        }
    }
    specs = {
        "u": {
            "name": "u",
            "type": "unet",
            "params": {"patch_size": [64, 64, 64], "batch_size": 5, "head": "x"},
        },
        "d": {
            "name": "d",
            "type": "dnp",
            "params": {"crop": {"depth": 3, "scheme": {"patch_size": [16] * 3}}},
        },
    }
    rows = {
        r["model"]: {c["key"]: (c["value"], c["source"]) for c in r["cells"]} for r in plan_rows(plans, specs)
    }
    assert rows["u"] == {"patch_size": ([64, 64, 64], "plan"), "batch_size": (5, "config")}
    assert rows["d"] == {"crop.depth": (3, "plan"), "crop.scheme.patch_size": ([16, 16, 16], "config")}

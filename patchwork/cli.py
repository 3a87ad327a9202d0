"""``patchwork <command>``: one subcommand per workflow stage.

Each subcommand is a thin wrapper around a package function; the Snakemake rules call these and
nothing else. Input problems raise :class:`~patchwork.errors.PatchworkError`, printed here as
``error: <file>: <problem>`` lines with exit status 1 and no traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from patchwork import __version__
from patchwork.errors import PatchworkError

if TYPE_CHECKING:
    from patchwork.data.cohort import Subject

log = logging.getLogger("patchwork")


def _json_arg(text: str) -> object:
    """argparse type: a JSON literal (used for model specs and label maps)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"not valid JSON: {err.msg}") from None


def _set_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(max(1, threads))


# --- data -----------------------------------------------------------------------------------------


def cmd_demo(args: argparse.Namespace) -> None:
    from patchwork.data.demo import make_demo_dataset

    out = make_demo_dataset(
        Path(args.out), n_train=args.n_train, n_test=args.n_test, spacing=args.spacing, seed=args.seed
    )
    log.info("demo dataset written to %s", out)


def cmd_ingest(args: argparse.Namespace) -> None:
    from patchwork.data.cohort import write_subjects
    from patchwork.data.ingest import ingest
    from patchwork.io import write_json

    subjects, fingerprint = ingest(args.source, labels=args.labels, affine_tolerance=args.affine_tolerance)
    write_json(args.fingerprint, fingerprint)
    write_subjects(subjects, args.out)
    log.info(
        "%d training and %d test subjects in %s", fingerprint["n_train"], fingerprint["n_test"], args.out
    )


def _subject(subjects_tsv: str, subject_id: str) -> Subject:
    """The row of ``subject_id`` in the cohort table."""
    from patchwork.data.cohort import read_subjects

    for s in read_subjects(subjects_tsv):
        if s.subject == subject_id:
            return s
    raise PatchworkError(f"{subjects_tsv}: no subject {subject_id!r}")


def cmd_preprocess(args: argparse.Namespace) -> None:
    from patchwork.data.preprocess import preprocess_subject
    from patchwork.io import read_json

    spacing = args.target_spacing or read_json(args.fingerprint)["median_spacing"]
    preprocess_subject(
        _subject(args.subjects, args.subject),
        Path(args.out_dir),
        target_spacing=spacing,
        normalization=args.normalization,
        crop_nonzero=not args.no_crop,
    )


def cmd_splits(args: argparse.Namespace) -> None:
    from patchwork.data.cohort import read_subjects
    from patchwork.data.splits import check_splits, make_splits
    from patchwork.io import read_json, write_json

    subjects = read_subjects(args.subjects, role="train")
    ids = [s.subject for s in subjects]
    if args.file:
        splits = check_splits(read_json(args.file), ids, source=args.file)
    else:
        groups = [s.group or "" for s in subjects] if any(s.group for s in subjects) else None
        splits = make_splits(ids, n_folds=args.folds, seed=args.seed, groups=groups)
    write_json(args.out, splits)


# --- models ---------------------------------------------------------------------------------------


def cmd_train(args: argparse.Namespace) -> None:
    import numpy as np

    from patchwork.data.cohort import read_subjects
    from patchwork.data.preprocess import load_preprocessed
    from patchwork.io import read_json
    from patchwork.models import train_model

    _set_threads(args.threads)
    train_ids = [s.subject for s in read_subjects(args.subjects, role="train")]
    val_ids: list[str] = []
    if args.fold != "all":
        splits = read_json(args.splits)
        fold = int(args.fold)
        if not 0 <= fold < len(splits):
            raise PatchworkError(f"{args.splits}: no fold {fold} (the file has {len(splits)})")
        train_ids, val_ids = splits[fold]["train"], splits[fold]["val"]

    def load(ids: Sequence[str]) -> tuple[list, list, list]:
        """Images, labels and grid affines of preprocessed subjects."""
        cases = [load_preprocessed(Path(args.preprocessed), i) for i in ids]
        return [c[0] for c in cases], [c[1] for c in cases], [np.asarray(c[2]["affine"]) for c in cases]

    val = load(val_ids) if val_ids else None
    train_model(args.spec, *load(train_ids), Path(args.out_dir), seed=args.seed, val=val, device=args.device)


def cmd_predict(args: argparse.Namespace) -> None:
    import numpy as np

    from patchwork.data.preprocess import load_preprocessed, to_original
    from patchwork.io import save_image
    from patchwork.models import predict_model

    _set_threads(args.threads)
    image, _, record = load_preprocessed(Path(args.preprocessed), args.subject)
    prob, spread = predict_model(
        Path(args.model), image, np.asarray(record["affine"]), device=args.device, seed=args.seed
    )
    prob_orig, affine = to_original(prob, record, interpolation="linear", fill=0.0)
    prob_orig = np.clip(prob_orig, 0.0, 1.0).astype(np.float32)
    save_image(prob_orig, affine, args.out_prob, dtype=np.float32)
    save_image(prob_orig >= args.threshold, affine, args.out_seg, dtype=np.uint8)
    if args.out_std:
        if spread is None:
            raise PatchworkError(f"{args.model}: this model type gives no uncertainty map (--out-std)")
        save_image(
            to_original(spread, record, interpolation="linear", fill=0.0)[0], affine, args.out_std, np.float32
        )


def _ensemble_settings(args: argparse.Namespace) -> dict:
    """The hand-set ensemble settings given on the command line."""
    return {
        "weights": args.weights,
        "threshold": args.threshold,
        "min_component_voxels": args.min_component_voxels,
        "mode": args.mode,
        "model_thresholds": args.model_thresholds,
    }


def cmd_ensemble(args: argparse.Namespace) -> None:
    from patchwork.ensemble import ensemble_files
    from patchwork.io import read_json

    settings = _ensemble_settings(args)
    if args.params_json:
        tuned = read_json(args.params_json)
        settings.update({k: tuned[k] for k in ("threshold", "min_component_voxels", "mode")})
        settings["weights"] = list(tuned["weights"].values())
    ensemble_files(
        [Path(p) for p in args.probs],
        settings.pop("weights"),
        Path(args.out_prob),
        Path(args.out_seg),
        **settings,
    )


def cmd_tune_ensemble(args: argparse.Namespace) -> None:
    from patchwork.data.cohort import read_subjects
    from patchwork.ensemble_tuning import THRESHOLDS, load_case, tune_ensemble
    from patchwork.io import write_json

    subjects = read_subjects(args.subjects, role="train")
    cases = [
        load_case(
            [Path(args.predictions) / m / f"{s.subject}_prob.nii.gz" for m in args.models],
            s.label,
            lowest_threshold=min(THRESHOLDS),
        )
        for s in subjects
    ]
    result = tune_ensemble(cases, args.models, _ensemble_settings(args))
    write_json(args.out, result)
    log.info(
        "tuned ensemble: mean Dice %.4f (hand-set %.4f)", result["mean_dice"], result["hand_set"]["mean_dice"]
    )


# --- evaluation -----------------------------------------------------------------------------------


def _named_paths(items: Sequence[str]) -> dict[str, Path]:
    """Parse ``name=path`` pairs given on the command line."""
    out = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise PatchworkError(f"expected NAME=PATH, got {item!r}")
        out[name] = Path(path)
    return out


def cmd_evaluate(args: argparse.Namespace) -> None:
    from patchwork.io import read_json, write_text
    from patchwork.metrics import evaluate_subject
    from patchwork.report import subject_report

    labels = {k: v for k, v in read_json(args.fingerprint)["labels"].items() if v != 0}
    segs = _named_paths(args.seg)
    tolerance = args.surface_tolerance
    metrics = evaluate_subject(
        args.subject, Path(args.reference), segs, labels=labels, tolerance_mm=tolerance
    )
    write_text(args.out_tsv, metrics.to_csv(sep="\t", index=False))
    subject_report(
        args.subject,
        Path(args.image),
        Path(args.reference),
        segs,
        metrics,
        Path(args.out_html),
        uncertainty=_named_paths(args.std),
        tolerance_mm=tolerance,
    )


def cmd_summarise(args: argparse.Namespace) -> None:
    import pandas as pd

    from patchwork.io import write_text
    from patchwork.metrics import summarise

    metrics = pd.concat([pd.read_csv(p, sep="\t") for p in args.metrics], ignore_index=True)
    write_text(args.out_metrics, metrics.to_csv(sep="\t", index=False))
    write_text(args.out_summary, summarise(metrics).to_csv(sep="\t", index=False))


def cmd_report(args: argparse.Namespace) -> None:
    import os

    import pandas as pd

    from patchwork.report import cohort_report, read_train_logs

    out = Path(args.out_html)
    subject_reports = {
        Path(p).name.removesuffix(".html"): os.path.relpath(p, out.parent) for p in args.subject_reports
    }
    figures = {"metrics": args.out_metrics_png, "learning_curves": args.out_curves_png}
    cohort_report(
        pd.read_csv(args.metrics, sep="\t"),
        pd.read_csv(args.summary, sep="\t"),
        out,
        subject_reports=subject_reports,
        train_logs=read_train_logs([Path(p) for p in args.train_logs]),
        tolerance_mm=args.surface_tolerance,
        figure_paths={name: Path(path) for name, path in figures.items() if path},
    )


def cmd_package(args: argparse.Namespace) -> None:
    """Package the challenge entry: the final models, the run's config and a manifest of checksums."""
    from patchwork.submission import package_submission

    package_submission(
        models=_named_paths(args.model),
        config=args.config_json,
        seed=args.seed,
        out_dir=Path(args.out_dir),
    )


# --- parser ---------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``patchwork``; one subparser per workflow stage."""
    parser = argparse.ArgumentParser(prog="patchwork", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"patchwork {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--log", default=None, help="also append the log (and errors) to this file")
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, func: Callable[[argparse.Namespace], None], help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.set_defaults(func=func)
        return p

    p = add("demo", cmd_demo, "write the built-in demo cohort (nnU-Net raw layout)")
    p.add_argument("out")
    p.add_argument("--n-train", type=int, default=20)
    p.add_argument("--n-test", type=int, default=5)
    p.add_argument("--spacing", type=float, default=2.0)
    p.add_argument("--seed", type=int, default=0)

    p = add("ingest", cmd_ingest, "check every file of a cohort and write subjects.tsv + fingerprint")
    p.add_argument("source", help="nnU-Net/MSD raw folder (dataset.json) or CSV manifest")
    p.add_argument("--out", required=True, help="subjects.tsv to write")
    p.add_argument("--fingerprint", required=True, help="fingerprint.json to write")
    p.add_argument("--labels", type=_json_arg, default=None, help='JSON, e.g. {"background": 0, "lesion": 1}')
    p.add_argument("--affine-tolerance", type=float, default=1e-3)

    p = add("preprocess", cmd_preprocess, "resample, normalise and crop one subject")
    p.add_argument("--subjects", required=True)
    p.add_argument("--subject", required=True)
    p.add_argument("--fingerprint", required=True)
    p.add_argument("--out-dir", required=True)
    p.add_argument("--target-spacing", type=float, nargs=3, default=None)
    p.add_argument("--normalization", default="zscore_nonzero", choices=["zscore_nonzero", "zscore", "none"])
    p.add_argument("--no-crop", action="store_true")

    p = add("splits", cmd_splits, "cross-validation splits (nnU-Net splits_final.json format)")
    p.add_argument("--subjects", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--file", default=None, help="a user-supplied splits file to check and use")

    def add_compute(p: argparse.ArgumentParser) -> None:
        p.add_argument("--threads", type=int, default=1)
        p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when present)")

    p = add("train", cmd_train, "train one model on one fold (or 'all')")
    p.add_argument("--spec", type=_json_arg, required=True, help="model spec as JSON")
    p.add_argument("--subjects", required=True)
    p.add_argument("--preprocessed", required=True)
    p.add_argument("--splits", required=True)
    p.add_argument("--fold", required=True)
    p.add_argument("--out-dir", required=True)
    p.add_argument("--seed", type=int, default=0)
    add_compute(p)

    p = add("predict", cmd_predict, "predict one subject, written in its original image grid")
    p.add_argument("--model", required=True, help="model.pt of a trained model")
    p.add_argument("--preprocessed", required=True)
    p.add_argument("--subject", required=True)
    p.add_argument("--out-prob", required=True)
    p.add_argument("--out-seg", required=True)
    p.add_argument("--threshold", type=float, default=0.5)
    p.add_argument("--out-std", default=None, help="also write the per-voxel spread (DNP models)")
    p.add_argument("--seed", type=int, default=0, help="seed of stochastic application (DNP)")
    add_compute(p)

    p = add("ensemble", cmd_ensemble, "combine model probabilities of one subject")
    p.add_argument("--probs", nargs="+", required=True)
    p.add_argument("--weights", type=float, nargs="+", required=True)
    p.add_argument("--mode", default="mean", choices=["mean", "vote"])
    p.add_argument("--threshold", type=float, default=0.5)
    p.add_argument("--model-thresholds", type=float, nargs="+", default=None)
    p.add_argument("--min-component-voxels", type=int, default=0)
    p.add_argument("--params-json", default=None, help="tuned settings (tune-ensemble) to use instead")
    p.add_argument("--out-prob", required=True)
    p.add_argument("--out-seg", required=True)

    p = add(
        "tune-ensemble", cmd_tune_ensemble, "choose ensemble weights/threshold on out-of-fold predictions"
    )
    p.add_argument("--subjects", required=True)
    p.add_argument("--predictions", required=True, help="folder with {model}/{subject}_prob.nii.gz")
    p.add_argument("--models", nargs="+", required=True)
    p.add_argument("--weights", type=float, nargs="+", required=True, help="hand-set weights, for comparison")
    p.add_argument("--mode", default="mean", choices=["mean", "vote"])
    p.add_argument("--threshold", type=float, default=0.5)
    p.add_argument("--model-thresholds", type=float, nargs="+", default=None)
    p.add_argument("--min-component-voxels", type=int, default=0)
    p.add_argument("--out", required=True, help="ensemble_params.json to write")

    p = add("evaluate", cmd_evaluate, "metrics and HTML report of one subject")
    p.add_argument("--subject", required=True)
    p.add_argument("--image", required=True)
    p.add_argument("--reference", required=True)
    p.add_argument("--fingerprint", required=True)
    p.add_argument("--seg", nargs="+", required=True, help="MODEL=PATH of each segmentation")
    p.add_argument("--std", nargs="+", default=[], help="MODEL=PATH of each uncertainty (spread) map")
    p.add_argument("--surface-tolerance", type=float, default=2.0, help="surface Dice tolerance (mm)")
    p.add_argument("--out-tsv", required=True)
    p.add_argument("--out-html", required=True)

    p = add("summarise", cmd_summarise, "cohort metrics table and per-model summary")
    p.add_argument("--metrics", nargs="+", required=True)
    p.add_argument("--out-metrics", required=True)
    p.add_argument("--out-summary", required=True)

    p = add("report", cmd_report, "cohort HTML report: results table, plots, learning curves, subject links")
    p.add_argument("--metrics", required=True, help="the cohort's metrics.tsv")
    p.add_argument("--summary", required=True, help="summary.tsv of the same metrics")
    p.add_argument("--subject-reports", nargs="*", default=[], help="subject pages ({subject}.html)")
    p.add_argument(
        "--train-logs", nargs="*", default=[], help="train_log.tsv files, each in models/MODEL/FOLD/"
    )
    p.add_argument("--surface-tolerance", type=float, default=2.0, help="surface Dice tolerance (mm)")
    p.add_argument("--out-html", required=True)
    p.add_argument("--out-metrics-png", default=None, help="also write the per-subject plots here")
    p.add_argument("--out-curves-png", default=None, help="also write the learning curves here")

    p = add("package", cmd_package, "package a challenge entry: final models, config, manifest")
    p.add_argument("--model", nargs="+", required=True, help="NAME=PATH of each final model.pt")
    p.add_argument("--config-json", type=_json_arg, required=True, help="the run's config as JSON")
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--out-dir", required=True, help="submission folder (test predictions already inside)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``patchwork`` console script."""
    args = build_parser().parse_args(argv)
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if args.log:
        Path(args.log).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(args.log, mode="w"))
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        handlers=handlers,
        force=True,
    )
    try:
        args.func(args)
    except PatchworkError as err:
        for line in err.problems:
            print(f"error: {line}", file=sys.stderr)
            if args.log:
                with open(args.log, "a") as fh:
                    fh.write(f"error: {line}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``patchwork <command>``: one subcommand per workflow stage, each parsing its arguments and calling a stage.

The stages live in :mod:`patchwork.stages`; every default comes from the settings dataclasses of
:mod:`patchwork.config` (``--settings`` takes that command's config section as JSON). Input problems raise
:class:`~patchwork.errors.PatchworkError`, printed as ``error: <problem>`` lines with exit status 1 and no
traceback; any other exception is a bug: its full traceback goes to stderr and the ``--log`` file, and
the exit status is 1.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from patchwork import __version__
from patchwork.config import (
    DEFAULT_THRESHOLD,
    DemoSettings,
    EnsembleSettings,
    EvaluateSettings,
    IngestSettings,
    PlanningSettings,
    PreprocessSettings,
    SplitSettings,
    ThreadSettings,
)
from patchwork.errors import PatchworkError
from patchwork.models import parse_spec
from patchwork.settings import Settings, default_of
from patchwork.stages import data, ensemble, entry, evaluation, models, planning
from patchwork.workflow_config import WorkflowConfig, documented_readme, schema_yaml

log = logging.getLogger("patchwork")


def _default(cls: type, name: str) -> Any:
    """The default of field ``name`` of the settings class ``cls`` (the one place it is written)."""
    return default_of(next(f for f in dataclasses.fields(cls) if f.name == name))


def _json(text: str) -> Any:
    """argparse type: a JSON literal (settings sections, model specs, the run's config)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"not valid JSON: {err.msg}") from None


def _named_paths(items: Sequence[str], many: bool = False) -> Any:
    """Parse ``NAME=PATH`` pairs; with ``many`` a name comes once per path (a model's batch folders) and each
    name maps to its paths, in first-seen order."""
    out: dict[str, list[Path]] = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise PatchworkError(f"expected NAME=PATH, got {item!r}")
        out.setdefault(name, []).append(Path(path))
    return out if many else {name: paths[-1] for name, paths in out.items()}


def _set_threads(threads: int) -> None:
    """Limit torch's CPU threads to what the job was given."""
    import torch

    torch.set_num_threads(max(1, threads))


# --- commands: parse arguments, call one stage ----------------------------------------------------


def cmd_demo(args: argparse.Namespace) -> None:
    data.demo(Path(args.out), DemoSettings.from_dict(args.settings), args.seed)


def cmd_ingest(args: argparse.Namespace) -> None:
    data.ingest(args.source, Path(args.out), Path(args.fingerprint), IngestSettings.from_dict(args.settings))


def cmd_preprocess(args: argparse.Namespace) -> None:
    settings = PreprocessSettings.from_dict(args.settings)
    data.preprocess(Path(args.subjects), args.subject, Path(args.fingerprint), Path(args.out_dir), settings)


def cmd_splits(args: argparse.Namespace) -> None:
    data.splits(Path(args.subjects), Path(args.out), SplitSettings.from_dict(args.settings), args.seed)


def cmd_plan(args: argparse.Namespace) -> None:
    planning.plan(
        Path(args.fingerprint),
        PlanningSettings.from_dict(args.settings),
        PreprocessSettings.from_dict(args.preprocess_settings),
        args.device,
        Path(args.out),
    )


def cmd_train(args: argparse.Namespace) -> None:
    spec = args.spec
    if args.plans:
        from patchwork.io import read_json
        from patchwork.models.plans import planned_spec

        spec = planned_spec(spec, read_json(Path(args.plans)))
    spec = parse_spec(spec, "--spec")
    _set_threads(args.threads)
    models.train(
        spec,
        Path(args.subjects),
        Path(args.preprocessed),
        Path(args.splits),
        args.fold,
        Path(args.out_dir),
        seed=args.seed,
        device=args.device,
    )


def cmd_predict(args: argparse.Namespace) -> None:
    _set_threads(args.threads)
    models.predict_batch(
        Path(args.model),
        Path(args.preprocessed),
        models.batch_subjects(Path(args.subjects), args.splits and Path(args.splits), args.batch),
        args.apply,
        args.threshold,
        Path(args.out_dir),
        std=args.std,
        seed=args.seed,
        device=args.device,
    )


def cmd_ensemble(args: argparse.Namespace) -> None:
    settings = EnsembleSettings.from_dict(args.settings)
    tuned = Path(args.tuned) if args.tuned else None
    ensemble.ensemble_batch(_named_paths(args.probs), settings, Path(args.out_dir), tuned)


def cmd_tune_ensemble(args: argparse.Namespace) -> None:
    settings = EnsembleSettings.from_dict(args.settings)
    ensemble.tune(Path(args.subjects), _named_paths(args.probs, many=True), settings, Path(args.out))


def cmd_tune_postprocessing(args: argparse.Namespace) -> None:
    ensemble.tune_postprocessing(
        Path(args.subjects), [Path(p) for p in args.predictions], args.model, args.threshold, Path(args.out)
    )


def cmd_postprocess(args: argparse.Namespace) -> None:
    ensemble.postprocess_batch(Path(args.prob_dir), Path(args.tuned), Path(args.out_dir))


def cmd_evaluate(args: argparse.Namespace) -> None:
    evaluation.evaluate_batch(
        Path(args.subjects),
        models.batch_subjects(Path(args.subjects), args.splits and Path(args.splits), args.batch),
        Path(args.fingerprint),
        _named_paths(args.seg),
        EvaluateSettings(surface_tolerance_mm=args.surface_tolerance),
        Path(args.out_tsv),
        Path(args.out_html_dir),
        std_dirs=_named_paths(args.std),
    )


def cmd_summarise(args: argparse.Namespace) -> None:
    evaluation.summarise([Path(p) for p in args.metrics], Path(args.out_metrics), Path(args.out_summary))


def cmd_report(args: argparse.Namespace) -> None:
    figures = {"metrics": args.out_metrics_png, "learning_curves": args.out_curves_png}
    evaluation.report(
        Path(args.metrics),
        Path(args.summary),
        Path(args.out_html),
        EvaluateSettings(surface_tolerance_mm=args.surface_tolerance),
        subject_reports=[Path(p) for p in args.subject_reports],
        train_logs=[Path(p) for p in args.train_logs],
        figure_paths={name: Path(path) for name, path in figures.items() if path},
        plans=Path(args.plans) if args.plans else None,
    )


def cmd_package(args: argparse.Namespace) -> None:
    entry.package(
        _named_paths(args.model),
        args.config_json,
        EnsembleSettings.from_dict(args.ensemble_settings),
        Path(args.tuned) if args.tuned else None,
        Path(args.fingerprint),
        Path(args.subjects),
        Path(args.license),
        Path(args.out_dir),
        _named_paths(args.postprocessing),
    )


def cmd_infer(args: argparse.Namespace) -> None:
    table = entry.infer(
        Path(args.entry),
        Path(args.input),
        Path(args.output),
        args.device,
        args.threads,
        args.save_probabilities,
        args.save_uncertainty,
        args.save_models,
    )
    print(table)


def cmd_verify(args: argparse.Namespace) -> None:
    print(entry.verify(Path(args.entry), args.threads))


def cmd_schema(args: argparse.Namespace) -> None:
    if args.readme is None:
        sys.stdout.write(schema_yaml())
        return
    import yaml

    from patchwork.io import write_text

    readme = Path(args.readme)  # config/README.md, with the CPU preset beside it
    preset = yaml.safe_load((readme.parent / "cpu.yaml").read_text(encoding="utf-8"))
    write_text(readme, documented_readme(readme.read_text(encoding="utf-8"), preset))


# --- parser ---------------------------------------------------------------------------------------


def _add_settings(p: argparse.ArgumentParser, cls: type[Settings]) -> None:
    """``--settings JSON``: the command's config section (missing keys take the defaults shown)."""
    defaults = json.dumps(cls().to_dict())
    p.add_argument(
        "--settings", type=_json, default={}, help=f"{cls.what} settings as JSON (defaults: {defaults})"
    )


def _add_seed(p: argparse.ArgumentParser, help: str = "seed of every random choice") -> None:
    p.add_argument("--seed", type=int, default=_default(WorkflowConfig, "seed"), help=help)


def _add_compute(p: argparse.ArgumentParser, job: str) -> None:
    """``--threads`` (default: the config's ``threads.{job}``) and ``--device``."""
    p.add_argument("--threads", type=int, default=_default(ThreadSettings, job), help="CPU threads")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when present)")


def _add_tolerance(p: argparse.ArgumentParser) -> None:
    default = _default(EvaluateSettings, "surface_tolerance_mm")
    p.add_argument("--surface-tolerance", type=float, default=default, help="surface Dice tolerance (mm)")


def _add_data_commands(add: Any) -> None:
    p = add("demo", cmd_demo, "write the built-in demo cohort (nnU-Net raw layout)")
    p.add_argument("out")
    _add_settings(p, DemoSettings)
    _add_seed(p)

    p = add("ingest", cmd_ingest, "check every file of a cohort and write subjects.tsv + fingerprint")
    p.add_argument("source", help="nnU-Net/MSD raw folder (dataset.json) or CSV manifest")
    p.add_argument("--out", required=True, help="subjects.tsv to write")
    p.add_argument("--fingerprint", required=True, help="fingerprint.json to write")
    _add_settings(p, IngestSettings)

    p = add("preprocess", cmd_preprocess, "resample, normalise and crop one subject into its own folder")
    p.add_argument("--subjects", required=True, help="subjects.tsv")
    p.add_argument("--subject", required=True)
    p.add_argument("--fingerprint", required=True, help="fingerprint.json (median spacing)")
    p.add_argument("--out-dir", required=True, help="the subject's folder, e.g. results/preprocessed/ID")
    _add_settings(p, PreprocessSettings)

    p = add("plan", cmd_plan, "plan every model type's sizes from the fingerprint and a memory budget")
    p.add_argument("--fingerprint", required=True, help="fingerprint.json of the cohort (ingest)")
    _add_settings(p, PlanningSettings)
    p.add_argument(
        "--preprocess-settings", type=_json, default={}, help="preprocess settings as JSON (target spacing)"
    )
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when present)")
    p.add_argument("--out", required=True, help="plans.json to write")

    p = add("splits", cmd_splits, "cross-validation splits (nnU-Net splits_final.json format)")
    p.add_argument("--subjects", required=True, help="subjects.tsv")
    p.add_argument("--out", required=True, help="splits.json to write")
    _add_settings(p, SplitSettings)
    _add_seed(p)


def _add_model_commands(add: Any) -> None:
    p = add("train", cmd_train, "train one model on one fold (or 'all')")
    p.add_argument("--spec", type=_json, required=True, help='model spec as JSON: {"name", "type", "params"}')
    p.add_argument("--plans", default=None, help="plans.json (patchwork plan): fills the params left out")
    p.add_argument("--subjects", required=True, help="subjects.tsv")
    p.add_argument("--preprocessed", required=True, help="folder of the preprocessed subjects")
    p.add_argument("--splits", required=True, help="splits.json")
    p.add_argument("--fold", required=True, help="fold number, or 'all' for every training subject")
    p.add_argument("--out-dir", required=True)
    _add_seed(p)
    _add_compute(p, "train")

    p = add("predict", cmd_predict, "predict a batch of subjects, each written in its original image grid")
    p.add_argument("--model", required=True, help="model.pt of a trained model (spec.json beside it)")
    p.add_argument("--preprocessed", required=True, help="folder of the preprocessed subjects")
    _add_batch(p)
    p.add_argument("--apply", type=_json, default={}, help="the model spec's application settings as JSON")
    p.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD, help="foreground where prob >= this")
    p.add_argument("--out-dir", required=True, help="folder of {subject}_prob/_seg[/_std].nii.gz")
    p.add_argument("--std", action="store_true", help="also write the spreads (DNP models)")
    _add_seed(p, help="seed of stochastic application (DNP)")
    _add_compute(p, "predict")


def _add_batch(p: argparse.ArgumentParser) -> None:
    """``--batch fold_K|test`` with the cohort table and the splits."""
    p.add_argument(
        "--batch", required=True, help="fold_K (fold K's validation subjects) or test (every test subject)"
    )
    p.add_argument("--subjects", required=True, help="subjects.tsv")
    p.add_argument("--splits", default=None, help="a batch fold_K: splits.json")


def _add_ensemble_commands(add: Any) -> None:
    p = add("ensemble", cmd_ensemble, "combine the model probabilities of a batch of subjects")
    p.add_argument("--probs", nargs="+", required=True, help="NAME=FOLDER of each model's probability maps")
    _add_settings(p, EnsembleSettings)
    p.add_argument("--tuned", default=None, help="ensemble_params.json (tune-ensemble) to use instead")
    p.add_argument("--out-dir", required=True, help="folder for {subject}_prob/_seg.nii.gz")

    p = add(
        "tune-ensemble", cmd_tune_ensemble, "choose ensemble weights/threshold/minimum size/peak out of fold"
    )
    p.add_argument("--subjects", required=True, help="subjects.tsv")
    p.add_argument("--probs", nargs="+", required=True, help="NAME=FOLDER, a name once per batch folder")
    _add_settings(p, EnsembleSettings)
    p.add_argument("--out", required=True, help="ensemble_params.json to write")

    p = add("tune-postprocessing", cmd_tune_postprocessing, "choose a model's post-processing out of fold")
    p.add_argument("--subjects", required=True, help="subjects.tsv")
    p.add_argument("--predictions", nargs="+", required=True, help="the model's batch folders")
    p.add_argument("--model", required=True, help="model name (or ensemble)")
    p.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD, help="the model's own threshold")
    p.add_argument("--out", required=True, help="postprocessing.json to write")

    p = add("postprocess", cmd_postprocess, "threshold probability maps and remove components (tuned)")
    p.add_argument("--prob-dir", required=True, help="folder of {subject}_prob.nii.gz")
    p.add_argument("--tuned", required=True, help="postprocessing.json (tune-postprocessing)")
    p.add_argument("--out-dir", required=True, help="folder for {subject}_seg.nii.gz")


def _add_evaluation_commands(add: Any) -> None:
    p = add("evaluate", cmd_evaluate, "metrics and HTML reports of a batch of subjects, in one process")
    _add_batch(p)
    p.add_argument("--fingerprint", required=True)
    p.add_argument("--seg", nargs="+", required=True, help="MODEL=FOLDER of each model's segmentations")
    p.add_argument("--std", nargs="+", default=[], help="MODEL=FOLDER of each model's spread maps")
    _add_tolerance(p)
    p.add_argument("--out-tsv", required=True, help="metrics table of all the batch's subjects")
    p.add_argument("--out-html-dir", required=True, help="folder of the {subject}.html pages")

    p = add("summarise", cmd_summarise, "cohort metrics table and per-model summary")
    p.add_argument("--metrics", nargs="+", required=True)
    p.add_argument("--out-metrics", required=True)
    p.add_argument("--out-summary", required=True)

    p = add("report", cmd_report, "cohort HTML report: results table, plots, learning curves, subject links")
    p.add_argument("--metrics", required=True, help="the cohort's metrics.tsv")
    p.add_argument("--summary", required=True, help="summary.tsv of the same metrics")
    p.add_argument("--subject-reports", nargs="*", default=[], help="subject pages ({subject}.html)")
    p.add_argument("--train-logs", nargs="*", default=[], help="train_log.tsv files in models/MODEL/FOLD/")
    p.add_argument("--plans", default=None, help="plans.json (patchwork plan), shown with what models used")
    _add_tolerance(p)
    p.add_argument("--out-html", required=True)
    p.add_argument("--out-metrics-png", default=None, help="also write the per-subject plots here")
    p.add_argument("--out-curves-png", default=None, help="also write the learning curves here")


def _add_entry_commands(add: Any) -> None:
    p = add("package", cmd_package, "package a challenge entry: models, settings, example case, manifest")
    p.add_argument("--model", nargs="+", required=True, help="NAME=PATH of each final model.pt")
    p.add_argument("--config-json", type=_json, required=True, help="the run's config as JSON")
    p.add_argument("--ensemble-settings", type=_json, required=True, help="the ensemble's --settings JSON")
    p.add_argument("--tuned", default=None, help="ensemble_params.json, when the test ensemble used it")
    p.add_argument("--fingerprint", required=True, help="fingerprint.json of the cohort")
    p.add_argument("--subjects", required=True, help="subjects.tsv (its first test subject is stored)")
    p.add_argument("--license", required=True, help="the LICENSE file to ship")
    p.add_argument("--postprocessing", nargs="*", default=[], help="NAME=PATH of a postprocessing.json")
    p.add_argument("--out-dir", required=True, help="entry folder (test predictions already inside)")

    p = add("infer", cmd_infer, "segment a folder of new scans with an entry (as nnUNetv2_predict)")
    p.add_argument("input", help="folder of {case}_0000.nii.gz ... files, or one {case}.nii.gz per case")
    p.add_argument("output", help="folder for {case}.nii.gz, in each input's grid")
    p.add_argument("--entry", default="results/entry", help="the entry folder (patchwork package)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when present)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: the entry's)")
    p.add_argument("--save-probabilities", action="store_true", help="also write {case}_prob.nii.gz")
    p.add_argument("--save-uncertainty", action="store_true", help="also write {case}_{model}_std.nii.gz")
    p.add_argument("--save-models", action="store_true", help="also write {case}_{model}_seg.nii.gz")

    p = add("verify", cmd_verify, "check an entry's checksums and re-predict its stored test case on the CPU")
    p.add_argument("entry", help="the entry folder")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: the entry's)")

    p = add("schema", cmd_schema, "print the config's JSON schema (YAML), generated from the settings")
    p.add_argument("--readme", default=None, help="instead, regenerate the tables of this config/README.md")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``patchwork``: global options, then one subparser per stage."""
    parser = argparse.ArgumentParser(prog="patchwork", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"patchwork {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--log", default=None, help="also write the log (and errors) to this file")
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, func: Any, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.set_defaults(func=func)
        return p

    for add_group in (
        _add_data_commands,
        _add_model_commands,
        _add_ensemble_commands,
        _add_evaluation_commands,
        _add_entry_commands,
    ):
        add_group(add)
    return parser


def _setup_logging(verbose: bool, log_file: str | None) -> None:
    """Log to stderr and, with ``--log``, to that file (replaced)."""
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file, mode="w"))
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        handlers=handlers,
        force=True,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``patchwork`` console script; returns the exit status."""
    # Before torch (and its OpenMP runtime) is loaded: threads that wait for each other sleep instead of
    # spinning, so a job beside a busy neighbour on a shared machine slows by its share of the CPU, not
    # about 10x (benchmarks/contention.py). Results do not depend on it; an explicit setting wins.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    args = build_parser().parse_args(argv)
    _setup_logging(args.verbose, args.log)
    try:
        args.func(args)
    except PatchworkError as err:
        for line in err.problems:
            print(f"error: {line}", file=sys.stderr)
            if args.log:
                with open(args.log, "a") as fh:
                    fh.write(f"error: {line}\n")
        return 1
    except Exception:
        log.exception("patchwork %s failed unexpectedly (a bug: please report it)", args.command)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

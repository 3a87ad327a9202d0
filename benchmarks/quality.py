"""Segmentation quality at equal CPU budget: every model of a config, their ensemble, a tuned MONAI U-Net.

On a generated cohort (:mod:`patchwork.data.demo`, ``--appearance``: ``t1``, CSF-dark lesions with a brighter
rim, 0.01-90 ml, or ``flair``, 1-6 hyperintense lesions, most of them small, beside unlabelled periventricular
hyperintensities; mixed isotropic / anisotropic / axis-flipped geometry), split into ``--n-train`` training,
``--n-val`` tuning and ``--n-test`` test subjects, all preprocessed as the workflow does (``preprocess``
section of ``--config``), for each CPU budget of ``--budgets`` (or once at the config's own lengths):

1. every model of ``--config`` (default: the demo's) is trained on the training subjects. With a budget
   of B CPU seconds its length (U-Net ``iterations``, DNP ``num_its``) is calibrated so that its training
   takes about B CPU seconds on this machine: two short trainings (validation included) are timed once per
   model (kept in ``calibration.json``) and the count is printed, so a run can be repeated exactly with
   ``--length NAME=N`` (a count, not a clock, decides when training stops: the same seed gives the same
   weights on any machine);
2. the models are combined as the config's ``ensemble`` section says (``ensemble``; the demo's is ATLAS
   R2.0's vote) and as tuned on the tuning subjects (``ensemble_tuned``: weights, threshold, minimum
   component size and peak, what the workflow tunes out of fold and ships in its entry);
3. the tuning subjects choose each model's and each ensemble's post-processing
   (:mod:`patchwork.postprocessing.components`: threshold, minimum component volume and peak);
4. the test subjects are predicted in their original grid and scored (Dice, HD95, lesion F1, false-positive
   lesions per scan, lesions found by volume) raw (each model's mask at threshold 0.5, each ensemble's own
   mask) and post-processed.

With ``--monai-python PY`` (a Python that has MONAI; never a dependency of patchwork) a plain MONAI U-Net
(``UNet`` 16-32-64-128, 2 residual units, 64³ patches, ``DiceCELoss``, Adam, positive/negative crops 1:1,
random flips) trains on the same preprocessed arrays (the same channels) for the same CPU budget (the mean
of our models' measured training CPU seconds at that budget), with Gaussian sliding-window inference.
It gets the care ours got: one training per learning rate of ``--monai-lrs`` (the grid our U-Nets' rate was
chosen from), the one with the best Dice on the tuning subjects is scored. Budgets are process CPU seconds
(all threads), not wall-clock time, so a busy machine does not shrink them. The last lines check the goals
(issue 21) at each budget::

    python benchmarks/quality.py --out /tmp/q-t1 --budgets 75 300 1200 --monai-python /tmp/vm/bin/python
    python benchmarks/quality.py --out /tmp/q-flair --appearance flair --budgets 300 --monai-python ...

A single run is one draw: on 16 test subjects two seeds of the same model differ by a few hundredths of
Dice, as much as most levers move it. ``--train-seed S`` repeats a run with the models' seed ``S`` (the
cohort stays that of ``--seed``) into ``budget_B_seedS``; decide a lever on the mean over a few seeds::

    for s in 1 2; do
        python benchmarks/quality.py --out /tmp/q-t1 --models dnp --length dnp=56 --train-seed $s
    done
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

MONAI_PATCH = (64, 64, 64)
MONAI_LRS = (3e-3, 1e-2, 2e-2)  # the grid the demo U-Nets' learning rate was chosen from (config/cpu.yaml)
VOLUME_BINS_ML = (0.0, 0.2, 1.0, 5.0, float("inf"))  # lesions found, by reference volume


def prepare_cohort(out: Path, args: argparse.Namespace, config: dict[str, Any]) -> tuple[list, list, list]:
    """Generate, ingest and preprocess the cohort once (reused when present); return train/val/test ids."""
    from patchwork.config import IngestSettings, PreprocessSettings
    from patchwork.data.demo import make_demo_dataset
    from patchwork.stages import data

    raw = out / "raw"
    n_fit = args.n_train + args.n_val
    cohort = {"n_fit": n_fit, "n_test": args.n_test, "spacing": args.spacing, "seed": args.seed,
              "appearance": args.appearance}  # fmt: skip
    if not (out / "cohort.json").exists() or json.loads((out / "cohort.json").read_text()) != cohort:
        shutil.rmtree(out / "preprocessed", ignore_errors=True)
        make_demo_dataset(raw, n_fit, args.n_test, args.spacing, args.seed, args.appearance)
        (out / "cohort.json").write_text(json.dumps(cohort))
    data.ingest(str(raw), out / "subjects.tsv", out / "fingerprint.json", IngestSettings())
    settings = PreprocessSettings.from_dict(config.get("preprocess", {}))
    stamp = out / "preprocess.json"
    if not stamp.exists() or json.loads(stamp.read_text()) != settings.to_dict():
        shutil.rmtree(out / "preprocessed", ignore_errors=True)  # other settings: preprocess afresh
        stamp.write_text(json.dumps(settings.to_dict()))
    ids = [f"demo_{i + 1:03d}" for i in range(n_fit + args.n_test)]
    for subject in ids:
        if not (out / "preprocessed" / subject / "record.json").exists():
            data.preprocess(
                out / "subjects.tsv",
                subject,
                out / "fingerprint.json",
                out / "preprocessed" / subject,
                settings,
            )
    return ids[: args.n_train], ids[args.n_train : n_fit], ids[n_fit:]


def with_length(spec: Any, length: int) -> Any:
    """``spec`` with its training length (U-Net ``iterations``, DNP ``num_its``) set to ``length``."""
    params = spec.params
    if spec.type == "unet":
        params = dataclasses.replace(
            params, iterations=length, warmup_iterations=min(params.warmup_iterations, length - 1)
        )
    else:
        train = dataclasses.replace(
            params.train, num_its=length, warmup_its=min(params.train.warmup_its, length - 1)
        )
        params = dataclasses.replace(params, train=train)
    return dataclasses.replace(spec, params=params)


def calibrated(spec: Any, out: Path, seed: int, threads: int) -> float:
    """:func:`seconds_per_step` of ``spec``, measured once per setting and thread count (``calibration.json``
    in ``out``)."""
    path = out / "calibration.json"
    known = json.loads(path.read_text()) if path.exists() else {}
    key = json.dumps([spec.training_dict(), threads], sort_keys=True)
    if key not in known:
        known[key] = seconds_per_step(spec, out, seed)
        path.write_text(json.dumps(known))
    return known[key]


def seconds_per_step(spec: Any, out: Path, seed: int) -> float:
    """CPU seconds one more training step costs (U-Net iteration, DNP outer iteration), everything a real
    training does included (validation, checkpoints, logging): after an untimed warm-up training (the first
    one in a process pays one-time set-up), two short trainings of ``n`` and ``3 n`` steps in a scratch
    folder, the difference of their CPU times divided by ``2 n``."""
    from patchwork.stages.models import train

    n = 20 if spec.type == "unet" else 3
    seconds = []
    for k, length in enumerate((n, n, 3 * n)):
        folder = out / "calibration" / spec.name / str(k)
        shutil.rmtree(folder, ignore_errors=True)
        start = time.process_time()
        train(
            with_length(spec, length), out / "subjects.tsv", out / "preprocessed", out / "splits.json", "0",
            folder, seed,
        )  # fmt: skip
        seconds.append(time.process_time() - start)
    shutil.rmtree(out / "calibration" / spec.name)
    return max(seconds[2] - seconds[1], 1e-3) / (2 * n)


def train_models(out: Path, run: Path, specs: list, budget: float | None, args: argparse.Namespace) -> dict:
    """Train every model (calibrated or given lengths) into ``run/models``; returns name -> {seconds, length,
    model}."""
    from patchwork.stages.models import train

    given = dict(item.split("=") for item in args.length)
    trained = {}
    for spec in specs:
        if spec.name in given:
            spec = with_length(spec, int(given[spec.name]))
        elif budget:
            per_step = calibrated(spec, out, args.seed, args.threads)
            spec = with_length(spec, max(2, int(budget / per_step)))
            print(f"{spec.name}: {per_step:.2f} s per step -> length {length_of(spec)}", flush=True)
        folder = run / "models" / spec.name
        if (folder / "spec.json").exists() and json.loads(
            (folder / "spec.json").read_text()
        ) != spec.training_dict():
            shutil.rmtree(folder)  # another length or setting: train afresh
        start = time.process_time()
        model = train(
            spec, out / "subjects.tsv", out / "preprocessed", out / "splits.json", "0", folder,
            args.train_seed,
        )  # fmt: skip
        timing = folder / "seconds.json"
        seconds = time.process_time() - start
        if seconds > 5 or not timing.exists():  # trained now, not found finished
            timing.write_text(json.dumps(seconds))
        seconds = json.loads(timing.read_text())
        trained[spec.name] = {"seconds": seconds, "length": length_of(spec), "model": model}
        print(f"{spec.name}: trained in {trained[spec.name]['seconds']:.0f} s", flush=True)
    return trained


def length_of(spec: Any) -> int:
    return spec.params.iterations if spec.type == "unet" else spec.params.train.num_its


def predict_models(out: Path, run: Path, specs: list, trained: dict, subjects: list, seed: int) -> None:
    """Probability maps ``run/pred/{model}/{subject}_prob.nii.gz`` in each subject's original grid (kept when
    newer than the model)."""
    from patchwork.stages.models import predict

    for spec in specs:
        for subject in subjects:
            folder, model = run / "pred" / spec.name, Path(trained[spec.name]["model"])
            prob = folder / f"{subject}_prob.nii.gz"
            if not prob.exists() or prob.stat().st_mtime < model.stat().st_mtime:
                predict(
                    model, out / "preprocessed", subject, spec.apply.to_dict(), 0.5, prob,
                    folder / f"{subject}_seg.nii.gz", seed=seed,
                )  # fmt: skip


def run_monai(
    out: Path, run: Path, ids: tuple[list, list, list], budget_s: float, args: argparse.Namespace
) -> dict[str, Any]:
    """Train and apply the MONAI U-Net in ``--monai-python`` once per learning rate of ``--monai-lrs``; the
    rate with the best mean Dice (threshold 0.5) on the tuning subjects is written to ``run/pred/monai_unet``
    like ours. Returns its CPU seconds, steps, rate and every rate's tuning Dice."""
    from patchwork.data.preprocess import load_preprocessed
    from patchwork.entry.prediction import to_original_probability
    from patchwork.evaluation.metrics import dice
    from patchwork.io import read_image, save_image

    train_ids, val_ids, test_ids = ids
    data = out / "monai_data.npz"
    if not data.exists():
        arrays = {}
        for subject in train_ids + val_ids + test_ids:
            image, label, _ = load_preprocessed(out / "preprocessed", subject)
            arrays[f"image_{subject}"] = image
            if subject in train_ids:
                arrays[f"label_{subject}"] = label
        np.savez(data, **arrays)
    runs = {}
    for lr in args.monai_lrs:
        work = run / f"monai_lr{lr:g}"
        work.mkdir(parents=True, exist_ok=True)
        job = json.dumps({"train": train_ids, "predict": val_ids + test_ids, "budget_s": budget_s,
                          "seed": args.train_seed, "lr": lr, "data": str(data)})  # fmt: skip
        done = (work / "probs.npz").exists() and (work / "job.json").exists()
        if not done or (work / "job.json").read_text() != job:  # else: this very job ran before
            (work / "job.json").write_text(job)
            subprocess.run(
                [args.monai_python, __file__, "monai-worker", str(work), "--threads", str(args.threads)],
                check=True,
            )
        probs = np.load(work / "probs.npz")
        scores = []
        for subject in val_ids:
            record = load_preprocessed(out / "preprocessed", subject)[2]
            prob = to_original_probability(probs[subject], record)[0]
            ref = read_image(out / "raw" / "labelsTr" / f"{subject}.nii.gz")[0] > 0
            scores.append(dice(prob >= 0.5, ref))
        runs[lr] = {"work": work, "tuning_dice": float(np.mean(scores))}
        print(f"monai_unet lr {lr:g}: tuning Dice {runs[lr]['tuning_dice']:.3f}", flush=True)
    best = max(runs, key=lambda lr: runs[lr]["tuning_dice"])
    work = runs[best]["work"]
    probs = np.load(work / "probs.npz")
    for subject in val_ids + test_ids:
        record = load_preprocessed(out / "preprocessed", subject)[2]
        prob, affine = to_original_probability(probs[subject], record)
        folder = run / "pred" / "monai_unet"
        save_image(prob, affine, folder / f"{subject}_prob.nii.gz", dtype=np.float32)
        save_image((prob >= 0.5).astype(np.uint8), affine, folder / f"{subject}_seg.nii.gz")
    timing = json.loads((work / "seconds.json").read_text())
    return {
        "seconds": timing["seconds"],
        "length": f"{timing['steps']} steps, lr {best:g}",
        "tuning_dice_by_lr": {f"{lr:g}": r["tuning_dice"] for lr, r in runs.items()},
    }


def monai_worker(work: Path, threads: int) -> None:
    """The MONAI side (runs in the MONAI Python; imports neither patchwork nor anything MONAI lacks)."""
    import torch
    from monai.inferers import sliding_window_inference
    from monai.losses import DiceCELoss
    from monai.networks.nets import UNet
    from monai.transforms import RandCropByPosNegLabel
    from monai.utils import set_determinism

    torch.set_num_threads(threads)
    job = json.loads((work / "job.json").read_text())
    set_determinism(job["seed"])
    data = np.load(job["data"])

    def padded(x: np.ndarray, fill: float) -> np.ndarray:
        pad = [(0, 0)] + [(0, max(0, p - s)) for p, s in zip(MONAI_PATCH, x.shape[1:], strict=True)]
        return np.pad(x, pad, constant_values=fill)

    images = [padded(data[f"image_{s}"], float(data[f"image_{s}"].min())) for s in job["train"]]
    labels = [padded(data[f"label_{s}"][None].astype(np.float32), 0.0) for s in job["train"]]
    net = UNet(3, images[0].shape[0], 2, channels=(16, 32, 64, 128), strides=(2, 2, 2), num_res_units=2)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    optimizer = torch.optim.Adam(net.parameters(), lr=job["lr"], weight_decay=1e-5)
    crop = RandCropByPosNegLabel(MONAI_PATCH, pos=1, neg=1, num_samples=2)
    crop.set_random_state(job["seed"])
    rng = np.random.default_rng(job["seed"])
    start, steps = time.process_time(), 0
    while time.process_time() - start < job["budget_s"]:
        xs, ys = [], []
        for k in rng.integers(0, len(images), 2):
            for x, y in zip(crop(images[k], label=labels[k]), crop(labels[k], label=labels[k]), strict=True):
                xs.append(torch.as_tensor(np.asarray(x)))
                ys.append(torch.as_tensor(np.asarray(y)))
        x, y = torch.stack(xs).float(), torch.stack(ys).float()
        for axis in range(2, 5):
            if rng.random() < 0.5:
                x, y = x.flip(axis), y.flip(axis)
        optimizer.zero_grad()
        loss = loss_fn(net(x), y)
        loss.backward()
        optimizer.step()
        steps += 1
    seconds = time.process_time() - start
    (work / "seconds.json").write_text(json.dumps({"seconds": seconds, "steps": steps}))
    print(f"monai_unet lr {job['lr']:g}: {steps} steps in {seconds:.0f} CPU s", flush=True)
    net.eval()
    probs = {}
    with torch.no_grad():
        for subject in job["predict"]:
            image = data[f"image_{subject}"]
            x = torch.as_tensor(padded(image, float(image.min())))[None].float()
            logits = sliding_window_inference(x, MONAI_PATCH, 4, net, overlap=0.5, mode="gaussian")
            prob = torch.softmax(logits, 1)[0, 1].numpy()
            probs[subject] = prob[tuple(slice(0, s) for s in image.shape[1:])]
    np.savez(work / "probs.npz", **probs)


def ensembles(
    out: Path, run: Path, config: dict[str, Any], models: list[str], ids: tuple[list, list, list]
) -> list[str]:
    """The config's hand-set ensemble (``ensemble`` section; weights of absent models dropped) and the
    ensemble tuned on the tuning subjects (:func:`patchwork.ensembling.tuning.tune_ensemble`, as the workflow
    tunes it out of fold), written as ``run/pred/{name}/{subject}_prob.nii.gz`` and ``_seg.nii.gz``."""
    from patchwork.config import EnsembleSettings
    from patchwork.ensembling.combine import ensemble_files
    from patchwork.ensembling.tuning import THRESHOLDS, load_case, tune_ensemble

    section = dict(config.get("ensemble", {}))
    section["weights"] = {m: w for m, w in section.get("weights", {}).items() if m in models}
    hand_set = EnsembleSettings.from_dict(section)
    _, val_ids, test_ids = ids
    paths = {s: [run / "pred" / m / f"{s}_prob.nii.gz" for m in models] for s in val_ids + test_ids}
    cases = [load_case(paths[s], out / "raw" / "labelsTr" / f"{s}.nii.gz", min(THRESHOLDS)) for s in val_ids]
    tuned = EnsembleSettings.from_dict(tune_ensemble(cases, models, hand_set)["settings"])
    print(f"ensemble (hand-set): {hand_set.to_dict()}\nensemble_tuned: {tuned.to_dict()}", flush=True)
    for name, settings in (("ensemble", hand_set), ("ensemble_tuned", tuned)):
        for subject in val_ids + test_ids:
            folder = run / "pred" / name
            ensemble_files(
                dict(zip(models, paths[subject], strict=True)), settings,
                folder / f"{subject}_prob.nii.gz", folder / f"{subject}_seg.nii.gz",
            )  # fmt: skip
    return ["ensemble", "ensemble_tuned"]


def volume_bin(volume_ml: Any) -> Any:
    """Index of the bin of :data:`VOLUME_BINS_ML` that holds each lesion volume (ml); broadcasts."""
    return np.searchsorted(VOLUME_BINS_ML, volume_ml, side="right") - 1


def found_by_volume(pred: np.ndarray, ref: np.ndarray, voxel_ml: float) -> np.ndarray:
    """``[found, total]`` reference lesions per bin of :data:`VOLUME_BINS_ML` (found: touched by ``pred``)."""
    from patchwork.postprocessing.components import label_components

    components, n = label_components(ref)
    counts = np.zeros((2, len(VOLUME_BINS_ML) - 1), dtype=int)
    if n == 0:
        return counts
    volumes = np.bincount(components.ravel(), minlength=n + 1)[1:] * voxel_ml
    hit = np.bincount(components[pred], minlength=n + 1)[1:] > 0
    bins = volume_bin(volumes)
    np.add.at(counts[0], bins, hit)
    np.add.at(counts[1], bins, 1)
    return counts


def score(out: Path, run: Path, name: str, ids: tuple[list, list, list]) -> dict[str, Any]:
    """Test scores of ``name``: raw (its own mask ``{subject}_seg.nii.gz``: threshold 0.5, or an ensemble's
    settings) and post-processed (:mod:`patchwork.postprocessing.components` tuned on the tuning subjects'
    probability maps): mean Dice, HD95 (NaN distances, one mask empty, left out), lesion F1, the median number
    of false-positive lesions per scan, and the lesions found per volume bin."""
    from patchwork.evaluation.metrics import mask_metrics, spacing_from_affine
    from patchwork.io import read_image
    from patchwork.postprocessing.components import (
        Postprocessing,
        load_case,
        postprocess,
        tune_postprocessing,
        voxel_volume,
    )

    _, val_ids, test_ids = ids
    raw, pred = out / "raw", run / "pred" / name
    cases = [load_case(pred / f"{s}_prob.nii.gz", raw / "labelsTr" / f"{s}.nii.gz") for s in val_ids]
    tuned = tune_postprocessing(cases, 0.5)
    rows: dict[str, list] = {"raw": [], "pp": []}
    found = {"raw": 0, "pp": 0}
    for subject in test_ids:
        prob, affine = read_image(pred / f"{subject}_prob.nii.gz")
        ref = read_image(raw / "labelsTs" / f"{subject}.nii.gz")[0] > 0
        spacing = spacing_from_affine(affine)
        masks = {
            "raw": read_image(pred / f"{subject}_seg.nii.gz")[0] > 0,
            "pp": postprocess(prob, Postprocessing.from_dict(tuned["settings"]), voxel_volume(affine)),
        }
        for kind, mask in masks.items():
            rows[kind].append(mask_metrics(mask, ref, spacing))
            found[kind] = found[kind] + found_by_volume(mask, ref, voxel_volume(affine) / 1000.0)
    result: dict[str, Any] = {"postprocessing": tuned["settings"], "val_dice_pp": tuned["mean_dice"]}
    for kind, metrics in rows.items():
        for metric in ("dice", "hd95", "lesion_f1"):
            values = np.array([m[metric] for m in metrics])
            result[f"{metric}_{kind}"] = (
                float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")
            )
        result[f"fp_{kind}"] = float(np.median([m["lesion_false_positives"] for m in metrics]))
        result[f"found_{kind}"] = found[kind].tolist()
    return result


def goals(results: dict[str, dict], specs: list) -> list[str]:
    """The goals of issue 21 at one budget, on each model's and ensemble's own mask (raw: post-processing
    tuned on the 6 tuning subjects alone is noisier than the models' differences). The tuned ensemble (as the
    entry ships it): Dice and lesion F1 >= 0.60, a median of at most 1 false-positive lesion per scan, HD95
    <= 20 mm; the best DNP >= the best U-Net + 0.03, every model >= the tuned MONAI U-Net; the better
    ensemble >= the best single model + 0.02."""
    lines = []

    def check(ok: bool, text: str) -> None:
        lines.append(f"{'met' if ok else 'NOT met'}: {text}")

    tuned = results.get("ensemble_tuned")
    if tuned:
        check(tuned["dice_raw"] >= 0.60, f"tuned ensemble Dice >= 0.60: {tuned['dice_raw']:.3f}")
        check(
            tuned["lesion_f1_raw"] >= 0.60, f"tuned ensemble lesion F1 >= 0.60: {tuned['lesion_f1_raw']:.3f}"
        )
        check(tuned["fp_raw"] <= 1, f"tuned ensemble median false-positive lesions <= 1: {tuned['fp_raw']:g}")
        check(tuned["hd95_raw"] <= 20, f"tuned ensemble HD95 <= 20 mm: {tuned['hd95_raw']:.1f}")
    scores = [(results[s.name]["dice_raw"], s.name, s.type) for s in specs]
    best = {kind: max((d, n) for d, n, t in scores if t == kind) for kind in {t for *_, t in scores}}
    if "unet" in best and "dnp" in best:
        (d, dn), (u, un) = best["dnp"], best["unet"]
        check(d >= u + 0.03, f"DNP >= best U-Net + 0.03: {dn} {d:.3f} vs {un} {u:.3f}")
    if "monai_unet" in results:
        monai = results["monai_unet"]["dice_raw"]
        for d, n, _ in scores:
            check(d >= monai, f"{n} >= tuned MONAI U-Net: {d:.3f} vs {monai:.3f}")
    combined = [(results[n]["dice_raw"], n) for n in ("ensemble", "ensemble_tuned") if n in results]
    if combined and scores:
        (e, en), (d, dn) = max(combined), max((d, n) for d, n, _ in scores)
        check(e >= d + 0.02, f"ensemble >= best single model + 0.02: {en} {e:.3f} vs {dn} {d:.3f}")
    return lines


def seed_suffix(args: argparse.Namespace) -> str:
    """``_seedS`` for a run with ``--train-seed S`` other than the cohort's seed (its own folders and
    ``quality_seedS.json``), else nothing."""
    return "" if args.train_seed == args.seed else f"_seed{args.train_seed}"


def evaluate_budget(
    out: Path, budget: float | None, specs: list, config: dict, ids: tuple, args: argparse.Namespace
) -> dict[str, dict]:
    """Train, predict, combine and score every model (and MONAI's) at one budget; print the table."""
    run = out / ((f"budget_{budget:g}" if budget else "config_lengths") + seed_suffix(args))
    trained = train_models(out, run, specs, budget, args)
    predict_models(out, run, specs, trained, ids[1] + ids[2], args.train_seed)
    names = [s.name for s in specs]
    rows = {name: trained[name] for name in names}
    if args.monai_python:  # the CPU seconds our models took on average (a calibration is never exact)
        monai_budget = float(np.mean([t["seconds"] for t in trained.values()]))
        rows["monai_unet"] = run_monai(out, run, ids, monai_budget, args)
    combined = ensembles(out, run, config, names, ids) if len(names) > 1 else []
    n_train, n_val, n_test = (len(i) for i in ids)
    print(f"\n{run.name}: {n_train} training, {n_val} tuning, {n_test} test subjects ({args.appearance})")
    columns = ("dice", "hd95", "lesion_f1", "fp")
    heads = "".join(f"{c + ' ' + k:>14}" for k in ("raw", "pp") for c in columns)
    print(f"{'model':<15}{'train s':>8}  {'length':<22}{heads}  lesions found <0.2, 0.2-1, 1-5, >5 ml (pp)")
    results = {}
    for name in [*rows, *combined]:
        r = score(out, run, name, ids)
        info = rows.get(name, {"seconds": float("nan"), "length": "-"})
        results[name] = {**info, **r}
        cells = "".join(f"{r[f'{c}_{k}']:>14.3f}" for k in ("raw", "pp") for c in columns)
        found = " ".join(f"{a}/{b}" for a, b in zip(*r["found_pp"], strict=True))
        print(f"{name:<15}{info['seconds']:>8.0f}  {info['length']!s:<22}{cells}  {found}")
    for line in goals(results, specs):
        print(line)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="work folder (cohort and models are reused)")
    parser.add_argument("--config", type=Path, default=Path(__file__).parents[1] / "config" / "cpu.yaml")
    parser.add_argument("--models", nargs="*", default=None, help="model names of --config (default: all)")
    parser.add_argument("--appearance", default="t1", help="the demo cohort's lesion appearance: t1 or flair")
    parser.add_argument("--n-train", type=int, default=12)
    parser.add_argument("--n-val", type=int, default=6)
    parser.add_argument("--n-test", type=int, default=16)
    parser.add_argument("--spacing", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=0, help="the cohort's seed (and the models', by default)")
    parser.add_argument(
        "--train-seed",
        type=int,
        default=None,
        help="the models' seed (weights, patches, MONAI's too): repeat a run with other seeds to see the "
        "spread of single runs (results under budget_B_seedS)",
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--budgets", type=float, nargs="*", default=[], help="training CPU seconds per model (calibrated)"
    )
    parser.add_argument("--length", nargs="*", default=[], help="NAME=N: this model's training length")
    parser.add_argument("--monai-python", default=None, help="a Python with MONAI: adds the MONAI U-Net")
    parser.add_argument("--monai-lrs", type=float, nargs="*", default=list(MONAI_LRS))
    args = parser.parse_args()
    args.train_seed = args.seed if args.train_seed is None else args.train_seed

    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the workflow's commands (patchwork.cli.main)
    import torch
    import yaml

    from patchwork.io import write_json
    from patchwork.models import parse_spec

    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    config = yaml.safe_load(args.config.read_text())
    specs = [parse_spec(m, str(args.config)) for m in config["models"]]
    specs = [s for s in specs if args.models is None or s.name in args.models]
    ids = prepare_cohort(args.out, args, config)
    write_json(args.out / "splits.json", [{"train": ids[0], "val": ids[1]}])
    results = {}
    for budget in args.budgets or [None]:
        results[f"{budget:g}" if budget else "config"] = evaluate_budget(
            args.out, budget, specs, config, ids, args
        )
    (args.out / f"quality{seed_suffix(args)}.json").write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "monai-worker":
        worker = argparse.ArgumentParser()
        worker.add_argument("command")
        worker.add_argument("work", type=Path)
        worker.add_argument("--threads", type=int, default=2)
        worker_args = worker.parse_args()
        monai_worker(worker_args.work, worker_args.threads)
    else:
        main()

"""Segmentation quality at equal CPU budget: every model of a config, their ensemble, a plain MONAI U-Net.

On a generated cohort (:mod:`patchwork.data.demo`: CSF-dark lesions with a brighter rim, 0.01-90 ml, mixed
isotropic / anisotropic / axis-flipped geometry), split into ``--n-train`` training, ``--n-val`` tuning and
``--n-test`` test subjects, all preprocessed as the workflow does (``preprocess`` section of ``--config``):

1. every model of ``--config`` (default: the demo's) is trained on the training subjects. With
   ``--budget-s B`` its length (U-Net ``iterations``, DNP ``num_its``) is calibrated once so that its
   training takes about B CPU seconds on this machine: two short trainings (validation included) are timed
   and the count is printed, so the run can be repeated exactly with ``--length NAME=N`` (a count, not a
   clock, decides when training stops: the same seed gives the same weights on any machine);
2. the models are combined as the config's ``ensemble`` section says (``ensemble``; the demo's is ATLAS
   R2.0's vote) and as tuned on the tuning subjects (``ensemble_tuned``: weights, threshold and minimum
   component size, what the workflow tunes out of fold and ships in its entry);
3. the tuning subjects choose each model's and each ensemble's post-processing
   (:mod:`patchwork.postprocessing.components`: threshold, minimum component volume and peak);
4. the test subjects are predicted in their original grid and scored (Dice, HD95, lesion F1) raw (each
   model's mask at threshold 0.5, each ensemble's own mask) and post-processed.

With ``--monai-python PY`` (a Python that has MONAI; never a dependency of patchwork) a plain MONAI U-Net
(``UNet`` 16-32-64-128, 2 residual units, 64³ patches, ``DiceCELoss``, Adam 1e-3, positive/negative
crops 1:1, random flips) trains on the same preprocessed arrays for the same CPU budget (the mean of our
models' training CPU seconds when ``--budget-s`` is not given), with Gaussian sliding-window inference.
Budgets are process CPU seconds (all threads), not wall-clock time, so a busy machine does not shrink them::

    python benchmarks/quality.py --out /tmp/quality --budget-s 120 --monai-python /tmp/vb/bin/python
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

MONAI_PATCH = (64, 64, 64)


def prepare_cohort(out: Path, args: argparse.Namespace, config: dict[str, Any]) -> tuple[list, list, list]:
    """Generate, ingest and preprocess the cohort once (reused when present); return train/val/test ids."""
    from patchwork.config import IngestSettings, PreprocessSettings
    from patchwork.data.demo import make_demo_dataset
    from patchwork.stages import data

    raw = out / "raw"
    n_fit = args.n_train + args.n_val
    meta = raw / "dataset.json"
    if not meta.exists() or json.loads(meta.read_text())["numTraining"] != n_fit:
        make_demo_dataset(raw, n_train=n_fit, n_test=args.n_test, spacing=args.spacing, seed=args.seed)
    data.ingest(str(raw), out / "subjects.tsv", out / "fingerprint.json", IngestSettings())
    settings = PreprocessSettings.from_dict(config.get("preprocess", {}))
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


def seconds_per_step(spec: Any, out: Path, seed: int) -> float:
    """CPU seconds one more training step costs (U-Net iteration, DNP outer iteration), everything a real
    training does included (validation, checkpoints, logging): after an untimed warm-up training (the first
    one in a process pays one-time set-up), two short trainings of ``n`` and ``2 n`` steps in a scratch
    folder, the difference of their CPU times divided by ``n``."""
    from patchwork.stages.models import train

    n = 10 if spec.type == "unet" else 2
    seconds = []
    for k, length in enumerate((n, n, 2 * n)):
        folder = out / "calibration" / spec.name / str(k)
        shutil.rmtree(folder, ignore_errors=True)
        start = time.process_time()
        train(
            with_length(spec, length), out / "subjects.tsv", out / "preprocessed", out / "splits.json", "0",
            folder, seed,
        )  # fmt: skip
        seconds.append(time.process_time() - start)
    shutil.rmtree(out / "calibration" / spec.name)
    return max(seconds[2] - seconds[1], 1e-3) / n


def train_models(out: Path, specs: list, ids: tuple[list, list, list], args: argparse.Namespace) -> dict:
    """Train every model (calibrated or given lengths); returns name -> {seconds, length, model}."""
    from patchwork.io import write_json
    from patchwork.stages.models import train

    train_ids, val_ids, _ = ids
    write_json(out / "splits.json", [{"train": train_ids, "val": val_ids}])
    given = dict(item.split("=") for item in args.length)
    trained = {}
    for spec in specs:
        if spec.name in given:
            spec = with_length(spec, int(given[spec.name]))
        elif args.budget_s:
            per_step = seconds_per_step(spec, out, args.seed)
            spec = with_length(spec, max(2, int(args.budget_s / per_step)))
            print(f"{spec.name}: {per_step:.2f} s per step -> length {length_of(spec)}", flush=True)
        folder = out / "models" / spec.name
        if (folder / "spec.json").exists() and json.loads(
            (folder / "spec.json").read_text()
        ) != spec.training_dict():
            shutil.rmtree(folder)  # another length or setting: train afresh
        start = time.process_time()
        model = train(
            spec, out / "subjects.tsv", out / "preprocessed", out / "splits.json", "0",
            out / "models" / spec.name, args.seed,
        )  # fmt: skip
        timing = out / "models" / spec.name / "seconds.json"
        seconds = time.process_time() - start
        if seconds > 5 or not timing.exists():  # trained now, not found finished
            timing.write_text(json.dumps(seconds))
        seconds = json.loads(timing.read_text())
        trained[spec.name] = {"seconds": seconds, "length": length_of(spec), "model": model}
        print(f"{spec.name}: trained in {trained[spec.name]['seconds']:.0f} s", flush=True)
    return trained


def length_of(spec: Any) -> int:
    return spec.params.iterations if spec.type == "unet" else spec.params.train.num_its


def predict_models(out: Path, specs: list, trained: dict, subjects: list, seed: int) -> None:
    """Probability maps ``pred/{model}/{subject}_prob.nii.gz`` in each subject's original grid (kept when
    newer than the model)."""
    from patchwork.stages.models import predict

    for spec in specs:
        for subject in subjects:
            folder, model = out / "pred" / spec.name, Path(trained[spec.name]["model"])
            prob = folder / f"{subject}_prob.nii.gz"
            if not prob.exists() or prob.stat().st_mtime < model.stat().st_mtime:
                predict(
                    model, out / "preprocessed", subject, spec.apply.to_dict(), 0.5, prob,
                    folder / f"{subject}_seg.nii.gz", seed=seed,
                )  # fmt: skip


def run_monai(out: Path, ids: tuple[list, list, list], budget_s: float, args: argparse.Namespace) -> float:
    """Train and apply the MONAI U-Net in ``--monai-python``; write its probabilities like ours."""
    from patchwork.data.preprocess import load_preprocessed
    from patchwork.entry.prediction import to_original_probability
    from patchwork.io import save_image

    work = out / "monai"
    work.mkdir(parents=True, exist_ok=True)
    train_ids, val_ids, test_ids = ids
    arrays = {}
    for subject in train_ids + val_ids + test_ids:
        image, label, _ = load_preprocessed(out / "preprocessed", subject)
        arrays[f"image_{subject}"] = image
        if subject in train_ids:
            arrays[f"label_{subject}"] = label
    np.savez(work / "data.npz", **arrays)
    job = json.dumps(
        {"train": train_ids, "predict": val_ids + test_ids, "budget_s": budget_s, "seed": args.seed}
    )
    done = (work / "probs.npz").exists() and (work / "job.json").exists()
    if not done or (work / "job.json").read_text() != job:  # else: this very job ran before
        (work / "job.json").write_text(job)
        subprocess.run(
            [args.monai_python, __file__, "monai-worker", str(work), "--threads", str(args.threads)],
            check=True,
        )
    seconds = json.loads((work / "seconds.json").read_text())
    probs = np.load(work / "probs.npz")
    for subject in val_ids + test_ids:
        record = load_preprocessed(out / "preprocessed", subject)[2]
        prob, affine = to_original_probability(probs[subject], record)
        folder = out / "pred" / "monai_unet"
        save_image(prob, affine, folder / f"{subject}_prob.nii.gz", dtype=np.float32)
        save_image((prob >= 0.5).astype(np.uint8), affine, folder / f"{subject}_seg.nii.gz")
    return seconds


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
    data = np.load(work / "data.npz")

    def padded(x: np.ndarray, fill: float) -> np.ndarray:
        pad = [(0, 0)] + [(0, max(0, p - s)) for p, s in zip(MONAI_PATCH, x.shape[1:], strict=True)]
        return np.pad(x, pad, constant_values=fill)

    images = [padded(data[f"image_{s}"], float(data[f"image_{s}"].min())) for s in job["train"]]
    labels = [padded(data[f"label_{s}"][None].astype(np.float32), 0.0) for s in job["train"]]
    net = UNet(3, images[0].shape[0], 2, channels=(16, 32, 64, 128), strides=(2, 2, 2), num_res_units=2)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3, weight_decay=1e-5)
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
    (work / "seconds.json").write_text(json.dumps(seconds))
    print(f"monai_unet: {steps} steps in {seconds:.0f} CPU s", flush=True)
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
    out: Path, config: dict[str, Any], models: list[str], ids: tuple[list, list, list]
) -> list[str]:
    """The config's hand-set ensemble (``ensemble`` section; weights of absent models dropped) and the
    ensemble tuned on the tuning subjects (:func:`patchwork.ensembling.tuning.tune_ensemble`, as the workflow
    tunes it out of fold), written as ``pred/{name}/{subject}_prob.nii.gz`` and ``_seg.nii.gz``."""
    from patchwork.config import EnsembleSettings
    from patchwork.ensembling.combine import ensemble_files
    from patchwork.ensembling.tuning import THRESHOLDS, load_case, tune_ensemble

    section = dict(config.get("ensemble", {}))
    section["weights"] = {m: w for m, w in section.get("weights", {}).items() if m in models}
    hand_set = EnsembleSettings.from_dict(section)
    _, val_ids, test_ids = ids
    paths = {s: [out / "pred" / m / f"{s}_prob.nii.gz" for m in models] for s in val_ids + test_ids}
    cases = [load_case(paths[s], out / "raw" / "labelsTr" / f"{s}.nii.gz", min(THRESHOLDS)) for s in val_ids]
    tuned = EnsembleSettings.from_dict(tune_ensemble(cases, models, hand_set)["settings"])
    print(f"ensemble (hand-set): {hand_set.to_dict()}\nensemble_tuned: {tuned.to_dict()}", flush=True)
    for name, settings in (("ensemble", hand_set), ("ensemble_tuned", tuned)):
        for subject in val_ids + test_ids:
            folder = out / "pred" / name
            ensemble_files(
                dict(zip(models, paths[subject], strict=True)), settings,
                folder / f"{subject}_prob.nii.gz", folder / f"{subject}_seg.nii.gz",
            )  # fmt: skip
    return ["ensemble", "ensemble_tuned"]


def score(out: Path, name: str, ids: tuple[list, list, list]) -> dict[str, float]:
    """Test Dice, HD95 and lesion F1 of ``name``: raw (its own mask ``{subject}_seg.nii.gz``: threshold 0.5,
    or an ensemble's settings) and post-processed (:mod:`patchwork.postprocessing.components`
    tuned on the tuning subjects' probability maps); NaN distances (one mask empty) are left out of the HD95
    mean."""
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
    raw = out / "raw"
    cases = [
        load_case(out / "pred" / name / f"{s}_prob.nii.gz", raw / "labelsTr" / f"{s}.nii.gz") for s in val_ids
    ]
    tuned = tune_postprocessing(cases, 0.5)
    rows: dict[str, list] = {"raw": [], "pp": []}
    for subject in test_ids:
        prob, affine = read_image(out / "pred" / name / f"{subject}_prob.nii.gz")
        ref = read_image(raw / "labelsTs" / f"{subject}.nii.gz")[0] > 0
        spacing = spacing_from_affine(affine)
        own = read_image(out / "pred" / name / f"{subject}_seg.nii.gz")[0] > 0
        pp = postprocess(prob, Postprocessing.from_dict(tuned["settings"]), voxel_volume(affine))
        rows["raw"].append(mask_metrics(own, ref, spacing))
        rows["pp"].append(mask_metrics(pp, ref, spacing))
    result: dict[str, Any] = {"postprocessing": tuned["settings"], "val_dice_pp": tuned["mean_dice"]}
    for kind, metrics in rows.items():
        for metric in ("dice", "hd95", "lesion_f1"):
            values = np.array([m[metric] for m in metrics])
            result[f"{metric}_{kind}"] = (
                float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")
            )
    return result


def goals(results: dict[str, dict], specs: list) -> list[str]:
    """The quality goals at equal budget, on post-processed test scores: our best U-Net >= MONAI's, the
    best DNP >= our best U-Net, the better ensemble >= the best single model + 0.02, its HD95 <= 10 mm."""
    scores = [(results[s.name]["dice_pp"], s.name, s.type) for s in specs]
    best = {kind: max((d, n) for d, n, t in scores if t == kind) for kind in {t for *_, t in scores}}
    single = max((d, n) for d, n, _ in scores)
    checks = []
    if "unet" in best and "monai_unet" in results:
        checks.append(
            ("our U-Net >= MONAI U-Net", best["unet"], (results["monai_unet"]["dice_pp"], "monai_unet"), 0)
        )
    if "unet" in best and "dnp" in best:
        checks.append(("DNP >= our U-Net", best["dnp"], best["unet"], 0))
    ensemble = max(((r["dice_pp"], n) for n, r in results.items() if n.startswith("ensemble")), default=None)
    if ensemble:
        checks.append(("ensemble >= best single + 0.02", ensemble, single, 0.02))
    lines = [
        f"{'met' if a >= b + margin else 'NOT met'}: {goal}: {an} {a:.3f} vs {bn} {b:.3f}"
        for goal, (a, an), (b, bn), margin in checks
    ]
    if ensemble:
        hd95 = results[ensemble[1]]["hd95_pp"]
        lines.append(
            f"{'met' if hd95 <= 10 else 'NOT met'}: ensemble HD95 <= 10 mm: {ensemble[1]} {hd95:.1f} mm"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="work folder (cohort and models are reused)")
    parser.add_argument("--config", type=Path, default=Path(__file__).parents[1] / "config" / "demo.yaml")
    parser.add_argument("--models", nargs="*", default=None, help="model names of --config (default: all)")
    parser.add_argument("--n-train", type=int, default=12)
    parser.add_argument("--n-val", type=int, default=6)
    parser.add_argument("--n-test", type=int, default=16)
    parser.add_argument("--spacing", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--budget-s", type=float, default=None, help="training seconds per model (calibrated)"
    )
    parser.add_argument("--length", nargs="*", default=[], help="NAME=N: this model's training length")
    parser.add_argument("--monai-python", default=None, help="a Python with MONAI: adds the MONAI U-Net")
    args = parser.parse_args()

    import torch
    import yaml

    from patchwork.models import parse_spec

    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    config = yaml.safe_load(args.config.read_text())
    specs = [parse_spec(m, str(args.config)) for m in config["models"]]
    specs = [s for s in specs if args.models is None or s.name in args.models]
    ids = prepare_cohort(args.out, args, config)
    trained = train_models(args.out, specs, ids, args)
    predict_models(args.out, specs, trained, ids[1] + ids[2], args.seed)
    names = [s.name for s in specs]
    rows = {name: trained[name] for name in names}
    if args.monai_python:
        budget = args.budget_s or float(np.mean([t["seconds"] for t in trained.values()]))
        rows["monai_unet"] = {"seconds": run_monai(args.out, ids, budget, args), "length": "budget"}
    combined = ensembles(args.out, config, names, ids) if len(names) > 1 else []
    print(
        f"\n{len(ids[0])} training, {len(ids[1])} tuning, {len(ids[2])} test subjects; {args.threads} threads"
    )
    columns = ("dice_raw", "hd95_raw", "lesion_f1_raw", "dice_pp", "hd95_pp", "lesion_f1_pp")
    print(f"{'model':<14}{'train s':>8}{'length':>8}" + "".join(f"{c:>15}" for c in columns))
    results = {}
    for name in [*rows, *combined]:
        r = score(args.out, name, ids)
        info = rows.get(name, {"seconds": float("nan"), "length": "-"})
        results[name] = {**info, **r}
        cells = "".join(f"{r[c]:>15.3f}" for c in columns)
        print(f"{name:<14}{info['seconds']:>8.0f}{info['length']!s:>8}{cells}  {r['postprocessing']}")
    checks = goals(results, specs)
    if checks:
        print("\nGoals (post-processed test scores):\n" + "\n".join(checks))
    (args.out / "quality.json").write_text(json.dumps(results, indent=2, default=str))


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

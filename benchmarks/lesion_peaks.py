"""Which test lesions a ``quality.py`` run's models miss, and whether the images show them.

For the test subjects of a ``benchmarks/quality.py`` work folder, by lesion volume (the bins of its tables:
< 0.2, 0.2-1, 1-5, > 5 ml), this prints:

1. **contrast**: the median of each lesion's ``(mean inside - mean of a shell around it) / sd of the shell``
   in its own image (first channel, acquisition grid): how well a lesion of that size stands out;
2. **peaks**: for every model and ensemble of a run, the highest probability inside each lesion (dilated
   by one voxel, so a prediction that grazes it counts), sorted: 0.00 means the model does not see the
   lesion at all, a peak under 0.5 one the right threshold could still find;
3. **oracle caps**: the mean test Dice of an oracle that outlines every lesion of at least V ml perfectly
   and misses the rest, for V = 0, 0.2, 1 and 5 ml: the most a model that finds no lesion under V can score.

::

    python benchmarks/lesion_peaks.py --out /tmp/q-t1 --run budget_300
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from quality import VOLUME_BINS_ML, volume_bin  # the bins of the tables' lesions found (this folder)

ORACLE_ML = (0.0, 0.2, 1.0, 5.0)
SHELL_STEP = 2  # a lesion's contrast is measured against the voxels this many steps outside it


def contrast(image: np.ndarray, lesion: np.ndarray, label: np.ndarray) -> float:
    """``(mean inside - mean of the shell) / sd of the shell``; the shell is the voxels :data:`SHELL_STEP`
    dilation steps outside ``lesion`` (its dilation by that many steps minus its dilation by one fewer)
    that are in the image (non-zero) and in no lesion; NaN when it has under 5 voxels."""
    from scipy import ndimage

    shell = (
        ndimage.binary_dilation(lesion, iterations=SHELL_STEP)
        & ~ndimage.binary_dilation(lesion, iterations=SHELL_STEP - 1)
        & ~(label > 0)
        & (image != 0)
    )
    if shell.sum() < 5:
        return float("nan")
    return float((image[lesion].mean() - image[shell].mean()) / image[shell].std())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="quality.py's work folder")
    parser.add_argument("--run", default="budget_300", help="its run folder (budget_B, budget_B_seedS)")
    args = parser.parse_args()

    from scipy import ndimage

    from patchwork.io import read_image
    from patchwork.postprocessing.components import label_components, voxel_volume

    raw, pred = args.out / "raw", args.out / args.run / "pred"
    if not pred.is_dir() or not (raw / "labelsTs").is_dir():
        parser.exit(2, f"lesion_peaks.py: {pred} or {raw / 'labelsTs'}: not found (run quality.py first)\n")
    models = sorted(p.name for p in pred.iterdir() if p.is_dir())
    n_bins = len(VOLUME_BINS_ML) - 1
    contrasts: list[list[float]] = [[] for _ in range(n_bins)]
    peaks = {m: [[] for _ in range(n_bins)] for m in models}
    volumes_per_subject = []
    for label_path in sorted((raw / "labelsTs").glob("*.nii.gz")):
        subject = label_path.name.removesuffix(".nii.gz")
        label, affine = read_image(label_path)
        image = read_image(raw / "imagesTs" / f"{subject}_0000.nii.gz")[0]
        probs = {m: read_image(pred / m / f"{subject}_prob.nii.gz")[0] for m in models}
        found, n = label_components(label > 0)  # the reference's 26-connected lesions
        volumes = np.bincount(found.ravel(), minlength=n + 1)[1:] * voxel_volume(affine) / 1000.0
        volumes_per_subject.append(volumes)
        for k, b in enumerate(volume_bin(volumes), start=1):
            lesion = found == k
            near = ndimage.binary_dilation(lesion)
            contrasts[b].append(contrast(image, lesion, label))
            for m in models:
                peaks[m][b].append(float(probs[m][near].max()))

    bounds = zip(VOLUME_BINS_ML, VOLUME_BINS_ML[1:])
    names = [f"{lo:g}-{hi:g} ml" if np.isfinite(hi) else f"> {lo:g} ml" for lo, hi in bounds]
    print(f"{args.out} {args.run}: {len(volumes_per_subject)} test subjects")
    print("\ncontrast (median of (inside - shell) / shell sd), lesions per bin")
    for name, values in zip(names, contrasts, strict=True):
        median = np.nanmedian(values) if values else float("nan")
        print(f"  {name:<10} {median:+.2f}  ({len(values)} lesions)")
    print("\nhighest probability inside each lesion (sorted; >= 0.5 counted)")
    for m in models:
        print(f"  {m}")
        for name, values in zip(names, peaks[m], strict=True):
            cells = " ".join(f"{v:.2f}" for v in sorted(values))
            print(f"    {name:<10} {sum(v >= 0.5 for v in values)}/{len(values)}: {cells}")
    print("\noracle that outlines every lesion of at least V ml and misses the rest: mean test Dice")
    for v in ORACLE_ML:
        dice = [
            2 * vols[vols >= v].sum() / (vols.sum() + vols[vols >= v].sum()) if vols.size else 1.0
            for vols in volumes_per_subject
        ]
        none = sum(1 for vols in volumes_per_subject if vols.size and not (vols >= v).any())
        print(f"  V = {v:g} ml: {np.mean(dice):.3f} ({none} subjects hold no lesion that large)")


if __name__ == "__main__":
    main()

"""HD95 + ASSD of a 1 mm MNI-size pair of lesion masks: patchwork against MedPy, side by side.

The masks (182 x 218 x 182 voxels of 1 mm, MNI152) are generated, seeded: the reference is a
stroke-like lesion (a smooth random field thresholded inside an ellipsoid of one hemisphere) with
a few small satellite lesions; the prediction thresholds the same field a little lower, shifted by
one voxel, misses one satellite and adds two small false positives. ``--spread`` moves one false
positive to the other hemisphere, so the bounding box of both masks (where patchwork works) covers
most of the brain — the least favourable case for patchwork.

Timed, in one run on the same thread: patchwork (one :class:`~patchwork.surface.SurfaceDistances`
gives both numbers) against MedPy's ``medpy.metric.hd95`` + ``medpy.metric.assd`` (each
recomputes the surfaces and distance transforms of the whole image).

Both define the surfaces and the ASSD alike (mean over the pooled surface voxels of both masks)
but not HD95: patchwork follows MONAI (the larger of the two directed 95th percentiles), MedPy
takes the 95th percentile of the pooled distances. So the values are compared three ways:

* patchwork against an independent surface-based reference with its own convention: exact nearest
  surface-voxel distances from a k-d tree (``scipy.spatial.cKDTree``) on the voxel centres in mm;
* patchwork's directed distances reduced with MedPy's HD95 convention against MedPy's numbers;
* patchwork's own values against MedPy's, for the record.

Needs MedPy (``pip install -e .[bench]``); never run by the tests. Run::

    python benchmarks/metrics_speed.py --repeats 3
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Callable

import numpy as np
from medpy import metric as medpy_metric
from scipy import ndimage
from scipy.spatial import cKDTree

from patchwork.surface import SurfaceDistances, bounding_box, surface

SHAPE = (182, 218, 182)
SPACING = (1.0, 1.0, 1.0)


def lesion_pair(seed: int, spread: bool) -> tuple[np.ndarray, np.ndarray]:
    """Reference and predicted lesion masks on the MNI grid (see the module docstring)."""
    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.standard_normal(SHAPE).astype(np.float32), sigma=4.0)
    field /= field.std()
    grid = np.indices(SHAPE, dtype=np.float32)
    centre, radii = np.array([60.0, 120.0, 90.0]), np.array([22.0, 30.0, 20.0])
    ellipsoid = sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii, strict=True))
    core = field + 2.5 * (1.0 - ellipsoid)

    def ball(c: tuple[int, int, int], r: float) -> np.ndarray:
        return sum((g - x) ** 2 for g, x in zip(grid, c, strict=True)) <= r**2

    satellites = [((45, 80, 100), 3.0), ((75, 150, 70), 2.5), ((50, 140, 110), 2.0)]
    reference = core > 1.2
    for c, r in satellites:
        reference |= ball(c, r)
    prediction = np.roll(core > 1.0, 1, axis=0)
    for c, r in satellites[:2]:
        prediction |= ball(c, r + 0.5)
    false_positives = [((85, 95, 60), 2.0), ((135 if spread else 70, 60, 75), 2.5)]
    for c, r in false_positives:
        prediction |= ball(c, r)
    return prediction, reference


def kdtree_distances(pred: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Directed surface distances from a k-d tree on the surface voxel centres (mm)."""
    p = np.argwhere(surface(pred)) * np.asarray(SPACING)
    r = np.argwhere(surface(ref)) * np.asarray(SPACING)
    return cKDTree(r).query(p)[0], cKDTree(p).query(r)[0]


def best_time(func: Callable[[], object], repeats: int) -> tuple[float, object]:
    """Fastest of ``repeats`` calls (s) and the last result."""
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = func()
        times.append(time.perf_counter() - start)
    return min(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--spread", action="store_true", help="a false positive in the other hemisphere")
    args = parser.parse_args()

    pred, ref = lesion_pair(args.seed, args.spread)
    box = bounding_box(pred | ref, margin=1)
    box_voxels = int(np.prod([s.stop - s.start for s in box]))
    print(f"{platform.processor() or platform.machine()}, numpy {np.__version__}")
    print(
        f"grid {SHAPE} at {SPACING[0]:g} mm; reference {ref.sum()} voxels, prediction {pred.sum()} voxels; "
        f"bounding box {box_voxels / pred.size:.1%} of the image"
    )

    def ours() -> tuple[float, float, SurfaceDistances]:
        d = SurfaceDistances.compute(pred, ref, SPACING)
        return d.hausdorff(95.0), d.average_symmetric(), d

    def medpy() -> tuple[float, float]:
        return (
            medpy_metric.hd95(pred, ref, voxelspacing=SPACING),
            medpy_metric.assd(pred, ref, voxelspacing=SPACING),
        )

    t_ours, (hd95, assd, d) = best_time(ours, args.repeats)
    t_medpy, (hd95_medpy, assd_medpy) = best_time(medpy, args.repeats)
    to_ref, to_pred = kdtree_distances(pred, ref)
    hd95_kd = max(np.percentile(to_ref, 95), np.percentile(to_pred, 95))
    assd_kd = (to_ref.sum() + to_pred.sum()) / (to_ref.size + to_pred.size)
    hd95_as_medpy = np.percentile(np.concatenate([d.pred_to_ref, d.ref_to_pred]), 95)

    print(f"\n{'HD95 + ASSD':<44}{'time (s)':>10}")
    print(f"{'patchwork (one SurfaceDistances)':<44}{t_ours:>10.4f}")
    print(f"{'MedPy (hd95 + assd)':<44}{t_medpy:>10.4f}")
    print(f"{'speed-up':<44}{t_medpy / t_ours:>9.1f}x")
    print(f"\n{'values (mm)':<44}{'HD95':>12}{'ASSD':>12}")
    rows = [
        ("patchwork, MONAI convention", hd95, assd),
        ("k-d tree surface reference, MONAI conv.", hd95_kd, assd_kd),
        ("  |patchwork - k-d tree|", abs(hd95 - hd95_kd), abs(assd - assd_kd)),
        ("patchwork distances, MedPy convention", hd95_as_medpy, assd),
        ("MedPy", hd95_medpy, assd_medpy),
        ("  |patchwork (MedPy conv.) - MedPy|", abs(hd95_as_medpy - hd95_medpy), abs(assd - assd_medpy)),
        ("  |patchwork (MONAI conv.) - MedPy|", abs(hd95 - hd95_medpy), abs(assd - assd_medpy)),
    ]
    for name, a, b in rows:
        print(
            f"{name:<44}{a:>12.3g}{b:>12.3g}" if name.startswith("  ") else f"{name:<44}{a:>12.6f}{b:>12.6f}"
        )


if __name__ == "__main__":
    main()

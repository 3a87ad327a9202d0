"""HD95 + ASSD of a 1 mm MNI-size pair of lesion masks: patchwork against MONAI, DeepMind's surface-distance
and MedPy, side by side.

The masks (182 x 218 x 182 voxels of 1 mm, MNI152) are generated, seeded: the reference is a
stroke-like lesion (a smooth random field thresholded inside an ellipsoid of one hemisphere) with
a few small satellite lesions; the prediction thresholds the same field a little lower, shifted by
one voxel, misses one satellite and adds two small false positives. ``--spread`` moves one false
positive to the other hemisphere, so the bounding box of both masks covers most of the brain: the
case that makes distance-transform methods pay for the whole box.

Timed, in one run on the same thread (best of ``--repeats``): patchwork (one
:class:`~patchwork.evaluation.surface.SurfaceDistances` gives both numbers) against each peer that is
installed:
MONAI's ``compute_hausdorff_distance`` + ``compute_average_surface_distance`` (the same conventions as
patchwork), ``surface_distance.compute_surface_distances`` + its robust Hausdorff and average distance
(surfels weighted by area: other values), MedPy's ``hd95`` + ``assd`` (each recomputes the surfaces and
distance transforms of the whole image). The last line is the ratio against the fastest peer (> 1: patchwork
is faster).

Values are compared three ways: patchwork against an independent reference (Euclidean distance
transforms of the whole image); against MONAI (same convention); and, with MedPy's HD95 convention
(the 95th percentile of the pooled distances), against MedPy.

Needs the peers (``pip install -e .[bench]``); never run by the tests. Run::

    python benchmarks/metrics_speed.py --spread --repeats 3
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Callable

import numpy as np
from scipy import ndimage

from patchwork.evaluation.surface import SurfaceDistances, bounding_box, surface

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


def edt_distances(pred: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Directed surface distances (mm) from Euclidean distance transforms of the whole image: an independent
    reference for patchwork's k-d tree (the method MONAI and surface-distance use)."""
    pred_surface, ref_surface = surface(pred), surface(ref)
    to_ref = ndimage.distance_transform_edt(~ref_surface, sampling=SPACING)
    to_pred = ndimage.distance_transform_edt(~pred_surface, sampling=SPACING)
    return to_ref[pred_surface], to_pred[ref_surface]


def best_time(func: Callable[[], object], repeats: int) -> tuple[float, object]:
    """Fastest of ``repeats`` calls (s) and the last result."""
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = func()
        times.append(time.perf_counter() - start)
    return min(times), result


def peers(pred: np.ndarray, ref: np.ndarray) -> dict[str, Callable[[], tuple[float, float]]]:
    """HD95 + ASSD of each installed peer library, as a call returning ``(hd95, assd)``."""
    found: dict[str, Callable[[], tuple[float, float]]] = {}
    try:
        import torch
        from monai.metrics import compute_average_surface_distance, compute_hausdorff_distance

        def as_onehot(mask: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(mask)[None, None]

        def monai() -> tuple[float, float]:
            p, r = as_onehot(pred), as_onehot(ref)
            hd95 = compute_hausdorff_distance(p, r, include_background=True, percentile=95, spacing=SPACING)
            assd = compute_average_surface_distance(
                p, r, include_background=True, symmetric=True, spacing=SPACING
            )
            return float(hd95), float(assd)

        found["MONAI"] = monai
    except ImportError:
        pass
    try:
        import surface_distance as deepmind

        def surface_distance() -> tuple[float, float]:
            d = deepmind.compute_surface_distances(ref, pred, SPACING)
            return deepmind.compute_robust_hausdorff(d, 95), float(
                np.mean(deepmind.compute_average_surface_distance(d))
            )

        found["surface-distance"] = surface_distance
    except ImportError:
        pass
    try:
        from medpy import metric as medpy_metric

        def medpy() -> tuple[float, float]:
            return (
                medpy_metric.hd95(pred, ref, voxelspacing=SPACING),
                medpy_metric.assd(pred, ref, voxelspacing=SPACING),
            )

        found["MedPy"] = medpy
    except ImportError:
        pass
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--spread", action="store_true", help="a false positive in the other hemisphere")
    parser.add_argument("--skip", nargs="*", default=[], help="peers not to run (e.g. MedPy, ~5 s a call)")
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

    t_ours, (hd95, assd, d) = best_time(ours, args.repeats)
    timed = {
        name: best_time(call, args.repeats)
        for name, call in peers(pred, ref).items()
        if name not in args.skip
    }
    print(f"\n{'HD95 + ASSD':<44}{'time (s)':>10}{'HD95':>10}{'ASSD':>10}")
    print(f"{'patchwork (one SurfaceDistances)':<44}{t_ours:>10.4f}{hd95:>10.3f}{assd:>10.3f}")
    for name, (t, (h, a)) in timed.items():
        print(f"{name:<44}{t:>10.4f}{h:>10.3f}{a:>10.3f}")

    to_ref, to_pred = edt_distances(pred, ref)
    hd95_edt = max(np.percentile(to_ref, 95), np.percentile(to_pred, 95))
    assd_edt = (to_ref.sum() + to_pred.sum()) / (to_ref.size + to_pred.size)
    print(
        f"\n|patchwork - distance transform reference|: HD95 {abs(hd95 - hd95_edt):.3g} mm, "
        f"ASSD {abs(assd - assd_edt):.3g} mm"
    )
    if "MONAI" in timed:
        h, a = timed["MONAI"][1]
        print(
            f"|patchwork - MONAI| (same convention): HD95 {abs(hd95 - h):.3g} mm, ASSD {abs(assd - a):.3g} mm"
        )
    if "MedPy" in timed:
        h, a = timed["MedPy"][1]
        hd95_as_medpy = np.percentile(np.concatenate([d.pred_to_ref, d.ref_to_pred]), 95)
        print(
            f"|patchwork (MedPy's HD95 convention) - MedPy|: HD95 {abs(hd95_as_medpy - h):.3g} mm, "
            f"ASSD {abs(assd - a):.3g} mm"
        )
    if timed:
        fastest = min(timed, key=lambda name: timed[name][0])
        print(f"\nspeed-up against the fastest peer ({fastest}): {timed[fastest][0] / t_ours:.2f}x")


if __name__ == "__main__":
    main()

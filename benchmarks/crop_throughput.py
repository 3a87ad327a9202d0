"""Training-patch throughput: DNP CropGenerator against TorchIO (RandomAffine + Queue + UniformSampler).

Both sides draw training patches with rotation augmentation from an MNI-size volume (2 mm: 91x109x91,
1 mm: 182x218x182) held in memory, in the same run and on the same threads:

* DNP: ``CropGenerator`` with a 3-level 32^3 scheme (coarsest field of view 90 % of the image, finest
  voxel 1 mm at 1 mm and 2 mm at 2 mm), rotation ``dphi`` drawn independently per level, a label patch per
  level and ``balance`` ratio 0.5. A *patch set* is one ``sample`` call with ``--trees`` trees
  (``3 * trees`` patches). The one-off ``prepare`` (normalisation, label sites) is timed separately.
* TorchIO: ``ZNormalization`` and ``RandomAffine`` (rotation only, same width in degrees) on every volume
  load, then a ``Queue`` with a ``UniformSampler`` of 64^3 patches, ``--samples-per-volume`` patches per load
  (16: the rotation is shared by 16 patches; 1: every patch has its own rotation, as every DNP tree and
  level has); a patch set is ``--trees`` patches.

Voxels per second count the spatial voxels of the image patches delivered (labels not counted).
Speed is measured here, never asserted in tests. Run::

    python benchmarks/crop_throughput.py --repeats 5
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import time

import torch

from patchwork.dnp import CropGenerator

SHAPES = {"2mm": ((91, 109, 91), 2.0), "1mm": ((182, 218, 182), 1.0)}


def volume(
    shape: tuple[int, ...], voxel: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A smooth random image ``[1, *shape]``, a lesion-like label ball ``[*shape]`` and the affine."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.randn(1, 1, *(max(2, n // 8) for n in shape), generator=generator)
    image = torch.nn.functional.interpolate(coarse, size=shape, mode="trilinear", align_corners=False)[0]
    axes = [torch.arange(n, dtype=torch.float32) - 0.6 * n for n in shape]
    radius = torch.stack(torch.meshgrid(*axes, indexing="ij")).norm(dim=0)
    labels = (radius < 6.0 / voxel).float()
    affine = torch.diag(torch.tensor([voxel, voxel, voxel, 1.0], dtype=torch.float64))
    return image, labels, affine


def time_dnp(shape: tuple[int, ...], voxel: float, args: argparse.Namespace) -> dict[str, float]:
    """Patch sets and voxels per second of the DNP CropGenerator."""
    image, labels, affine = volume(shape, voxel, seed=0)
    gen = CropGenerator(
        depth=3,
        ndim=3,
        scheme={"patch_size": (32, 32, 32), "fov_rel": 0.9, "destvox_mm": voxel},
        interp_type=args.interp,
        normalize_input="m0s1",
    )
    start = time.perf_counter()
    prepared = gen.prepare(image, labels, affine=affine)
    prepare_s = time.perf_counter() - start
    generator = torch.Generator().manual_seed(0)
    options = {
        "num_patches": args.trees,
        "augment": {"dphi": math.radians(args.degrees)},
        "independent_augmentation": True,
        "balance": {"ratio": 0.5},
        "generator": generator,
    }
    gen.sample(prepared, **options)
    start = time.perf_counter()
    for _ in range(args.repeats):
        patches = gen.sample(prepared, **options)
    elapsed = time.perf_counter() - start
    voxels = sum(level.inputs[:, 0].numel() for level in patches.levels)
    return {
        "sets_s": args.repeats / elapsed,
        "voxels_s": args.repeats * voxels / elapsed,
        "prepare_s": prepare_s,
    }


def time_torchio(
    shape: tuple[int, ...], voxel: float, samples_per_volume: int, args: argparse.Namespace
) -> dict[str, float]:
    """Patch sets and voxels per second of TorchIO's RandomAffine + Queue + UniformSampler."""
    import torchio as tio

    image, labels, affine = volume(shape, voxel, seed=0)
    subject = tio.Subject(
        image=tio.ScalarImage(tensor=image, affine=affine.numpy()),
        label=tio.LabelMap(tensor=labels[None].to(torch.uint8), affine=affine.numpy()),
    )
    transform = tio.Compose([tio.ZNormalization(), tio.RandomAffine(scales=0, degrees=args.degrees)])
    loads = math.ceil((args.repeats + 1) * args.trees / samples_per_volume)
    dataset = tio.SubjectsDataset([subject] * loads, transform=transform)
    queue = tio.Queue(
        dataset,
        max_length=max(samples_per_volume, args.trees),
        samples_per_volume=samples_per_volume,
        sampler=tio.UniformSampler(64),
        num_workers=0,
        verbose=False,
    )
    loader = torch.utils.data.DataLoader(queue, batch_size=args.trees, num_workers=0)
    batches = iter(loader)
    next(batches)
    start = time.perf_counter()
    for _ in range(args.repeats):
        batch = next(batches)
    elapsed = time.perf_counter() - start
    voxels = batch["image"][tio.DATA][:, 0].numel()
    return {"sets_s": args.repeats / elapsed, "voxels_s": args.repeats * voxels / elapsed, "prepare_s": 0.0}


def row(name: str, method: str, result: dict[str, float]) -> str:
    """One line of the results table."""
    rates = f"{result['sets_s']:8.2f} {result['voxels_s'] / 1e6:10.1f}"
    return f"{name:<6} {method:<26} {rates} {result['prepare_s']:10.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed patch sets per method and volume")
    parser.add_argument("--trees", type=int, default=16, help="trees (DNP) or 64^3 patches (TorchIO) per set")
    parser.add_argument(
        "--samples-per-volume", type=int, nargs="+", default=[16, 1], help="TorchIO patches per volume load"
    )
    parser.add_argument("--degrees", type=float, default=15.0, help="rotation width in degrees")
    parser.add_argument("--interp", choices=("NN", "lin"), default="NN", help="DNP interpolation")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads")
    parser.add_argument("--skip-torchio", action="store_true", help="time DNP only")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    machine = platform.processor() or platform.machine()
    print(f"machine: {machine}, {os.cpu_count()} cores, torch {torch.__version__}, threads {args.threads}")
    print(
        f"repeats {args.repeats}, trees/patches per set {args.trees}, rotation {args.degrees} deg, "
        f"DNP interp {args.interp}, TorchIO samples/volume {args.samples_per_volume}"
    )
    print(f"{'volume':<6} {'method':<26} {'sets/s':>8} {'Mvoxels/s':>10} {'prepare s':>10}")
    for name, (shape, voxel) in SHAPES.items():
        dnp = time_dnp(shape, voxel, args)
        print(row(name, "DNP 3 levels x 32^3", dnp))
        if args.skip_torchio:
            continue
        for samples in args.samples_per_volume:
            reference = time_torchio(shape, voxel, samples, args)
            print(row(name, f"TorchIO 64^3, {samples}/volume", reference))
            ratio = dnp["voxels_s"] / reference["voxels_s"]
            print(f"{name:<6} voxels/s ratio DNP / TorchIO ({samples}/volume): {ratio:.1f}x")


if __name__ == "__main__":
    main()

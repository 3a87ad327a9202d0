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

Side by side with the authors' sampler (``--volumes peer``): a 100x120x100 1 mm volume, 3 levels of
32^3 with the same voxel sizes on both sides, nearest neighbour, a rotation drawn per patch and level,
``--peer-trees`` (100) trees per set placed uniformly (no balance), image and label patches at every
level. ``--peer PATH`` names their package directory (``deep_patchwork/pw`` of BIA_ATLAS2; we call
``PWData.resample`` with ``sampling='n_coarse2fine'`` and ``aug_rot`` of the same width in degrees). It
is imported from there only when given, never a dependency (it needs numpy, scipy, numba, matplotlib
and imageio). Sets alternate between the two samplers in one loop, so both see the same load. TorchIO
(one rotation per 64^3 patch) runs on the same volume. A stage profile of our patch set follows: this
script (not the package) wraps the package's functions with timers (placement, index computation,
gather, labels, normalisation, the rest).

Voxels per second count the spatial voxels of the image patches delivered (labels not counted).
Speed is measured here, never asserted in tests. Run::

    python benchmarks/crop_throughput.py --repeats 5
    python benchmarks/crop_throughput.py --volumes peer --peer /path/to/deep_patchwork/pw --repeats 3
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import torch

import patchwork.models.dnp.crop as crop_module
import patchwork.models.dnp.resample as resample_module
from patchwork.models.dnp import CropGenerator
from patchwork.models.dnp.resample import PointSampler
from patchwork.models.dnp.volume import LabelSource, Volume

SHAPES = {"2mm": ((91, 109, 91), 2.0), "1mm": ((182, 218, 182), 1.0)}
PEER_SHAPE = (100, 120, 100)
#: Stages of a patch set: (label, owner object, attribute) wrapped with timers by :func:`staged`; an
#: attribute the installed package lacks (an older version) is skipped.
STAGES = (
    ("placement (children: augment, place)", CropGenerator, "children"),
    ("sampler setup (PointSampler init)", PointSampler, "__init__"),
    ("index computation (_accumulate_index)", resample_module, "_accumulate_index"),
    ("gather, fused with the index (PointSampler.read)", PointSampler, "read"),
    ("gather (PointSampler.__call__ outside read)", PointSampler, "__call__"),
    ("labels (channels)", LabelSource, "channels"),
    ("normalisation (normalize_patches)", crop_module, "normalize_patches"),
)


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


def dnp_generator(voxel: float, interp: str) -> CropGenerator:
    """The 3-level 32^3 DNP generator timed here (coarsest field of view 90 % of the image)."""
    return CropGenerator(
        depth=3,
        ndim=3,
        scheme={"patch_size": (32, 32, 32), "fov_rel": 0.9, "destvox_mm": voxel},
        interp_type=interp,
        normalize_input="m0s1",
    )


def time_dnp(shape: tuple[int, ...], voxel: float, args: argparse.Namespace) -> dict[str, float]:
    """Patch sets and voxels per second of the DNP CropGenerator."""
    image, labels, affine = volume(shape, voxel, seed=0)
    gen = dnp_generator(voxel, args.interp)
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


def load_peer(path: str) -> ModuleType:
    """The authors' ``data`` module (``PWData``) from their package directory ``path`` (e.g. ``.../pw``).

    Their package imports itself by its own name, so its parent directory goes onto ``sys.path``.
    """
    package = Path(path).resolve()
    if not (package / "data.py").is_file():
        raise SystemExit(
            f"--peer {path}: no data.py there (give the package directory, e.g. deep_patchwork/pw)"
        )
    sys.path.insert(0, str(package.parent))
    with contextlib.redirect_stdout(io.StringIO()):
        return importlib.import_module(f"{package.name}.data")


def peer_sampler(
    peer: ModuleType,
    image: torch.Tensor,
    labels: torch.Tensor,
    sizes: list[torch.Tensor],
    args: argparse.Namespace,
) -> Callable[[], None]:
    """A call that draws one patch set with the authors' ``PWData.resample`` at our settings.

    ``scale_facts`` [3, depth] are our level voxel sizes (1 mm target voxel), coarsest last as they order
    them; ``aug_rot`` is the rotation width in degrees, drawn anew per patch and level as ours.
    """
    data = peer.PWData(n_modalities=1, n_labels=1, dim=3)
    data.add_dataset(image.numpy(), labels[None].numpy(), element_size=(1.0, 1.0, 1.0))
    scale_facts = torch.stack(sizes[::-1], dim=1).float()
    options = {
        "scale_facts": scale_facts,
        "pfield": (32, 32, 32),
        "patchbuffersize": args.peer_trees,
        "min_patches_per_dataset": args.peer_trees,
        "target_element_size": [1.0, 1.0, 1.0],
        "interpolation": ["nearest", "nearest"] if args.interp == "NN" else ["bilinear", "bilinear"],
        "augmentation": {"aug_rot": args.degrees},
        "sampling": "n_coarse2fine",
        "pin_mem": False,
    }

    def draw() -> None:
        with contextlib.redirect_stdout(io.StringIO()):
            data.resample(**options)

    return draw


def dnp_sampler(gen: CropGenerator, prepared: Volume, args: argparse.Namespace) -> Callable[[], object]:
    """A call that draws one patch set of ``--peer-trees`` uniformly placed trees with our generator."""
    options = {
        "num_patches": args.peer_trees,
        "augment": {"dphi": math.radians(args.degrees)},
        "independent_augmentation": True,
        "generator": torch.Generator().manual_seed(0),
    }
    return lambda: gen.sample(prepared, **options)


def side_by_side(samplers: dict[str, Callable[[], object]], repeats: int) -> dict[str, list[float]]:
    """Seconds per set of each sampler, alternating between them ``repeats`` times after one warm-up each."""
    seconds: dict[str, list[float]] = {name: [] for name in samplers}
    for draw in samplers.values():
        draw()
    for _ in range(repeats):
        for name, draw in samplers.items():
            start = time.perf_counter()
            draw()
            seconds[name].append(time.perf_counter() - start)
    return seconds


@contextlib.contextmanager
def staged(totals: dict[str, float]) -> Iterator[None]:
    """Wrap the package functions of :data:`STAGES` with timers adding their seconds into ``totals``.

    Nested stages are not double counted: a stage called inside another (e.g. a gather inside placement)
    is booked to the innermost one only.
    """
    active: list[str] = []

    def wrap(label: str, function: Callable[..., object]) -> Callable[..., object]:
        def timed(*args: object, **kwargs: object) -> object:
            start = time.perf_counter()
            active.append(label)
            try:
                return function(*args, **kwargs)
            finally:
                active.pop()
                elapsed = time.perf_counter() - start
                totals[label] += elapsed
                if active:
                    totals[active[-1]] -= elapsed

        return timed

    present = [(label, owner, name) for label, owner, name in STAGES if hasattr(owner, name)]
    saved = [(owner, name, getattr(owner, name)) for _, owner, name in present]
    for (label, owner, name), (_, _, function) in zip(present, saved, strict=True):
        totals.setdefault(label, 0.0)
        setattr(owner, name, wrap(label, function))
    try:
        yield
    finally:
        for owner, name, function in saved:
            setattr(owner, name, function)


def profile_sets(draw: Callable[[], object], repeats: int) -> list[tuple[str, float]]:
    """Milliseconds per set spent in each stage of :data:`STAGES` and in the rest, over ``repeats`` sets.

    Runs on one torch thread: with more, chunks are read by a pool of threads and the nested timers of
    :func:`staged` would interleave.
    """
    totals: dict[str, float] = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with staged(totals):
            start = time.perf_counter()
            for _ in range(repeats):
                draw()
            elapsed = time.perf_counter() - start
    finally:
        torch.set_num_threads(threads)
    rest = elapsed - sum(totals.values())
    rows = [*totals.items(), ("other (balance, Level assembly, Python)", rest), ("total", elapsed)]
    return [(label, 1e3 * value / repeats) for label, value in rows]


def print_rates(seconds: dict[str, list[float]], voxels: int) -> float:
    """Print median, worst and best Mvoxels/s per sampler and the ratio to the peer; our median rate."""
    rates = {name: [voxels / t / 1e6 for t in times] for name, times in seconds.items()}
    print(f"{'sampler':<34} {'median Mvox/s':>14} {'min':>7} {'max':>7}   per-set s")
    for name, values in rates.items():
        label = "DNP CropGenerator" if name == "DNP" else "authors' PWData.resample (--peer)"
        times = " ".join(f"{t:.3f}" for t in seconds[name])
        median = statistics.median(values)
        print(f"{label:<34} {median:14.1f} {min(values):7.1f} {max(values):7.1f}   {times}")
    ours = statistics.median(rates["DNP"])
    if "peer" in rates:
        median = ours / statistics.median(rates["peer"])
        best = max(rates["DNP"]) / max(rates["peer"])
        print(f"ratio DNP / authors': {median:.1f}x (medians), {best:.1f}x (best sets)")
    return ours


def run_peer_volume(args: argparse.Namespace) -> None:
    """Side by side: our sampler, the authors' (``--peer``) and TorchIO on a 100x120x100 volume."""
    image, labels, affine = volume(PEER_SHAPE, 1.0, seed=0)
    gen = dnp_generator(1.0, args.interp)
    prepared = gen.prepare(image, labels, affine=affine)
    samplers: dict[str, Callable[[], object]] = {"DNP": dnp_sampler(gen, prepared, args)}
    if args.peer:
        torch.manual_seed(0)
        samplers["peer"] = peer_sampler(load_peer(args.peer), image, labels, prepared.voxel_sizes, args)
    seconds = side_by_side(samplers, args.repeats)
    print(
        f"\n100x120x100 1 mm, 3 levels x 32^3, {args.peer_trees} trees per set, NN={args.interp == 'NN'}, "
        f"rotation {args.degrees} deg per patch and level, uniform placement"
    )
    ours = print_rates(seconds, args.peer_trees * 3 * 32**3)
    if not args.skip_torchio:
        reference = time_torchio(PEER_SHAPE, 1.0, 1, args)
        print(f"{'TorchIO 64^3, 1 rotation/patch':<34} {reference['voxels_s'] / 1e6:14.1f}")
        print(f"ratio DNP / TorchIO (one rotation per patch): {ours * 1e6 / reference['voxels_s']:.1f}x")
    print("\nwhere a DNP patch set's time goes (one thread; timers around package functions, ms per set):")
    for label, ms in profile_sets(samplers["DNP"], args.repeats):
        print(f"  {label:<48} {ms:9.1f}")


def cpu_name() -> str:
    """The processor's model name and widest AVX level, from /proc/cpuinfo where there is one."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines() if "model name" in line), "?")
    flags = next(
        (line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), []
    )
    avx = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
    return f"{model} ({avx})"


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
    parser.add_argument(
        "--volumes", nargs="+", choices=(*SHAPES, "peer"), default=[*SHAPES], help="volumes to time"
    )
    parser.add_argument("--peer", help="the authors' package directory (BIA_ATLAS2 deep_patchwork/pw)")
    parser.add_argument("--peer-trees", type=int, default=100, help="trees per set on the peer volume")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__}, threads {args.threads}")
    print(
        f"repeats {args.repeats}, trees/patches per set {args.trees}, rotation {args.degrees} deg, "
        f"DNP interp {args.interp}, TorchIO samples/volume {args.samples_per_volume}"
    )
    print(f"{'volume':<6} {'method':<26} {'sets/s':>8} {'Mvoxels/s':>10} {'prepare s':>10}")
    for name, (shape, voxel) in SHAPES.items():
        if name not in args.volumes:
            continue
        dnp = time_dnp(shape, voxel, args)
        print(row(name, "DNP 3 levels x 32^3", dnp))
        if args.skip_torchio:
            continue
        for samples in args.samples_per_volume:
            reference = time_torchio(shape, voxel, samples, args)
            print(row(name, f"TorchIO 64^3, {samples}/volume", reference))
            ratio = dnp["voxels_s"] / reference["voxels_s"]
            print(f"{name:<6} voxels/s ratio DNP / TorchIO ({samples}/volume): {ratio:.1f}x")
    if "peer" in args.volumes:
        run_peer_volume(args)


if __name__ == "__main__":
    main()

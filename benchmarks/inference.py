"""Whole-volume inference: DNP application (tree + lazyEval) against the U-Net's Gaussian sliding window.

Both run in one process on the same threads/device, on MNI-size volumes at 2 mm (99x117x95) and 1 mm
(197x233x189):

* DNP: :func:`patchwork.dnp.apply.apply_dnp` with ``generate_type='tree'`` and ``lazyEval`` (``--fraction``
  of the patches of every level but the finest expanded), and the same without lazyEval (full coverage).
* U-Net: :func:`patchwork.unet.sliding_window_inference`, overlap 0.5, Gaussian weighting.

Without ``--dnp-model``/``--unet-model`` both networks have random weights (timing only): the DNP is
:func:`patchwork.dnp.params.build_model` of the default :class:`DNPParams` with ``--depth`` levels of 32^3
patches (default 3, as the authors' ATLAS model; coarsest field of view 0.9 of the image, finest voxel the
image's; U-Net blocks 8..32 features, 3 stages) and the U-Net the default :class:`UNetParams` network
(48^3 windows, 8..64 features, 4 stages). With trained models and ``--dataset`` (a demo dataset from
:func:`patchwork.data.demo.make_demo_dataset`) the Dice of each method on the test subjects is added; the
goal is DNP (tree + lazyEval) <= 0.3x the sliding window's time at a Dice within 0.01 of its own
full-coverage Dice. Run::

    python benchmarks/inference.py --sizes 2mm 1mm
    python benchmarks/inference.py --dnp-model m/dnp.pt --unet-model m/unet.pt --dataset raw/Dataset001_Demo
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from patchwork.dnp.apply import apply_dnp
from patchwork.dnp.model import PatchWorkModel
from patchwork.dnp.params import DNPParams, build_model
from patchwork.dnp.train import load_dnp
from patchwork.io import read_image
from patchwork.metrics import dice
from patchwork.unet import sliding_window_inference
from patchwork.unet.inference import foreground_probability
from patchwork.unet.modelfile import build_network, load_unet
from patchwork.unet.params import UNetParams

SIZES = {"2mm": ((99, 117, 95), 2.0), "1mm": ((197, 233, 189), 1.0)}


def smooth_volume(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """A smooth random image ``[1, *shape]`` (low-pass filtered noise, zero mean, unit variance)."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.randn(1, 1, *(max(2, n // 8) for n in shape), generator=generator)
    image = torch.nn.functional.interpolate(coarse, size=shape, mode="trilinear", align_corners=False)[0]
    return ((image - image.mean()) / image.std()).numpy()


Run = Callable[[np.ndarray, np.ndarray, torch.device], np.ndarray]


def timed(run: Run, image: np.ndarray, affine: np.ndarray, device: torch.device) -> float:
    """Seconds of one call of ``run`` (the device synchronised before and after)."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    run(image, affine, device)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def methods(
    dnp: PatchWorkModel, dnp_apply: object, unet: torch.nn.Module, unet_params: UNetParams, fraction: float
) -> dict[str, Run]:
    """The three inference runs, each ``(image, affine, device) -> foreground probability``."""

    def dnp_run(lazy: float | None) -> Run:
        def run(image: np.ndarray, affine: np.ndarray, device: torch.device) -> np.ndarray:
            result = apply_dnp(
                dnp,
                image,
                affine,
                dnp_apply,
                generator=0,
                device=device,
                generate_type="tree",
                lazyEval=lazy,
            )
            return result.probabilities.max(dim=0).values.cpu().numpy()

        return run

    def unet_run(image: np.ndarray, affine: np.ndarray, device: torch.device) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)).to(device)
        logits = sliding_window_inference(
            unet, x, unet_params.patch_size, overlap=0.5, batch_size=unet_params.sw_batch_size
        )
        return foreground_probability(logits, unet_params.head).cpu().numpy()

    return {
        f"DNP tree + lazyEval {fraction}": dnp_run(fraction),
        "DNP tree, full coverage": dnp_run(None),
        "U-Net sliding window (0.5)": unet_run,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", nargs="+", choices=sorted(SIZES), default=["2mm", "1mm"])
    parser.add_argument("--fraction", type=float, default=0.25, help="lazyEval fraction")
    parser.add_argument("--depth", type=int, default=3, help="levels of the random-weight DNP")
    parser.add_argument("--no-full", action="store_true", help="skip DNP full coverage (slow on a CPU)")
    parser.add_argument("--dnp-model", type=Path)
    parser.add_argument("--unet-model", type=Path)
    parser.add_argument("--dataset", type=Path, help="demo dataset (imagesTs/, labelsTs/) for Dice")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    if args.dnp_model:
        dnp, dnp_params = load_dnp(args.dnp_model, device)
    else:
        scheme = {"patch_size": [32, 32, 32], "fov_rel": [0.9], "destvox_rel": [1.0]}
        dnp_params = DNPParams.from_dict({"crop": {"depth": args.depth, "ndim": 3, "scheme": scheme}})
        dnp = build_model(dnp_params, in_channels=1).to(device)
    unet_params = UNetParams()
    if args.unet_model:
        unet, unet_params = load_unet(args.unet_model, device)
    else:
        unet = build_network(unet_params, in_channels=1).to(device)
    unet.eval()
    runs = methods(dnp, dnp_params.apply, unet, unet_params, args.fraction)
    if args.no_full:
        del runs["DNP tree, full coverage"]
    weights = "trained" if args.dnp_model and args.unet_model else "random weights (timing only)"
    machine = platform.processor() or platform.machine()
    print(f"# {machine}, {torch.get_num_threads()} threads, {device}; {weights}")
    print(f"{'volume':<8}{'method':<32}{'seconds':>9}{'x U-Net':>9}")
    for size in args.sizes:
        shape, _ = SIZES[size]
        affine = np.diag([float(SIZES[size][1])] * 3 + [1.0])
        image = smooth_volume(shape, seed=1)
        seconds = {name: timed(run, image, affine, device) for name, run in runs.items()}
        reference = seconds["U-Net sliding window (0.5)"]
        for name, value in seconds.items():
            print(f"{size:<8}{name:<32}{value:>9.2f}{value / reference:>9.2f}")
    if args.dataset:
        print(f"\n{'subject':<14}" + "".join(f"{name[:24]:>26}" for name in runs))
        scores: dict[str, list[float]] = {name: [] for name in runs}
        for path in sorted((args.dataset / "imagesTs").glob("*_0000.nii.gz")):
            subject = path.name.removesuffix("_0000.nii.gz")
            data, affine = read_image(path)
            label, _ = read_image(args.dataset / "labelsTs" / f"{subject}.nii.gz")
            for name, run in runs.items():
                scores[name].append(dice(run(data[None], affine, device) > 0.5, label > 0))
            print(f"{subject:<14}" + "".join(f"{scores[name][-1]:>26.4f}" for name in runs))
        print(f"{'mean':<14}" + "".join(f"{np.mean(scores[name]):>26.4f}" for name in runs))


if __name__ == "__main__":
    main()

"""Whole-volume inference: DNP application (tree + lazyEval) against the U-Net's Gaussian sliding window.

Both run in one process on the same threads/device, on MNI-size volumes at 2 mm (99x117x95) and 1 mm
(197x233x189):

* DNP: :func:`patchwork.models.dnp.apply.apply_dnp` with ``generate_type='tree'`` and ``lazyEval`` (each of
  ``--fractions`` of the patches of every level but the finest expanded), and the same without lazyEval
  (full coverage); ``--level mix`` lets coarser levels fill where no finer patch was evaluated. One tree
  without test-time augmentation, as the U-Net runs without mirroring (the DNP's default application
  averages 4 rotated trees: 4x the time of one).
* U-Net: :func:`patchwork.models.unet.sliding_window_inference`, overlap 0.5, Gaussian weighting.

Without ``--dnp-model``/``--unet-model`` both networks have random weights (timing only): the DNP is
:func:`~patchwork.models.dnp.model.build_model` of the default :class:`DNPParams` with ``--depth`` levels of
32^3 patches (default 3, as the authors' ATLAS model; coarsest field of view 0.9 of the image, finest voxel
the image's; U-Net blocks 8..32 features, 3 stages) and the U-Net the default :class:`UNetParams` network
(48^3 windows, 8..64 features, 4 stages). With trained models, ``--preprocessed`` (the workflow's
``results/preprocessed``) and ``--dataset`` (the raw dataset with ``labelsTs/``), every method also runs on
each test subject as the workflow predicts it (preprocessed grid, probability mapped back to the original
grid, threshold 0.5): its seconds per subject and its Dice against the test label. The goal is DNP (tree +
lazyEval) <= 0.3x the sliding window's time at a Dice within 0.01 of its own full-coverage Dice. Run::

    python benchmarks/inference.py --sizes 2mm 1mm
    python benchmarks/inference.py --dnp-model results/entry/models/dnp/model.pt \
        --unet-model results/entry/models/unet_softmax/model.pt \
        --preprocessed results/preprocessed --dataset results/demo
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from patchwork.data.preprocess import load_preprocessed
from patchwork.entry.prediction import to_original_probability
from patchwork.evaluation.metrics import dice
from patchwork.io import read_image
from patchwork.models.dnp.apply import apply_dnp
from patchwork.models.dnp.apply_settings import DNPApply
from patchwork.models.dnp.model import PatchWorkModel, build_model
from patchwork.models.dnp.modelfile import load_dnp
from patchwork.models.dnp.settings import DNPParams
from patchwork.models.unet import sliding_window_inference
from patchwork.models.unet.modelfile import build_network, load_unet
from patchwork.models.unet.predict import foreground_probability
from patchwork.models.unet.settings import UNetApply, UNetParams

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
    dnp: PatchWorkModel,
    dnp_apply: DNPApply,
    unet: torch.nn.Module,
    unet_params: UNetParams,
    fractions: Sequence[float],
    full: bool,
) -> dict[str, Run]:
    """The inference runs, each ``(image, affine, device) -> foreground probability``: DNP with lazyEval at
    every fraction, DNP with full coverage (if ``full``) and the U-Net's sliding window."""

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
                num_patches=1,
                augment={},  # no test-time augmentation (None: as trained)
                lazyEval=None if lazy is None else {"fraction": lazy},  # ranked by max foreground prob.
            )
            return result.probabilities.max(dim=0).values.cpu().numpy()

        return run

    def unet_run(image: np.ndarray, affine: np.ndarray, device: torch.device) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)).to(device)
        window = UNetApply()  # the default application: overlap 0.5, no mirroring
        logits = sliding_window_inference(
            unet, x, unet_params.patch_size, overlap=window.overlap, batch_size=window.sw_batch_size
        )
        return foreground_probability(logits, unet_params.head).cpu().numpy()

    runs = {f"DNP tree + lazyEval {fraction}": dnp_run(fraction) for fraction in fractions}
    if full:
        runs["DNP tree, full coverage"] = dnp_run(None)
    return runs | {"U-Net sliding window (0.5)": unet_run}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--sizes", nargs="*", choices=sorted(SIZES), default=["2mm", "1mm"], help="none: Dice only"
    )
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.25], help="lazyEval fractions")
    parser.add_argument("--level", default="-1", help="stitched DNP level: -1 (finest) or 'mix'")
    parser.add_argument("--depth", type=int, default=3, help="levels of the random-weight DNP")
    parser.add_argument("--no-full", action="store_true", help="skip DNP full coverage (slow on a CPU)")
    parser.add_argument("--dnp-model", type=Path)
    parser.add_argument("--unet-model", type=Path)
    parser.add_argument("--dataset", type=Path, help="raw dataset whose labelsTs/ give the test Dice")
    parser.add_argument("--preprocessed", type=Path, help="the workflow's preprocessed subjects")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    if args.dnp_model:
        dnp, _ = load_dnp(args.dnp_model, device)
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
    level = args.level if args.level == "mix" else int(args.level)
    dnp_apply = DNPApply.from_dict({"level": level})
    runs = methods(dnp, dnp_apply, unet, unet_params, args.fractions, full=not args.no_full)
    weights = "trained" if args.dnp_model and args.unet_model else "random weights (timing only)"
    machine = platform.processor() or platform.machine()
    print(f"# {machine}, {torch.get_num_threads()} threads, {device}; {weights}; DNP level {level}")
    print(f"{'volume':<8}{'method':<32}{'seconds':>9}{'x U-Net':>9}")
    for size in args.sizes:
        shape, _ = SIZES[size]
        affine = np.diag([float(SIZES[size][1])] * 3 + [1.0])
        image = smooth_volume(shape, seed=1)
        seconds = {name: timed(run, image, affine, device) for name, run in runs.items()}
        reference = seconds["U-Net sliding window (0.5)"]
        for name, value in seconds.items():
            print(f"{size:<8}{name:<32}{value:>9.2f}{value / reference:>9.2f}")
    if args.dataset and args.preprocessed:
        test_subjects(runs, args.dataset, args.preprocessed, device)


def test_subjects(runs: dict[str, Run], dataset: Path, preprocessed: Path, device: torch.device) -> None:
    """Seconds and Dice of every method on the test subjects of ``dataset`` (labels in ``labelsTs/``),
    each run on the subject's preprocessed image and mapped back to the original grid."""
    print(f"\n{'subject':<14}" + "".join(f"{name[:26]:>28}" for name in runs))
    scores: dict[str, list[float]] = {name: [] for name in runs}
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    for path in sorted((dataset / "labelsTs").glob("*.nii.gz")):
        subject = path.name.removesuffix(".nii.gz")
        image, _, record = load_preprocessed(preprocessed, subject)
        label, _ = read_image(path)
        grid = np.asarray(record["affine"])
        for name, run in runs.items():
            start = time.perf_counter()
            probability = run(image, grid, device)
            seconds[name].append(time.perf_counter() - start)
            original, _ = to_original_probability(probability, record)
            scores[name].append(dice(original >= 0.5, label > 0))
        print(f"{subject:<14}" + "".join(f"{scores[n][-1]:>20.4f} {seconds[n][-1]:>6.1f}s" for n in runs))
    print(
        f"{'mean':<14}" + "".join(f"{np.mean(scores[n]):>20.4f} {np.mean(seconds[n]):>6.1f}s" for n in runs)
    )


if __name__ == "__main__":
    main()

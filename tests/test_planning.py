"""Self-configuration (``patchwork.planning``): nnU-Net's rules on isotropic, anisotropic and 2-D cohorts,
config values winning over plans, and a planned U-Net training one step within its memory budget."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from math import prod
from typing import Any

import pytest

from patchwork.errors import PatchworkError
from patchwork.models.plans import merge_plans, plan
from patchwork.planning.memory import CPU_OVERHEAD


def fingerprint(shapes: list[list[int]], spacings: list[list[float]], labels: int = 2) -> dict[str, Any]:
    """An ingest fingerprint of training subjects with these shapes and spacings (plus one test subject)."""
    ids = [f"s{i:03d}" for i in range(len(shapes))]
    return {
        "channels": ["t1"],
        "labels": {f"label{k}": k for k in range(labels)},
        "n_train": len(ids),
        "n_test": 1,
        "spacings": {**dict(zip(ids, spacings)), "test0": [9.0] * len(spacings[0])},
        "shapes": {**dict(zip(ids, shapes)), "test0": [9] * len(shapes[0])},
        "foreground_voxels": {i: 100 for i in ids},
    }


BRAIN = fingerprint([[182, 218, 182]] * 30, [[1.0, 1.0, 1.0]] * 30)
# thick slices: most subjects 5 mm, a few 3 mm (the 10th percentile), 30 slices of 512x512
ANISO = fingerprint([[512, 512, 30]] * 40, [[0.8, 0.8, 3.0 if i % 8 == 0 else 5.0] for i in range(40)])
SLICES = fingerprint([[512, 512, 1]] * 50, [[0.5, 0.5, 1.0]] * 50)
CPU_SMALL = {"device": "cpu", "memory_gb": 0.5}


def check_unet(plans: dict[str, Any]) -> None:
    """The U-Net rules every plan follows: divisibility, bottleneck, batch, 5 % of the dataset, budget."""
    unet, derived = plans["models"]["unet"]["params"], plans["models"]["unet"]["derived"]
    patch, n_stages = unet["patch_size"], unet["n_stages"]
    assert len(patch) == plans["ndim"] and n_stages == len(derived["pool_strides"]) + 1
    assert all(p % 2 ** (n_stages - 1) == 0 for p in patch)
    assert all(4 <= b < 8 or p <= 8 for b, p in zip(derived["bottleneck"], patch))
    assert unet["batch_size"] >= 2
    dataset = prod(plans["median_shape"][a] for a in plans["axes"]) * plans["n_train"]
    assert unet["batch_size"] == 2 or unet["batch_size"] * prod(patch) <= 0.05 * dataset
    assert derived["memory_gb"] <= plans["budget"]["memory_gb"]
    shape = [plans["median_shape"][a] for a in plans["axes"]]
    assert all(p < s + 2 ** (n_stages - 1) for p, s in zip(patch, shape))  # not beyond the median image


def test_isotropic_brain() -> None:
    plans = plan(BRAIN, {"device": "cuda", "memory_gb": 40})
    assert plans["target_spacing"] == [1.0, 1.0, 1.0] and plans["median_shape"] == [182, 218, 182]
    assert plans["ndim"] == 3 and plans["axes"] == [0, 1, 2]
    check_unet(plans)
    unet = plans["models"]["unet"]
    assert (unet["params"]["base_features"], unet["params"]["max_features"]) == (32, 320)
    assert all(s == [2, 2, 2] for s in unet["derived"]["pool_strides"])
    small = plan(BRAIN, CPU_SMALL)
    check_unet(small)
    assert prod(small["models"]["unet"]["params"]["patch_size"]) < prod(unet["params"]["patch_size"])
    scheme = plans["models"]["dnp"]["params"]["crop"]["scheme"]
    dnp = plans["models"]["dnp"]
    assert dnp["params"]["crop"]["depth"] == 3 and scheme["patch_size"] == [64, 64, 64]
    assert scheme["fov_mm"] == [218.0] * 3 and scheme["destvox_mm"] == [1.0] * 3  # whole image, 1 mm
    voxels = dnp["derived"]["voxel_sizes_mm"]
    assert voxels[0][0] == pytest.approx(218 / 64, abs=1e-3) and voxels[-1] == [1.0] * 3
    assert voxels[1][0] == pytest.approx((voxels[0][0] * voxels[2][0]) ** 0.5, abs=1e-3)  # geometric


def test_anisotropic_cohort() -> None:
    plans = plan(ANISO, {"device": "cuda", "memory_gb": 11})
    assert plans["target_spacing"] == [0.8, 0.8, 3.0]  # the 10th percentile of the thick axis
    assert plans["median_shape"] == [512, 512, 50]
    check_unet(plans)
    patch = plans["models"]["unet"]["params"]["patch_size"]
    assert patch[0] == patch[1] > patch[2]
    strides = plans["models"]["unet"]["derived"]["pool_strides"]
    assert strides[0] == [2, 2, 1]  # 3 mm > 2 x 0.8 mm: not pooled until the fine axes catch up
    assert [2, 2, 2] in strides
    # a spacing written in the config replaces the rule; the plan follows it
    kept = plan(ANISO, {"device": "cuda", "memory_gb": 11}, spacing=[0.8, 0.8, 5.0])
    assert kept["median_shape"] == [512, 512, 30]
    assert kept["models"]["unet"]["derived"]["pool_strides"][:2] == [[2, 2, 1], [2, 2, 1]]
    dnp = plans["models"]["dnp"]
    voxels = dnp["derived"]["voxel_sizes_mm"]
    assert voxels[0][0] == voxels[0][2] and voxels[-1] == [0.8, 0.8, 3.0]  # isotropic coarsest level
    assert dnp["params"]["crop"]["scheme"]["patch_size"][2] < dnp["params"]["crop"]["scheme"]["patch_size"][0]
    fov = dnp["params"]["crop"]["scheme"]["fov_mm"]
    assert fov[0] >= 512 * 0.8 and fov[2] >= 50 * 3.0  # the coarsest patch covers the whole image


@pytest.mark.parametrize("cohort", [SLICES, fingerprint([[320, 256]] * 20, [[0.7, 0.7]] * 20)])
def test_two_dimensional_cohort(cohort: dict[str, Any]) -> None:
    plans = plan(cohort, {"device": "cuda", "memory_gb": 11})
    assert plans["ndim"] == 2 and plans["axes"] == [0, 1]
    check_unet(plans)
    assert plans["models"]["unet"]["params"]["max_features"] == 512
    crop = plans["models"]["dnp"]["params"]["crop"]
    assert crop["ndim"] == 2 and len(crop["scheme"]["patch_size"]) == 2


def test_merge_plans_config_wins() -> None:
    from patchwork.models.dnp.settings import DNPParams
    from patchwork.models.unet.settings import UNetParams

    plans = plan(BRAIN, CPU_SMALL)
    before = json.dumps(plans)
    unet = merge_plans({"head": "softmax", "batch_size": 7}, plans["models"]["unet"], UNetParams)
    assert unet["batch_size"] == 7 and unet["patch_size"] == plans["models"]["unet"]["params"]["patch_size"]
    UNetParams.from_dict(unet)
    spec = {"crop": {"scheme": {"fov_rel": [0.7], "patch_size": [32, 32, 32]}}, "train": {"num_its": 5}}
    dnp = merge_plans(spec, plans["models"]["dnp"], DNPParams)
    assert dnp["crop"]["scheme"] == {"patch_size": [32, 32, 32], "fov_rel": [0.7], "destvox_mm": [1.0] * 3}
    assert dnp["crop"]["depth"] == plans["models"]["dnp"]["params"]["crop"]["depth"]
    planned_batch = plans["models"]["dnp"]["params"]["train"]["batch_size"]
    assert dnp["train"] == {"batch_size": planned_batch, "num_its": 5}
    DNPParams.from_dict(dnp)
    assert json.dumps(plans) == before  # neither argument is modified


def test_bad_budget_and_fingerprint() -> None:
    for budget in ({"device": "tpu", "memory_gb": 8}, {"device": "cpu", "memory_gb": 0}, {"device": "cpu"}):
        with pytest.raises(PatchworkError, match="budget"):
            plan(BRAIN, budget)
    with pytest.raises(PatchworkError, match="over the budget"):
        plan(BRAIN, {"device": "cpu", "memory_gb": 0.07})
    with pytest.raises(PatchworkError, match="missing key"):
        plan({"spacings": {}}, CPU_SMALL)


STEP = textwrap.dedent(
    """
    import json, resource, sys
    import torch
    import torch.nn.functional as F
    from patchwork.networks import UNet3D, init_weights
    from patchwork.models.unet.settings import UNetParams

    torch.set_num_threads(1)
    p = UNetParams.from_dict(json.loads(sys.argv[1]))
    net = UNet3D(1, p.out_channels, p.base_features, p.max_features, p.n_stages)
    init_weights(net, torch.Generator().manual_seed(0))
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3)
    x = torch.randn(p.batch_size, 1, *p.patch_size)
    y = torch.randint(0, p.num_classes, (p.batch_size, *p.patch_size))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    logits = net(x)
    prob = torch.softmax(logits, 1)
    onehot = F.one_hot(y, p.num_classes).movedim(-1, 1).float()
    dice = (2 * (prob * onehot).sum() + 1) / (prob.sum() + onehot.sum() + 1)
    loss = F.cross_entropy(logits, y) + 1 - dice
    loss.backward()
    torch.nn.utils.clip_grad_norm_(net.parameters(), p.grad_clip)
    optimizer.step()
    print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024)  # kB -> bytes
    """
)


def test_budget_never_exceeded_by_one_training_step() -> None:
    plans = plan(BRAIN, CPU_SMALL)
    from patchwork.models.unet.settings import UNetParams

    params = merge_plans({"head": "softmax"}, plans["models"]["unet"], UNetParams)
    out = subprocess.run(
        [sys.executable, "-c", STEP, json.dumps(params)], capture_output=True, text=True, check=True
    )
    peak = int(out.stdout.split()[-1])
    assert peak <= CPU_SMALL["memory_gb"] * 2**30
    # the closed formula bounds the measurement (it is what keeps every plan within its budget)
    assert peak <= plans["models"]["unet"]["derived"]["memory_gb"] * 2**30 + CPU_OVERHEAD


def test_planned_spec_fills_what_the_config_leaves_out_and_parses() -> None:
    from patchwork.models import parse_spec
    from patchwork.models.plans import planned_spec

    plans = plan(BRAIN, CPU_SMALL)
    written = {"name": "u", "type": "unet", "params": {"head": "softmax", "batch_size": 7}}
    spec = parse_spec(planned_spec(written, plans), "test")
    assert spec.params.batch_size == 7 and spec.params.head == "softmax"  # written: wins
    assert (
        list(spec.params.patch_size) == plans["models"]["unet"]["params"]["patch_size"]
    )  # left out: planned
    dnp = parse_spec(planned_spec({"name": "d", "type": "dnp"}, plans), "test")
    planned_scheme = plans["models"]["dnp"]["params"]["crop"]["scheme"]
    assert list(dnp.params.crop.scheme.patch_size[0]) == planned_scheme["patch_size"]
    assert planned_spec({"name": "x", "type": "other"}, plans) == {"name": "x", "type": "other"}
    assert written == {"name": "u", "type": "unet", "params": {"head": "softmax", "batch_size": 7}}


def test_preprocessing_resamples_to_the_planned_target_spacing() -> None:
    """With no target spacing in the config, preprocessing and the plans use nnU-Net's rule alike: the
    coarse axis of an anisotropic cohort goes to its 10th percentile, not its median."""
    from patchwork.config import PreprocessSettings

    resolved = PreprocessSettings().resolved(ANISO)
    assert list(resolved.target_spacing) == plan(ANISO, CPU_SMALL)["target_spacing"] == [0.8, 0.8, 3.0]
    assert PreprocessSettings(target_spacing=(2.0, 2.0, 2.0)).resolved(ANISO).target_spacing == (
        2.0,
        2.0,
        2.0,
    )


def test_plan_command_writes_plans_for_the_cpu_budget(tmp_path) -> None:
    from patchwork.cli import main
    from patchwork.io import read_json, write_json

    write_json(tmp_path / "fingerprint.json", BRAIN)
    args = [
        "plan",
        "--fingerprint",
        str(tmp_path / "fingerprint.json"),
        "--out",
        str(tmp_path / "plans.json"),
    ]
    assert main([*args, "--device", "cpu", "--settings", '{"cpu_memory_gb": 0.5}']) == 0
    assert read_json(tmp_path / "plans.json") == plan(BRAIN, CPU_SMALL)
    spacing = ["--preprocess-settings", '{"target_spacing": [2, 2, 2]}']
    assert main([*args, "--device", "cpu", *spacing]) == 0
    assert read_json(tmp_path / "plans.json")["target_spacing"] == [2.0, 2.0, 2.0]
    assert main([*args, "--device", "cuda", "--settings", '{"memory_gb": 40}']) == 0
    assert read_json(tmp_path / "plans.json")["budget"] == {"device": "cuda", "memory_gb": 40.0}

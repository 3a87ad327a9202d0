"""PatchWorkModel: levels, forward types, shared blocks, crop_fdim, finalBlock, parent crops, settings."""

from __future__ import annotations

import pytest
import torch
from dnp_images import SHAPES, ball, smooth, voxel_indices
from torch import nn

from patchwork.errors import PatchworkError
from patchwork.models.dnp import CropGenerator, PatchWorkModel, UNetBlocks
from patchwork.models.dnp.geometry import patch_coordinates
from patchwork.models.dnp.model import build_model
from patchwork.models.dnp.settings import DNPParams

BLOCKS = UNetBlocks(features=4, max_features=8, stages=2)


def cropper(ndim: int, depth: int = 2, **kwargs) -> CropGenerator:
    """A small scheme: 8-voxel patches, the coarsest covering 0.9 of the image."""
    scheme = {"patch_size": (8,) * ndim, "fov_rel": 0.9, "destvox_rel": 1.0}
    return CropGenerator(depth=depth, ndim=ndim, scheme=scheme, **kwargs)


def model(ndim: int, depth: int = 2, crop: dict | None = None, **kwargs) -> PatchWorkModel:
    """A model with tiny U-Net blocks and weights from a fixed seed."""
    torch.manual_seed(0)
    return PatchWorkModel(cropper(ndim, depth, **(crop or {})), 1, blockCreator=BLOCKS, **kwargs)


def patches(ndim: int, depth: int = 2, count: int = 3):
    """A patch set of a smooth image with a ball label."""
    shape = SHAPES[ndim]
    image = smooth(voxel_indices(shape))[None]
    labels = ball(shape, 5.0)[None]
    return cropper(ndim, depth).sample(image, labels, num_patches=count, generator=0)


def test_levels_have_the_documented_channels(ndim):
    net = model(ndim, depth=3, intermediate_out=3)
    outputs = net(patches(ndim, depth=3))
    assert [o.shape[1] for o in outputs] == [4, 4, 1]  # num_pred + intermediate_out, finest num_pred
    assert all(o.shape[2:] == (8,) * ndim for o in outputs)
    softmax = model(ndim, crop={"categorical": True, "num_labels": 2}, intermediate_out=1)
    assert softmax.activation == "softmax" and softmax.num_pred == 3
    out = softmax(patches(ndim))[-1]
    assert out.shape[1] == 3 and torch.allclose(softmax.probabilities(1, out).sum(1), torch.ones(1))
    custom = model(ndim, block_out=(5, 2))
    assert [o.shape[1] for o in custom(patches(ndim))] == [5, 2]


def test_parent_crop_matches_cropping_the_image(ndim):
    """Cropping a parent patch at a child's relative matrix reads what the child reads from the image."""
    shape = SHAPES[ndim]
    image = smooth(voxel_indices(shape) * 0.3)[None]
    gen = cropper(ndim, interp_type="lin")
    net = PatchWorkModel(gen, 1, blockCreator=BLOCKS)
    ps = gen.sample(image, num_patches=4, generator=1)
    child = ps.levels[1]
    cropped = net.crop_parent(1, ps.levels[0].inputs, child.relative, child.parent)
    where = patch_coordinates(child.relative, (8,) * ndim, torch.device("cpu"))  # in parent voxels
    inside = ((where >= 0) & (where <= 7)).all(dim=-1)[:, None]  # between the parent's voxel centres
    assert inside.float().mean() > 0.5
    assert torch.allclose(cropped[inside], child.inputs[inside], atol=0.1)
    assert not torch.allclose(cropped[inside], child.inputs.roll(1, 0)[inside], atol=0.1)


def test_simple_and_bridge_differ_only_by_the_bridge(ndim):
    ps = patches(ndim)
    simple, bridge = model(ndim, forward_type="simple"), model(ndim, forward_type="bridge")
    bridge.blocks.load_state_dict(simple.blocks.state_dict())
    assert not torch.allclose(simple(ps)[1], bridge(ps)[1])
    with torch.no_grad():
        for p in bridge.bridges.parameters():
            p.zero_()
    for a, b in zip(simple(ps), bridge(ps), strict=True):
        assert torch.allclose(a, b)


@pytest.mark.parametrize("categorical", [False, True])
def test_mult_gates_the_child_by_the_parent_prediction(ndim, categorical):
    crop = {"categorical": True, "num_labels": 1} if categorical else {}
    net = model(ndim, crop=crop, forward_type="mult")
    ps = patches(ndim)
    x0 = net.forward_level(0, ps.levels[0].inputs, None)
    parent = net.crop_parent(1, x0, ps.levels[1].relative, ps.levels[1].parent)
    raw = net.blocks[1](torch.cat([ps.levels[1].inputs, parent], dim=1))
    out = net.forward_level(1, ps.levels[1].inputs, parent)
    p_child, p_parent = net.probabilities(1, raw), net.probabilities(0, parent)
    expected = p_child * p_parent
    if categorical:
        expected = expected / expected.sum(dim=1, keepdim=True)
    assert torch.allclose(net.probabilities(1, out), expected, atol=1e-5)


def test_identical_blocks_share_parameters(ndim):
    shared, separate = model(ndim, depth=3, identical_blocks=True), model(ndim, depth=3)
    assert shared.blocks[1] is shared.blocks[2] and separate.blocks[1] is not separate.blocks[2]
    count = sum(p.numel() for p in shared.parameters())
    assert count < sum(p.numel() for p in separate.parameters())
    outputs = shared(patches(ndim, depth=3))
    assert outputs[2].shape[1] == outputs[1].shape[1]  # the finest level uses level 1's block
    with pytest.raises(PatchworkError, match="identical_blocks"):
        model(ndim, depth=3, identical_blocks=True, block_out=(9, 9, 1))


def test_crop_fdim_selects_the_passed_channels(ndim):
    net = model(ndim, intermediate_out=3, crop_fdim=(0, 2))
    assert net.blocks[1].encoder[0][0][0].in_channels == 1 + 2
    ps = patches(ndim)
    parent = torch.randn(3, 4, *(8,) * ndim, generator=torch.Generator().manual_seed(0))
    base = net.forward_level(1, ps.levels[1].inputs, parent)
    unused, used = parent.clone(), parent.clone()
    unused[:, 1] += 5.0
    used[:, 2] += 5.0
    assert torch.equal(net.forward_level(1, ps.levels[1].inputs, unused), base)
    assert not torch.allclose(net.forward_level(1, ps.levels[1].inputs, used), base)


def test_final_block_is_applied_to_the_finest_or_all_levels(ndim):
    class Double(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return 2.0 * x

    ps = patches(ndim)
    plain = model(ndim)
    final = model(ndim, finalBlock=Double())
    every = model(ndim, finalBlock=Double(), finalBlock_all_levels=True)
    a, b, c = plain(ps), final(ps), every(ps)
    assert torch.equal(b[0], a[0]) and torch.allclose(b[1], 2.0 * a[1])
    assert torch.allclose(c[0], 2.0 * a[0]) and not torch.allclose(c[1], b[1])


def test_settings_rebuild_the_model_and_its_weights_load_weights_only(ndim, tmp_path):
    """What ``model.pt`` relies on: the settings (stored once, as builtins) rebuild the same model."""
    scheme = {"patch_size": [8] * ndim, "fov_rel": 0.9, "destvox_rel": 1.0}
    model_settings = {"forward_type": "bridge", "crop_fdim": [0, 1], "intermediate_out": 2}
    blocks = {"block_features": 4, "block_max_features": 8, "block_stages": 2}
    params = DNPParams.from_dict(
        {"crop": {"depth": 3, "ndim": ndim, "scheme": scheme}, "model": {**model_settings, **blocks}}
    )
    net = build_model(params, 1)
    torch.save({"params": params.to_dict(), "state_dict": net.state_dict()}, tmp_path / "m.pt")
    obj = torch.load(tmp_path / "m.pt", weights_only=True)
    again = build_model(DNPParams.from_dict(obj["params"]), 1)
    again.load_state_dict(obj["state_dict"])
    ps = patches(ndim, depth=3)
    for a, b in zip(net(ps), again(ps), strict=True):
        assert torch.equal(a, b)
    assert again.cropper.config == net.cropper.config == params.crop


def test_cropper_takes_its_settings_or_the_papers_keywords(ndim):
    config = cropper(ndim).config
    assert CropGenerator(config).config is config
    with pytest.raises(PatchworkError, match="not both"):
        CropGenerator(config, depth=2)
    with pytest.raises(PatchworkError, match="unknown key"):
        CropGenerator(depth=2, ndim=ndim, colour=1)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"forward_type": "sum"}, "forward_type"),
        ({"block_out": (9,)}, "block_out needs 2"),
        ({"block_out": (9, 0)}, "prediction channels"),
        ({"crop_fdim": (0, 12)}, "crop_fdim"),
        ({"intermediate_out": -1}, "intermediate_out"),
    ],
)
def test_bad_model_settings_are_named(kwargs, message):
    with pytest.raises(PatchworkError, match=message):
        model(2, **kwargs)
    with pytest.raises(PatchworkError, match="divisible by 4"):
        PatchWorkModel(CropGenerator(depth=1, ndim=2, scheme={"patch_size": (7, 7), "fov_rel": 1.0}), 1)
    with pytest.raises(PatchworkError, match="parent crop"):
        model(2).forward_level(1, torch.zeros(1, 1, 8, 8), None)

"""Application of a patchwork: each option changes the stitched result in the documented way."""

from __future__ import annotations

import math

import nibabel as nib
import numpy as np
import pytest
import torch
from dnp_images import ball
from torch import nn

import patchwork.models.dnp.stitch as stitch
from patchwork.errors import PatchworkError
from patchwork.io import read_label_names, save_image
from patchwork.models.dnp import CropGenerator
from patchwork.models.dnp.apply import DNPResult, apply_dnp
from patchwork.models.dnp.apply_settings import ATTENTION_NAMES, DNPApply
from patchwork.models.dnp.blocks import UNetBlocks
from patchwork.models.dnp.labeltable import NIFTI_ECODE_CARET, add_label_table, read_label_table
from patchwork.models.dnp.lazy import NAMED_ATTENTION, attention_function
from patchwork.models.dnp.model import PatchWorkModel, build_model
from patchwork.models.dnp.settings import Augment, DNPParams
from patchwork.models.dnp.stitch import OutputGrid, Stitcher

SHAPE = {2: (40, 36), 3: (24, 22, 20)}
PLAIN = {"num_patches": 1, "augment": {}, "window": None}


def run(model: PatchWorkModel, data: torch.Tensor, affine: torch.Tensor, **settings: object) -> DNPResult:
    """:func:`apply_dnp` with the paper's plain application (one tree, no test-time augmentation, flat
    windows) unless a test says otherwise."""
    return apply_dnp(model, data, affine, **{**PLAIN, **settings})


def cropper(ndim: int, depth: int = 2, **options: object) -> CropGenerator:
    """Two levels of 8-voxel patches, the finest at the image's voxel size."""
    scheme = {"patch_size": (8,) * ndim, "fov_rel": 0.6, "destvox_rel": 1.0}
    return CropGenerator(depth=depth, ndim=ndim, scheme=scheme, **options)  # type: ignore[arg-type]


def unet_model(ndim: int, seed: int = 0, **options: object) -> PatchWorkModel:
    """The real model with small U-Net blocks and seeded random weights."""
    torch.manual_seed(seed)
    blocks = UNetBlocks(features=4, max_features=8, stages=2)
    return PatchWorkModel(cropper(ndim, **options), 1, blockCreator=blocks, intermediate_out=2)


def pointwise_model(ndim: int, gain: float, bias: float) -> PatchWorkModel:
    """The real model with 1x1 blocks: every level's logits are ``gain * image + bias`` (parents ignored)."""

    def create(level: int, out_channels: int, in_channels: int, ndim_: int) -> nn.Module:
        conv = (nn.Conv2d if ndim_ == 2 else nn.Conv3d)(in_channels, out_channels, kernel_size=1)
        with torch.no_grad():
            conv.weight.zero_()
            conv.weight[:, 0] = gain
            conv.bias.fill_(bias)
        return conv

    return PatchWorkModel(cropper(ndim), 1, blockCreator=create, intermediate_out=1)


def image(ndim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A bright ball off centre on a dark background, with an identity affine."""
    shape = SHAPE[ndim]
    ball_image = torch.roll(ball(shape, 4.0), shifts=(6,) * ndim, dims=tuple(range(ndim)))
    return ball_image[None], torch.eye(ndim + 1, dtype=torch.float64)


@pytest.mark.parametrize("dphi", [0.0, 0.5])
def test_tree_covers_every_voxel_in_the_input_grid(ndim: int, dphi: float) -> None:
    data, affine = image(ndim)
    affine[0, 0], affine[1, 1] = -1.5, 0.8  # flipped, anisotropic
    augment = {"dphi": dphi} if dphi else {}
    result = run(
        unet_model(ndim), data, affine, generate_type="tree", num_patches=1, augment=augment, generator=0
    )
    assert result.probabilities.shape == (1, *SHAPE[ndim])
    assert (result.count > 0).all() and result.coverage == 1.0  # rotated tilings cover too
    assert torch.equal(result.affine, affine)


def oblique_affine(ndim: int) -> torch.Tensor:
    """A rotated, flipped, anisotropic and shifted affine."""
    angle = 0.3
    rotation = torch.eye(ndim, dtype=torch.float64)
    rotation[:2, :2] = torch.tensor([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    affine = torch.eye(ndim + 1, dtype=torch.float64)
    affine[:ndim, :ndim] = rotation @ torch.diag(torch.tensor([-1.2, 0.9, 1.1][:ndim], dtype=torch.float64))
    affine[:ndim, ndim] = torch.tensor([10.0, -4.0, 3.0][:ndim], dtype=torch.float64)
    return affine


@pytest.mark.parametrize("system", ["world", "matrix"])
def test_scale_to_original_keeps_an_oblique_grid_exactly(ndim: int, system: str) -> None:
    data, _ = image(ndim)
    affine = oblique_affine(ndim)
    result = run(unet_model(ndim, system=system), data, affine, generate_type="tree", generator=0)
    assert result.probabilities.shape[1:] == SHAPE[ndim]
    assert torch.equal(result.affine, affine)
    assert (result.count > 0).all()  # world-aligned tiles are shrunk to fit the oblique grid


def test_finest_grid_with_sampling_factor(ndim: int) -> None:
    data, affine = image(ndim)
    model = unet_model(ndim)
    plain = run(model, data, affine, scale_to_original=False, generator=0)
    dense = run(model, data, affine, scale_to_original=False, sampling_factor=2.0, generator=0)
    spacing = torch.linalg.norm(plain.affine[:ndim, :ndim], dim=0)
    torch.testing.assert_close(torch.linalg.norm(dense.affine[:ndim, :ndim], dim=0), spacing / 2)
    assert plain.probabilities.shape[1:] == SHAPE[ndim]  # finest voxel = image voxel
    assert dense.probabilities.shape[1:] == tuple(2 * n for n in SHAPE[ndim])
    # the dense grid's voxel centres half a voxel apart sample the same stitched map
    torch.testing.assert_close(plain.affine[:ndim, ndim] - spacing / 4, dense.affine[:ndim, ndim])


def test_lazy_eval_expands_only_the_most_promising_patches(ndim: int) -> None:
    data, affine = image(ndim)
    model = pointwise_model(ndim, gain=8.0, bias=-4.0)  # probability high on the ball only
    full = run(model, data, affine, generate_type="tree", generator=0)
    lazy_eval = {"fraction": 0.5, "reduceFun": "mean"}
    lazy = run(model, data, affine, generate_type="tree", lazyEval=lazy_eval, generator=0)
    assert full.patches_per_level[0] == lazy.patches_per_level[0]
    assert lazy.patches_per_level[1] < full.patches_per_level[1]
    assert lazy.patches_per_level[1] == math.ceil(0.5 * full.patches_per_level[0]) * (
        full.patches_per_level[1] // full.patches_per_level[0]
    )
    ball_voxels = data[0] > 0
    centre = tuple(int(c) for c in torch.nonzero(ball_voxels).float().mean(dim=0).round())
    assert lazy.count[centre] > 0  # the kept parents are those that see the ball
    assert lazy.count[ball_voxels].float().mean() > lazy.count[~ball_voxels].float().mean()
    assert (lazy.count == 0).any()
    seen = lazy.count > 0  # 1x1 blocks: every patch gives a voxel the same output
    torch.testing.assert_close(lazy.probabilities[0][seen], full.probabilities[0][seen])


def test_lazy_eval_fraction_one_equals_no_lazy_eval(ndim: int) -> None:
    data, affine = image(ndim)
    model = unet_model(ndim)
    options = {"generate_type": "random", "num_patches": 6, "branch_factor": 2, "generator": 3}
    plain = run(model, data, affine, **options)
    lazy = run(model, data, affine, lazyEval={"fraction": 1.0, "reduceFun": "mean"}, **options)
    assert lazy.patches_per_level == plain.patches_per_level == (6, 12)
    torch.testing.assert_close(lazy.probabilities, plain.probabilities)


def test_attention_function_alone_picks_the_kept_patches(ndim: int) -> None:
    data, affine = image(ndim)
    model = pointwise_model(ndim, gain=8.0, bias=-4.0)
    options = {"generate_type": "tree", "generator": 0}
    best = run(model, data, affine, lazyEval={"fraction": 0.25, "reduceFun": "mean"}, **options)
    inverted = {"fraction": 0.25, "reduceFun": "mean", "attentionFun": lambda logits: -logits}
    worst = run(model, data, affine, lazyEval=inverted, **options)
    ball_voxels = data[0] > 0
    assert worst.patches_per_level == best.patches_per_level
    assert worst.count[ball_voxels].float().mean() < best.count[ball_voxels].float().mean()


def test_reduction_alone_changes_the_ranking(ndim: int) -> None:
    """'max' ranks a patch by its strongest voxel, 'mean' by its average: one bright voxel in a corner wins
    under 'max', a broad dim block in the opposite corner under 'mean'."""
    shape = SHAPE[ndim]
    data = torch.zeros(1, *shape)
    data[(0, *[slice(0, 10)] * ndim)] = 1.0
    spike = tuple(n - 2 for n in shape)
    data[(0, *[slice(n - 3, n) for n in shape])] = 4.0  # 3 voxels wide: seen by the coarse samples
    affine = torch.eye(ndim + 1, dtype=torch.float64)
    model = pointwise_model(ndim, gain=1.0, bias=0.0)
    options = {"generate_type": "tree", "level": 1, "generator": 0}
    kept = {}
    for reduce in ("max", "mean"):
        lazy = {"fraction": 1e-3, "reduceFun": reduce, "attentionFun": "identity"}
        kept[reduce] = run(model, data, affine, lazyEval=lazy, **options).count
    assert kept["max"][spike] > 0 and kept["max"][(0,) * ndim] == 0
    assert kept["mean"][spike] == 0 and kept["mean"][(0,) * ndim] > 0


def test_num_chunks_repeats_the_whole_process(ndim: int) -> None:
    data, affine = image(ndim)
    model = unet_model(ndim)
    once = run(model, data, affine, generate_type="tree", generator=5)
    twice = run(model, data, affine, generate_type="tree", num_chunks=2, generator=5)
    assert twice.patches_per_level == tuple(2 * n for n in once.patches_per_level)
    assert torch.equal(twice.count, 2 * once.count)  # an exact tiling without augmentation, twice
    torch.testing.assert_close(twice.probabilities, once.probabilities)
    drawn = {"generate_type": "random", "num_patches": 3, "branch_factor": 2, "generator": 5}
    one, three = run(model, data, affine, **drawn), run(model, data, affine, num_chunks=3, **drawn)
    assert three.patches_per_level == (9, 18) and three.count.sum() > 2 * one.count.sum()


def test_max_trees_bounds_memory_not_the_result(ndim: int) -> None:
    data, affine = image(ndim)
    model = unet_model(ndim)
    options = {"generate_type": "tree", "lazyEval": None, "generator": 5}
    whole = run(model, data, affine, **options)
    one_at_a_time = run(model, data, affine, max_trees=1, batch_size=5, **options)
    assert whole.patches_per_level == one_at_a_time.patches_per_level and whole.patches_per_level[0] > 1
    # equal up to the rounding of convolutions over batches of another size
    torch.testing.assert_close(whole.probabilities, one_at_a_time.probabilities, atol=2e-4, rtol=0)
    torch.testing.assert_close(whole.std, one_at_a_time.std, atol=2e-4, rtol=0)
    assert torch.equal(whole.count, one_at_a_time.count)


def test_tree_copies_are_jittered_and_the_first_covers(ndim: int) -> None:
    data, affine = image(ndim)
    model = unet_model(ndim)
    one = run(model, data, affine, generate_type="tree", generator=1)
    three = run(model, data, affine, generate_type="tree", num_patches=3, generator=1)
    assert three.patches_per_level == tuple(3 * n for n in one.patches_per_level)
    assert not torch.equal(three.count, 3 * one.count)  # the copies are other patches
    assert (three.count > 0).all()


def test_random_children_go_where_the_parent_points(ndim: int) -> None:
    """Children are drawn at the parent's output voxels with weight ``p + explore``: with ``explore`` 0
    they land on the ball the coarse level found, with a large one they spread uniformly."""
    data, affine = image(ndim)
    model = pointwise_model(ndim, gain=8.0, bias=-4.0)  # probability high on the ball only
    options = {"generate_type": "random", "num_patches": 6, "branch_factor": 8, "level": 1, "generator": 3}
    driven = run(model, data, affine, explore=0.0, **options)
    uniform = run(model, data, affine, explore=1e6, **options)
    ball_voxels = data[0] > 0
    share = [r.count[ball_voxels].sum() / r.count.sum() for r in (driven, uniform)]
    assert share[0] > 1.5 * share[1]


def test_coverage_is_reported(ndim: int, caplog: pytest.LogCaptureFixture) -> None:
    data, affine = image(ndim)
    sparse = run(unet_model(ndim), data, affine, generate_type="random", num_patches=1, generator=0)
    assert sparse.coverage == pytest.approx(float((sparse.count > 0).float().mean()))
    assert sparse.coverage < 1.0 and "received no patch output" in caplog.text


def test_sampling_factor_refines_the_image_grid(ndim: int) -> None:
    data, affine = image(ndim)
    affine[0, 0] = -1.5
    model = unet_model(ndim)
    plain = run(model, data, affine, generate_type="tree", generator=0)
    fine = run(model, data, affine, generate_type="tree", sampling_factor=2.0, generator=0)
    assert fine.probabilities.shape[1:] == tuple(2 * n for n in SHAPE[ndim])
    torch.testing.assert_close(fine.affine[:ndim, :ndim], affine[:ndim, :ndim] / 2)
    # the fine voxels 0 and 1 straddle the image's voxel 0 centre
    torch.testing.assert_close(
        fine.affine[:ndim, :ndim] @ torch.full((ndim,), 0.5, dtype=torch.float64) + fine.affine[:ndim, ndim],
        affine[:ndim, ndim],
    )
    assert (fine.count > 0).all() and plain.coverage == 1.0


def test_coarse_levels_need_intermediate_losses(ndim: int) -> None:
    data, affine = image(ndim)
    torch.manual_seed(0)
    blocks = UNetBlocks(features=4, max_features=8, stages=2)
    model = PatchWorkModel(cropper(ndim), 1, blockCreator=blocks, intermediate_loss=False)
    for settings, name in (
        ({"lazyEval": {"fraction": 0.5}}, "lazyEval"),
        ({"level": 0}, "level=0"),
        ({"level": "mix"}, "level='mix'"),
    ):
        with pytest.raises(PatchworkError, match=name + ".*intermediate_loss"):
            run(model, data, affine, **settings)
    run(model, data, affine, level=-1, generator=0)


def test_test_time_augmentation_defaults_to_the_training(ndim: int) -> None:
    data, affine = image(ndim)
    model = unet_model(ndim)
    model.train_augment = Augment(dphi=0.5)
    options = {"generate_type": "random", "num_patches": 3, "generator": 0}
    trained = apply_dnp(model, data, affine, **options)
    off = apply_dnp(model, data, affine, augment={}, **options)
    again = apply_dnp(model, data, affine, augment={"dphi": 0.5}, **options)
    torch.testing.assert_close(trained.probabilities, again.probabilities)
    assert not torch.allclose(trained.probabilities, off.probabilities)
    built = build_model(
        DNPParams.from_dict({"train": {"augment": {"dphi": 0.3}, "independent_augmentation": True}}), 1
    )
    assert (built.train_augment, built.train_independent_augmentation) == (Augment(dphi=0.3), True)


def test_linear_scatter_stitches_a_constant_exactly(ndim: int) -> None:
    data, affine = image(ndim)
    model = pointwise_model(ndim, gain=0.0, bias=0.7)
    model.cropper = cropper(ndim, scatter_type="lin")
    result = run(model, data, affine, generate_type="tree", augment={"dphi": 0.3}, window="cos", generator=0)
    assert (result.count > 0).all()
    torch.testing.assert_close(
        result.probabilities, torch.full_like(result.probabilities, 1 / (1 + math.exp(-0.7)))
    )


def test_std_is_zero_where_outputs_agree_and_positive_for_augmented_outputs(ndim: int) -> None:
    data, affine = image(ndim)
    constant = pointwise_model(ndim, gain=0.0, bias=0.7)
    options = {"generate_type": "random", "num_patches": 5, "branch_factor": 2, "generator": 1}
    agree = run(constant, data, affine, **options)
    assert agree.std.abs().max() < 1e-3
    seen = agree.probabilities[0][agree.count > 0]
    torch.testing.assert_close(seen, torch.full_like(seen, 1 / (1 + math.exp(-0.7))))
    augment = {"dphi": 0.5, "flip": (1,) * ndim}
    spread = run(unet_model(ndim), data, affine, augment=augment, **options)
    assert (spread.std[0][spread.count > 1] > 1e-3).any()
    assert (spread.std[0][spread.count == 1] < 1e-3).all()  # one output: no spread


def test_sparse_suppression_lowers_sparsely_covered_voxels_only(ndim: int) -> None:
    data, affine = image(ndim)
    constant = pointwise_model(ndim, gain=0.0, bias=6.0)  # p ~ 0.998 everywhere
    options = {"generate_type": "random", "num_patches": 10, "branch_factor": 6, "generator": 2}
    plain = run(constant, data, affine, **options)
    alpha = 1.0
    suppressed = run(constant, data, affine, sparse_suppression=alpha, **options)
    n = plain.count
    expected = plain.probabilities * torch.where(n > 0, n / torch.sqrt(n**2 + 3 * alpha), 0.0)
    torch.testing.assert_close(suppressed.probabilities, expected)
    assert (suppressed.probabilities[0][n == 1] < 0.5).all()
    assert n.max() >= 4
    assert (suppressed.probabilities[0][n >= 4] > 0.9).all()


def test_windows_weight_the_patch_centre_more(ndim: int) -> None:
    shape = (12,) * ndim
    grid = OutputGrid(
        shape, torch.eye(ndim + 1, dtype=torch.float64), torch.eye(ndim + 1, dtype=torch.float64)
    )
    matrices = torch.eye(ndim + 1, dtype=torch.float64).repeat(2, 1, 1)
    matrices[1, 0, ndim] = 4.0  # the second patch is shifted by 4 voxels along axis 0
    values = torch.stack([torch.zeros(1, *(8,) * ndim), torch.ones(1, *(8,) * ndim)])
    centre_of_first = (4,) + (3,) * (ndim - 1)  # near the first patch's centre, on the second one's border
    results = {}
    for window in (None, "cos", "cos2"):
        stitcher = Stitcher(grid, 1, window, "NN", torch.device("cpu"))
        stitcher.add(values, matrices)
        results[window] = float(stitcher.mean()[(0, *centre_of_first)])
    assert results[None] == pytest.approx(0.5)
    assert results["cos2"] < results["cos"] < results[None]


def test_level_mix_fills_what_the_finest_level_skipped(ndim: int) -> None:
    data, affine = image(ndim)
    model = pointwise_model(ndim, gain=8.0, bias=-4.0)
    options = {"generate_type": "tree", "lazyEval": {"fraction": 0.25}, "generator": 0}
    finest = run(model, data, affine, level=-1, **options)
    mixed = run(model, data, affine, level="mix", **options)
    coarse = run(model, data, affine, level=0, **options)
    assert coarse.patches_per_level == (finest.patches_per_level[0],)  # finer levels are not evaluated
    assert (mixed.count > 0).all() and (finest.count == 0).any()
    assert not torch.allclose(mixed.probabilities, finest.probabilities)
    # the mix is the count-weighted mean of the levels' means with weights 1 (level 0) and 10 (level 1)
    n0, n1 = coarse.count, 10.0 * finest.count
    expected = (n0 * coarse.probabilities + n1 * finest.probabilities) / (n0 + n1)
    torch.testing.assert_close(mixed.probabilities, expected, atol=1e-5, rtol=1e-5)


def test_out_types(ndim: int) -> None:
    data, affine = image(ndim)
    model = unet_model(ndim)
    probabilities = run(model, data, affine, generator=0).probabilities
    mask = run(model, data, affine, out_typ="mask", generator=0).output
    assert mask.dtype == torch.uint8 and set(mask.unique().tolist()) <= {0, 1}
    assert torch.equal(mask.bool(), probabilities > 0.5)
    low = run(model, data, affine, out_typ="mask:0.2", generator=0).output
    assert torch.equal(low.bool(), probabilities > 0.2)
    scaled = run(model, data, affine, out_typ="uint8", generator=0).output
    assert scaled.dtype == torch.uint8
    torch.testing.assert_close(scaled.float() / 255, probabilities, atol=0.5 / 255 + 1e-6, rtol=0)
    short = run(model, data, affine, out_typ="int16", generator=0).output
    assert short.dtype == torch.int16
    assert torch.equal(short, torch.round(probabilities * 32767).to(torch.int16))


def test_atlas_of_a_softmax_model_gives_label_values(ndim: int) -> None:
    data, affine = image(ndim)
    model = unet_model(ndim, seed=4, categorial_label=(3, 7), categorical=True)
    assert model.activation == "softmax"
    probabilities = run(model, data, affine, generator=0).probabilities
    assert probabilities.shape[0] == 2  # the foreground classes
    best, winner = probabilities.max(dim=0)
    loose, tight = (float(best.quantile(q)) for q in (0.3, 0.7))  # cuts that keep 70 % and 30 %
    result = run(model, data, affine, out_typ="atls", ce_threshold=loose, generator=0)
    expected = torch.where(best > loose, torch.tensor([3, 7])[winner], 0)
    assert torch.equal(result.output.long(), expected)
    assert set(result.output.unique().tolist()) <= {0, 3, 7} and (result.output == 0).any()
    strict = run(model, data, affine, out_typ=f"atls:{tight}", ce_threshold=loose, generator=0).output
    assert torch.equal(strict.long(), torch.where(best > tight, torch.tensor([3, 7])[winner], 0))
    assert 0 < (strict != 0).sum() < (result.output != 0).sum()


@pytest.mark.parametrize(
    ("settings", "name"),
    [
        ({"window": "hann"}, "window"),
        ({"lazyEval": {"fraction": 0.0}}, "fraction"),
        ({"lazyEval": {"reduceFun": "sum"}}, "reduceFun"),
        ({"out_typ": "mask:x"}, "out_typ"),
        ({"out_typ": "float16"}, "out_typ"),
        ({"level": 5}, "level"),
        ({"num_chunks": 0}, "num_chunks"),
        ({"max_trees": 0}, "max_trees"),
        ({"explore": -1.0}, "explore"),
        ({"batch_size": 0}, "batch_size"),
        ({"sampling_factor": -1.0}, "sampling_factor"),
        ({"generate_type": "grid"}, "generate_type"),
        ({"colour": 1}, "colour"),
    ],
)
def test_bad_settings_name_the_setting(settings: dict, name: str) -> None:
    data, affine = image(2)
    with pytest.raises(PatchworkError, match=name):
        run(unet_model(2), data, affine, **settings)


def test_settings_from_a_mapping_with_keyword_overrides() -> None:
    config = DNPApply.from_value({"lazyEval": {"fraction": 0.5, "attentionFun": "identity"}}, window="cos2")
    assert config.window == "cos2" and config.num_patches == DNPApply().num_patches
    logits = torch.tensor([[-3.0], [2.0]])
    assert torch.equal(attention_function(config.lazyEval)(logits), logits)  # type: ignore[arg-type, misc]
    assert DNPApply.from_value(config) is config and DNPApply.from_dict(config.to_dict()) == config
    assert DNPApply.from_value(augment={}).augment == Augment()  # an empty dictionary switches it off
    assert set(NAMED_ATTENTION) == set(ATTENTION_NAMES)  # the names the settings accept all resolve


def test_defaults_average_trees_with_the_training_augmentation_and_cosine_windows() -> None:
    config = DNPApply()
    assert (config.num_patches, config.augment, config.window, config.num_chunks) == (4, None, "cos", 1)
    assert config.augmentation(Augment(dphi=0.2), True) == (Augment(dphi=0.2), True)
    assert DNPApply(augment={}).augmentation(Augment(dphi=0.2), True) == (None, True)


def test_label_names_round_trip_through_the_header(tmp_path) -> None:
    path = tmp_path / "atlas.nii.gz"
    save_image(np.zeros((3, 4, 5)), np.eye(4), path, np.uint8, label_names={3: "lesion", 7: "oedema"})
    assert read_label_names(path) == {3: "lesion", 7: "oedema"}
    save_image(np.zeros((3, 4, 5)), np.eye(4), tmp_path / "plain.nii.gz")
    assert read_label_names(tmp_path / "plain.nii.gz") is None


def test_stitcher_pulls_blocks_clipped_to_the_grid_within_its_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    """A patch much larger than the output grid pulls only the grid's voxels, and a batch is split so the
    pulled blocks stay within the budget; the sums do not change."""
    shape = (10, 12, 9)
    eye = torch.eye(4, dtype=torch.float64)
    grid = OutputGrid(shape, eye, eye)
    matrices = torch.eye(4, dtype=torch.float64).repeat(6, 1, 1)
    matrices[:, :3, :3] *= 3.0  # 8-voxel patches of 3-voxel steps: a 24-voxel box around the grid
    matrices[:, :3, 3] = torch.linspace(-8.0, -4.0, 6)[:, None]
    values = torch.rand(6, 1, 8, 8, 8)
    reference = Stitcher(grid, 1, "cos", "lin", torch.device("cpu"))
    reference.add(values, matrices)
    blocks: list[tuple[int, ...]] = []
    real_crop = stitch.crop

    def recording_crop(source, to_patch, block_shape, *args):
        blocks.append((source.shape[0], *block_shape))
        return real_crop(source, to_patch, block_shape, *args)

    monkeypatch.setattr(stitch, "crop", recording_crop)
    monkeypatch.setattr(stitch, "BLOCK_BUDGET", 2 * 4 * math.prod(shape))
    split = Stitcher(grid, 1, "cos", "lin", torch.device("cpu"))
    split.add(values, matrices)
    assert all(b[1:] <= shape and all(k <= n for k, n in zip(b[1:], shape, strict=True)) for b in blocks)
    assert [b[0] for b in blocks] == [2, 2, 2]
    torch.testing.assert_close(split.sums, reference.sums)


def test_label_table_for_nora_and_workbench(tmp_path) -> None:
    path = tmp_path / "atlas.nii.gz"
    atlas = np.zeros((3, 4, 5), dtype=np.uint8)
    atlas[1, 2, 3] = 7
    save_image(atlas, np.eye(4), path, np.uint8, label_names={3: "lesion", 7: "oedema & cyst"})
    add_label_table(path, {3: "lesion", 7: "oedema & cyst"}, atlas=True)
    assert read_label_table(path) == {0: "???", 3: "lesion", 7: "oedema & cyst"}
    assert read_label_names(path) == {3: "lesion", 7: "oedema & cyst"}  # the JSON comment is kept
    image = nib.load(path)
    codes = [extension.get_code() for extension in image.header.extensions]
    assert NIFTI_ECODE_CARET in codes and image.header.get_intent()[0] == "label"
    assert np.array_equal(np.asarray(image.dataobj), atlas)

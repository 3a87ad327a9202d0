"""Interpolation of data and labels during the crop."""

from __future__ import annotations

import torch
from dnp_images import smooth, voxel_indices

from patchwork.models.dnp import CropGenerator
from patchwork.models.dnp.geometry import apply


def test_linear_beats_nearest_on_a_smooth_image(ndim: int, shape: tuple[int, ...]) -> None:
    image = smooth(voxel_indices(shape))[None]
    errors = {}
    for kind in ("NN", "lin"):
        gen = CropGenerator(
            depth=1,
            ndim=ndim,
            scheme={"patch_size": (6,) * ndim, "fov_rel": 0.4},
            system="matrix",
            interp_type=kind,
        )
        patches = gen.sample(image, num_patches=20, augment={"dphi": 0.4, "dscale": 0.2}, generator=0)
        level = patches.levels[0]
        points = voxel_indices((6,) * ndim).reshape(-1, ndim)
        where = torch.stack([apply(m.expand(len(points), -1, -1), points) for m in level.matrices])
        truth = smooth(where).reshape(level.inputs[:, 0].shape)
        errors[kind] = (level.inputs[:, 0] - truth).abs().mean()
    assert errors["lin"] < 0.3 * errors["NN"]


def test_labels_stay_in_their_label_set_under_nn(ndim: int, shape: tuple[int, ...]) -> None:
    atlas = torch.zeros(shape, dtype=torch.int64)
    atlas[2:9] = 3
    atlas[..., 5:8] = 7
    atlas[0] = 5
    image = torch.randn(1, *shape)
    options = {"num_patches": 8, "augment": {"dphi": 0.5}, "generator": 1}
    scheme = {"patch_size": (5,) * ndim, "fov_rel": 0.7, "destvox_rel": 0.7}
    channels = CropGenerator(depth=2, ndim=ndim, scheme=scheme, categorial_label=[3, 7])
    for level in channels.sample(image, atlas, **options).levels:
        assert level.labels.shape[1] == 2
        assert set(level.labels.unique().tolist()) <= {0.0, 1.0}
    indices = CropGenerator(depth=2, ndim=ndim, scheme=scheme, categorial_label=[3, 7], categorical=True)
    for level in indices.sample(image, atlas, **options).levels:
        assert level.labels.dtype == torch.long and level.labels.shape[1] == 1
        assert set(level.labels.unique().tolist()) == {0, 1, 2}


def test_categorical_labels_match_the_atlas_under_identity(ndim: int, shape: tuple[int, ...]) -> None:
    atlas = torch.randint(0, 4, shape)
    gen = CropGenerator(
        depth=1,
        ndim=ndim,
        scheme={"patch_size": shape, "fov_rel": 1.0},
        system="matrix",
        interp_type="lin",
        categorial_label=[1, 3],
        categorical=True,
    )
    labels = gen.sample(torch.zeros(1, *shape), atlas, generator=0).levels[0].labels[0, 0]
    expected = torch.where(atlas == 1, 1, torch.where(atlas == 3, 2, 0))
    assert torch.equal(labels, expected)


def test_atlas_labels_are_kept_as_positions_and_expanded_per_patch(ndim: int, shape: tuple[int, ...]) -> None:
    """A label atlas cropped by nearest neighbour is held as one small integer map (memory independent of
    the number of labels) and gives the same label patches as its one-hot channels."""
    atlas = torch.randint(0, 6, shape).double()
    atlas[(2,) * ndim] = float("nan")  # don't care
    values = [1, 3, 4, 5]
    scheme = {"patch_size": (5,) * ndim, "fov_rel": 0.7, "destvox_rel": 0.7}
    gen = CropGenerator(depth=2, ndim=ndim, scheme=scheme, categorial_label=values)
    volume = gen.prepare(torch.randn(1, *shape), atlas)
    source = volume.sources[0].labels
    assert source.kind == "positions" and source.data.shape[1] == 1 and source.data.element_size() == 2
    channels = torch.stack([atlas == v for v in values]).float()
    channels[:, torch.isnan(atlas)] = float("nan")
    plain = CropGenerator(depth=2, ndim=ndim, scheme=scheme)
    options = {"num_patches": 6, "augment": {"dphi": 0.5}, "balance": {"ratio": 0.5}, "generator": 2}
    a = gen.sample(volume, **options)
    b = plain.sample(torch.randn(1, *shape), channels, **options)
    for x, y in zip(a.levels, b.levels, strict=True):
        assert torch.equal(x.matrices, y.matrices)
        assert torch.equal(x.labels.nan_to_num(-1.0), y.labels.nan_to_num(-1.0))

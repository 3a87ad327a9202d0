"""Memory-flat training: lazily read cases and bounded caches give exactly what in-memory lists give."""

from __future__ import annotations

import pickle
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch

from patchwork.config import PreprocessSettings
from patchwork.data.cohort import Subject
from patchwork.data.preprocess import load_preprocessed, open_preprocessed, preprocess_subject
from patchwork.io import save_image
from patchwork.models.dnp.balance import ForegroundSites, label_weights
from patchwork.models.dnp.cases import check_cases
from patchwork.models.dnp.settings import Balance, DNPParams
from patchwork.models.dnp.train import train_dnp
from patchwork.models.dnp.trees import Drawer
from patchwork.models.dnp.volume import label_positions, position_sites
from patchwork.models.unet import UNetParams, train_unet
from patchwork.models.unet import sampler as sampler_module
from patchwork.models.unet.sampler import ForegroundVoxels, foreground_voxels
from patchwork.training.cases import BoundedCache, LazyCases
from patchwork.training.seeding import STREAM_FOREGROUND_SUBSET, numpy_rng

SIZE = 20


def write_cohort(folder: Path, count: int) -> tuple[Path, list[str]]:
    """``count`` preprocessed subjects (noise with a bright box as label 1, a slab as label 2)."""
    names = []
    for i in range(count):
        rng = np.random.default_rng(i)
        label = np.zeros((SIZE,) * 3, dtype=np.uint8)
        lo = rng.integers(2, SIZE - 10, 3)
        label[lo[0] : lo[0] + 8, lo[1] : lo[1] + 8, lo[2] : lo[2] + 8] = 1
        label[1:3] = 2
        image = (rng.normal(1.0, 0.3, label.shape) + label).astype(np.float32)
        name = f"s{i}"
        paths = folder / f"{name}_0000.nii.gz", folder / f"{name}_seg.nii.gz"
        save_image(image, np.diag([1.5, 1.5, 1.5, 1.0]), paths[0], np.float32)
        save_image(label, np.diag([1.5, 1.5, 1.5, 1.0]), paths[1], np.uint8)
        subject = Subject(name, "train", (paths[0],), paths[1])
        preprocess_subject(subject, folder / "pre" / name, PreprocessSettings(crop_nonzero=False))
        names.append(name)
    return folder / "pre", names


def eager(root: Path, names: list[str]) -> tuple[list, list, list]:
    """The cases read wholly into lists, as training did before."""
    cases = [load_preprocessed(root, name) for name in names]
    return [c[0] for c in cases], [c[1] for c in cases], [np.asarray(c[2]["affine"]) for c in cases]


def weights(path: Path) -> dict[str, torch.Tensor]:
    obj = torch.load(path, weights_only=True)
    return obj.get("state_dict", obj.get("model"))


def same_weights(a: Path, b: Path) -> bool:
    wa, wb = weights(a), weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    return write_cohort(tmp_path_factory.mktemp("cohort"), 4)


def test_lazy_cases_give_the_eagerly_loaded_arrays_and_keep_few_open(cohort) -> None:
    root, names = cohort
    cases = LazyCases(partial(open_preprocessed, root), names, open_cases=2)
    images, labels, affines = eager(root, names)
    for k in [0, 1, 2, 3, 0, 3, -1]:
        image, label, affine = cases[k]
        assert isinstance(image, np.memmap) and image.dtype == np.float32 and label.dtype == np.uint8
        assert np.array_equal(image, images[k]) and np.array_equal(label, labels[k])
        assert np.array_equal(affine, affines[k])
        assert len(cases.cache) <= 2
    assert [np.array_equal(a, b) for a, b in zip(cases.images, images, strict=True)] == [True] * 4
    again = pickle.loads(pickle.dumps(cases))  # a worker process opens its own
    assert len(again.cache) == 0 and np.array_equal(again.labels[2], labels[2])
    with pytest.raises(IndexError):
        cases[4]


def test_bounded_cache_never_holds_more_than_its_bound() -> None:
    loaded: list[int] = []
    cache = BoundedCache(lambda k: loaded.append(k) or k * 10, max_items=3)
    for k in np.random.default_rng(0).integers(0, 6, 200):
        assert cache[int(k)] == 10 * k and len(cache) <= 3
    before = len(loaded)
    assert cache[int(k)] == 10 * k and len(loaded) == before  # the last key is held: nothing loaded
    sized = BoundedCache(lambda k: np.zeros(k, np.uint8), max_bytes=10, size=lambda a: a.nbytes)
    for k in [4, 5, 3, 6, 2, 12, 1]:
        assert len(sized[k]) == k and sized.nbytes <= 10
    assert 12 not in sized.held and 1 in sized.held  # too large to keep, still given


def test_foreground_voxels_do_not_depend_on_the_cache(monkeypatch) -> None:
    monkeypatch.setattr(sampler_module, "MAX_VOXELS_PER_CLASS", 40)  # subsets drawn for most classes
    rng = np.random.default_rng(5)
    labels = [rng.integers(0, 3, (6, 7, 8)).astype(np.uint8) for _ in range(5)]
    labels[2][:] = 0  # a case that draws nothing
    first = numpy_rng(0, 1, STREAM_FOREGROUND_SUBSET)
    expected = [foreground_voxels(label, first) for label in labels]  # one generator, case after case
    small = ForegroundVoxels(labels, numpy_rng(0, 1, STREAM_FOREGROUND_SUBSET), cache_cases=1)
    for k in [4, 0, 3, 1, 2, 0, 4]:
        got = small[k]
        assert len(got) == len(expected[k]) and all(np.array_equal(a, b) for a, b in zip(got, expected[k]))
        assert len(small.cache) <= 1


def test_unet_trains_bitwise_alike_from_lazy_cases_and_lists(tmp_path, cohort) -> None:
    root, names = cohort
    params = UNetParams.from_dict({
        "patch_size": [16, 16, 16], "n_stages": 2, "base_features": 4, "max_features": 8, "batch_size": 2,
        "iterations": 3, "val_every": 1, "val_patches": 2, "num_classes": 3, "head": "softmax",
    })  # fmt: skip
    images, labels, _ = eager(root, names)
    lists = train_unet(params, images[:3], labels[:3], None, tmp_path / "lists", 0, device="cpu",
                       val_images=images[3:], val_labels=labels[3:])  # fmt: skip
    train, val = (
        LazyCases(partial(open_preprocessed, root), names[:3], open_cases=1),
        LazyCases(partial(open_preprocessed, root), names[3:], open_cases=1),
    )
    lazy = train_unet(params, train.images, train.labels, train.affines, tmp_path / "lazy", 0,
                      device="cpu", val_images=val.images, val_labels=val.labels)  # fmt: skip
    assert same_weights(lists, lazy)
    assert (tmp_path / "lists" / "train_log.tsv").read_text().split("\n")[1].split("\t")[2:4] == (
        (tmp_path / "lazy" / "train_log.tsv").read_text().split("\n")[1].split("\t")[2:4]
    )  # the same validation loss and Dice


def dnp_params(**train: object) -> DNPParams:
    """A tiny two-level patchwork of 8-voxel patches."""
    return DNPParams.from_dict({
        "crop": {"depth": 2, "ndim": 3, "scheme": {"patch_size": [8] * 3, "fov_rel": 0.9, "destvox_rel": 1.0},
                 "num_labels": 2},
        "model": {"block_features": 4, "block_max_features": 8, "block_stages": 2, "intermediate_out": 2},
        "train": {"num_its": 2, "num_patches": 3, "epochs": 1, "batch_size": 6, "hard_mining": 0.25, **train},
    })  # fmt: skip


def test_dnp_trains_bitwise_alike_from_lazy_cases_lists_and_any_cache(tmp_path, cohort) -> None:
    root, names = cohort
    images, labels, affines = eager(root, names)
    lists = train_dnp(dnp_params(), images[:3], labels[:3], affines[:3], tmp_path / "lists", 0, device="cpu",
                      val_images=images[3:], val_labels=labels[3:], val_affines=affines[3:])  # fmt: skip
    train, val = (
        LazyCases(partial(open_preprocessed, root), names[:3], open_cases=1),
        LazyCases(partial(open_preprocessed, root), names[3:], open_cases=1),
    )
    for cache_mb in (2048, 0):  # every volume kept, or every one prepared anew for every draw
        out = tmp_path / f"lazy{cache_mb}"
        lazy = train_dnp(dnp_params(volume_cache_mb=cache_mb), train.images, train.labels, train.affines, out,
                         0, device="cpu", val_images=val.images, val_labels=val.labels,
                         val_affines=val.affines)  # fmt: skip
        assert same_weights(lists, lazy)


def test_cases_per_iteration_draws_from_a_seeded_subset_with_a_bounded_cache(cohort) -> None:
    root, names = cohort
    lazy = LazyCases(partial(open_preprocessed, root), names)
    params = dnp_params(cases_per_iteration=2, volume_cache_mb=0)
    cases = check_cases(lazy.images, lazy.labels, lazy.affines, params, "training")
    drawer = Drawer(params.crop, cases, params.train, seed=3)
    sets = [drawer.get(it) for it in range(3)]
    assert [len(s) for s in sets] == [2 * 3] * 3 and len(drawer.volumes.cache) == 0
    again = Drawer(params.crop, cases, dnp_params(cases_per_iteration=2).train, seed=3)
    for it, trees in enumerate(sets):
        assert all(torch.equal(a, b) for a, b in zip(trees.inputs, again.get(it).inputs, strict=True))
    assert 0 < len(again.volumes.cache) <= 4
    copy = pickle.loads(pickle.dumps(cases))  # what a parallel cropping worker receives: names, no arrays
    assert len(pickle.dumps(cases)) < 10_000 and torch.equal(copy[1].image, cases[1].image)


def float64_draw(labels: torch.Tensor, balance: Balance, count: int, seed: int) -> tuple:
    """The draw of the former sites: indices [M, d] (int64) and values [M, L] (float64) per labelled voxel."""
    flat = labels.reshape(labels.shape[0], -1).clamp(min=0)
    where = (flat > 0).any(dim=0).nonzero().squeeze(1)
    index = torch.stack(torch.unravel_index(where, tuple(labels.shape[1:])), dim=-1)
    values = flat[:, where].T.to(torch.float64)
    generator = torch.Generator().manual_seed(seed)
    chosen = torch.rand(count, generator=generator, dtype=torch.float64) < balance.ratio
    pick = torch.rand(count, generator=generator, dtype=torch.float64)
    cdf = (values @ label_weights(balance, values.sum(dim=0))).cumsum(0)
    slot = torch.searchsorted(cdf, pick * cdf[-1], right=True).clamp(max=len(cdf) - 1)
    return chosen, index[slot].to(torch.float64), index.numel() * 8 + values.numel() * 8


@pytest.mark.parametrize("kind", ["one-hot", "overlapping", "soft"])
def test_compact_sites_draw_what_float64_sites_drew(kind) -> None:
    g = torch.Generator().manual_seed(1)
    shape = (3, 14, 12, 10)
    if kind == "one-hot":
        lab = torch.randint(-1, 4, shape[1:], generator=g).float()
        labels = torch.stack([(lab == v).float() for v in (1, 2, 3)])
        labels[:, lab < 0] = float("nan")
    elif kind == "overlapping":
        labels = (torch.rand(shape, generator=g) < 0.3).float()
    else:
        labels = torch.rand(shape, generator=g) * (torch.rand(shape, generator=g) < 0.3)
    sites = ForegroundSites.from_labels(labels)
    for balance in (Balance(ratio=0.5), Balance(ratio=0.8, autoweight=True, label_weight=(1.0, 3.0, 0.5))):
        chosen, targets, former_bytes = float64_draw(labels, balance, 40, seed=7)
        got = sites.draw(balance, 40, torch.Generator().manual_seed(7))
        assert torch.equal(got[0], chosen) and torch.equal(got[1], targets)
    assert sites.nbytes < former_bytes / (4 if kind != "soft" else 2)
    assert (sites.positions is not None) == (kind == "one-hot")


def test_position_sites_draw_what_one_hot_float64_sites_drew() -> None:
    label_map = torch.randint(-1, 6, (1, 15, 13, 11), generator=torch.Generator().manual_seed(2)).float()
    positions = label_positions(label_map, (1, 2, 5))
    sites = position_sites(positions[0], 3)
    assert sites.positions.dtype == torch.uint8 and sites.linear.dtype == torch.int32
    one_hot = torch.stack([(positions[0] == v + 1).float() for v in range(3)])
    for balance in (Balance(ratio=0.6), Balance(ratio=0.6, autoweight=True)):
        chosen, targets, _ = float64_draw(one_hot, balance, 30, seed=4)
        got = sites.draw(balance, 30, torch.Generator().manual_seed(4))
        assert torch.equal(got[0], chosen) and torch.equal(got[1], targets)


def test_default_cases_per_iteration_uses_every_image_of_a_small_cohort() -> None:
    """The default (64) draws from every image up to 64 and is then no part of the training identity, so a
    small cohort trains as with every image (the paper's) and old models still match."""
    from patchwork.models.dnp.settings import TrainParams
    from patchwork.models.dnp.train import _result_params
    from patchwork.models.dnp.trees import case_subset

    default = TrainParams().cases_per_iteration
    assert default == 64
    assert case_subset(20, default, seed=0, index=3, stream=6) == list(range(20))
    assert len(case_subset(200, default, seed=0, index=3, stream=6)) == 64
    params = dnp_params()
    assert "cases_per_iteration" not in _result_params(params, 20)["train"]
    assert _result_params(params, 200)["train"]["cases_per_iteration"] == 64

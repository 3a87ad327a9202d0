"""CropGenerator: draws nested patch sets from images and scatters patches back (the paper's cropping class).

A draw walks the levels coarse to fine. Level ``n`` places its children in their parents (the image for
level 0) by :mod:`~.placement`, gives them the linear part ``L_aug diag(h_n)``
(:mod:`~.augment`, :mod:`~.scheme`), snaps them into the parent
(:func:`~.geometry.place`) and crops data and labels in one batched gather per level
(:mod:`~.resample`) from the image filtered for that level (:mod:`~.smoothing`).

Example::

    gen = CropGenerator(depth=3, ndim=3, scheme={"patch_size": (32, 32, 32), "fov_rel": 0.9,
                        "destvox_mm": 1.0}, interp_type="lin")
    volume = gen.prepare(nib.load("t1.nii.gz"), labels=nib.load("lesion.nii.gz"))
    patches = gen.sample(volume, num_patches=16, augment={"dphi": 0.2}, balance={"ratio": 0.5},
                         generator=torch.Generator().manual_seed(0))
    total, weight = gen.scatter(patches.levels[-1].inputs, patches.levels[-1].matrices, patches.grid)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from patchwork.errors import PatchworkError
from patchwork.models.dnp.augment import draw
from patchwork.models.dnp.balance import ForegroundSites, label_weights
from patchwork.models.dnp.geometry import apply, invert, place, resize_matrix
from patchwork.models.dnp.grid import ImageGrid
from patchwork.models.dnp.normalize import normalize_image, normalize_patches, patch_statistics
from patchwork.models.dnp.patchset import Level, PatchSet
from patchwork.models.dnp.placement import around_targets, tiling, uniform
from patchwork.models.dnp.resample import PointSampler, pad_source, scatter
from patchwork.models.dnp.scheme import voxel_sizes
from patchwork.models.dnp.settings import (
    INTERPS,
    WINDOWS,
    Augment,
    Balance,
    CropConfig,
    GenerateType,
    Interp,
    Window,
    check_sampling,
)
from patchwork.models.dnp.smoothing import antialias, antialias_labels
from patchwork.models.dnp.volume import (
    ImageLike,
    LabelSource,
    LevelSource,
    Volume,
    image_tensor,
    label_channels,
    label_map,
    label_positions,
    position_sites,
    undersampling,
)

Tensor = torch.Tensor
AugmentLike = Augment | Mapping[str, object] | None


@dataclass(frozen=True)
class Parents:
    """Patches that receive children at the next level: system ``matrices`` [P, d+1, d+1] of ``shape``,
    the unaugmented linear part ``nominal`` [d, d] they were built from (it fixes the tiling), the
    augmentation ``augment`` [P, d, d] their children inherit and whether each belongs to a ``jittered``
    [P] tree copy (see :mod:`~.placement`)."""

    matrices: Tensor
    shape: tuple[int, ...]
    nominal: Tensor
    augment: Tensor
    jittered: Tensor

    @classmethod
    def of_image(cls, grid: ImageGrid) -> Parents:
        """The image as the single parent of level 0."""
        d = grid.ndim
        eye = torch.eye(d, dtype=torch.float64)[None]
        return cls(grid.matrix[None], grid.shape, grid.matrix[:d, :d], eye, torch.zeros(1, dtype=torch.bool))

    def __len__(self) -> int:
        return self.matrices.shape[0]


@dataclass(frozen=True)
class Steering:
    """Per child: whether it is ``steered`` [N] to contain its point ``targets`` [N, d] (``balance``)."""

    steered: Tensor
    targets: Tensor


@dataclass(frozen=True)
class Children:
    """Patches placed by :meth:`CropGenerator.children`: ``matrices``, ``out_matrices`` and ``relative``
    as in :class:`~.patchset.Level`, the index ``parent`` [N] into the parents, the drawn
    augmentation ``augment`` [N, d, d], ``jittered`` [N], the level's patch ``shape`` and ``nominal``
    linear part."""

    matrices: Tensor
    out_matrices: Tensor
    relative: Tensor
    parent: Tensor
    augment: Tensor
    jittered: Tensor
    shape: tuple[int, ...]
    nominal: Tensor

    def __len__(self) -> int:
        return self.matrices.shape[0]

    def select(self, index: Tensor) -> Children:
        """The children at ``index`` (their ``parent`` indices kept)."""
        picked = (self.matrices, self.out_matrices, self.relative, self.parent, self.augment, self.jittered)
        return Children(*(t[index] for t in picked), self.shape, self.nominal)

    def as_parents(self, keep: Tensor | None = None) -> Parents:
        """These children (or those selected by index ``keep``) as the parents of the next level."""
        pick = slice(None) if keep is None else keep
        return Parents(self.matrices[pick], self.shape, self.nominal, self.augment[pick], self.jittered[pick])


def keep_targets_inside(matrices: Tensor, shape: Sequence[int], steering: Steering) -> Tensor:
    """Move each steered child whose target point lies outside its box (snapping under rotation can push it
    out) by the least shift along its own axes that brings the target onto the box: balance's promise that
    a foreground tree's patches contain its target wins over the snapper."""
    d = len(shape)
    voxel = apply(invert(matrices), steering.targets)
    high = torch.as_tensor(tuple(shape), dtype=torch.float64) - 0.5
    shift = voxel - torch.maximum(torch.minimum(voxel, high), torch.full_like(high, -0.5))
    shift = torch.where(steering.steered[:, None], shift, torch.zeros_like(shift))
    moved = matrices.clone()
    moved[:, :d, d] += torch.einsum("nij,nj->ni", matrices[:, :d, :d], shift)
    return moved


def as_generator(generator: torch.Generator | int | None) -> torch.Generator:
    """A seed becomes a fresh CPU generator; ``None`` uses torch's global one."""
    if generator is None:
        return torch.default_generator
    if isinstance(generator, int):
        return torch.Generator().manual_seed(generator)
    return generator


class CropGenerator:
    """Crops nested DNP patch sets (see the module docstring); keywords are the paper's.

    Its settings are a :class:`~.settings.CropConfig` (``self.config``): ``scheme``,
    ``snapper`` one flag per level (default: all snapped), ``categorial_label`` the label values to learn
    from one label map (else label channels are given), ``categorical`` returns class-index label patches
    (mutually exclusive labels).
    """

    def __init__(self, config: CropConfig | None = None, /, **settings: object) -> None:
        """Crop by ``config``, or by the paper's keywords ``settings`` (``depth``, ``ndim``, ``scheme`` as a
        dictionary, ... as in :class:`~.settings.CropConfig`), not both."""
        if config is not None and settings:
            raise PatchworkError("CropGenerator takes a CropConfig or its keywords, not both")
        self.config: CropConfig = config if config is not None else CropConfig.coerce(settings, "crop")

    def prepare(
        self,
        image: ImageLike,
        labels: ImageLike | None = None,
        affine: Tensor | None = None,
        device: torch.device | str | None = None,
    ) -> Volume:
        """Prepare an image (``[C, *spatial]`` with ``affine``, or a nibabel image) and labels for drawing.

        Normalises the data (``normalize_input``), computes the level voxel sizes for this image and the
        anti-aliased copies per level (``smoothfac_*``), and collects the labelled voxels for ``balance``.
        Without ``affine`` the NIfTI's affine (or the identity) is used.
        """
        cfg = self.config
        data, affine = image_tensor(image, affine, cfg.ndim)
        data = normalize_image(data.to(device) if device is not None else data, cfg.normalize_input)
        grid = ImageGrid.from_affine(tuple(data.shape[1:]), affine, cfg.system)
        sizes = voxel_sizes(cfg.scheme, cfg.depth, grid)
        padded: dict[int, tuple[Tensor, Tensor]] = {}

        def pad_once(tensor: Tensor) -> Tensor:
            """Pad each distinct (unsmoothed or smoothed) tensor once, shared by the levels that use it.

            The tensor is kept alive in the cache so that its ``id`` cannot be reused by another one.
            """
            if id(tensor) not in padded:
                padded[id(tensor)] = (tensor, pad_source(tensor[None]))
            return padded[id(tensor)][1]

        factors = [undersampling(grid, h) for h in sizes]
        sources = [LevelSource(pad_once(antialias(data, f, cfg.smoothfac_data)), None) for f in factors]
        if labels is None:
            return Volume(grid, sizes, sources, None)
        if cfg.categorial_label is not None and cfg.interp_type == "NN" and cfg.smoothfac_label == 0:
            positions = label_positions(label_map(labels, cfg.ndim, grid.shape), cfg.categorial_label)
            source = LabelSource(
                pad_source(positions[None]).to(data.device), "positions", len(cfg.categorial_label)
            )
            sites = position_sites(positions[0], source.count)
            return Volume(grid, sizes, [dataclasses.replace(s, labels=source) for s in sources], sites)
        channels = label_channels(labels, cfg.ndim, grid.shape, cfg.categorial_label).to(data.device)
        if cfg.num_labels is not None and channels.shape[0] != cfg.num_labels:
            raise PatchworkError(f"labels have {channels.shape[0]} channels, num_labels is {cfg.num_labels}")
        filtered: dict[tuple[float, ...] | None, LabelSource] = {}  # one copy per distinct filter
        for n, f in enumerate(factors):
            key = None if cfg.smoothfac_label == 0 else tuple(f)
            if key not in filtered:
                smoothed, dontcare = antialias_labels(channels, f, cfg.smoothfac_label)
                divide = cfg.smoothfac_label != "max"
                filtered[key] = LabelSource(
                    pad_source(smoothed[None]), "channels", len(channels), dontcare, divide
                )
            sources[n] = dataclasses.replace(sources[n], labels=filtered[key])
        return Volume(grid, sizes, sources, ForegroundSites.from_labels(channels))

    def tree_statistics(self, volume: Volume, matrices: Tensor) -> Tensor:
        """Mean and standard deviation ``[N, C, 2]`` of the level-0 patches at ``matrices`` before
        normalisation: what ``normalize_input='tree_m0s1'`` standardises every level of their trees by."""
        size = self.config.scheme.sizes(self.config.depth)[0]
        source = volume.sources[0].data
        read = PointSampler(
            volume.grid.voxel_from(matrices), size, volume.grid.shape, self.config.interp_type, source.device
        )
        return patch_statistics(read(source))

    def crop_patches(
        self, volume: Volume, level: int, matrices: Tensor, statistics: Tensor | None = None
    ) -> tuple[Tensor, Tensor | None]:
        """Crop level ``level``'s inputs and labels at system ``matrices`` [N, d+1, d+1].

        Returns ``(inputs [N, C, *patch_size], labels)`` (labels as described in :class:`Level`).
        ``statistics``: each patch's tree statistics (:meth:`tree_statistics`), used by
        ``normalize_input='tree_m0s1'`` only.
        """
        cfg = self.config
        source = volume.sources[level]
        size = cfg.scheme.sizes(cfg.depth)[level]
        out_size = cfg.scheme.out_sizes(cfg.depth)[level]
        to_voxel = volume.grid.voxel_from(matrices)
        spatial, device = volume.grid.shape, source.data.device
        read = PointSampler(to_voxel, size, spatial, cfg.interp_type, device)
        if source.labels is None:
            return normalize_patches(read(source.data), cfg.normalize_input, statistics), None
        if tuple(out_size) == tuple(size):  # one sweep of indices reads data and labels
            data, raw = read.read([source.data, source.labels.data])
        else:
            data = read(source.data)
            resized = resize_matrix(to_voxel, size, out_size)
            raw = PointSampler(resized, out_size, spatial, cfg.interp_type, device)(source.labels.data)
        inputs = normalize_patches(data, cfg.normalize_input, statistics)
        labels = source.labels.channels(raw)
        if cfg.categorical:
            background = 1.0 - labels.sum(dim=1, keepdim=True)
            labels = torch.cat([background, labels], dim=1).argmax(dim=1, keepdim=True)
        return inputs, labels

    def sample(
        self,
        image: Volume | ImageLike,
        labels: ImageLike | None = None,
        *,
        affine: Tensor | None = None,
        num_patches: int = 1,
        generate_type: GenerateType = "random",
        branch_factor: int = 1,
        augment: AugmentLike | Sequence[AugmentLike] = None,
        independent_augmentation: bool = False,
        balance: Balance | Mapping[str, object] | None = None,
        generator: torch.Generator | int | None = None,
    ) -> PatchSet:
        """Draw a patch set.

        ``'random'``: ``num_patches`` patches at level 0, ``branch_factor`` children per parent below.
        ``'tree'``: ``num_patches`` tilings (every parent tiled by its children, see
        :mod:`~.placement`; the first exact, the others jittered); the branching follows from
        the scheme, so ``branch_factor`` must stay 1 and ``balance`` is not used. ``augment`` (an
        :class:`~.settings.Augment` or its dictionary) is one setting or one per level; with
        ``independent_augmentation`` every level draws its own transformation, otherwise a tree shares
        level 0's (so settings that differ per level need it). ``balance`` (a
        :class:`~.settings.Balance` or its dictionary) places foreground trees
        (:mod:`~.balance`); settings objects are used as they are. All random draws
        come from ``generator`` (a ``torch.Generator`` or a seed), so a seed reproduces the patch set.
        """
        volume = image if isinstance(image, Volume) else self.prepare(image, labels, affine)
        augments = self.augments(augment)
        if not independent_augmentation and any(a != augments[0] for a in augments[1:]):
            raise PatchworkError(
                "augment: settings per level need independent_augmentation (without it every level "
                "keeps level 0's transformation)"
            )
        balance = None if balance is None else Balance.coerce(balance, "balance")
        check_sampling(num_patches, generate_type, branch_factor)
        self._check_balance(volume, generate_type, balance)
        rng = as_generator(generator)
        parents = Parents.of_image(volume.grid)
        tree = torch.zeros(1, dtype=torch.long)
        foreground, targets = torch.zeros(0, dtype=torch.bool), torch.zeros(0, self.config.ndim)
        statistics: Tensor | None = None
        levels = []
        for n in range(self.config.depth):
            steering = None
            if balance is not None:
                if n == 0:
                    foreground, voxels = volume.sites.draw(balance, num_patches, rng)  # type: ignore[union-attr]
                    targets = apply(volume.grid.matrix[None].expand(num_patches, -1, -1), voxels)
                child_tree = torch.arange(len(parents)).repeat_interleave(branch_factor) if n else None
                tree = torch.arange(num_patches) if child_tree is None else tree[child_tree]
                steering = Steering(foreground[tree], targets[tree])
            children = self.children(
                volume,
                n,
                parents,
                generate_type=generate_type,
                per_parent=num_patches if n == 0 else branch_factor,
                augment=augments[n],
                independent_augmentation=independent_augmentation,
                generator=rng,
                steering=steering,
            )
            if self.config.normalize_input == "tree_m0s1":
                statistics = (
                    self.tree_statistics(volume, children.matrices) if n == 0 else statistics[children.parent]
                )
            inputs, label_patches = self.crop_patches(volume, n, children.matrices, statistics)
            levels.append(
                Level(
                    inputs=inputs,
                    labels=label_patches,
                    matrices=children.matrices,
                    out_matrices=children.out_matrices,
                    relative=children.relative,
                    parent=torch.full((len(children),), -1, dtype=torch.long) if n == 0 else children.parent,
                )
            )
            parents = children.as_parents()
        return PatchSet(levels, volume.grid)

    def children(
        self,
        volume: Volume,
        level: int,
        parents: Parents,
        *,
        generate_type: GenerateType,
        per_parent: int,
        augment: Augment | None,
        independent_augmentation: bool,
        generator: torch.Generator,
        steering: Steering | None = None,
        positions: Tensor | None = None,
    ) -> Children:
        """Place the level-``level`` children of ``parents`` (:meth:`Parents.of_image` for level 0).

        The one step shared by training draws (:meth:`sample`) and application. ``'random'``: ``per_parent``
        children per parent at ``positions`` (relative centres ``[P * per_parent, d]``, default uniform
        draws), steered towards target points by ``steering`` and snapped into the parent (``snapper``).
        ``'tree'``: ``per_parent`` copies of the parent's tiling (:func:`~.placement.tiling`),
        every copy but the first of level 0 jittered (and snapped, so that a child sees its parent's output
        everywhere, as in training), and every copy below a jittered parent. The linear
        part is ``L_aug diag(h_n)`` with ``L_aug`` drawn from ``augment`` at level 0 or with
        ``independent_augmentation`` (one draw per tiling copy for ``'tree'``), inherited from the parent
        otherwise. Children are ordered parent by parent.
        """
        cfg = self.config
        d = cfg.ndim
        size = cfg.scheme.sizes(cfg.depth)[level]
        nominal = torch.diag(volume.voxel_sizes[level])
        groups = torch.arange(len(parents)).repeat_interleave(per_parent)  # one per child or tiling copy
        if level == 0 or independent_augmentation:
            identity = torch.eye(d, dtype=torch.float64).expand(len(groups), d, d)
            drawn = identity if augment is None else draw(augment, len(groups), d, generator)
        else:
            drawn = parents.augment[groups]
        jittered = parents.jittered[groups]
        if generate_type == "tree":
            if level == 0:
                jittered = torch.arange(len(groups)) % per_parent > 0
            frames = parents.matrices[groups, :d, :d]
            tiles = tiling(parents.nominal, parents.shape, nominal, size, frames, drawn @ nominal)
            shift = (
                torch.rand(len(groups), d, generator=generator, dtype=torch.float64) - 0.5
            ) * tiles.spacing
            shift = torch.where(jittered[:, None], shift, torch.zeros_like(shift))
            tiles_per_group = len(tiles.offsets)
            relative = (tiles.offsets[None] + shift[:, None]).reshape(-1, d)
            groups_of_child = torch.arange(len(groups)).repeat_interleave(tiles_per_group)
        else:
            groups_of_child = torch.arange(len(groups))
            relative = uniform(len(groups), d, generator) if positions is None else positions
        parent = groups[groups_of_child]
        drawn, jittered = drawn[groups_of_child], jittered[groups_of_child]
        linear = drawn @ nominal
        frames = parents.matrices[parent]
        if steering is not None:
            near = around_targets(frames, parents.shape, linear, size, steering.targets, generator)
            relative = torch.where(steering.steered[:, None], near, relative)
        matrices = place(frames, parents.shape, linear, size, relative, cfg.snapper[level])
        if (
            generate_type == "tree"
        ):  # the exact tiling is not snapped: its rotated tiles may reach out to cover
            loose = place(frames, parents.shape, linear, size, relative, False)
            matrices = torch.where(jittered[:, None, None], matrices, loose)
        if steering is not None:
            matrices = keep_targets_inside(matrices, size, steering)
        out_size = cfg.scheme.out_sizes(cfg.depth)[level]
        return Children(
            matrices=matrices,
            out_matrices=resize_matrix(matrices, size, out_size),
            relative=invert(frames) @ matrices,
            parent=parent,
            augment=drawn,
            jittered=jittered,
            shape=tuple(size),
            nominal=nominal,
        )

    def scatter(
        self,
        values: Tensor,
        matrices: Tensor,
        grid: ImageGrid,
        *,
        window: Window = None,
        scatter_type: Interp | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Scatter patches ``values`` [N, C, *s] placed by system ``matrices`` into ``grid``.

        Returns ``(sum [C, *grid.shape], weight [*grid.shape])`` (see :func:`~.resample.scatter`);
        ``sum / weight`` where ``weight > 0`` is the stitched image. ``scatter_type`` defaults to the
        generator's; ``window`` is ``None``, ``'cos'`` or ``'cos2'``.
        """
        if window not in WINDOWS:
            raise PatchworkError(f"window must be one of {WINDOWS}, got {window!r}")
        kind = scatter_type or self.config.scatter_type
        if kind not in INTERPS:
            raise PatchworkError(f"scatter_type must be one of {INTERPS}, got {kind!r}")
        return scatter(values, grid.voxel_from(matrices), grid.shape, kind, window)

    def augments(self, augment: AugmentLike | Sequence[AugmentLike]) -> list[Augment | None]:
        """One validated :class:`Augment` (or ``None`` for no augmentation) per level."""
        depth = self.config.depth
        if isinstance(augment, Sequence) and not isinstance(augment, str):
            if len(augment) != depth:
                raise PatchworkError(f"augment: {len(augment)} settings for depth {depth}")
            items = list(augment)
        else:
            items = [augment] * depth
        out: list[Augment | None] = []
        for item in items:
            parsed = None if item is None else Augment.coerce(item, "augment")
            if parsed is not None:
                parsed.check(self.config.ndim)
            out.append(None if parsed is None or parsed.is_identity else parsed)
        return out

    @staticmethod
    def _check_balance(volume: Volume, generate_type: str, balance: Balance | None) -> None:
        """Validate ``balance`` for :meth:`sample`."""
        if balance is not None:
            if generate_type == "tree":
                raise PatchworkError("balance applies to generate_type='random'")
            if volume.sites is None:
                raise PatchworkError("balance needs labels")
            label_weights(balance, volume.sites.volumes)

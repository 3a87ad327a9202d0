"""CropGenerator: draws nested patch sets from images and scatters patches back (the paper's cropping class).

A draw walks the levels coarse to fine. Level ``n`` places its children in their parents (the image for
level 0) by :mod:`~patchwork.dnp.placement`, gives them the linear part ``L_aug diag(h_n)``
(:mod:`~patchwork.dnp.augment`, :mod:`~patchwork.dnp.scheme`), snaps them into the parent
(:func:`~patchwork.dnp.geometry.place`) and crops data and labels in one batched gather per level
(:mod:`~patchwork.dnp.resample`) from the image filtered for that level (:mod:`~patchwork.dnp.smoothing`).

Example::

    gen = CropGenerator(depth=3, ndim=3, scheme={"patch_size": (32, 32, 32), "fov_rel": 0.9,
                        "destvox_mm": 1.0}, interp_type="lin")
    volume = gen.prepare(nib.load("t1.nii.gz"), labels=nib.load("lesion.nii.gz"))
    patches = gen.sample(volume, num_patches=16, augment={"dphi": 0.2}, balance={"ratio": 0.5},
                         generator=torch.Generator().manual_seed(0))
    total, weight = gen.scatter(patches.levels[-1].inputs, patches.levels[-1].matrices, patches.grid)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from patchwork.dnp.augment import Augment
from patchwork.dnp.balance import Balance, ForegroundSites
from patchwork.dnp.geometry import apply, invert, place, resize_matrix
from patchwork.dnp.grid import SYSTEMS, ImageGrid, System
from patchwork.dnp.normalize import NORMALIZATIONS, Normalization, normalize_image, normalize_patches
from patchwork.dnp.patchset import Level, PatchSet
from patchwork.dnp.placement import around_targets, tiling, uniform
from patchwork.dnp.resample import INTERPS, WINDOWS, Interp, PointSampler, Window, pad_source, scatter
from patchwork.dnp.scheme import Scheme
from patchwork.dnp.smoothing import Smoothing, antialias, check_smoothing
from patchwork.dnp.volume import ImageLike, LevelSource, Volume, image_tensor, label_channels, undersampling
from patchwork.errors import PatchworkError

Tensor = torch.Tensor
GenerateType = Literal["random", "tree"]
AugmentLike = Augment | Mapping[str, object] | None


@dataclass(frozen=True)
class CropConfig:
    """The CropGenerator's settings (names from the paper), validated once on construction."""

    depth: int
    ndim: int
    scheme: Scheme
    system: System = "world"
    snapper: tuple[bool, ...] | None = None
    interp_type: Interp = "NN"
    scatter_type: Interp = "NN"
    categorial_label: tuple[int, ...] | None = None
    categorical: bool = False
    num_labels: int | None = None
    smoothfac_data: Smoothing = 0.0
    smoothfac_label: Smoothing = 0.0
    normalize_input: Normalization = None

    def __post_init__(self) -> None:
        if not isinstance(self.depth, int) or self.depth < 1:
            raise PatchworkError(f"depth must be a positive int, got {self.depth!r}")
        if self.ndim not in (2, 3):
            raise PatchworkError(f"ndim must be 2 or 3, got {self.ndim!r}")
        self.scheme.check(self.depth, self.ndim)
        if self.system not in SYSTEMS:
            raise PatchworkError(f"system must be one of {SYSTEMS}, got {self.system!r}")
        snapper = self.snapper if self.snapper is not None else (True,) * self.depth
        snapper = (snapper,) * self.depth if isinstance(snapper, (bool, int)) else tuple(snapper)
        if len(snapper) != self.depth:
            raise PatchworkError(f"snapper needs {self.depth} entries (one per level), got {len(snapper)}")
        object.__setattr__(self, "snapper", tuple(bool(s) for s in snapper))
        for name in ("interp_type", "scatter_type"):
            if getattr(self, name) not in INTERPS:
                raise PatchworkError(f"{name} must be one of {INTERPS}, got {getattr(self, name)!r}")
        if self.categorial_label is not None:
            labels = tuple(self.categorial_label)
            if not labels or not all(isinstance(v, int) for v in labels) or len(set(labels)) != len(labels):
                raise PatchworkError(f"categorial_label must be distinct ints, got {self.categorial_label!r}")
            object.__setattr__(self, "categorial_label", labels)
            if self.num_labels is not None and self.num_labels != len(labels):
                raise PatchworkError(
                    f"num_labels={self.num_labels} but categorial_label has {len(labels)} entries"
                )
        if self.num_labels is not None and (not isinstance(self.num_labels, int) or self.num_labels < 1):
            raise PatchworkError(f"num_labels must be a positive int, got {self.num_labels!r}")
        check_smoothing("smoothfac_data", self.smoothfac_data)
        check_smoothing("smoothfac_label", self.smoothfac_label)
        if self.smoothfac_label == "mixture":
            raise PatchworkError("smoothfac_label='mixture' would change the number of labels")
        if self.normalize_input not in NORMALIZATIONS:
            raise PatchworkError(
                f"normalize_input must be one of {NORMALIZATIONS}, got {self.normalize_input!r}"
            )


@dataclass(frozen=True)
class Parents:
    """Patches that receive children at the next level: system ``matrices`` [P, d+1, d+1] of ``shape``,
    the unaugmented linear part ``nominal`` [d, d] they were built from (it fixes the tiling) and the
    augmentation ``augment`` [P, d, d] their children inherit."""

    matrices: Tensor
    shape: tuple[int, ...]
    nominal: Tensor
    augment: Tensor

    @classmethod
    def of_image(cls, grid: ImageGrid) -> Parents:
        """The image as the single parent of level 0."""
        d = grid.ndim
        eye = torch.eye(d, dtype=torch.float64)[None]
        return cls(grid.matrix[None], grid.shape, grid.matrix[:d, :d], eye)

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
    as in :class:`~patchwork.dnp.patchset.Level`, the index ``parent`` [N] into the parents, the drawn
    augmentation ``augment`` [N, d, d], the level's patch ``shape`` and ``nominal`` linear part."""

    matrices: Tensor
    out_matrices: Tensor
    relative: Tensor
    parent: Tensor
    augment: Tensor
    shape: tuple[int, ...]
    nominal: Tensor

    def __len__(self) -> int:
        return self.matrices.shape[0]

    def as_parents(self, keep: Tensor | None = None) -> Parents:
        """These children (or those selected by index ``keep``) as the parents of the next level."""
        pick = slice(None) if keep is None else keep
        return Parents(self.matrices[pick], self.shape, self.nominal, self.augment[pick])


def as_generator(generator: torch.Generator | int | None) -> torch.Generator:
    """A seed becomes a fresh CPU generator; ``None`` uses torch's global one."""
    if generator is None:
        return torch.default_generator
    if isinstance(generator, int):
        return torch.Generator().manual_seed(generator)
    return generator


class CropGenerator:
    """Crops nested DNP patch sets (see the module docstring); keywords are the paper's.

    ``scheme`` is a :class:`~patchwork.dnp.scheme.Scheme` or its dictionary, ``snapper`` one flag per level
    (default: all snapped), ``categorial_label`` the label values to learn from one label map (else label
    channels are given), ``categorical`` returns class-index label patches (mutually exclusive labels).
    """

    def __init__(
        self,
        *,
        depth: int,
        ndim: int,
        scheme: Scheme | Mapping[str, object],
        system: System = "world",
        snapper: Sequence[bool] | bool | None = None,
        interp_type: Interp = "NN",
        scatter_type: Interp = "NN",
        categorial_label: Sequence[int] | None = None,
        categorical: bool = False,
        num_labels: int | None = None,
        smoothfac_data: Smoothing = 0.0,
        smoothfac_label: Smoothing = 0.0,
        normalize_input: Normalization = None,
    ) -> None:
        self.config = CropConfig(
            depth=depth,
            ndim=ndim,
            scheme=Scheme.from_value(scheme),
            system=system,
            snapper=snapper,  # type: ignore[arg-type]
            interp_type=interp_type,
            scatter_type=scatter_type,
            categorial_label=categorial_label,  # type: ignore[arg-type]
            categorical=categorical,
            num_labels=num_labels,
            smoothfac_data=smoothfac_data,
            smoothfac_label=smoothfac_label,
            normalize_input=normalize_input,
        )

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
        channels = None
        if labels is not None:
            channels = label_channels(labels, cfg.ndim, grid.shape, cfg.categorial_label).to(data.device)
            if cfg.num_labels is not None and channels.shape[0] != cfg.num_labels:
                raise PatchworkError(
                    f"labels have {channels.shape[0]} channels, num_labels is {cfg.num_labels}"
                )
        voxel_sizes = cfg.scheme.voxel_sizes(cfg.depth, grid)
        padded: dict[int, tuple[Tensor, Tensor]] = {}

        def pad_once(tensor: Tensor) -> Tensor:
            """Pad each distinct (unsmoothed or smoothed) tensor once, shared by the levels that use it.

            The tensor is kept alive in the cache so that its ``id`` cannot be reused by another one.
            """
            if id(tensor) not in padded:
                padded[id(tensor)] = (tensor, pad_source(tensor[None]))
            return padded[id(tensor)][1]

        sources = []
        for h in voxel_sizes:
            factors = undersampling(grid, h)
            smoothed = (
                None if channels is None else pad_once(antialias(channels, factors, cfg.smoothfac_label))
            )
            sources.append(LevelSource(pad_once(antialias(data, factors, cfg.smoothfac_data)), smoothed))
        sites = None if channels is None else ForegroundSites.from_labels(channels)
        return Volume(grid, voxel_sizes, sources, sites)

    def crop_patches(self, volume: Volume, level: int, matrices: Tensor) -> tuple[Tensor, Tensor | None]:
        """Crop level ``level``'s inputs and labels at system ``matrices`` [N, d+1, d+1].

        Returns ``(inputs [N, C, *patch_size], labels)`` (labels as described in :class:`Level`).
        """
        cfg = self.config
        source = volume.sources[level]
        size = cfg.scheme.sizes(cfg.depth)[level]
        out_size = cfg.scheme.out_sizes(cfg.depth)[level]
        to_voxel = volume.grid.voxel_from(matrices)
        spatial, device = volume.grid.shape, source.data.device
        read = PointSampler(to_voxel, size, spatial, cfg.interp_type, device)
        inputs = normalize_patches(read(source.data), cfg.normalize_input)
        if source.labels is None:
            return inputs, None
        if out_size != size:
            read = PointSampler(
                resize_matrix(to_voxel, size, out_size), out_size, spatial, cfg.interp_type, device
            )
        labels = read(source.labels)
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
        ``'tree'``: ``num_patches`` complete tilings (every parent tiled by its children, see
        :mod:`~patchwork.dnp.placement`); the branching follows from the scheme, so ``branch_factor`` must
        stay 1 and ``balance`` is not used. ``augment`` is one setting or one per level; with
        ``independent_augmentation`` every level draws its own transformation, otherwise a tree shares
        level 0's. ``balance`` places foreground trees (:mod:`~patchwork.dnp.balance`). All random draws
        come from ``generator`` (a ``torch.Generator`` or a seed), so a seed reproduces the patch set.
        """
        volume = image if isinstance(image, Volume) else self.prepare(image, labels, affine)
        augments = self.augments(augment)
        balance = None if balance is None else Balance.from_value(balance)
        self.check_sampling(num_patches, generate_type, branch_factor)
        self._check_balance(volume, generate_type, balance)
        rng = as_generator(generator)
        parents = Parents.of_image(volume.grid)
        tree = torch.zeros(1, dtype=torch.long)
        foreground, targets = torch.zeros(0, dtype=torch.bool), torch.zeros(0, self.config.ndim)
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
            inputs, label_patches = self.crop_patches(volume, n, children.matrices)
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
    ) -> Children:
        """Place the level-``level`` children of ``parents`` (:meth:`Parents.of_image` for level 0).

        The one step shared by training draws (:meth:`sample`) and application: positions by
        ``generate_type`` (``per_parent`` uniform draws per parent for ``'random'``; ``per_parent``
        copies of the tiling for ``'tree'``), the linear part ``L_aug diag(h_n)`` with ``L_aug`` drawn
        from ``augment`` at level 0 or with ``independent_augmentation`` (inherited from the parent
        otherwise), ``steering`` towards target points, and snapping into the parent (``snapper``).
        Children are ordered parent by parent.
        """
        cfg = self.config
        d = cfg.ndim
        size = cfg.scheme.sizes(cfg.depth)[level]
        nominal = torch.diag(volume.voxel_sizes[level])
        relative = None
        if generate_type == "tree":
            offsets = tiling(parents.nominal, parents.shape, nominal, size)
            per_parent = per_parent * len(offsets)
            relative = offsets.repeat(len(parents) * per_parent // len(offsets), 1)
        parent = torch.arange(len(parents)).repeat_interleave(per_parent)
        count = len(parent)
        if relative is None:
            relative = uniform(count, d, generator)
        if level == 0 or independent_augmentation:
            identity = torch.eye(d, dtype=torch.float64).expand(count, d, d)
            drawn = identity if augment is None else augment.draw(count, d, generator)
        else:
            drawn = parents.augment[parent]
        linear = drawn @ nominal
        frames = parents.matrices[parent]
        if steering is not None:
            near = around_targets(frames, parents.shape, linear, size, steering.targets, generator)
            relative = torch.where(steering.steered[:, None], near, relative)
        matrices = place(frames, parents.shape, linear, size, relative, cfg.snapper[level])
        out_size = cfg.scheme.out_sizes(cfg.depth)[level]
        return Children(
            matrices=matrices,
            out_matrices=resize_matrix(matrices, size, out_size),
            relative=invert(frames) @ matrices,
            parent=parent,
            augment=drawn,
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

        Returns ``(sum [C, *grid.shape], weight [*grid.shape])`` (see :func:`patchwork.dnp.resample.scatter`);
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
            parsed = Augment.from_value(item)
            parsed.check(self.config.ndim)
            out.append(None if parsed == Augment() else parsed)
        return out

    def check_sampling(self, num_patches: int, generate_type: str, branch_factor: int) -> None:
        """Validate the placement arguments of :meth:`sample` (and of the application)."""
        if generate_type not in ("random", "tree"):
            raise PatchworkError(f"generate_type must be 'random' or 'tree', got {generate_type!r}")
        if not isinstance(num_patches, int) or num_patches < 1:
            raise PatchworkError(f"num_patches must be a positive int, got {num_patches!r}")
        if not isinstance(branch_factor, int) or branch_factor < 1:
            raise PatchworkError(f"branch_factor must be a positive int, got {branch_factor!r}")
        if generate_type == "tree" and branch_factor != 1:
            raise PatchworkError("generate_type='tree' tiles each parent; branch_factor applies to 'random'")

    @staticmethod
    def _check_balance(volume: Volume, generate_type: str, balance: Balance | None) -> None:
        """Validate ``balance`` for :meth:`sample`."""
        if balance is not None:
            if generate_type == "tree":
                raise PatchworkError("balance applies to generate_type='random'")
            if volume.sites is None:
                raise PatchworkError("balance needs labels")
            balance.weights(volume.sites.values.sum(dim=0))

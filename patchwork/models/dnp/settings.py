"""Settings of a Deep Neural Patchwork, torch-free: what training uses (a model spec's ``params``).

:class:`DNPParams` (changing it retrains) has three sections with the paper's names: ``crop``
(:class:`CropConfig`, the CropGenerator's settings, with its :class:`Scheme`), ``model``
(:class:`ModelParams`) and ``train`` (:class:`TrainParams`, with :class:`Augment` and :class:`Balance`);
how a trained model is applied is :class:`~.apply_settings.DNPApply` (a spec's ``apply``). Each field is
declared once with :func:`patchwork.settings.setting` (default, limits, doc), so ``from_dict`` checks
keys, types and values (every problem one line naming the section and the key), ``to_dict`` writes builtins
only (JSON- and ``torch.load(weights_only=True)``-safe, ``from_dict(s.to_dict()) == s``), and the config
schema and ``config/README.md`` are generated from them. Everything here is checked without torch; the
one check that needs torch, building the model (:func:`~.model.check_model`), runs when a model is trained
or loaded. The torch code (:mod:`~.scheme`, :mod:`~.augment`, :mod:`~.balance`) does the maths.
Constructing a settings object directly (the paper's keywords, nested settings as dictionaries) validates
the same values.

The defaults are a fast CPU demo on 2 mm brains (about 75×95×80 voxels): 3 levels of 16³ patches, the
coarsest covering the whole image (about 10 mm voxels), the finest at the image's voxel size (a 32 mm box),
U-Net blocks of 8..32 features, 30 outer iterations of 4 trees per image, 2 epochs in batches of 8. (32³
patches, as in the paper, cost about ten times more per step on a CPU.)

Example::

    params = DNPParams.from_dict({"crop": {"depth": 3}, "train": {"num_its": 60, "hard_mining": 0.25}})
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal, get_args

from patchwork.errors import PatchworkError
from patchwork.models.dnp.callableref import CallableRef
from patchwork.settings import Settings, setting
from patchwork.training.schedule import SCHEDULES

Interp = Literal["NN", "lin"]
INTERPS: tuple[str, ...] = get_args(Interp)
Window = Literal["cos", "cos2"] | None
WINDOWS: tuple[str | None, ...] = (None, *get_args(Literal["cos", "cos2"]))
System = Literal["world", "matrix"]
SYSTEMS: tuple[str, ...] = get_args(System)
Normalization = Literal["max", "mean", "m0s1", "patch_m0s1", "tree_m0s1"] | None
NORMALIZATIONS: tuple[str | None, ...] = (None, "max", "mean", "m0s1", "patch_m0s1", "tree_m0s1")
Filter = Literal["boxcar", "max", "mixture"]
FILTERS: tuple[str, ...] = get_args(Filter)
Smoothing = float | Filter
GenerateType = Literal["random", "tree"]
GENERATE_TYPES: tuple[str, ...] = get_args(GenerateType)
ForwardType = Literal["simple", "bridge", "mult"]
FORWARD_TYPES: tuple[str, ...] = get_args(ForwardType)
LOSSES = ("dice", "ce", "dice+ce")
HARD_MINING_ORDERS = ("loss", "f1", "balance")
Sizes = tuple[int, ...] | tuple[tuple[int, ...], ...]

# JSON-schema keywords of the fields that take a number or a list of them (one per axis or level)
_POSITIVE_INTS = {"type": "array", "items": {"type": "integer", "minimum": 1}, "minItems": 1}
SIZES = [_POSITIVE_INTS, {"type": "array", "items": _POSITIVE_INTS, "minItems": 1}, {"type": "null"}]
POSITIVE_LENGTHS = [
    {"type": "number", "exclusiveMinimum": 0},
    {"type": "array", "items": {"type": "number", "exclusiveMinimum": 0}, "minItems": 1},
    {"type": "null"},
]
WIDTHS = [
    {"type": "number", "minimum": 0},
    {"type": "array", "items": {"type": "number", "minimum": 0}, "minItems": 1},
    {"type": "null"},
]
SMOOTHING = [{"type": "number", "minimum": 0}, {"enum": list(FILTERS)}]


def check_sampling(num_patches: int, generate_type: str, branch_factor: int) -> None:
    """Validate the placement settings of a draw (training's ``sample`` and the application)."""
    problems = []
    if generate_type not in GENERATE_TYPES:
        problems.append(f"generate_type={generate_type!r}: expected one of {', '.join(GENERATE_TYPES)}")
    for name, value in (("num_patches", num_patches), ("branch_factor", branch_factor)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            problems.append(f"{name}={value!r}: must be a positive int")
    if generate_type == "tree" and branch_factor != 1:
        problems.append("generate_type='tree' tiles each parent; branch_factor applies to 'random'")
    if problems:
        raise PatchworkError(problems=problems)


def _length(doc: str) -> Any:
    """A scheme's length field: unset by default (left out of ``to_dict``), positive, one or one per axis."""
    return setting(None, anyOf=POSITIVE_LENGTHS, hide_default=True, doc=doc)


def _per_level(value: Any) -> Any:
    """One size (ints) as the only entry of a per-level tuple; per-level sizes and ``None`` as they are."""
    return (value,) if value and isinstance(value[0], int) else value


def _scalar_as_tuple(value: Any) -> Any:
    """A number as a one-entry tuple (broadcast to every axis); tuples and ``None`` as they are."""
    return (value,) if isinstance(value, float) else value


@dataclass(frozen=True)
class Scheme(Settings):
    """The patching scheme: matrix size, field of view and voxel size of every level.

    Level ``n`` of ``depth`` levels has the matrix size ``s_n`` (``patch_size``: one tuple, or one per
    level) and a field of view ``f_n``. The coarsest ``f_0`` is ``fov_mm`` (absolute) or ``fov_rel`` times the
    image's extent; the finest level's voxel size is ``destvox_mm`` or ``destvox_rel`` times the image's,
    so ``f_{D-1} = destvox * s_{D-1}``; the levels between are interpolated exponentially (see
    :func:`~.scheme.voxel_sizes`). With ``depth == 1`` the voxel size is ``f_0 / s_0`` and ``destvox``
    must be left out.
    """

    what: ClassVar[str] = "scheme"
    ALTERNATIVES: ClassVar[tuple[tuple[str, ...], ...]] = (
        ("fov_mm", "fov_rel"),
        ("destvox_mm", "destvox_rel"),
    )
    patch_size: Sizes = setting(
        anyOf=SIZES, doc="the matrix size of every level (voxels per axis), or one per level"
    )
    out_patch_size: Sizes | None = setting(
        None, anyOf=SIZES, hide_default=True, doc="the output (label) matrix, default the input's"
    )
    fov_mm: float | tuple[float, ...] | None = _length(
        "field of view of the coarsest level in mm (one, or one per axis); or `fov_rel`"
    )
    fov_rel: float | tuple[float, ...] | None = _length(
        "field of view of the coarsest level relative to the image's extent; or `fov_mm`"
    )
    destvox_mm: float | tuple[float, ...] | None = _length(
        "voxel size of the finest level in mm (needed when `depth` > 1); or `destvox_rel`"
    )
    destvox_rel: float | tuple[float, ...] | None = _length(
        "voxel size of the finest level relative to the image's; or `destvox_mm`"
    )

    def normalise(self) -> None:
        """Sizes as one tuple per level (or one for all), lengths as tuples."""
        for name in ("patch_size", "out_patch_size"):
            object.__setattr__(self, name, _per_level(getattr(self, name)))
        for name in ("fov_mm", "fov_rel", "destvox_mm", "destvox_rel"):
            object.__setattr__(self, name, _scalar_as_tuple(getattr(self, name)))

    def problems(self) -> list[str]:
        """Exactly one field of view, at most one finest voxel size."""
        problems = []
        if (self.fov_mm is None) == (self.fov_rel is None):
            problems.append("needs exactly one of fov_mm and fov_rel")
        if self.destvox_mm is not None and self.destvox_rel is not None:
            problems.append("takes at most one of destvox_mm and destvox_rel")
        return problems

    def check(self, depth: int, ndim: int) -> list[str]:
        """What keeps the scheme from fitting ``depth`` levels of ``ndim`` dimensions, one line each."""
        problems = []
        for name in ("patch_size", "out_patch_size"):
            sizes = getattr(self, name)
            if sizes is None:
                continue
            if len(sizes) not in (1, depth):
                problems.append(f"scheme.{name} has {len(sizes)} entries for depth {depth}")
            if any(len(s) != ndim for s in sizes):
                problems.append(f"scheme.{name} must have {ndim} entries per level")
        for name in ("fov_mm", "fov_rel", "destvox_mm", "destvox_rel"):
            values = getattr(self, name)
            if values is not None and len(values) not in (1, ndim):
                problems.append(f"scheme.{name} must have 1 or {ndim} entries")
        has_destvox = self.destvox_mm is not None or self.destvox_rel is not None
        if depth > 1 and not has_destvox:
            problems.append("scheme needs destvox_mm or destvox_rel when depth > 1")
        if depth == 1 and has_destvox:
            problems.append("scheme: with depth 1 the voxel size is fov / patch_size; omit destvox")
        return problems

    def sizes(self, depth: int) -> list[tuple[int, ...]]:
        """Input matrix size of each level."""
        sizes = self.patch_size
        return [sizes[min(n, len(sizes) - 1)] for n in range(depth)]  # type: ignore[misc]

    def out_sizes(self, depth: int) -> list[tuple[int, ...]]:
        """Output (label) matrix size of each level: ``out_patch_size`` or the input size."""
        sizes = self.out_patch_size or self.patch_size
        return [sizes[min(n, len(sizes) - 1)] for n in range(depth)]  # type: ignore[misc]


@dataclass(frozen=True)
class CropConfig(Settings):
    """The CropGenerator's settings (the paper's names, see :class:`~.crop.CropGenerator`)."""

    what: ClassVar[str] = "crop"
    depth: int = setting(3, minimum=1, doc="levels of the patchwork")
    ndim: int = setting(3, enum=[2, 3], doc="spatial dimensions: 2 or 3")
    scheme: Scheme = setting(
        Scheme(patch_size=(16, 16, 16), fov_rel=1.0, destvox_rel=1.0),
        doc="matrix size, field of view and voxel size of every level",
    )
    system: str = setting(
        "world", enum=list(SYSTEMS), doc="coordinates of the patches: `world` (mm) or `matrix`"
    )
    snapper: bool | int | tuple[bool | int, ...] | None = setting(
        None, doc="snap each child inside its parent: one flag per level, or one for all (null: all snapped)"
    )
    interp_type: str = setting(
        "NN", enum=list(INTERPS), doc="interpolation of the cropped image: `NN` or `lin`"
    )
    scatter_type: str = setting(
        "NN", enum=list(INTERPS), doc="interpolation of the scatter back: `NN` or `lin`"
    )
    categorial_label: tuple[int, ...] | None = setting(
        None, minItems=1, doc="the label values learnt from one label map (distinct), one channel each"
    )
    categorical: bool = setting(
        False, doc="class-index labels and a softmax head (mutually exclusive labels)"
    )
    num_labels: int | None = setting(
        None, minimum=1, doc="foreground labels (null: from `categorial_label`, else 1)"
    )
    smoothfac_data: float | str = setting(
        0.0,
        anyOf=SMOOTHING,
        doc="anti-aliasing of the image before a coarse crop: a Gaussian width >= 0 relative to the "
        "undersampling, or `boxcar`, `max`, `mixture`",
    )
    smoothfac_label: float | str = setting(
        0.0, anyOf=SMOOTHING, doc="anti-aliasing of the labels, as `smoothfac_data` (no `mixture`)"
    )
    normalize_input: str | None = setting(
        None,
        enum=list(NORMALIZATIONS),
        doc="intensity normalisation of the input: null, `max`, `mean`, `m0s1`, `patch_m0s1`, `tree_m0s1`",
    )

    def normalise(self) -> None:
        """``snapper`` as one flag per level."""
        snapper = (True,) * self.depth if self.snapper is None else self.snapper
        snapper = (snapper,) * self.depth if isinstance(snapper, (bool, int)) else snapper
        object.__setattr__(self, "snapper", tuple(bool(s) for s in snapper))

    def problems(self) -> list[str]:
        """The scheme fits the levels, one snapper flag per level, consistent label counts."""
        problems = self.scheme.check(self.depth, self.ndim)
        if len(self.snapper) != self.depth:  # type: ignore[arg-type]
            problems.append(f"snapper needs {self.depth} entries (one per level), got {len(self.snapper)}")  # type: ignore[arg-type]
        labels = self.categorial_label
        if labels is not None and len(set(labels)) != len(labels):
            problems.append(f"categorial_label must be distinct ints, got {list(labels)!r}")
        elif labels is not None and self.num_labels is not None and self.num_labels != len(labels):
            problems.append(f"num_labels={self.num_labels} but categorial_label has {len(labels)} entries")
        if self.smoothfac_label == "mixture":
            problems.append("smoothfac_label='mixture' would change the number of labels")
        return problems

    @property
    def label_count(self) -> int:
        """The number of foreground labels: ``num_labels``, else ``len(categorial_label)``, else 1."""
        return self.num_labels or (len(self.categorial_label) if self.categorial_label else 1)


def _widths(name: str, value: Any, count: int) -> tuple[float, ...] | None:
    """A non-negative number broadcast to ``count`` entries, or ``count`` of them."""
    if value is None:
        return None
    values = (value,) * count if isinstance(value, (int, float)) else tuple(value)
    if len(values) != count:
        raise PatchworkError(f"augment.{name} must be a number >= 0 or {count} of them, got {value!r}")
    return tuple(float(v) for v in values)


@dataclass(frozen=True)
class Augment(Settings):
    """Geometric augmentation widths (maths in :mod:`~.augment`): ``A = R_1 Sigma R_2``; null switches a
    part off."""

    what: ClassVar[str] = "augment"
    dphi: float | tuple[float, ...] | None = setting(
        None, anyOf=WIDTHS, doc="rotation width in radians (a number, or one per axis in 3D)"
    )
    flip: bool | float | tuple[bool | float, ...] | None = setting(
        None,
        anyOf=[
            {"type": ["boolean", "number"]},
            {"type": "array", "items": {"type": ["boolean", "number"]}},
            {"type": "null"},
        ],
        doc="per axis 0/1 (or false/true; one for every axis): an enabled axis is mirrored with probability "
        "1/2",
    )
    dscale: float | tuple[float, ...] | None = setting(
        None, anyOf=WIDTHS, doc="per axis log-normal scale ratio >= 0 (one for every axis, or one per axis)"
    )
    dphi_frame: float | tuple[float, ...] | None = setting(
        None,
        anyOf=WIDTHS,
        doc="rotation width of the frame whose axes `dscale` stretches along (off: the patch's own axes)",
    )

    def problems(self) -> list[str]:
        """Flips are 0 or 1 per axis."""
        flips = self.flip if isinstance(self.flip, tuple) else (self.flip,)
        if any(v not in (0, 1, None) for v in flips):
            return [f"flip must hold 0 or 1 per axis, got {self.flip!r}"]
        return []

    @property
    def is_identity(self) -> bool:
        """Whether nothing is augmented."""
        return self == Augment()

    def check(self, ndim: int) -> None:
        """Validate the widths for ``ndim`` dimensions."""
        for name in ("dphi", "dphi_frame"):
            value = getattr(self, name)
            if value is not None:
                _widths(name, value, 1 if isinstance(value, (int, float)) or ndim == 2 else 3)
        _widths("flip", self.flip, ndim)
        _widths("dscale", self.dscale, ndim)

    def widths(self, name: str, ndim: int) -> tuple[float, ...] | None:
        """The ``flip``/``dscale`` entry broadcast to ``ndim`` axes (``None``: off)."""
        return _widths(name, getattr(self, name), ndim)


@dataclass(frozen=True)
class Balance(Settings):
    """Label-driven placement of the trees (maths in :mod:`~.balance`)."""

    what: ClassVar[str] = "balance"
    ratio: float = setting(0.5, minimum=0, maximum=1, doc="fraction of the trees that are foreground trees")
    label_weight: tuple[float, ...] | None = setting(
        None, minItems=1, items={"minimum": 0}, doc="weight of each label (one non-negative number per label)"
    )
    autoweight: bool = setting(False, doc="divide each label's weight by its volume")


CALLABLE_FORMS = {"type": ["string", "object", "null"], "pattern": r"^[^:]+:.+$"}


@dataclass(frozen=True)
class ModelParams(Settings):
    """:class:`~.model.PatchWorkModel` keywords (see there) and the default blocks' size.

    A researcher's own ``blockCreator`` is called as ``f(level, out_channels, in_channels, ndim, **kwargs)``
    and returns the level's block (see :mod:`~.blocks`); ``finalBlock`` as ``f(channels, ndim, **kwargs)``
    with the finest level's output channels and returns a module ``[N, F, *s] -> [N, F, *s]``. Both are
    stored by name (:class:`CallableRef`; a function, its ``target`` string or mapping is accepted), so the
    model loads where that module imports; unset, they are left out of :meth:`to_dict`, so models trained
    before they existed keep their identity. In a config::

        model: {blockCreator: {target: "mylab.blocks:res_block", kwargs: {width: 16}}}
    """

    what: ClassVar[str] = "model"
    forward_type: str = setting(
        "simple",
        enum=list(FORWARD_TYPES),
        doc="how a level sees its parent's output: `simple`, `bridge`, `mult`",
    )
    identical_blocks: bool = setting(False, doc="one block shared by every level")
    intermediate_out: int = setting(8, minimum=0, doc="channels a level passes on beside its label outputs")
    intermediate_loss: bool = setting(True, doc="a loss on every level (else the finest level's alone)")
    block_out: tuple[int, ...] | None = setting(
        None, items={"minimum": 1}, doc="output channels of each level's block"
    )
    crop_fdim: tuple[int, ...] | None = setting(None, doc="the parent output channels a level crops")
    block_features: int = setting(8, minimum=1, doc="features of the default U-Net blocks' first stage")
    block_max_features: int = setting(32, minimum=1, doc="most features of a default block's stage")
    block_stages: int = setting(3, minimum=1, doc="stages of the default U-Net blocks")
    blockCreator: CallableRef | None = setting(  # noqa: N815 - the paper's name
        None,
        hide_default=True,
        **CALLABLE_FORMS,
        doc='a researcher\'s own blocks (`{target: "package.module:function", kwargs: {...}}`), called as '
        "`f(level, out_channels, in_channels, ndim, **kwargs)`",
    )
    finalBlock: CallableRef | None = setting(  # noqa: N815 - the paper's name
        None,
        hide_default=True,
        **CALLABLE_FORMS,
        doc="a module applied to the finest output, called as `f(channels, ndim, **kwargs)`",
    )
    finalBlock_all_levels: bool = setting(  # noqa: N815 - the paper's name
        False, hide_default=True, doc="apply `finalBlock` to every level's output"
    )

    def problems(self) -> list[str]:
        """The blocks' features ordered."""
        if self.block_max_features < self.block_features:
            return [f"block_max_features={self.block_max_features} < block_features"]
        return []


@dataclass(frozen=True)
class TrainParams(Settings):
    """The training loops (:mod:`~.train`).

    ``num_its`` outer iterations each draw ``num_patches`` trees per image and run ``epochs`` passes over
    them in batches of ``batch_size``; AdamW with ``weight_decay`` at
    ``learning_rate(lr, it, num_its, lr_schedule, warmup_its) * lr_decay**it`` in outer iteration ``it``
    (:mod:`patchwork.training.schedule`); :func:`~.train.train_dnp` takes a researcher's own optimiser,
    scheduler and loss instead.
    """

    what: ClassVar[str] = "train"
    num_its: int = setting(30, minimum=1, doc="outer iterations")
    num_patches: int = setting(4, minimum=1, doc="trees drawn from each image per outer iteration")
    epochs: int = setting(2, minimum=1, doc="passes over each outer iteration's trees")
    batch_size: int = setting(8, minimum=1, doc="trees per optimiser step")
    loss: str | tuple[str, ...] = setting(
        "dice+ce",
        anyOf=[{"enum": list(LOSSES)}, {"type": "array", "items": {"enum": list(LOSSES)}, "minItems": 1}],
        doc="`dice`, `ce`, `dice+ce`, or one per level",
    )
    lesion_dice_weight: float = setting(  # hidden at 0: models trained before it keep their identity
        0.0,
        minimum=0,
        hide_default=True,
        doc="weight of blob loss's lesion-wise Dice term on every level (each lesion of a patch scored on "
        "its own, so a small lesion counts as much as a large one); 0 = off",
    )
    lr: float = setting(3e-3, exclusiveMinimum=0, doc="base learning rate")
    weight_decay: float = setting(1e-2, minimum=0, doc="AdamW's weight decay")
    lr_decay: float = setting(
        1.0, exclusiveMinimum=0, maximum=1, doc="extra factor `lr_decay^it` (the authors' exponential decay)"
    )
    lr_schedule: str = setting(
        "constant", enum=list(SCHEDULES), doc="after the warm-up: `constant`, `poly` or `cosine`"
    )
    warmup_its: int = setting(0, minimum=0, doc="outer iterations of linear warm-up, fewer than `num_its`")
    augment: Augment | None = setting(None, doc="augmentation of the training trees (null: none)")
    independent_augmentation: bool = setting(False, doc="every level draws its own transformation")
    balance: Balance | None = setting(Balance(), doc="label-driven placement of the trees (null: uniform)")
    hard_mining: float = setting(
        0.0, minimum=0, exclusiveMaximum=1, doc="the fraction of each set kept (the hardest) for the next one"
    )
    hard_mining_order: str = setting(
        "loss", enum=list(HARD_MINING_ORDERS), doc="hardest by `loss`, `f1` or `balance`"
    )
    hard_mining_maxage: int = setting(3, minimum=1, doc="how often hard mining may keep one tree")
    dontcare: bool = setting(True, doc="NaN or negative labels give no loss")
    parallel: bool = setting(False, doc="crop the next set in a worker process while this one trains")
    checkpoint_every: int = setting(1, minimum=1, doc="outer iterations between checkpoints")
    cases_per_iteration: int | None = setting(
        64,
        minimum=1,
        doc="each outer iteration draws from this many images, a seeded pick, so a set and the memory stop "
        "growing beyond it (a smaller cohort uses every image, as the paper; null: always every image)",
    )
    volume_cache_mb: int = setting(
        2048,
        minimum=0,
        doc="prepared images kept, at most this many MB and `cases_per_iteration` of them (the others are "
        "prepared again when drawn; the trees are the same whatever the cache)",
    )

    def normalise(self) -> None:
        """An augmentation that changes nothing is none."""
        if self.augment is not None and self.augment.is_identity:
            object.__setattr__(self, "augment", None)

    def problems(self) -> list[str]:
        """The warm-up shorter than training."""
        if self.warmup_its >= self.num_its:
            return [f"warmup_its={self.warmup_its!r}: must be in [0, num_its)"]
        return []

    def losses(self, depth: int) -> tuple[str, ...]:
        """The loss of every level."""
        if isinstance(self.loss, str):
            return (self.loss,) * depth
        if len(self.loss) != depth:
            raise PatchworkError(f"loss: {len(self.loss)} entries for depth {depth}")
        return self.loss


@dataclass(frozen=True)
class DNPParams(Settings):
    """What training a Deep Neural Patchwork uses: ``crop``, ``model`` and ``train``."""

    what: ClassVar[str] = "dnp params"
    crop: CropConfig = setting(CropConfig(), doc="the CropGenerator's settings")
    model: ModelParams = setting(ModelParams(), doc="the PatchWorkModel's settings")
    train: TrainParams = setting(TrainParams(), doc="the training loops")

    def problems(self) -> list[str]:
        """A loss per level and augmentation widths that fit the dimensions."""
        try:
            self.train.losses(self.crop.depth)
            if self.train.augment is not None:
                self.train.augment.check(self.crop.ndim)
        except PatchworkError as err:
            return [f"train: {p}" for p in err.problems]
        return []

"""Settings of a Deep Neural Patchwork, torch-free: what training uses and how a trained model is applied.

Two objects, each built from a plain mapping by ``from_dict`` and written back by ``to_dict`` (builtins only:
JSON- and ``torch.load(weights_only=True)``-safe, ``from_dict(s.to_dict()) == s``):

* :class:`DNPParams` (a model spec's ``params``; changing it retrains) with the sections ``crop``
  (:class:`CropConfig`, the CropGenerator's settings), ``model`` (:class:`ModelParams`) and ``train``
  (:class:`TrainParams`);
* :class:`ApplyConfig` (a model spec's ``apply``; changing it re-predicts, never retrains).

``from_dict`` checks keys, types (:func:`patchwork.settings.dataclass_from_dict`) and values; every problem
is one line naming the section and the key (``dnp crop: ...``, ``dnp train.augment: ...``,
``dnp apply: ...``).
Everything here is checked without torch, so the workflow validates a config on a machine without it; the
one check that needs torch, building the model (:func:`~.model.check_model`), runs when a model
is trained or loaded. The typed sub-settings (:class:`Scheme`, :class:`Augment`, :class:`Balance`,
:class:`LazyEval`, :class:`OutType`) are parsed once, here; the torch code (:mod:`~.scheme`,
:mod:`~.augment`, :mod:`~.balance`, :mod:`~.lazy`,
:mod:`~.outtype`) does their maths. Constructing a settings object directly (the paper's
keywords, nested settings as dictionaries) validates the same values.

The defaults are a fast CPU demo on 2 mm brains (about 75×95×80 voxels): 3 levels of 16³ patches, the
coarsest covering the whole image (about 10 mm voxels), the finest at the image's voxel size (a 32 mm box),
U-Net blocks of 8..32 features, 30 outer iterations of 4 trees per image, 2 epochs in batches of 8. (32³
patches, as in the paper, cost about ten times more per step on a CPU.) A coarsest patch smaller than the
image (``fov_rel`` 0.9) makes the tree application tile the image with 2 nearly identical roots per axis,
8 in 3D, and evaluate every finer level 8 times over: on the demo its full coverage took 12x longer for a
lower test Dice (0.83 vs 0.86 on 5 subjects, ``benchmarks/inference.py``). With one root, a single tree
tiles the image once. The default application averages 4 tilings -- the first exact (it covers the image),
the others shifted by a random fraction of the tile spacing -- with the training's augmentation (the
paper's default; the demo trains without) and cosine windows. Copies that differ matter: a single tiling
missed small lesions cut by tile borders, and 4 rotated copies (the default before) lifted the demo's
out-of-fold Dice from 0.74 to 0.82 for 4x the time; the jittered copies have not been re-measured.

Example::

    params = DNPParams.from_dict({"crop": {"depth": 3}, "train": {"num_its": 60, "hard_mining": 0.25}})
    apply = ApplyConfig.from_dict({"num_patches": 8, "lazyEval": {"fraction": 0.5}})
"""

from __future__ import annotations

import dataclasses
import importlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, TypeVar, get_args

from patchwork.errors import PatchworkError, check_keys
from patchwork.settings import dataclass_from_dict
from patchwork.training.schedule import SCHEDULES

T = TypeVar("T")

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
ReduceFun = Literal["max", "mean"]
REDUCE_FUNS: tuple[str, ...] = get_args(ReduceFun)
ATTENTION_NAMES = ("sigmoid", "identity")  # attentionFun by name; resolved in patchwork.models.dnp.lazy
OutKind = Literal["float32", "int16", "uint8", "mask", "atls"]
OUT_KINDS: tuple[str, ...] = get_args(OutKind)
LOSSES = ("dice", "ce", "dice+ce")
HARD_MINING_ORDERS = ("loss", "f1", "balance")


def plain(value: Any) -> Any:
    """``value`` with tuples turned into lists, recursively: JSON- and ``weights_only``-safe."""
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def to_plain_dict(settings: Any) -> dict[str, Any]:
    """A settings dataclass (nested ones included) as a dict of builtins."""
    return plain(dataclasses.asdict(settings))


def parse(cls: type[T], d: Any, what: str) -> T:
    """The settings ``cls`` from the plain mapping ``d`` (keys and types checked), every problem one line
    starting with ``what``."""
    try:
        return dataclass_from_dict(cls, d, what)
    except PatchworkError as err:
        raise PatchworkError(
            problems=[p if p.startswith(what) else f"{what}: {p}" for p in err.problems]
        ) from None


def nested(cls: type[T], value: Any, what: str) -> T | None:
    """A sub-setting given directly: an instance as is, ``None`` as is, a dict of its fields built (its
    keys checked, its values by the class)."""
    if value is None or isinstance(value, cls):
        return value
    if not isinstance(value, Mapping):
        raise PatchworkError(f"{what} must be a dictionary, got {value!r}")
    check_keys(value, (f.name for f in dataclasses.fields(cls)), what)  # type: ignore[arg-type]
    return cls(**value)


def _raise(problems: list[str]) -> None:
    """Raise one error with a line per problem, if any."""
    if problems:
        raise PatchworkError(problems=problems)


def _choice(problems: list[str], name: str, value: Any, options: Sequence[Any]) -> None:
    """Record a problem if ``value`` is not one of ``options``."""
    if not isinstance(value, (str, type(None))) or value not in options:
        problems.append(f"{name}={value!r}: expected one of {', '.join(map(str, options))}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _at_least(problems: list[str], obj: Any, names: Sequence[str], low: int) -> None:
    """Record a problem for every field in ``names`` that is not an int ``>= low``."""
    for name in names:
        value = getattr(obj, name)
        if not _is_int(value) or value < low:
            problems.append(f"{name}={value!r}: must be an int >= {low}")


def check_sampling(num_patches: int, generate_type: str, branch_factor: int) -> None:
    """Validate the placement settings of a draw (training's ``sample`` and the application)."""
    problems: list[str] = []
    _choice(problems, "generate_type", generate_type, GENERATE_TYPES)
    for name, value in (("num_patches", num_patches), ("branch_factor", branch_factor)):
        if not _is_int(value) or value < 1:
            problems.append(f"{name}={value!r}: must be a positive int")
    if generate_type == "tree" and branch_factor != 1:
        problems.append("generate_type='tree' tiles each parent; branch_factor applies to 'random'")
    _raise(problems)


def _floats(name: str, value: Any) -> tuple[float, ...] | None:
    """A positive number or a sequence of them as a tuple (a scalar is kept as a 1-tuple and broadcast)."""
    if value is None:
        return None
    values = (value,) if _is_number(value) else tuple(value) if isinstance(value, Sequence) else ()
    if not values or not all(_is_number(v) and v > 0 for v in values):
        raise PatchworkError(f"scheme.{name} must be a positive number or a list of them, got {value!r}")
    return tuple(float(v) for v in values)


def _sizes(name: str, value: Any) -> tuple[tuple[int, ...], ...] | None:
    """One size tuple, or one per level, as a tuple of tuples of positive ints."""
    if value is None:
        return None
    items = list(value) if isinstance(value, Sequence) else []
    per_level = bool(items) and all(isinstance(v, Sequence) for v in items)
    sizes = [tuple(v) for v in items] if per_level else [tuple(items)]
    if not all(s and all(_is_int(n) and n > 0 for n in s) for s in sizes):
        raise PatchworkError(f"scheme.{name} must be a list of positive ints or one per level, got {value!r}")
    return tuple(sizes)


Sizes = tuple[int, ...] | tuple[tuple[int, ...], ...]


@dataclass(frozen=True)
class Scheme:
    """The patching scheme: matrix size, field of view and voxel size of every level.

    Level ``n`` of ``depth`` levels has the matrix size ``s_n`` (``patch_size``: one tuple, or one per
    level) and a field of view ``f_n``. The coarsest ``f_0`` is ``fov_mm`` (absolute) or ``fov_rel`` times the
    image's extent; the finest level's voxel size is ``destvox_mm`` or ``destvox_rel`` times the image's,
    so ``f_{D-1} = destvox * s_{D-1}``; the levels between are interpolated exponentially (see
    :func:`~.scheme.voxel_sizes`). ``out_patch_size``: the output (label) matrix, default the
    input's. With ``depth == 1`` the voxel size is ``f_0 / s_0`` and ``destvox`` must be left out.
    """

    ALTERNATIVES: ClassVar[tuple[tuple[str, ...], ...]] = (
        ("fov_mm", "fov_rel"),
        ("destvox_mm", "destvox_rel"),
    )

    patch_size: Sizes | None = None
    out_patch_size: Sizes | None = None
    fov_mm: float | tuple[float, ...] | None = None
    fov_rel: float | tuple[float, ...] | None = None
    destvox_mm: float | tuple[float, ...] | None = None
    destvox_rel: float | tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "patch_size", _sizes("patch_size", self.patch_size))
        object.__setattr__(self, "out_patch_size", _sizes("out_patch_size", self.out_patch_size))
        for name in ("fov_mm", "fov_rel", "destvox_mm", "destvox_rel"):
            object.__setattr__(self, name, _floats(name, getattr(self, name)))
        if self.patch_size is None:
            raise PatchworkError("scheme.patch_size is required")
        if (self.fov_mm is None) == (self.fov_rel is None):
            raise PatchworkError("scheme needs exactly one of fov_mm and fov_rel")
        if self.destvox_mm is not None and self.destvox_rel is not None:
            raise PatchworkError("scheme takes at most one of destvox_mm and destvox_rel")

    def check(self, depth: int, ndim: int) -> None:
        """Check the scheme fits ``depth`` levels of ``ndim`` dimensions."""
        for name in ("patch_size", "out_patch_size"):
            sizes = getattr(self, name)
            if sizes is None:
                continue
            if len(sizes) not in (1, depth):
                raise PatchworkError(f"scheme.{name} has {len(sizes)} entries for depth {depth}")
            if any(len(s) != ndim for s in sizes):
                raise PatchworkError(f"scheme.{name} must have {ndim} entries per level")
        for name in ("fov_mm", "fov_rel", "destvox_mm", "destvox_rel"):
            values = getattr(self, name)
            if values is not None and len(values) not in (1, ndim):
                raise PatchworkError(f"scheme.{name} must have 1 or {ndim} entries")
        has_destvox = self.destvox_mm is not None or self.destvox_rel is not None
        if depth > 1 and not has_destvox:
            raise PatchworkError("scheme needs destvox_mm or destvox_rel when depth > 1")
        if depth == 1 and has_destvox:
            raise PatchworkError("scheme: with depth 1 the voxel size is fov / patch_size; omit destvox")

    def sizes(self, depth: int) -> list[tuple[int, ...]]:
        """Input matrix size of each level."""
        sizes = self.patch_size or ()
        return [sizes[min(n, len(sizes) - 1)] for n in range(depth)]  # type: ignore[misc]

    def out_sizes(self, depth: int) -> list[tuple[int, ...]]:
        """Output (label) matrix size of each level: ``out_patch_size`` or the input size."""
        sizes = self.out_patch_size or self.patch_size or ()
        return [sizes[min(n, len(sizes) - 1)] for n in range(depth)]  # type: ignore[misc]

    def to_dict(self) -> dict[str, Any]:
        """The paper's dictionary form (unset entries left out)."""
        return {k: v for k, v in to_plain_dict(self).items() if v is not None}


def _default_scheme() -> Scheme:
    """The demo's scheme: 16³ patches, the coarsest covering the image, the finest at its voxel size."""
    return Scheme(patch_size=(16, 16, 16), fov_rel=1.0, destvox_rel=1.0)


@dataclass(frozen=True)
class CropConfig:
    """The CropGenerator's settings (the paper's names, see :class:`~.crop.CropGenerator`).

    ``scheme`` (:class:`Scheme`), ``system`` ('world' | 'matrix'), ``snapper`` (one flag per level, or one
    for all; default: all snapped), ``interp_type``/``scatter_type`` ('NN' | 'lin'), ``categorial_label``
    (the label values learnt from one label map), ``categorical`` (class-index labels, softmax),
    ``num_labels``, ``smoothfac_data``/``smoothfac_label`` (a Gaussian width >= 0 or 'boxcar', 'max',
    'mixture'), ``normalize_input`` (None, 'max', 'mean', 'm0s1', 'patch_m0s1', 'tree_m0s1').
    """

    depth: int = 3
    ndim: int = 3
    scheme: Scheme = field(default_factory=_default_scheme)
    system: str = "world"
    snapper: bool | tuple[bool, ...] | None = None
    interp_type: str = "NN"
    scatter_type: str = "NN"
    categorial_label: tuple[int, ...] | None = None
    categorical: bool = False
    num_labels: int | None = None
    smoothfac_data: float | str = 0.0
    smoothfac_label: float | str = 0.0
    normalize_input: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "scheme", nested(Scheme, self.scheme, "scheme"))
        problems: list[str] = []
        _at_least(problems, self, ("depth",), 1)
        if self.ndim not in (2, 3) or not _is_int(self.ndim):
            problems.append(f"ndim={self.ndim!r}: must be 2 or 3")
        _raise(problems)
        self.scheme.check(self.depth, self.ndim)
        _choice(problems, "system", self.system, SYSTEMS)
        snapper = (True,) * self.depth if self.snapper is None else self.snapper
        snapper = (snapper,) * self.depth if isinstance(snapper, (bool, int)) else tuple(snapper)
        if len(snapper) != self.depth:
            problems.append(f"snapper needs {self.depth} entries (one per level), got {len(snapper)}")
        object.__setattr__(self, "snapper", tuple(bool(s) for s in snapper))
        _choice(problems, "interp_type", self.interp_type, INTERPS)
        _choice(problems, "scatter_type", self.scatter_type, INTERPS)
        if self.categorial_label is not None:
            labels = tuple(self.categorial_label)
            if not labels or not all(_is_int(v) for v in labels) or len(set(labels)) != len(labels):
                problems.append(f"categorial_label must be distinct ints, got {self.categorial_label!r}")
            elif self.num_labels is not None and self.num_labels != len(labels):
                problems.append(
                    f"num_labels={self.num_labels} but categorial_label has {len(labels)} entries"
                )
            object.__setattr__(self, "categorial_label", labels)
        if self.num_labels is not None and (not _is_int(self.num_labels) or self.num_labels < 1):
            problems.append(f"num_labels must be a positive int, got {self.num_labels!r}")
        for name in ("smoothfac_data", "smoothfac_label"):
            value = getattr(self, name)
            if not (value in FILTERS if isinstance(value, str) else _is_number(value) and value >= 0):
                problems.append(f"{name} must be a number >= 0 or one of {', '.join(FILTERS)}, got {value!r}")
        if self.smoothfac_label == "mixture":
            problems.append("smoothfac_label='mixture' would change the number of labels")
        _choice(problems, "normalize_input", self.normalize_input, NORMALIZATIONS)
        _raise(problems)

    @property
    def label_count(self) -> int:
        """The number of foreground labels: ``num_labels``, else ``len(categorial_label)``, else 1."""
        return self.num_labels or (len(self.categorial_label) if self.categorial_label else 1)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], what: str = "dnp crop") -> CropConfig:
        """Build from the paper's keywords as a plain mapping (keys, types and values checked)."""
        return parse(cls, d, what)

    def to_dict(self) -> dict[str, Any]:
        """The paper's keywords as builtins; ``CropConfig.from_dict(c.to_dict()) == c``."""
        return {**to_plain_dict(self), "scheme": self.scheme.to_dict()}


def _widths(name: str, value: Any, count: int) -> tuple[float, ...] | None:
    """A non-negative number broadcast to ``count`` entries, or ``count`` of them."""
    if value is None:
        return None
    number = _is_number if name != "flip" else lambda v: isinstance(v, (int, float))  # flip: bools too
    values = (value,) * count if number(value) else tuple(value) if isinstance(value, Sequence) else ()
    if len(values) != count or not all(number(v) and v >= 0 for v in values):
        raise PatchworkError(f"augment.{name} must be a number >= 0 or {count} of them, got {value!r}")
    return tuple(float(v) for v in values)


@dataclass(frozen=True)
class Augment:
    """Geometric augmentation widths (maths in :mod:`~.augment`); ``None`` switches a part off.

    ``dphi``: rotation width in radians (a number, or one per axis in 3D); ``flip``: per axis 0/1 (or
    false/true), an enabled axis is mirrored with probability 1/2; ``dscale``: per axis log-normal scale
    ratio ``>= 0``; ``dphi_frame``: rotation width of the frame whose axes ``dscale`` stretches along
    (``A = R_1 Sigma R_2``; off: the patch's own axes). A number for ``flip``/``dscale`` applies to every
    axis.
    """

    dphi: float | tuple[float, ...] | None = None
    flip: bool | float | tuple[bool | float, ...] | None = None
    dscale: float | tuple[float, ...] | None = None
    dphi_frame: float | tuple[float, ...] | None = None

    @property
    def is_identity(self) -> bool:
        """Whether nothing is augmented."""
        return self == Augment()

    def check(self, ndim: int) -> None:
        """Validate the widths for ``ndim`` dimensions."""
        for name in ("dphi", "dphi_frame"):
            value = getattr(self, name)
            if value is not None:
                _widths(name, value, 1 if _is_number(value) or ndim == 2 else 3)
        flips = _widths("flip", self.flip, ndim)
        if flips is not None and any(v not in (0.0, 1.0) for v in flips):
            raise PatchworkError(f"augment.flip must hold 0 or 1 per axis, got {self.flip!r}")
        _widths("dscale", self.dscale, ndim)

    def widths(self, name: str, ndim: int) -> tuple[float, ...] | None:
        """The ``flip``/``dscale`` entry broadcast to ``ndim`` axes (``None``: off)."""
        return _widths(name, getattr(self, name), ndim)


@dataclass(frozen=True)
class Balance:
    """Label-driven placement (maths in :mod:`~.balance`): ``ratio`` in [0, 1] of the trees
    are foreground trees; ``label_weight`` (one non-negative number per label) and ``autoweight`` (divide
    by the label's volume) weigh the labels."""

    ratio: float = 0.5
    label_weight: tuple[float, ...] | None = None
    autoweight: bool = False

    def __post_init__(self) -> None:
        if not _is_number(self.ratio) or not 0.0 <= self.ratio <= 1.0:
            raise PatchworkError(f"balance.ratio must be in [0, 1], got {self.ratio!r}")
        if self.label_weight is not None:
            weights = tuple(self.label_weight)
            if not weights or not all(_is_number(w) and w >= 0 for w in weights):
                raise PatchworkError(
                    f"balance.label_weight must be non-negative numbers, got {self.label_weight!r}"
                )
            object.__setattr__(self, "label_weight", tuple(float(w) for w in weights))
        object.__setattr__(self, "autoweight", bool(self.autoweight))


@dataclass(frozen=True)
class LazyEval:
    """lazyEval (maths in :mod:`~.lazy`): ``fraction`` in (0, 1] of each level's patches get
    children, ranked by ``reduceFun`` ('max' | 'mean') of ``attentionFun`` (a name in
    :data:`ATTENTION_NAMES`, a callable logits -> attention map, or ``None``: the foreground
    probabilities)."""

    fraction: float = 0.5
    reduceFun: str = "max"  # noqa: N815 - the paper's name
    attentionFun: str | Callable[[Any], Any] | None = None  # noqa: N815 - the paper's name

    def __post_init__(self) -> None:
        problems: list[str] = []
        if not _is_number(self.fraction) or not 0.0 < self.fraction <= 1.0:
            problems.append(f"lazyEval.fraction must be a number in (0, 1], got {self.fraction!r}")
        _choice(problems, "lazyEval.reduceFun", self.reduceFun, REDUCE_FUNS)
        name = self.attentionFun
        if name not in ATTENTION_NAMES if isinstance(name, str) else not (name is None or callable(name)):
            problems.append(
                f"lazyEval.attentionFun must be one of {ATTENTION_NAMES} or callable, got {name!r}"
            )
        _raise(problems)


@dataclass(frozen=True)
class OutType:
    """A parsed ``out_typ`` (encoding in :mod:`~.outtype`): the ``kind`` and the optional
    per-label ``thresholds``."""

    kind: str = "float32"
    thresholds: tuple[float, ...] | None = None

    @classmethod
    def parse(cls, value: str) -> OutType:
        """Parse ``'float32'``, ``'int16'``, ``'uint8'``, ``'mask[:t1,t2..]'`` or ``'atls[:t1,t2..]'``."""
        if not isinstance(value, str):
            raise PatchworkError(f"out_typ must be a string, got {value!r}")
        kind, _, rest = value.partition(":")
        if kind not in OUT_KINDS:
            raise PatchworkError(f"out_typ must start with one of {OUT_KINDS}, got {value!r}")
        if not rest:
            return cls(kind)
        if kind not in ("mask", "atls"):
            raise PatchworkError(f"out_typ {kind!r} takes no thresholds, got {value!r}")
        try:
            thresholds = tuple(float(t) for t in rest.split(","))
        except ValueError:
            raise PatchworkError(f"out_typ thresholds must be numbers, got {value!r}") from None
        if not all(0.0 <= t <= 1.0 for t in thresholds):
            raise PatchworkError(f"out_typ thresholds must lie in [0, 1], got {value!r}")
        return cls(kind, thresholds)


@dataclass(frozen=True)
class CallableRef:
    """A researcher's function stored by name, so a model file holds no pickled code and loads with
    ``torch.load(weights_only=True)``: ``target`` is ``"package.module:function"`` (an importable module and
    the function's qualified name in it), ``kwargs`` JSON-able keyword arguments bound to it.

    Example::

        CallableRef("mylab.blocks:my_blocks", {"width": 16})
        CallableRef.of(my_blocks, "blockCreator")  # == CallableRef("mylab.blocks:my_blocks")
    """

    target: str
    kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        module, _, name = self.target.partition(":") if isinstance(self.target, str) else ("", "", "")
        if not module or not name:
            raise PatchworkError(f"target must be 'package.module:function', got {self.target!r}")
        try:
            json.dumps(self.kwargs, allow_nan=False)
        except (TypeError, ValueError) as err:
            raise PatchworkError(f"kwargs of {self.target} must be JSON-able: {err}") from None
        object.__setattr__(self, "kwargs", plain(self.kwargs))

    @classmethod
    def of(cls, value: Any, what: str) -> CallableRef | None:
        """``value`` as a reference: ``None``, a reference, its mapping, a ``target`` string, or a function
        defined at the top level of an importable module (``__main__`` is not: the model would not load
        in another program)."""
        if value is None or isinstance(value, cls):
            return value
        if isinstance(value, str):
            return cls(value)
        if isinstance(value, Mapping):
            return nested(cls, value, what)
        target = f"{getattr(value, '__module__', None)}:{getattr(value, '__qualname__', None)}"
        try:
            found = callable(value) and not target.startswith("__main__:") and cls(target).load(what) is value
        except PatchworkError:  # a lambda, a nested function, a module not on the path
            found = False
        if not found:
            raise PatchworkError(
                f"{what} {value!r} cannot be stored by name: define it at the top level of an importable "
                "module, or give 'package.module:function'"
            )
        return cls(target)

    def load(self, what: str) -> Callable[..., Any]:
        """Import the function (without ``kwargs``); one line naming ``what`` if that fails."""
        module, _, name = self.target.partition(":")
        try:
            value: Any = importlib.import_module(module)
            for part in name.split("."):
                value = getattr(value, part)
        except (ImportError, AttributeError) as err:
            raise PatchworkError(f"{what} {self.target!r} cannot be imported: {err}") from None
        return value


RESEARCH_KEYS = ("blockCreator", "finalBlock", "finalBlock_all_levels")


@dataclass(frozen=True)
class ModelParams:
    """:class:`~.model.PatchWorkModel` keywords (see there) and the default blocks' size:
    ``block_features`` .. ``block_max_features`` channels over ``block_stages`` U-Net stages.

    ``blockCreator`` (default: those U-Net blocks) and ``finalBlock`` are a researcher's own modules,
    stored by name (:class:`CallableRef`; a function, its ``target`` string or mapping is accepted):
    ``blockCreator`` is called as ``f(level, out_channels, in_channels, ndim, **kwargs)`` and returns the
    level's block (see :mod:`~.blocks`); ``finalBlock`` as ``f(channels, ndim, **kwargs)``
    with the finest level's output channels and returns a module ``[N, F, *s] -> [N, F, *s]``, applied to
    the finest output or (``finalBlock_all_levels``) to every level's. Unset, they are left out of
    :meth:`to_dict`, so models trained before they existed keep their identity. In a config::

        model: {blockCreator: {target: "mylab.blocks:res_block", kwargs: {width: 16}}}
    """

    forward_type: str = "simple"
    identical_blocks: bool = False
    intermediate_out: int = 8
    intermediate_loss: bool = True
    block_out: tuple[int, ...] | None = None
    crop_fdim: tuple[int, ...] | None = None
    block_features: int = 8
    block_max_features: int = 32
    block_stages: int = 3
    blockCreator: CallableRef | None = None  # noqa: N815 - the paper's name
    finalBlock: CallableRef | None = None  # noqa: N815 - the paper's name
    finalBlock_all_levels: bool = False  # noqa: N815 - the paper's name

    def __post_init__(self) -> None:
        for name in ("blockCreator", "finalBlock"):
            object.__setattr__(self, name, CallableRef.of(getattr(self, name), name))
        problems: list[str] = []
        _choice(problems, "forward_type", self.forward_type, FORWARD_TYPES)
        _at_least(problems, self, ("intermediate_out",), 0)
        _at_least(problems, self, ("block_features", "block_max_features", "block_stages"), 1)
        if not problems and self.block_max_features < self.block_features:
            problems.append(f"block_max_features={self.block_max_features} < block_features")
        _raise(problems)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of builtins, the unset research options (:data:`RESEARCH_KEYS`) left out."""
        return {k: v for k, v in to_plain_dict(self).items() if k not in RESEARCH_KEYS or v}


@dataclass(frozen=True)
class TrainParams:
    """The training loops (:mod:`~.train`).

    ``num_its`` outer iterations each draw ``num_patches`` trees per image (``augment``,
    ``independent_augmentation``, ``balance`` as in ``CropGenerator.sample``) and run ``epochs`` passes over
    them in batches of ``batch_size``. ``loss``: ``'dice'``, ``'ce'``, ``'dice+ce'``, or one per level.
    AdamW with ``weight_decay`` at ``learning_rate(lr, it, num_its, lr_schedule, warmup_its) * lr_decay**it``
    in outer iteration ``it`` (:mod:`patchwork.training.schedule`: ``warmup_its`` of linear warm-up, then
    ``'constant'``, ``'poly'`` or ``'cosine'``; ``lr_decay`` < 1 adds the authors' exponential decay);
    :func:`~.train.train_dnp` takes a researcher's own optimiser, scheduler and loss instead.
    ``hard_mining``: the fraction of each set kept (the hardest by ``hard_mining_order``) for the next one,
    each tree at most ``hard_mining_maxage`` times. ``dontcare``: NaN/negative labels give no loss.
    ``parallel``: crop the next set in a worker process while this one trains. ``checkpoint_every`` outer
    iterations.
    """

    num_its: int = 30
    num_patches: int = 4
    epochs: int = 2
    batch_size: int = 8
    loss: str | tuple[str, ...] = "dice+ce"
    lr: float = 3e-3
    weight_decay: float = 1e-2
    lr_decay: float = 1.0
    lr_schedule: str = "constant"
    warmup_its: int = 0
    augment: Augment | None = None
    independent_augmentation: bool = False
    balance: Balance | None = field(default_factory=Balance)
    hard_mining: float = 0.0
    hard_mining_order: str = "loss"
    hard_mining_maxage: int = 3
    dontcare: bool = True
    parallel: bool = False
    checkpoint_every: int = 1
    # Memory (.train): each set draws from `cases_per_iteration` images picked anew every outer
    # iteration (None: every image, the paper's; the default is every image of a cohort of up to 64 and
    # keeps a large cohort's sets, and memory, the size of 64 images'), and prepared images are kept up to
    # `volume_cache_mb` MB and `cases_per_iteration` images (the others are prepared again when drawn; the
    # trees are the same whatever the cache).
    cases_per_iteration: int | None = 64
    volume_cache_mb: int = 2048

    def __post_init__(self) -> None:
        augment = nested(Augment, self.augment, "augment")
        object.__setattr__(self, "augment", None if augment is None or augment.is_identity else augment)
        object.__setattr__(self, "balance", nested(Balance, self.balance, "balance"))
        problems: list[str] = []
        counts = ("num_its", "num_patches", "epochs", "batch_size", "checkpoint_every", "hard_mining_maxage")
        _at_least(problems, self, counts, 1)
        _at_least(problems, self, ("volume_cache_mb",), 0)
        if self.cases_per_iteration is not None:
            _at_least(problems, self, ("cases_per_iteration",), 1)
        kinds = (self.loss,) if isinstance(self.loss, str) else tuple(self.loss)
        object.__setattr__(self, "loss", self.loss if isinstance(self.loss, str) else kinds)
        for i, kind in enumerate(kinds):
            _choice(problems, "loss" if isinstance(self.loss, str) else f"loss[{i}]", kind, LOSSES)
        if not (_is_number(self.lr) and self.lr > 0):
            problems.append(f"lr={self.lr!r}: must be > 0")
        if not (_is_number(self.weight_decay) and self.weight_decay >= 0):
            problems.append(f"weight_decay={self.weight_decay!r}: must be >= 0")
        if not (_is_number(self.lr_decay) and 0 < self.lr_decay <= 1):
            problems.append(f"lr_decay={self.lr_decay!r}: must be in (0, 1]")
        if not (_is_number(self.hard_mining) and 0 <= self.hard_mining < 1):
            problems.append(f"hard_mining={self.hard_mining!r}: must be in [0, 1)")
        _choice(problems, "hard_mining_order", self.hard_mining_order, HARD_MINING_ORDERS)
        _choice(problems, "lr_schedule", self.lr_schedule, SCHEDULES)
        if not (_is_int(self.warmup_its) and 0 <= self.warmup_its < max(self.num_its, 1)):
            problems.append(f"warmup_its={self.warmup_its!r}: must be in [0, num_its)")
        _raise(problems)

    def losses(self, depth: int) -> tuple[str, ...]:
        """The loss of every level."""
        if isinstance(self.loss, str):
            return (self.loss,) * depth
        if len(self.loss) != depth:
            raise PatchworkError(f"loss: {len(self.loss)} entries for depth {depth}")
        return self.loss


@dataclass(frozen=True)
class DNPParams:
    """What training a Deep Neural Patchwork uses (see the module docstring): ``crop``, ``model`` and
    ``train``."""

    crop: CropConfig = field(default_factory=CropConfig)
    model: ModelParams = field(default_factory=ModelParams)
    train: TrainParams = field(default_factory=TrainParams)

    def __post_init__(self) -> None:
        try:
            self.train.losses(self.crop.depth)
            if self.train.augment is not None:
                self.train.augment.check(self.crop.ndim)
        except PatchworkError as err:
            raise PatchworkError(f"dnp train: {err}") from None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DNPParams:
        """Build from a plain dict with optional sections ``crop``, ``model``, ``train``; every problem of
        every section is one line naming it."""
        if not isinstance(d, Mapping):
            raise PatchworkError(f"dnp params: expected a mapping, got {type(d).__name__}")
        if "apply" in d:
            raise PatchworkError(
                "dnp params: apply is no training setting; give it as the model's apply mapping"
            )
        check_keys(d, ("crop", "model", "train"), "dnp params")
        sections: dict[str, Any] = {}
        problems: list[str] = []
        for name, section in (("crop", CropConfig), ("model", ModelParams), ("train", TrainParams)):
            try:
                sections[name] = parse(section, d.get(name) or {}, f"dnp {name}")
            except PatchworkError as err:
                problems.extend(err.problems)
        _raise(problems)
        return cls(**sections)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict of builtins; ``DNPParams.from_dict(p.to_dict()) == p``."""
        return {
            "crop": self.crop.to_dict(),
            "model": self.model.to_dict(),
            "train": to_plain_dict(self.train),
        }


@dataclass(frozen=True)
class ApplyConfig:
    """How a trained patchwork is applied (the paper's application settings, see
    :func:`~.apply.apply_dnp`).

    ``num_patches`` trees at level 0 (``generate_type`` 'tree': that many tilings, the first exact and the
    others jittered; 'random': uniform roots), whose children are tiles of their parent ('tree') or
    ``branch_factor`` patches per parent drawn where the parent's output points ('random', weight
    ``p + explore``); test-time ``augment`` (``None``: the training's, as the paper; ``{}``: off) and
    ``independent_augmentation`` (``None``: the training's); ``lazyEval``; the whole process repeated
    ``num_chunks`` times (the paper's robustness and coverage repeats); at most ``max_trees`` level-0 trees
    in memory at once (``None``: all) and ``batch_size`` patches per network call; stitched with ``window``
    ('cos' | 'cos2' | None) and ``sparse_suppression`` ``alpha`` (mean scaled by ``n / sqrt(n^2 + 3 alpha)``)
    from level ``level`` (-1 the finest, ``k``, or 'mix'); into the image's grid with voxels
    ``sampling_factor`` times smaller (``scale_to_original``) or an axis-aligned grid of the finest voxel
    size divided by ``sampling_factor``; encoded by ``out_typ`` (:class:`OutType`), ``ce_threshold`` the
    softmax models' default threshold.
    """

    generate_type: str = "tree"
    num_patches: int = 4
    branch_factor: int = 1
    num_chunks: int = 1
    max_trees: int | None = None
    batch_size: int = 64
    augment: Augment | None = None
    independent_augmentation: bool | None = None
    explore: float = 1.0
    lazyEval: LazyEval | None = None  # noqa: N815 - the paper's name
    window: str | None = "cos"
    sparse_suppression: float = 0.0
    scale_to_original: bool = True
    sampling_factor: float = 1.0
    level: int | str = -1
    ce_threshold: float = 0.5
    out_typ: str = "float32"

    def __post_init__(self) -> None:
        object.__setattr__(self, "augment", nested(Augment, self.augment, "augment"))
        object.__setattr__(self, "lazyEval", nested(LazyEval, self.lazyEval, "lazyEval"))
        check_sampling(self.num_patches, self.generate_type, self.branch_factor)
        problems: list[str] = []
        _at_least(problems, self, ("num_chunks", "batch_size"), 1)
        if self.max_trees is not None:
            _at_least(problems, self, ("max_trees",), 1)
        _choice(problems, "window", self.window, WINDOWS)
        if not _is_number(self.sparse_suppression) or self.sparse_suppression < 0:
            problems.append(f"sparse_suppression must be a number >= 0, got {self.sparse_suppression!r}")
        if not _is_number(self.explore) or self.explore < 0:
            problems.append(f"explore must be a number >= 0, got {self.explore!r}")
        if not _is_number(self.sampling_factor) or self.sampling_factor <= 0:
            problems.append(f"sampling_factor must be a number > 0, got {self.sampling_factor!r}")
        if self.level != "mix" and not _is_int(self.level):
            problems.append(f"level must be an int or 'mix', got {self.level!r}")
        if not _is_number(self.ce_threshold) or not 0.0 <= self.ce_threshold <= 1.0:
            problems.append(f"ce_threshold must be in [0, 1], got {self.ce_threshold!r}")
        _raise(problems)
        OutType.parse(self.out_typ)  # validates out_typ

    @property
    def output_type(self) -> OutType:
        """The parsed ``out_typ``."""
        return OutType.parse(self.out_typ)

    def augmentation(self, trained: Augment | None, trained_independent: bool) -> tuple[Augment | None, bool]:
        """The test-time ``(augment, independent_augmentation)``: the training's where unset (the paper's
        default), ``None`` for no augmentation (``augment={}``)."""
        augment = trained if self.augment is None else self.augment
        independent = (
            trained_independent if self.independent_augmentation is None else self.independent_augmentation
        )
        return (None if augment is None or augment.is_identity else augment), bool(independent)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], what: str = "dnp apply") -> ApplyConfig:
        """Build from a plain mapping (a model spec's ``apply``): keys, types and values checked."""
        return parse(cls, d, what)

    @classmethod
    def from_value(
        cls, value: ApplyConfig | Mapping[str, Any] | None = None, **overrides: Any
    ) -> ApplyConfig:
        """Settings from an :class:`ApplyConfig` or a plain mapping (``None``: the defaults), with keyword
        ``overrides`` (the paper's keywords; nested settings as dictionaries or settings objects)."""
        base = value if isinstance(value, ApplyConfig) else cls.from_dict(value or {})
        if not overrides:
            return base
        check_keys(overrides, (f.name for f in dataclasses.fields(cls)), "dnp apply")
        return dataclasses.replace(base, **overrides)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict of builtins; ``ApplyConfig.from_dict(a.to_dict()) == a`` (named attentionFun)."""
        return to_plain_dict(self)

    def check(self, crop: CropConfig, intermediate_loss: bool = True) -> list[int]:
        """Check these settings against a patchwork's ``crop`` settings and whether its coarse levels were
        trained (``intermediate_loss``); return the levels stitched into the output (``level`` -1 or ``k``:
        that level; 'mix': all).

        lazyEval ranks, and ``level`` k < depth - 1 or 'mix' stitches, coarse predictions: without
        intermediate losses those channels were never trained, so these settings are refused.
        """
        if self.augment is not None:
            self.augment.check(crop.ndim)
        if self.level != "mix" and not -crop.depth <= self.level < crop.depth:  # type: ignore[operator]
            raise PatchworkError(f"level {self.level} does not exist in a patchwork of depth {crop.depth}")
        levels = list(range(crop.depth)) if self.level == "mix" else [self.level % crop.depth]  # type: ignore[operator]
        if not intermediate_loss:
            problems = []
            if self.lazyEval is not None:
                problems.append("lazyEval ranks coarse predictions, untrained without intermediate_loss")
            if levels != [crop.depth - 1]:
                problems.append(
                    f"level={self.level!r} stitches coarse predictions, untrained without intermediate_loss"
                )
            _raise(problems)
        return levels

    def check_prediction(self) -> None:
        """Reject the settings a probability map in the image's grid cannot honour (what
        :func:`~.predict.predict_dnp` returns and the workflow writes, with a mask cut at the
        model's ``threshold``): ``scale_to_original`` false, ``sampling_factor``, an ``out_typ``
        encoding and a ``ce_threshold``; they apply to :func:`~.predict.apply_to_file`."""
        default = ApplyConfig()
        problems = []
        if not self.scale_to_original:
            problems.append("scale_to_original=false: a prediction lies in the image's grid")
        if self.sampling_factor != default.sampling_factor:
            problems.append(f"sampling_factor={self.sampling_factor}: a prediction lies in the image's grid")
        if self.out_typ != default.out_typ:
            problems.append(
                f"out_typ={self.out_typ!r}: a prediction is a probability; its mask uses threshold"
            )
        if self.ce_threshold != default.ce_threshold:
            problems.append(
                f"ce_threshold={self.ce_threshold}: a prediction's mask uses the model's threshold"
            )
        _raise(problems)


def check_spec(params: DNPParams, apply: ApplyConfig) -> None:
    """Check a model spec's application settings against its training settings, as the workflow uses them:
    levels and augmentation widths that fit the crop scheme, coarse predictions only where they were
    trained, and only options that ``predict_dnp`` honours (the registry's ``check`` of the ``dnp`` type,
    run when the Snakefile parses the config)."""
    try:
        apply.check(params.crop, params.model.intermediate_loss)
        apply.check_prediction()
    except PatchworkError as err:
        raise PatchworkError(problems=[f"dnp apply: {p}" for p in err.problems]) from None

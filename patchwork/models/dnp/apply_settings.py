"""How a trained Deep Neural Patchwork is applied (a model spec's ``apply``), torch-free: :class:`DNPApply`.

Changing these settings re-predicts, never retrains. They are the paper's application settings (see
:func:`~.apply.apply_dnp`), declared once with :func:`patchwork.settings.setting`; :class:`LazyEval` and
:class:`OutType` are their typed parts (maths in :mod:`~.lazy` and :mod:`~.outtype`).

A coarsest patch smaller than the image (``fov_rel`` 0.9) makes the tree application tile the image with 2
nearly identical roots per axis, 8 in 3D, and evaluate every finer level 8 times over: on the demo its full
coverage took 12x longer for a lower test Dice (0.83 vs 0.86 on 5 subjects, ``benchmarks/inference.py``).
With one root, a single tree tiles the image once. The default application averages 4 tilings -- the first
exact (it covers the image), the others shifted by a random fraction of the tile spacing -- with the
training's augmentation (the paper's default; the demo trains without) and cosine windows. Copies that
differ matter: a single tiling missed small lesions cut by tile borders, and 4 rotated copies (the default
before) lifted the demo's out-of-fold Dice from 0.74 to 0.82 for 4x the time; the jittered copies have not
been re-measured.

Example::

    apply = DNPApply.from_dict({"num_patches": 8, "lazyEval": {"fraction": 0.5}})
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, get_args

from patchwork.errors import PatchworkError, check_keys
from patchwork.models.dnp.settings import (
    GENERATE_TYPES,
    WINDOWS,
    Augment,
    CropConfig,
    DNPParams,
    check_sampling,
)
from patchwork.settings import Settings, setting

ReduceFun = Literal["max", "mean"]
REDUCE_FUNS: tuple[str, ...] = get_args(ReduceFun)
ATTENTION_NAMES = ("sigmoid", "identity")  # attentionFun by name; resolved in .lazy
OutKind = Literal["float32", "int16", "uint8", "mask", "atls"]
OUT_KINDS: tuple[str, ...] = get_args(OutKind)


@dataclass(frozen=True)
class LazyEval(Settings):
    """lazyEval (maths in :mod:`~.lazy`): a fraction of each level's patches get children, ranked by an
    attention map."""

    what: ClassVar[str] = "lazyEval"
    fraction: float = setting(
        0.5, exclusiveMinimum=0, maximum=1, doc="fraction of each level's patches that get children"
    )
    reduceFun: str = setting(  # noqa: N815 - the paper's name
        "max", enum=list(REDUCE_FUNS), doc="how a patch's attention is ranked: `max` or `mean`"
    )
    attentionFun: str | Callable[[Any], Any] | None = setting(  # noqa: N815 - the paper's name
        None,
        enum=[*ATTENTION_NAMES, None],
        doc="the attention map: `sigmoid`, `identity`, a callable logits -> map in Python, or null (the "
        "foreground probabilities)",
    )


@dataclass(frozen=True)
class OutType:
    """A parsed ``out_typ`` (encoding in :mod:`~.outtype`): the ``kind`` and the optional per-label
    ``thresholds``."""

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
class DNPApply(Settings):
    """How a trained patchwork is applied (the paper's application settings, see :func:`~.apply.apply_dnp`).

    ``num_patches`` trees at level 0 (``generate_type`` 'tree': that many tilings, the first exact and the
    others jittered; 'random': uniform roots), whose children are tiles of their parent ('tree') or
    ``branch_factor`` patches per parent drawn where the parent's output points ('random', weight
    ``p + explore``); the whole process repeated ``num_chunks`` times; stitched with ``window`` and
    ``sparse_suppression`` ``alpha`` (mean scaled by ``n / sqrt(n^2 + 3 alpha)``) from level ``level``;
    into the image's grid with voxels ``sampling_factor`` times smaller (``scale_to_original``) or an
    axis-aligned grid of the finest voxel size divided by ``sampling_factor``; encoded by ``out_typ``.
    """

    what: ClassVar[str] = "dnp apply"
    generate_type: str = setting(
        "tree", enum=list(GENERATE_TYPES), doc="`tree`: tilings of the image and each parent; `random`: draws"
    )
    num_patches: int = setting(4, minimum=1, doc="trees at level 0")
    branch_factor: int = setting(1, minimum=1, doc="children per parent (`random` only)")
    num_chunks: int = setting(1, minimum=1, doc="the whole process repeated (robustness and coverage)")
    max_trees: int | None = setting(None, minimum=1, doc="level-0 trees in memory at once (null: all)")
    batch_size: int = setting(64, minimum=1, doc="patches per network call")
    augment: Augment | None = setting(
        None, doc="test-time augmentation (null: the training's, as the paper; `{}`: off)"
    )
    independent_augmentation: bool | None = setting(
        None, doc="every level its own transformation (null: the training's)"
    )
    explore: float = setting(1.0, minimum=0, doc="weight `p + explore` of a `random` child's placement")
    lazyEval: LazyEval | None = setting(None, doc="lazy evaluation of the finer levels (null: off)")  # noqa: N815
    window: str | None = setting("cos", enum=list(WINDOWS), doc="stitching window: `cos`, `cos2` or null")
    sparse_suppression: float = setting(
        0.0, minimum=0, doc="alpha: the stitched mean scaled by `n / sqrt(n^2 + 3 alpha)`"
    )
    scale_to_original: bool = setting(
        True, doc="stitch into the image's grid (else an axis-aligned grid); `apply_to_file` only"
    )
    sampling_factor: float = setting(
        1.0, exclusiveMinimum=0, doc="voxels that many times smaller than the grid's; `apply_to_file` only"
    )
    level: int | str = setting(
        -1,
        anyOf=[{"type": "integer"}, {"enum": ["mix"]}],
        doc="the level stitched: -1 the finest, `k`, or `mix` (all)",
    )
    ce_threshold: float = setting(
        0.5, minimum=0, maximum=1, doc="softmax models' default threshold; `apply_to_file` only"
    )
    out_typ: str = setting(
        "float32",
        doc="the output's encoding: `float32`, `int16`, `uint8`, `mask[:t1,t2]`, `atls[:t1,t2]`; "
        "`apply_to_file` only",
    )

    def problems(self) -> list[str]:
        """The placement settings and the output encoding."""
        try:
            check_sampling(self.num_patches, self.generate_type, self.branch_factor)
            OutType.parse(self.out_typ)
        except PatchworkError as err:
            return err.problems
        return []

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
    def from_value(cls, value: DNPApply | Mapping[str, Any] | None = None, **overrides: Any) -> DNPApply:
        """Settings from a :class:`DNPApply` or a plain mapping (``None``: the defaults), with keyword
        ``overrides`` (the paper's keywords; nested settings as dictionaries or settings objects)."""
        base = value if isinstance(value, DNPApply) else cls.from_dict(value or {})
        if not overrides:
            return base
        check_keys(overrides, (f.name for f in dataclasses.fields(cls)), cls.what)
        return dataclasses.replace(base, **overrides)

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
            if problems:
                raise PatchworkError(problems=problems)
        return levels

    def check_prediction(self) -> None:
        """Reject the settings a probability map in the image's grid cannot honour (what
        :func:`~.predict.predict_dnp` returns and the workflow writes, with a mask cut at the model's
        ``threshold``): ``scale_to_original`` false, ``sampling_factor``, an ``out_typ`` encoding and a
        ``ce_threshold``; they apply to :func:`~.predict.apply_to_file`."""
        default = DNPApply()
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
        if problems:
            raise PatchworkError(problems=problems)


def check_spec(params: DNPParams, apply: DNPApply) -> None:
    """Check a model spec's application settings against its training settings, as the workflow uses them:
    levels and augmentation widths that fit the crop scheme, coarse predictions only where they were
    trained, and only options that ``predict_dnp`` honours (the registry's ``check`` of the ``dnp`` type,
    run when the Snakefile parses the config)."""
    try:
        apply.check(params.crop, params.model.intermediate_loss)
        apply.check_prediction()
    except PatchworkError as err:
        raise PatchworkError(problems=[f"dnp apply: {p}" for p in err.problems]) from None

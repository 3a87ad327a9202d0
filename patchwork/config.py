"""The workflow's configuration sections: one frozen settings class per section, each owning its defaults.

``config/config.yaml`` holds exactly these defaults (a test checks it), and every ``patchwork`` command
takes its section as ``--settings JSON``: defaults, limits and docs are written once, here. The whole
config (these sections and the models) is :class:`patchwork.workflow_config.WorkflowConfig`. This module
imports no torch.

Example::

    EnsembleSettings.from_dict({"mode": "vote"}).threshold  # 0.5
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from patchwork.settings import Settings, setting

DEFAULT_THRESHOLD = 0.5  # a probability map becomes a mask where it is >= this (models and ensemble)

ENSEMBLE_MODES = ("mean", "vote")
NORMALIZATIONS = ("zscore_nonzero", "zscore", "none")
DEMO_APPEARANCES = ("t1", "flair")  # the demo's lesion appearances (patchwork.data.demo.APPEARANCES)
DEFAULT_MAX_IMAGE_BYTES = 4 * 2**30  # what one image file may decompress to (gzip bombs are refused)


@dataclass(frozen=True)
class DemoSettings(Settings):
    """The generated demo cohort (used when ``dataset`` is ``demo``)."""

    what: ClassVar[str] = "demo"
    n_train: int = setting(20, minimum=2, doc="training subjects of the generated demo cohort")
    n_test: int = setting(5, minimum=0, doc="test subjects of the generated demo cohort")
    spacing: float = setting(
        2.0,
        minimum=1,
        maximum=8,
        doc="base voxel size (mm): subjects are in turn isotropic at `spacing`, anisotropic (0.75 x 0.75 x "
        "1.5 `spacing`) and axis-flipped (`patchwork.data.demo`)",
    )
    appearance: str = setting(
        "t1",
        enum=list(DEMO_APPEARANCES),
        doc="`t1`: 1-3 lesions per subject as dark as CSF with a brighter rim, 0.01-90 ml; `flair`: 1-6 "
        "hyperintense lesions, most of them small, beside unlabelled periventricular and punctate "
        "white-matter hyperintensities",
    )


@dataclass(frozen=True)
class BidsSettings(Settings):
    """A BIDS cohort: the files of each image channel and of the label, chosen by their BIDS entities.

    Each filter maps entity keys (``suffix``, ``datatype`` and the BIDS entities: ``acq``, ``space``,
    ``label``, ``desc`` ...) to the value a file must have; entities a filter leaves out may take any value.
    The defaults read ATLAS R2.0.
    """

    what: ClassVar[str] = "ingest.bids"
    channels: dict[str, dict[str, str]] = setting(
        {"T1w": {"suffix": "T1w"}},
        doc="a BIDS folder (`sub-*/[ses-*/]anat/...`): for each image channel, the BIDS entities its file "
        "must have (`suffix`, `datatype`, `acq`, `space`, `desc` ...); one case per subject and session, the "
        "subject as the cross-validation group",
    )
    label: dict[str, str] = setting(
        {"suffix": "mask", "label": "L", "desc": "T1lesion"},
        doc="the entities of the label file (also searched under `derivatives/`); the defaults read ATLAS "
        "R2.0",
    )
    unlabelled: str = setting(
        "error", enum=["error", "test"], doc="a session without a label: `error`, or `test` (a test subject)"
    )


@dataclass(frozen=True)
class IngestSettings(Settings):
    """Reading the cohort: label values, the allowed affine mismatch, the largest image one file may hold."""

    what: ClassVar[str] = "ingest"
    labels: dict[str, int] | None = setting(
        None,
        additionalProperties={"minimum": 0, "maximum": 255},
        doc="label names and values (0-255): null takes a folder's `dataset.json` and gives a CSV manifest "
        "or a BIDS folder `{background: 0, lesion: 1}`; given for a folder, they must match its "
        "`dataset.json`. Any other value in a label file is an error",
    )
    affine_tolerance: float = setting(
        1e-3,
        minimum=0,
        doc="largest absolute difference allowed between the 4x4 affines of one subject's channels and "
        "label (and a file's qform and sform); checked at ingest only",
    )
    max_image_bytes: int = setting(
        DEFAULT_MAX_IMAGE_BYTES,
        minimum=1,
        doc="what one image file may decompress to (and its header declare): a larger file, such as a gzip "
        "bomb, is refused in one line",
    )
    bids: BidsSettings = setting(BidsSettings(), doc="which files of a BIDS folder are read")


@dataclass(frozen=True)
class ThreadSettings(Settings):
    """CPU threads of each training and prediction job."""

    what: ClassVar[str] = "threads"
    train: int = setting(2, minimum=1, doc="CPU threads of each training job")
    predict: int = setting(1, minimum=1, doc="CPU threads of each prediction job")


@dataclass(frozen=True)
class PreprocessSettings(Settings):
    """Resampling, intensity normalisation and cropping (nnU-Net's preprocessing)."""

    what: ClassVar[str] = "preprocess"
    target_spacing: tuple[float, float, float] | None = setting(
        None,
        items={"exclusiveMinimum": 0},
        doc="resampling target in mm, `[x, y, z]`; null takes nnU-Net's rule: the median spacing of the "
        "training subjects, with the coarse axis of an anisotropic cohort (spacing and size ratio > 3) at "
        "its 10th percentile. Predictions are always written in each image's own grid",
    )
    normalization: str = setting(
        "zscore_nonzero",
        enum=list(NORMALIZATIONS),
        doc="`zscore_nonzero` (mean/sd inside the non-zero mask, 0 outside; MRI), `zscore` (whole volume), "
        "`none`",
    )
    crop_nonzero: bool = setting(
        True, doc="crop each subject to the bounding box of its non-zero voxels before resampling"
    )
    symmetry: bool = setting(
        False,
        doc="append, for each image channel, the channel minus its mirror image across the mid-sagittal "
        "plane (found in world coordinates: a reflection refined by rigid registration, "
        "`patchwork.data.symmetry`); for brain scans, where a lesion lies in one hemisphere and the "
        "structures mistaken for it are symmetric",
    )

    def resolved(self, fingerprint: Mapping[str, Any]) -> PreprocessSettings:
        """These settings with the target spacing preprocessing uses: null means nnU-Net's rule on the
        cohort's ``fingerprint`` (the median spacing; the coarse axis of an anisotropic cohort finer,
        :func:`patchwork.planning.spacing.target_spacing`), which the plans use too."""
        if self.target_spacing is not None:
            return self
        from patchwork.planning.spacing import Cohort, target_spacing

        spacing = tuple(target_spacing(Cohort.from_fingerprint(fingerprint)))
        return dataclasses.replace(self, target_spacing=spacing)  # type: ignore[arg-type]


@dataclass(frozen=True)
class PlanningSettings(Settings):
    """The memory one training step may take, from which every model's sizes are planned
    (:mod:`patchwork.planning`; ``results/plans.json``)."""

    what: ClassVar[str] = "planning"
    memory_gb: float | None = setting(
        None,
        exclusiveMinimum=0,
        doc="the memory one training step may take; every model size the config leaves out (U-Net "
        "`patch_size`, `batch_size`, `n_stages`, `base_features`, `max_features`; the DNP's "
        "`crop.depth`/`scheme`, block sizes and `train.batch_size`) is planned from the fingerprint for it "
        "(nnU-Net's rules, `results/plans.json`, shown in `results/report.html`); null: the GPU's memory "
        "when training runs on CUDA, else `planning.cpu_memory_gb`",
    )
    cpu_memory_gb: float = setting(
        2.0,
        exclusiveMinimum=0,
        doc="the budget on a CPU (a CPU's time, not its memory, is the limit: keep it small)",
    )


@dataclass(frozen=True)
class SplitSettings(Settings):
    """Cross-validation folds, or a splits file of the user's own."""

    what: ClassVar[str] = "splits"
    n_folds: int = setting(
        5,
        minimum=2,
        doc="number of cross-validation folds (KFold, shuffled with `seed`; GroupKFold when the cohort has "
        "a `group` column)",
    )
    file: str | None = setting(
        None,
        doc="a `splits_final.json` of your own (list of `{train: [...], val: [...]}`); checked against the "
        "cohort",
    )


@dataclass(frozen=True)
class EnsembleSettings(Settings):
    """How the models' probabilities are combined (see :mod:`patchwork.ensembling.combine`); the defaults are
    ATLAS R2.0's vote (components under 27 voxels removed; the config weighs its DNP twice)."""

    what: ClassVar[str] = "ensemble"
    mode: str = setting(
        "vote",
        enum=list(ENSEMBLE_MODES),
        doc="`mean`: weighted mean of the probabilities, then `threshold`; `vote`: each model thresholded at "
        "its own `threshold`, weighted mean of the masks >= `threshold` (ATLAS R2.0)",
    )
    weights: dict[str, float] = setting(
        {},
        additionalProperties={"minimum": 0},
        doc="model name -> weight (missing models weigh 1; a name that is no model is an error)",
    )
    threshold: float = setting(DEFAULT_THRESHOLD, minimum=0, maximum=1, doc="threshold of the ensemble")
    min_component_voxels: int = setting(
        27,
        minimum=0,
        doc="26-connected components smaller than this are removed from the ensemble segmentation (and, in "
        "`vote`, from each model's mask)",
    )
    min_peak: float = setting(
        0.0,
        minimum=0,
        maximum=1,
        hide_default=True,
        doc="components of the ensemble segmentation whose highest ensemble probability (in `vote`, vote "
        "fraction) is below this are removed: hesitant blobs, such as CSF spaces a model half believes",
    )
    tune: bool = setting(
        True,
        doc="also choose weights, threshold, minimum component size and peak on the out-of-fold predictions "
        "(best mean Dice), written to `results/ensemble_params.json` and evaluated as `ensemble_tuned` "
        "beside the hand-set `ensemble` (optimistic: tuned and scored on the same subjects)",
    )
    model_thresholds: dict[str, float] = setting(
        {},
        config=False,
        additionalProperties={"minimum": 0, "maximum": 1},
        doc="each model's own threshold (the command line sets it from the models' `threshold`); a model "
        "missing here is cut at the models' default threshold",
    )

    def weight(self, model: str) -> float:
        """The weight of ``model`` (1 when not given)."""
        return self.weights.get(model, 1.0)

    def model_threshold(self, model: str) -> float:
        """The own threshold of ``model`` in the ``vote`` mode."""
        return self.model_thresholds.get(model, DEFAULT_THRESHOLD)


@dataclass(frozen=True)
class PostprocessingSettings(Settings):
    """Each model's post-processing, chosen on its out-of-fold predictions
    (:mod:`patchwork.postprocessing.components`)."""

    what: ClassVar[str] = "postprocessing"
    tune: bool = setting(
        True,
        doc="choose each model's post-processing on its out-of-fold predictions (best mean Dice): threshold, "
        "smallest kept component volume (mm³) and peak probability, written to "
        "`results/postprocessing/{model}.json`, applied to its out-of-fold masks and evaluated as "
        "`{model}_pp` beside the untouched model (optimistic: tuned and scored on the same subjects); the "
        "entry ships the files. Model names ending in `_pp` are reserved",
    )


@dataclass(frozen=True)
class EvaluateSettings(Settings):
    """Evaluation against the reference segmentations."""

    what: ClassVar[str] = "evaluate"
    surface_tolerance_mm: float = setting(
        2.0, exclusiveMinimum=0, doc="tolerance of the normalised surface Dice (mm)"
    )


@dataclass(frozen=True)
class EntrySettings(Settings):
    """The packaged challenge entry: final all-data models and test predictions."""

    what: ClassVar[str] = "entry"
    enabled: bool = setting(
        True,
        doc="train every model on all training subjects, predict the test images and package "
        "`results/entry/`",
    )

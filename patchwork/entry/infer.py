"""``patchwork infer``: segment a folder of new scans with an entry, as the workflow segmented its test cases.

Per case, in memory, the same steps and functions as the workflow's stages, so that the result is the
workflow's byte for byte (on the same device):

1. the channels as ``patchwork preprocess`` reads them, preprocessed with the entry's settings
   (:func:`patchwork.data.preprocess.preprocess_image`);
2. every packaged model in the entry's order, through the model registry with its own application
   settings and seed, its probability mapped back to the original grid
   (:func:`patchwork.entry.prediction.predict_case`, as the workflow's prediction stage);
3. the ensemble of those maps with the settings the workflow's test predictions used
   (:func:`patchwork.ensembling.combine.combine`).

Outputs, in each input's original grid: ``{case}.nii.gz`` (the mask, uint8), with
``save_probabilities`` ``{case}_prob.nii.gz`` (the ensemble's probability or vote fraction) and with
``save_uncertainty`` ``{case}_{model}_std.nii.gz`` (the per-voxel spread of each model that gives one,
the DNP's), with ``save_models`` ``{case}_{model}_seg.nii.gz`` (each model's own mask, post-processed
with the settings the entry ships for it, else its threshold alone). The workflow's ensemble reads the
models' probabilities back from NIfTI files, whose affine is stored as float32; the masks and probability
get that rounded affine too.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from patchwork import __version__
from patchwork.data.cohort import Subject
from patchwork.entry.cases import find_cases
from patchwork.entry.layout import Entry, EntryModel
from patchwork.entry.resources import Usage, measure
from patchwork.errors import PatchworkError
from patchwork.io import read_volume, save_image

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prediction:
    """One case's results in its original grid: mask, ensemble probability, spreads and masks by model
    name (masks only when asked for)."""

    mask: np.ndarray
    probability: np.ndarray
    spreads: dict[str, np.ndarray]
    affine: np.ndarray
    model_masks: dict[str, np.ndarray]

    @property
    def stored_affine(self) -> np.ndarray:
        """The affine as a NIfTI file stores it (float32), which the workflow's ensemble reads back."""
        return self.affine.astype(np.float32).astype(np.float64)


def model_mask(model: EntryModel, prob: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """A model's own mask of its probability in the original grid: its tuned post-processing when the
    entry ships one, else ``prob >= threshold``."""
    from patchwork.postprocessing.components import postprocess, voxel_volume

    if model.postprocessing is None:
        return prob >= model.threshold
    return postprocess(prob, model.postprocessing, voxel_volume(affine))


def predict_case(
    entry: Entry, case: Subject, device: str | None = None, model_masks: bool = False
) -> Prediction:
    """Preprocess ``case``, apply every model of ``entry`` and combine them (see the module docstring);
    ``model_masks``: also each model's own mask (:func:`model_mask`)."""
    from patchwork.data.preprocess import preprocess_image
    from patchwork.ensembling.combine import combine
    from patchwork.entry.prediction import predict_case
    from patchwork.models import model_type

    volumes = [read_volume(path) for path in case.images]
    settings = entry.preprocess
    image, _, record = preprocess_image(
        [data for data, _ in volumes],
        volumes[0][1],
        settings.target_spacing,
        settings.normalization,
        settings.crop_nonzero,
        symmetry=settings.symmetry,
    )
    probs, spreads, masks = {}, {}, {}
    affine = np.asarray(record["original_affine"])
    for model in entry.models:
        row = model_type(model.type)
        result = predict_case(row, model.path, image, record, model.apply, device, model.seed)
        probs[model.name], affine = result.probability, result.affine
        if model_masks:
            masks[model.name] = model_mask(model, probs[model.name], affine)
        if result.spread is not None:
            spreads[model.name] = result.spread
    probability, mask = combine(probs, entry.ensemble)
    return Prediction(mask, probability, spreads, affine, masks)


def write_prediction(
    prediction: Prediction, case: str, out_dir: Path, save_probabilities: bool, save_uncertainty: bool
) -> list[Path]:
    """Write the mask (and the asked-for maps, and the model masks it holds) of ``case`` into ``out_dir``;
    return the paths."""
    written = [out_dir / f"{case}.nii.gz"]
    save_image(prediction.mask, prediction.stored_affine, written[0], dtype=np.uint8)
    if save_probabilities:
        written.append(out_dir / f"{case}_prob.nii.gz")
        save_image(prediction.probability, prediction.stored_affine, written[-1], dtype=np.float32)
    for name, spread in prediction.spreads.items() if save_uncertainty else ():
        written.append(out_dir / f"{case}_{name}_std.nii.gz")
        save_image(spread, prediction.affine, written[-1], dtype=np.float32)
    for name, mask in prediction.model_masks.items():
        written.append(out_dir / f"{case}_{name}_seg.nii.gz")
        save_image(mask, prediction.stored_affine, written[-1], dtype=np.uint8)
    return written


def available_cores() -> int:
    """CPU cores this process may run on (its affinity where the system tells it)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def infer(
    entry_dir: Path,
    input_dir: Path,
    output_dir: Path,
    device: str | None = None,
    threads: int | None = None,
    save_probabilities: bool = False,
    save_uncertainty: bool = False,
    save_models: bool = False,
) -> dict[str, Usage]:
    """Segment every case of ``input_dir`` into ``output_dir``; return each case's time and peak memory.

    Every input is checked before the first model runs (:func:`patchwork.entry.cases.find_cases`).
    ``threads`` caps torch's CPU threads (default: the entry's, those the workflow predicted its test
    subjects with, so the outputs are the workflow's byte for byte; an entry without them: every available
    core); ``device`` None means CUDA when present.
    """
    import torch
    from tqdm import tqdm

    output_dir = Path(output_dir)
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise PatchworkError(f"{output_dir}: cannot create the output folder ({err.strerror})") from None
    if not os.access(output_dir, os.W_OK):
        raise PatchworkError(f"{output_dir}: output folder not writable by this user (uid {os.getuid()})")
    entry = Entry.load(Path(entry_dir))
    if entry.version != __version__:
        log.warning("the entry was packaged by patchwork %s, this is %s", entry.version, __version__)
    cases = find_cases(Path(input_dir), entry)
    torch.set_num_threads(threads or entry.threads or available_cores())
    usage = {}
    for case in tqdm(cases, desc="infer", unit="case", disable=None):
        with measure(device) as usage[case.subject]:
            prediction = predict_case(entry, case, device, model_masks=save_models)
            write_prediction(prediction, case.subject, output_dir, save_probabilities, save_uncertainty)
    log.info("%d case(s) segmented into %s", len(cases), output_dir)
    return usage


def usage_table(usage: dict[str, Usage]) -> str:
    """A small text table of seconds and peak memory (MiB) per case."""
    per_case = all(u.per_case for u in usage.values())
    memory = "peak MiB" if per_case else "peak MiB (process)"
    cuda = any(u.peak_cuda is not None for u in usage.values())
    width = max([4, *map(len, usage)])
    lines = [f"{'case':<{width}}  {'seconds':>8}  {memory:>{len(memory)}}" + ("  CUDA MiB" if cuda else "")]
    for case, u in usage.items():
        line = f"{case:<{width}}  {u.seconds:>8.2f}  {u.peak_rss / 2**20:>{len(memory)}.0f}"
        lines.append(line + (f"  {(u.peak_cuda or 0) / 2**20:>8.0f}" if cuda else ""))
    return "\n".join(lines)

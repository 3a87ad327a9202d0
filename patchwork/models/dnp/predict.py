"""Applying a saved patchwork to NIfTI files and to arrays, with application settings given at call time.

A model file holds what training used; how to apply it is an :class:`~.settings.DNPApply`
given with each call, so changing it never requires retraining. :func:`apply_to_file` reads an image,
applies the model (:func:`~.apply.apply_dnp`) and writes the ``out_typ``-encoded output (and
optionally the uncertainty) as NIfTI; with ``scale_to_original`` (the default) the output has exactly the
input's shape and affine. :func:`predict_dnp` is what the model registry calls: the foreground probability
and its spread for a preprocessed image array, in that array's grid (so it rejects the settings that would
change the grid or encode the output, :meth:`~.settings.DNPApply.check_prediction`).

Example::

    apply_to_file("models/dnp/fold0/model.pt", "sub-01_T1w.nii.gz", "sub-01_lesion.nii.gz",
                  std_path="sub-01_std.nii.gz", label_names={1: "lesion"}, out_typ="mask")
    prob, std = predict_dnp(model_path, image, affine, DNPApply.from_dict({"num_patches": 8}))
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from patchwork.errors import PatchworkError
from patchwork.io import load_nifti, save_image
from patchwork.models.dnp.apply import DNPResult, apply_dnp, label_values
from patchwork.models.dnp.apply_settings import DNPApply
from patchwork.models.dnp.labeltable import add_label_table
from patchwork.models.dnp.modelfile import load_dnp
from patchwork.models.dnp.outtype import numpy_dtype
from patchwork.models.dnp.volume import image_tensor


def nifti_affine(affine: torch.Tensor) -> np.ndarray:
    """A 4x4 NIfTI affine of a ``(d+1)``-square one (a 2D affine keeps z = identity)."""
    affine = affine.detach().cpu().numpy().astype(np.float64)
    if affine.shape == (4, 4):
        return affine
    full = np.eye(4)
    keep = [0, 1, 3]
    full[np.ix_(keep, keep)] = affine
    return full


def channels_last(tensor: torch.Tensor) -> np.ndarray:
    """``[L, *S]`` as ``[*S]`` (one channel) or ``[*S, L]`` (NIfTI's 4th dimension holds the labels)."""
    array = tensor.detach().cpu().numpy()
    return array[0] if array.shape[0] == 1 else np.moveaxis(array, 0, -1)


def named_labels(label_names: Mapping[int, str] | Sequence[str], values: Sequence[int]) -> dict[int, str]:
    """Label value -> name from a mapping, or from one name per label value in ``values``."""
    if isinstance(label_names, Mapping):
        return {int(k): str(v) for k, v in label_names.items()}
    if len(label_names) != len(values):
        raise PatchworkError(f"label_names: {len(label_names)} names for {len(values)} labels")
    return dict(zip(values, (str(n) for n in label_names), strict=True))


def apply_to_file(
    model_path: str | os.PathLike[str],
    image_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    std_path: str | os.PathLike[str] | None = None,
    *,
    apply: DNPApply | Mapping[str, Any] | None = None,
    label_names: Mapping[int, str] | Sequence[str] | None = None,
    device: torch.device | str | None = None,
    seed: int = 0,
    **settings: Any,
) -> DNPResult:
    """Apply the model in ``model_path`` to the NIfTI ``image_path`` and write ``out_path``.

    ``apply`` (default: :class:`DNPApply`'s defaults) and the keyword ``settings`` (the paper's names,
    which win) are the application settings. The output is ``out_typ``-encoded, labels in NIfTI's 4th
    dimension; ``std_path`` receives the per-voxel standard deviation (float32).
    ``label_names`` (label value -> name, or one name per label in label order) go into the header, as
    JSON and as the XML label table NORA and HCP Workbench read (:mod:`~.labeltable`).
    With ``scale_to_original`` the files take the input's affine; otherwise the stitching grid's.
    """
    config = DNPApply.from_value(apply, **settings)
    model, _ = load_dnp(Path(model_path), device)
    source = load_nifti(image_path)
    data, affine = image_tensor(source, None, model.cropper.config.ndim)
    result = apply_dnp(model, data, affine, config, generator=seed)
    out_affine = np.asarray(source.affine) if config.scale_to_original else nifti_affine(result.affine)
    values = label_values(model.cropper, result.probabilities.shape[0])
    names = None if label_names is None else named_labels(label_names, values)
    atlas = result.output.ndim < result.probabilities.ndim  # one map, no label axis
    encoded = result.output.cpu().numpy() if atlas else channels_last(result.output)
    save_image(encoded, out_affine, out_path, numpy_dtype(result.output.dtype), label_names=names)
    if names is not None:
        add_label_table(out_path, names, atlas)
    if std_path is not None:
        save_image(channels_last(result.std), out_affine, std_path, np.float32, label_names=names)
    return result


def predict_dnp(
    model_path: Path,
    image: np.ndarray,
    affine: np.ndarray,
    apply: DNPApply,
    device: str | None = None,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Foreground probability ``[*spatial]`` (float32) and its standard deviation for ``image [C, *spatial]``
    in the grid ``affine``, applied by ``apply`` with every random draw from ``seed``.

    The result lies in the image's grid; with several labels the probability is that of the most probable
    label and the spread that label's. Settings that cannot apply to such a map (``scale_to_original``
    false, ``sampling_factor``, ``out_typ``, ``ce_threshold``) raise a one-line error.
    """
    apply.check_prediction()
    model, _ = load_dnp(Path(model_path), device)
    if not np.isfinite(image).all():
        raise PatchworkError(f"{model_path}: input image contains NaN or infinite values")
    result = apply_dnp(model, image, affine, apply, generator=seed)
    probability, winner = result.probabilities.max(dim=0, keepdim=True)
    spread = result.std.gather(0, winner)
    return (
        probability[0].cpu().numpy().astype(np.float32),
        spread[0].cpu().numpy().astype(np.float32),
    )

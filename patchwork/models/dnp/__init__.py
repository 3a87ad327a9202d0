"""Deep Neural Patchworks: patch geometry and cropping, the patchwork model, its training and application.

A patch is a homogeneous matrix plus a shape (:mod:`~patchwork.dnp.geometry`). :class:`CropGenerator`
(settings :class:`CropConfig`) draws nested patch sets (:class:`PatchSet`) from images and scatters patches
back; :func:`~patchwork.dnp.resample.crop` and :func:`scatter` are the batched low-level re-sampling it is
built on (the model crops its parents' outputs with ``crop``). :class:`PatchWorkModel` refines level by
level; :func:`train_dnp` trains it from :class:`DNPParams` into ``model.pt``, :func:`load_dnp` reads it
back. How a trained model is applied is an :class:`ApplyConfig` given with each call: :func:`apply_dnp`
segments a whole image, :func:`apply_to_file` does so from NIfTI to NIfTI and :func:`predict_dnp` (the
model registry's entry) gives the probability map and its spread.

All settings live in the torch-free :mod:`patchwork.dnp.settings`. Names are loaded on first use, so
``import patchwork.dnp.settings`` (what the workflow does when it checks a config) does not import torch.

Example::

    from patchwork.dnp import ApplyConfig, DNPParams, predict_dnp, train_dnp

    model_path = train_dnp(DNPParams.from_dict({"train": {"num_its": 60}}), images, labels, affines,
                           Path("out"), seed=0)
    prob, std = predict_dnp(model_path, image, affine, ApplyConfig(num_patches=8))
"""

from patchwork.exports import lazy_exports

_HOMES = {
    "ApplyConfig": "patchwork.dnp.settings",
    "Augment": "patchwork.dnp.settings",
    "Balance": "patchwork.dnp.settings",
    "CropConfig": "patchwork.dnp.settings",
    "CropGenerator": "patchwork.dnp.crop",
    "DNPParams": "patchwork.dnp.settings",
    "DNPResult": "patchwork.dnp.apply",
    "ImageGrid": "patchwork.dnp.grid",
    "LazyEval": "patchwork.dnp.settings",
    "Level": "patchwork.dnp.patchset",
    "ModelParams": "patchwork.dnp.settings",
    "CallableRef": "patchwork.dnp.settings",
    "OutType": "patchwork.dnp.settings",
    "PatchSet": "patchwork.dnp.patchset",
    "PatchWorkModel": "patchwork.dnp.model",
    "Scheme": "patchwork.dnp.settings",
    "TrainParams": "patchwork.dnp.settings",
    "UNetBlocks": "patchwork.dnp.blocks",
    "Volume": "patchwork.dnp.volume",
    "apply_dnp": "patchwork.dnp.apply",
    "apply_to_file": "patchwork.dnp.predict",
    "build_model": "patchwork.dnp.model",
    "load_dnp": "patchwork.dnp.train",
    "predict_dnp": "patchwork.dnp.predict",
    "scatter": "patchwork.dnp.resample",
    "train_dnp": "patchwork.dnp.train",
    "window_weights": "patchwork.dnp.resample",
}
__getattr__, __dir__, __all__ = lazy_exports(__name__, _HOMES)

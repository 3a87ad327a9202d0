"""Deep Neural Patchworks: patch geometry and cropping, the patchwork model, its training and application.

A patch is a homogeneous matrix plus a shape (:mod:`~.geometry`). :class:`CropGenerator`
(settings :class:`CropConfig`) draws nested patch sets (:class:`PatchSet`) from images and scatters patches
back; :func:`~.resample.crop` and :func:`scatter` are the batched low-level re-sampling it is
built on (the model crops its parents' outputs with ``crop``). :class:`PatchWorkModel` refines level by
level; :func:`train_dnp` trains it from :class:`DNPParams` into ``model.pt``, :func:`load_dnp` reads it
back. How a trained model is applied is an :class:`DNPApply` given with each call: :func:`apply_dnp`
segments a whole image, :func:`apply_to_file` does so from NIfTI to NIfTI and :func:`predict_dnp` (the
model registry's entry) gives the probability map and its spread.

All settings live in the torch-free :mod:`~.settings`. Names are loaded on first use, so
``import patchwork.models.dnp.settings`` (what the workflow does when it checks a config) does not import
torch.

Example::

    from patchwork.models.dnp import DNPApply, DNPParams, predict_dnp, train_dnp

    model_path = train_dnp(DNPParams.from_dict({"train": {"num_its": 60}}), images, labels, affines,
                           Path("out"), seed=0)
    prob, std = predict_dnp(model_path, image, affine, DNPApply(num_patches=8))
"""

from patchwork.exports import lazy_exports

_HOMES = {
    "DNPApply": "patchwork.models.dnp.apply_settings",
    "Augment": "patchwork.models.dnp.settings",
    "Balance": "patchwork.models.dnp.settings",
    "CropConfig": "patchwork.models.dnp.settings",
    "CropGenerator": "patchwork.models.dnp.crop",
    "DNPParams": "patchwork.models.dnp.settings",
    "DNPResult": "patchwork.models.dnp.apply",
    "ImageGrid": "patchwork.models.dnp.grid",
    "LazyEval": "patchwork.models.dnp.apply_settings",
    "Level": "patchwork.models.dnp.patchset",
    "ModelParams": "patchwork.models.dnp.settings",
    "CallableRef": "patchwork.models.dnp.callableref",
    "OutType": "patchwork.models.dnp.apply_settings",
    "PatchSet": "patchwork.models.dnp.patchset",
    "PatchWorkModel": "patchwork.models.dnp.model",
    "Scheme": "patchwork.models.dnp.settings",
    "TrainParams": "patchwork.models.dnp.settings",
    "UNetBlocks": "patchwork.models.dnp.blocks",
    "Volume": "patchwork.models.dnp.volume",
    "apply_dnp": "patchwork.models.dnp.apply",
    "apply_to_file": "patchwork.models.dnp.predict",
    "build_model": "patchwork.models.dnp.model",
    "load_dnp": "patchwork.models.dnp.modelfile",
    "predict_dnp": "patchwork.models.dnp.predict",
    "scatter": "patchwork.models.dnp.resample",
    "train_dnp": "patchwork.models.dnp.train",
    "window_weights": "patchwork.models.dnp.resample",
}
__getattr__, __dir__, __all__ = lazy_exports(__name__, _HOMES)

"""Deep Neural Patchworks: patch geometry and cropping, the patchwork model, its training and application.

A patch is a homogeneous matrix plus a shape (:mod:`~patchwork.dnp.geometry`). :class:`CropGenerator`
draws nested patch sets (:class:`PatchSet`) from images and scatters patches back; :func:`crop` and
:func:`scatter` are the batched low-level re-sampling it is built on (the model crops its parents'
outputs with :func:`crop`). :class:`PatchWorkModel` refines level by level, :func:`train_dnp` trains it
from :class:`DNPParams`, :func:`apply_dnp` (settings :class:`ApplyConfig`) segments a whole image and
:func:`apply_to_file` does so from NIfTI to NIfTI.
"""

from patchwork.dnp.apply import ApplyConfig, DNPResult, apply_dnp
from patchwork.dnp.augment import Augment
from patchwork.dnp.balance import Balance
from patchwork.dnp.blocks import UNetBlocks
from patchwork.dnp.crop import CropConfig, CropGenerator
from patchwork.dnp.grid import ImageGrid
from patchwork.dnp.lazy import LazyEval
from patchwork.dnp.model import PatchWorkModel
from patchwork.dnp.params import DNPParams, ModelParams, TrainParams
from patchwork.dnp.patchset import Level, PatchSet
from patchwork.dnp.predict import apply_to_file
from patchwork.dnp.resample import crop, scatter, window_weights
from patchwork.dnp.scheme import Scheme
from patchwork.dnp.train import load_dnp, train_dnp
from patchwork.dnp.volume import Volume

__all__ = [
    "ApplyConfig",
    "Augment",
    "Balance",
    "CropConfig",
    "CropGenerator",
    "DNPResult",
    "DNPParams",
    "ImageGrid",
    "LazyEval",
    "Level",
    "ModelParams",
    "PatchSet",
    "PatchWorkModel",
    "Scheme",
    "TrainParams",
    "UNetBlocks",
    "Volume",
    "apply_dnp",
    "apply_to_file",
    "crop",
    "load_dnp",
    "scatter",
    "train_dnp",
    "window_weights",
]

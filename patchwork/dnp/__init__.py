"""Deep Neural Patchworks, cropping half: patch geometry, CropGenerator, augmentation, crop and scatter.

A patch is a homogeneous matrix plus a shape (:mod:`~patchwork.dnp.geometry`). :class:`CropGenerator`
draws nested patch sets (:class:`PatchSet`) from images and scatters patches back; :func:`crop` and
:func:`scatter` are the batched low-level re-sampling it is built on (the model crops its parents'
outputs with :func:`crop`).
"""

from patchwork.dnp.augment import Augment
from patchwork.dnp.balance import Balance
from patchwork.dnp.blocks import UNetBlocks
from patchwork.dnp.crop import CropConfig, CropGenerator
from patchwork.dnp.grid import ImageGrid
from patchwork.dnp.model import PatchWorkModel
from patchwork.dnp.params import ApplyParams, DNPParams, LazyEval, ModelParams, TrainParams
from patchwork.dnp.patchset import Level, PatchSet
from patchwork.dnp.resample import crop, scatter, window_weights
from patchwork.dnp.scheme import Scheme
from patchwork.dnp.train import load_dnp, train_dnp
from patchwork.dnp.volume import Volume

__all__ = [
    "ApplyParams",
    "Augment",
    "Balance",
    "CropConfig",
    "CropGenerator",
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
    "crop",
    "load_dnp",
    "scatter",
    "train_dnp",
    "window_weights",
]

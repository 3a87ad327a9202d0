"""nnU-Net style 3D U-Net baseline: network, foreground-oversampling sampler, batched augmentation,
Dice + CE loss, resumable training and Gaussian-weighted sliding-window inference.

Example::

    from patchwork.unet import UNetParams, predict_unet, train_unet

    model_path = train_unet(UNetParams(iterations=300), images, labels, Path("out"), seed=0)
    prob = predict_unet(model_path, image)  # [X, Y, Z] foreground probability
"""

from patchwork.networks import UNet3D
from patchwork.unet.inference import gaussian_weight, predict_unet, sliding_window_inference
from patchwork.unet.modelfile import load_unet
from patchwork.unet.params import UNetParams
from patchwork.unet.train import train_unet

__all__ = [
    "UNet3D",
    "UNetParams",
    "gaussian_weight",
    "load_unet",
    "predict_unet",
    "sliding_window_inference",
    "train_unet",
]

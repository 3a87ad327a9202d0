"""nnU-Net style 3D U-Net baseline: network, foreground-oversampling sampler, batched augmentation,
Dice + CE loss, resumable training and Gaussian-weighted sliding-window inference.

Names are loaded on first use, so ``import patchwork.unet.params`` (the torch-free settings) does not
import torch.

Example::

    from patchwork.unet import UNetApply, UNetParams, predict_unet, train_unet

    model_path = train_unet(UNetParams(iterations=300), images, labels, None, Path("out"), seed=0)
    prob, _ = predict_unet(model_path, image, apply=UNetApply(test_time_mirroring=True))  # [X, Y, Z]
"""

from patchwork.exports import lazy_exports

_HOMES = {
    "UNet3D": "patchwork.networks",
    "UNetApply": "patchwork.unet.params",
    "UNetParams": "patchwork.unet.params",
    "gaussian_weight": "patchwork.unet.inference",
    "load_unet": "patchwork.unet.modelfile",
    "predict_unet": "patchwork.unet.inference",
    "sliding_window_inference": "patchwork.unet.inference",
    "train_unet": "patchwork.unet.train",
}
__getattr__, __dir__, __all__ = lazy_exports(__name__, _HOMES)

"""nnU-Net style 3D U-Net baseline: network, foreground-oversampling sampler, batched augmentation,
Dice + CE loss, resumable training and Gaussian-weighted sliding-window inference.

Names are loaded on first use, so ``import patchwork.models.unet.settings`` (the torch-free settings) does not
import torch.

Example::

    from patchwork.models.unet import UNetApply, UNetParams, predict_unet, train_unet

    model_path = train_unet(UNetParams(iterations=300), images, labels, None, Path("out"), seed=0)
    prob, _ = predict_unet(model_path, image, apply=UNetApply(test_time_mirroring=True))  # [X, Y, Z]
"""

from patchwork.exports import lazy_exports

_HOMES = {
    "UNet3D": "patchwork.networks",
    "UNetApply": "patchwork.models.unet.settings",
    "UNetParams": "patchwork.models.unet.settings",
    "gaussian_weight": "patchwork.models.unet.predict",
    "load_unet": "patchwork.models.unet.modelfile",
    "predict_unet": "patchwork.models.unet.predict",
    "sliding_window_inference": "patchwork.models.unet.predict",
    "train_unet": "patchwork.models.unet.train",
}
__getattr__, __dir__, __all__ = lazy_exports(__name__, _HOMES)

"""End to end: train a patchwork on one small image with the real training loop, then apply it."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from patchwork.evaluation.metrics import dice
from patchwork.io import read_image, read_label_names, save_image
from patchwork.models.dnp.apply_settings import DNPApply
from patchwork.models.dnp.predict import apply_to_file, predict_dnp
from patchwork.models.dnp.settings import DNPParams
from patchwork.models.dnp.train import train_dnp

SETUP = {  # ndim: (image shape, patch size, U-Net stages per level, outer iterations)
    2: ((64, 64), 32, 3, 10),
    3: ((24, 24, 24), 8, 2, 16),
}


def ball_case(shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """A noisy bright ball (disc in 2D) off centre: image ``[1, *shape]`` and its label map."""
    axes = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    points = np.stack(axes, axis=-1)
    label = (np.linalg.norm(points - 0.55 * np.array(shape), axis=-1) <= 0.2 * shape[0]).astype(np.uint8)
    noise = np.random.default_rng(0).standard_normal(shape)
    return (label + 0.3 * noise).astype(np.float32)[None], label


def plain_threshold_dice(image: np.ndarray, label: np.ndarray) -> float:
    """Dice of thresholding the noisy image at 0.5: what the network has to beat by using context."""
    return dice(image[0] > 0.5, label > 0)


def train(ndim: int, out_dir: Path) -> tuple[Path, np.ndarray, np.ndarray]:
    """Train on the ball image; return the model path, the image and the label."""
    shape, patch, stages, iterations = SETUP[ndim]
    image, label = ball_case(shape)
    params = DNPParams.from_dict(
        {
            "crop": {
                "depth": 2,
                "ndim": ndim,
                "scheme": {"patch_size": [patch] * ndim, "fov_rel": [0.9], "destvox_rel": [1.0]},
            },
            "model": {
                "block_features": 8,
                "block_max_features": 16,
                "block_stages": stages,
                "intermediate_out": 4,
            },
            "train": {"num_its": iterations, "num_patches": 16, "epochs": 2, "batch_size": 8, "lr": 1e-2},
        }
    )
    model_path = train_dnp(params, [image], [label], [np.eye(4)], out_dir, seed=0, device="cpu")
    return model_path, image, label


def test_overfit_2d_disk(tmp_path: Path) -> None:
    model_path, image, label = train(2, tmp_path)
    probability, spread = predict_dnp(model_path, image, np.eye(4), DNPApply(), device="cpu")
    assert probability.shape == label.shape and spread.shape == label.shape
    assert dice(probability > 0.5, label > 0) > 0.9
    assert dice(probability > 0.5, label > 0) > plain_threshold_dice(image, label) + 0.1


def test_overfit_3d_ball_and_write_files(tmp_path: Path) -> None:
    model_path, image, label = train(3, tmp_path / "model")
    affine = np.array([[0.0, -1.0, 0.0, 5.0], [1.0, 0.0, 0.0, -3.0], [0.0, 0.0, 1.0, 2.0], [0, 0, 0, 1]])
    image_path = tmp_path / "image.nii.gz"
    save_image(image[0], affine, image_path)
    out, std = tmp_path / "mask.nii.gz", tmp_path / "std.nii.gz"
    apply_to_file(model_path, image_path, out, std, label_names=["ball"], out_typ="mask", device="cpu")
    mask, mask_affine = read_image(out)
    spread, _ = read_image(std)
    assert mask.shape == label.shape and np.array_equal(mask_affine, affine)
    assert set(np.unique(mask)) <= {0.0, 1.0}
    assert read_label_names(out) == {1: "ball"}
    assert dice(mask > 0, label > 0) > 0.9
    assert dice(mask > 0, label > 0) > plain_threshold_dice(image, label) + 0.1
    assert spread.shape == label.shape and (spread >= 0).all()

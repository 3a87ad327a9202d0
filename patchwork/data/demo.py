"""A synthetic stroke-lesion cohort in nnU-Net v2 raw layout, generated offline from the MNI152 template.

Every subject is the 1 mm MNI152 T1 template that nilearn ships inside its package, warped by a smooth
random displacement field and resampled to ``spacing`` mm, with 1-3 hypointense stroke-like lesions
painted into white or grey matter, a smooth multiplicative bias field, a random intensity scale and
Rician noise. The lesions are irregular blobs of 0.5-50 ml with a soft edge, clearly darker than the
surrounding tissue, so that a small network learns them within minutes on a CPU.

The result needs no download and is byte-identical for a seed (subject ``i`` draws from
``np.random.default_rng([seed, i])``; nibabel writes gzip streams without a time stamp)::

    >>> make_demo_dataset(Path("raw/Dataset001_Demo"), n_train=20, n_test=5)  # doctest: +SKIP

writes ``dataset.json``, ``imagesTr/demo_001_0000.nii.gz``, ``labelsTr/demo_001.nii.gz`` ... and, for
the test subjects, ``imagesTs/`` with their reference masks in ``labelsTs/``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from patchwork.errors import PatchworkError
from patchwork.io import save_image, write_json

log = logging.getLogger(__name__)

LABELS = {"background": 0, "lesion": 1}
LESION_ML = (0.5, 50.0)  # allowed volume of one lesion
_TARGET_ML = (1.5, 35.0)  # log-uniform target volume, inside LESION_ML with room for the cropping
_WARP_MM = 3.0  # RMS length of the random displacement
_WARP_SMOOTH_MM = 12.0  # correlation length of the displacement
_WARP_GRID_MM = 4.0  # the displacement is drawn on this coarser grid and interpolated
_LESION_GAP_VOXELS = 2  # lesions stay this far apart, so each is one connected component


@dataclass(frozen=True)
class Template:
    """The 1 mm MNI152 T1 (scaled to 0..1) and its grey/white matter probability maps."""

    t1: np.ndarray
    gm: np.ndarray
    wm: np.ndarray
    affine: np.ndarray


def load_template(spacing: float) -> Template:
    """Read the 1 mm MNI152 maps from nilearn's package data (no network).

    Before resampling to ``spacing`` mm the maps are smoothed with a Gaussian whose FWHM makes up the
    difference between 1 mm and ``spacing`` mm voxels, so the coarse images show partial volume
    instead of aliasing.
    """
    from nilearn.datasets import load_mni152_gm_template, load_mni152_template, load_mni152_wm_template

    t1_img = load_mni152_template(resolution=1)
    sigma = np.sqrt(max(spacing**2 - 1.0, 0.0)) / 2.355
    maps = [
        np.asarray(img.get_fdata(dtype=np.float32))
        for img in (t1_img, load_mni152_gm_template(resolution=1), load_mni152_wm_template(resolution=1))
    ]
    if sigma > 0:
        maps = [ndimage.gaussian_filter(m, sigma) for m in maps]
    t1, gm, wm = maps
    return Template(t1=t1 / t1.max(), gm=gm, wm=wm, affine=np.asarray(t1_img.affine, dtype=np.float64))


def demo_grid(template: Template, spacing: float) -> tuple[tuple[int, int, int], np.ndarray]:
    """Shape and affine of the ``spacing`` mm grid that covers the template's field of view.

    The origin is the template's; at 2 mm this is the grid of nilearn's 2 mm template (99 x 117 x 95).
    """
    extent = (np.asarray(template.t1.shape) - 1) * np.linalg.norm(template.affine[:3, :3], axis=0)
    shape = tuple(int(n) for n in np.floor(extent / spacing + 1e-6).astype(int) + 1)
    affine = template.affine.copy()
    affine[:3, :3] = template.affine[:3, :3] / np.linalg.norm(template.affine[:3, :3], axis=0) * spacing
    return shape, affine


def smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma_voxels: float) -> np.ndarray:
    """Gaussian-smoothed white noise scaled to unit standard deviation."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma_voxels)
    return field / max(float(field.std()), 1e-12)


def warp_template(
    template: Template, shape: tuple[int, ...], affine: np.ndarray, spacing: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sample T1, GM and WM on the subject grid through a random smooth displacement field.

    A subject voxel v lands on template voxel A_t^-1 (A v + d(v)), where d is smoothed noise of RMS
    length ``_WARP_MM`` per axis, drawn on a ``_WARP_GRID_MM`` grid and interpolated linearly (it is
    smooth on that scale anyway, and this is much cheaper than smoothing full-resolution noise).
    """
    coarse = tuple(int(np.ceil(n * spacing / _WARP_GRID_MM)) + 1 for n in shape)
    zoom = np.asarray(shape) / np.asarray(coarse)
    displacement = np.stack(
        [
            ndimage.zoom(smooth_noise(rng, coarse, _WARP_SMOOTH_MM / _WARP_GRID_MM) * _WARP_MM, zoom, order=1)
            for _ in range(3)
        ]
    )
    grid = np.indices(shape, dtype=np.float32).reshape(3, -1)
    world = affine[:3, :3] @ grid + affine[:3, 3:4] + displacement.reshape(3, -1)
    inverse = np.linalg.inv(template.affine)
    coords = (inverse[:3, :3] @ world + inverse[:3, 3:4]).astype(np.float32)
    return tuple(
        ndimage.map_coordinates(m, coords, order=1, mode="constant", cval=0.0).reshape(shape)
        for m in (template.t1, template.gm, template.wm)
    )


def draw_lesion(
    tissue: np.ndarray,
    centre_weight: np.ndarray,
    forbidden: np.ndarray,
    spacing: float,
    rng: np.random.Generator,
) -> np.ndarray | None:
    """One irregular lesion mask, or None when the drawn one falls outside ``LESION_ML``.

    The lesion is a level set of an anisotropic distance from a random centre (drawn with probability
    ``centre_weight``), divided by a smoothly varying factor so the outline is lobulated; it keeps
    the ``target`` voxels of lowest distance that are brain tissue and not ``forbidden``, and then
    only the connected piece that holds the centre.
    """
    flat = centre_weight.ravel() * ~forbidden.ravel()
    if flat.sum() <= 0:
        return None
    centre = np.array(np.unravel_index(rng.choice(flat.size, p=flat / flat.sum()), tissue.shape))
    voxel_ml = spacing**3 / 1000.0
    target = int(round(np.exp(rng.uniform(*np.log(_TARGET_ML))) / voxel_ml))
    half = int(np.ceil(45.0 / spacing))
    lo = np.maximum(centre - half, 0)
    hi = np.minimum(centre + half + 1, tissue.shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    offsets = np.indices(hi - lo, dtype=np.float32).reshape(3, -1) - (centre - lo)[:, None]
    rotation, _ = np.linalg.qr(rng.standard_normal((3, 3)))
    axes = np.diag(rng.uniform(0.6, 1.5, size=3))
    distance = np.linalg.norm(axes @ rotation @ (offsets * spacing), axis=0).reshape(hi - lo)
    distance /= np.exp(0.4 * smooth_noise(rng, tuple(hi - lo), 5.0 / spacing))
    allowed = (tissue[box] > 0.3) & ~forbidden[box]
    distance[~allowed] = np.inf
    order = np.sort(distance, axis=None)
    threshold = order[min(target, order.size) - 1]
    if not np.isfinite(threshold):
        threshold = order[np.isfinite(order)].max(initial=-1.0)
    blobs, _ = ndimage.label(distance <= threshold)
    piece = blobs == blobs[tuple(centre - lo)]
    if blobs[tuple(centre - lo)] == 0 or not LESION_ML[0] <= piece.sum() * voxel_ml <= LESION_ML[1]:
        return None
    mask = np.zeros(tissue.shape, dtype=bool)
    mask[box] = piece
    return mask


def paint_lesions(
    gm: np.ndarray, wm: np.ndarray, spacing: float, rng: np.random.Generator
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Draw 1-3 separate lesions centred mostly in white matter (weight 2) or grey matter (weight 1).

    Returns the label volume (uint8) and each lesion's mask. Every new lesion avoids a band of
    ``_LESION_GAP_VOXELS`` around the earlier ones, so lesions never merge into one component.
    """
    tissue = gm + wm
    core = ndimage.binary_erosion(tissue > 0.5, iterations=max(1, int(round(4.0 / spacing))))
    centre_weight = (2.0 * wm + gm) * core
    n_lesions = int(rng.integers(1, 4))
    masks: list[np.ndarray] = []
    forbidden = np.zeros(tissue.shape, dtype=bool)
    for _ in range(200):
        if len(masks) == n_lesions:
            break
        mask = draw_lesion(tissue, centre_weight, forbidden, spacing, rng)
        if mask is None:
            continue
        masks.append(mask)
        cube = np.ones((3, 3, 3), dtype=bool)
        forbidden |= ndimage.binary_dilation(mask, cube, iterations=_LESION_GAP_VOXELS)
    if not masks:
        raise RuntimeError("could not place any lesion in the template; is the spacing far too coarse?")
    label = np.zeros(tissue.shape, dtype=np.uint8)
    for mask in masks:
        label[mask] = LABELS["lesion"]
    return label, masks


def bias_field(shape: tuple[int, ...], rng: np.random.Generator, strength: float = 0.15) -> np.ndarray:
    """A smooth multiplicative field exp(p(x)), p a random quadratic polynomial of the voxel position."""
    axes = [np.linspace(-1.0, 1.0, n, dtype=np.float32) for n in shape]
    x, y, z = np.meshgrid(*axes, indexing="ij")
    terms = [x, y, z, x * y, x * z, y * z, x * x, y * y, z * z]
    coeffs = rng.normal(0.0, strength / 2.0, size=len(terms))
    return np.exp(sum(c * t for c, t in zip(coeffs, terms, strict=True))).astype(np.float32)


def make_subject(
    template: Template, spacing: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One synthetic subject: (T1 image as int16, lesion label as uint8, affine).

    Each lesion darkens the tissue by its own depth (88-94 %, darker than CSF), blurred by
    0.6 voxel for a soft edge and modulated by 10 % texture.
    """
    shape, affine = demo_grid(template, spacing)
    t1, gm, wm = warp_template(template, shape, affine, spacing, rng)
    label, masks = paint_lesions(gm, wm, spacing, rng)
    depth = np.zeros(shape, dtype=np.float32)
    for mask in masks:
        depth[mask] = rng.uniform(0.88, 0.94)
    texture = 1.0 + 0.1 * smooth_noise(rng, shape, 1.0)
    darkening = np.clip(ndimage.gaussian_filter(depth, 0.6) * texture, 0.0, 0.9)
    head = t1 > 0.02
    signal = t1 * (1.0 - darkening) * bias_field(shape, rng) * rng.uniform(600.0, 1400.0)
    sigma = rng.uniform(0.02, 0.04) * float(np.median(signal[wm > 0.9]))
    noisy = np.hypot(signal + rng.normal(0.0, sigma, shape), rng.normal(0.0, sigma, shape))
    image = np.where(head, np.round(noisy), 0).astype(np.int16)
    return image, label, affine


def make_demo_dataset(
    out_dir: Path, n_train: int = 20, n_test: int = 5, spacing: float = 2.0, seed: int = 0
) -> Path:
    """Write the demo cohort to ``out_dir`` (nnU-Net v2 raw layout) and return ``out_dir``.

    Subjects ``demo_001`` ... ``demo_{n_train}`` go to ``imagesTr``/``labelsTr``, the next ``n_test``
    to ``imagesTs`` with their reference labels in ``labelsTs``. ``spacing`` must lie in 1-8 mm (the
    template has 1 mm voxels; at 8 mm a lesion is a handful of voxels). Demo files of an earlier,
    larger cohort in ``out_dir`` are removed, and ``dataset.json`` is written last, so its presence
    marks a complete and consistent dataset.
    """
    if n_train < 1 or n_test < 0 or not 1.0 <= spacing <= 8.0:
        raise PatchworkError(
            f"{out_dir}: the demo needs n_train >= 1, n_test >= 0 and 1 <= spacing <= 8 mm "
            f"(got n_train={n_train}, n_test={n_test}, spacing={spacing})"
        )
    out_dir = Path(out_dir)
    (out_dir / "dataset.json").unlink(missing_ok=True)
    template = load_template(spacing)
    written = set()
    for index in range(n_train + n_test):
        subject = f"demo_{index + 1:03d}"
        image, label, affine = make_subject(template, spacing, np.random.default_rng([seed, index]))
        images, labels = ("imagesTr", "labelsTr") if index < n_train else ("imagesTs", "labelsTs")
        written |= {out_dir / images / f"{subject}_0000.nii.gz", out_dir / labels / f"{subject}.nii.gz"}
        save_image(image, affine, out_dir / images / f"{subject}_0000.nii.gz", np.int16)
        save_image(label, affine, out_dir / labels / f"{subject}.nii.gz", np.uint8)
        log.info("demo subject %s: %d lesion voxels", subject, int(label.sum()))
    for stale in set(out_dir.glob("*/demo_*.nii.gz")) - written:
        stale.unlink()
    write_json(
        out_dir / "dataset.json",
        {
            "name": "PatchworkDemo",
            "description": (
                f"Synthetic stroke-like T1 lesions on the MNI152 template (nilearn), {spacing:g} mm, "
                f"seed {seed}; test references in labelsTs"
            ),
            "channel_names": {"0": "T1"},
            "labels": dict(LABELS),
            "numTraining": n_train,
            "file_ending": ".nii.gz",
        },
    )
    return out_dir

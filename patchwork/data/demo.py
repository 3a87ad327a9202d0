"""A synthetic stroke-lesion cohort in nnU-Net v2 raw layout, generated offline from the MNI152 template.

Every subject is the 1 mm MNI152 T1 template that nilearn ships inside its package, warped by a smooth
random displacement field and resampled to the subject's grid, with 1-3 stroke-like lesions painted into
white or grey matter, a smooth multiplicative bias field, a random intensity scale and Rician noise.

The lesions are made as hard as real chronic stroke lesions on T1: their core is as dark as the
ventricular CSF (so intensity alone cannot tell a lesion from a ventricle or a sulcus: the network needs
the anatomical context), their outer layer is a brighter rim half-way to the surrounding tissue (gliosis
and partial volume, which makes the border ambiguous), and their volumes are log-uniform between
sub-millilitre and large (``LESION_ML``: 0.01-90 ml), so small lesions are common, as in ATLAS R2.0.

A second appearance, ``flair`` (:data:`APPEARANCES`), makes FLAIR-like images of the same anatomy: CSF
suppressed (dark), grey matter brighter than white matter, and 1-6 hyperintense lesions per subject (1.5-2x
white matter) with volumes log-uniform in 0.02-40 ml, so most are small, as in ISLES'22. Its confounders are
those of real FLAIR in a stroke cohort, none of them labelled: smooth periventricular hyperintensities ("caps
and bands" along the lateral ventricles, of a different strength in each hemisphere) and 4-16 punctate
white-matter hyperintensities of small-vessel disease (0.01-0.3 ml, mostly near the ventricles, in both
hemispheres), as bright as a faint lesion.

The geometry varies by subject, as in a multi-site cohort (``GEOMETRIES``, cycling with the subject index):
isotropic ``spacing`` mm; anisotropic ``0.75 spacing x 0.75 spacing x 1.5 spacing`` (1.5 x 1.5 x 3 mm at the
default 2 mm); and isotropic with the first two array axes stored reversed (an LPS-style affine with negative
x and y steps, the same anatomy in world coordinates).

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
LESION_ML = (0.01, 90.0)  # allowed volume of one lesion
GEOMETRIES = ("isotropic", "anisotropic", "flipped")  # subject i gets GEOMETRIES[i % 3]
_ANISOTROPY = (0.75, 0.75, 1.5)  # voxel size of the anisotropic subjects, times ``spacing``
_FLIPPED_AXES = (0, 1)  # array axes stored reversed in the flipped subjects
_CORE_CONTRAST = (0.85, 1.15)  # lesion core intensity, times the template's ventricular CSF
_RIM_MIX = (0.35, 0.65)  # rim intensity: this fraction of the way from the core back to the tissue
_RIM_MM = 2.0  # thickness of the rim (the lesion's outer layer)
_LESION_BOX_MM = 55.0  # half-size of the box a lesion is drawn in (a 90 ml sphere has a 28 mm radius)
_WARP_MM = 3.0  # RMS length of the random displacement
_WARP_SMOOTH_MM = 12.0  # correlation length of the displacement
_WARP_GRID_MM = 4.0  # the displacement is drawn on this coarser grid and interpolated
_LESION_GAP_VOXELS = 2  # lesions stay this far apart, so each is one connected component
_CSF_DEPTH_MM = 20.0  # CSF at least this deep inside the brain is ventricular (not outer background)
_CSF_FRACTION = 0.02  # the deep voxels of least grey + white matter probability taken as ventricular CSF
_FLAIR_TISSUE = {"gm": 1.0, "wm": 0.72, "csf": 0.12}  # FLAIR intensity of each tissue (grey matter = 1)
_FLAIR_LESION = (1.1, 1.45)  # FLAIR lesion core intensity, times grey matter (white matter x 1.5-2)
_WMH_COUNT = (4, 16)  # unlabelled white-matter hyperintensities per FLAIR subject (small-vessel disease)
_WMH_ML = (0.01, 0.3)  # their log-uniform target volume
_WMH_LEVEL = (0.95, 1.25)  # their core intensity, times grey matter: as bright as a faint lesion
_WMH_REACH_MM = 15.0  # they lie in white matter, most within this distance of the ventricles
_CAPS_MM = (1.5, 3.5)  # decay length of the periventricular hyperintensity (per hemisphere)
_CAPS_GAIN = (0.15, 0.4)  # its strength at the ventricle wall, times grey matter (per hemisphere)


@dataclass(frozen=True)
class Appearance:
    """How the lesions of one kind of image look and how many there are.

    ``lesions``: the range of lesion counts per subject (inclusive); ``target_ml``: the range of the
    log-uniform target volume of one lesion (inside ``LESION_ML``, with room for the cropping to tissue);
    ``channel``: the channel's name and ``look`` how the lesions look, for ``dataset.json``.
    """

    name: str
    channel: str
    look: str
    lesions: tuple[int, int]
    target_ml: tuple[float, float]


APPEARANCES = {  # keyed by patchwork.config.DEMO_APPEARANCES
    "t1": Appearance("t1", "T1", "CSF-dark core, brighter rim", lesions=(1, 3), target_ml=(0.02, 80.0)),
    "flair": Appearance(
        "flair",
        "FLAIR",
        "hyperintense; periventricular and white-matter hyperintensities unlabelled",
        (1, 6),
        (0.02, 40.0),
    ),
}


@dataclass(frozen=True)
class Template:
    """The 1 mm MNI152 T1 (scaled to 0..1), its grey/white matter probability maps, its ventricular CSF
    intensity (median T1 of the ``_CSF_FRACTION`` of the voxels deep inside the brain with the least grey +
    white matter)."""

    t1: np.ndarray
    gm: np.ndarray
    wm: np.ndarray
    affine: np.ndarray
    csf: float


def load_template(spacing: float | tuple[float, float, float]) -> Template:
    """Read the 1 mm MNI152 maps from nilearn's package data (no network).

    Before resampling to ``spacing`` mm (one value, or one per axis) the maps are smoothed with a
    Gaussian whose FWHM makes up the difference between 1 mm and ``spacing`` mm voxels, so the coarse
    images show partial volume instead of aliasing.
    """
    from nilearn.datasets import load_mni152_gm_template, load_mni152_template, load_mni152_wm_template

    t1_img = load_mni152_template(resolution=1)
    sigma = np.sqrt(np.maximum(np.broadcast_to(spacing, 3) ** 2 - 1.0, 0.0)) / 2.355
    maps = [
        np.asarray(img.get_fdata(dtype=np.float32))
        for img in (t1_img, load_mni152_gm_template(resolution=1), load_mni152_wm_template(resolution=1))
    ]
    if np.any(sigma > 0):
        maps = [ndimage.gaussian_filter(m, sigma) for m in maps]
    t1, gm, wm = maps
    t1 = t1 / t1.max()
    voxel_mm = np.linalg.norm(t1_img.affine[:3, :3], axis=0)
    brain = ndimage.binary_fill_holes(t1 > 0.02)
    deep = ndimage.distance_transform_edt(brain, sampling=voxel_mm) > _CSF_DEPTH_MM
    tissue = (gm + wm)[deep]
    csf = float(np.median(t1[deep][tissue <= np.quantile(tissue, _CSF_FRACTION)]))
    return Template(t1=t1, gm=gm, wm=wm, affine=np.asarray(t1_img.affine, dtype=np.float64), csf=csf)


def demo_grid(template: Template, spacing: np.ndarray) -> tuple[tuple[int, int, int], np.ndarray]:
    """Shape and affine of the grid of ``spacing`` mm voxels (per axis) that covers the template.

    The origin is the template's; at 2 mm this is the grid of nilearn's 2 mm template (99 x 117 x 95).
    """
    extent = (np.asarray(template.t1.shape) - 1) * np.linalg.norm(template.affine[:3, :3], axis=0)
    shape = tuple(int(n) for n in np.floor(extent / spacing + 1e-6).astype(int) + 1)
    affine = template.affine.copy()
    affine[:3, :3] = template.affine[:3, :3] / np.linalg.norm(template.affine[:3, :3], axis=0) * spacing
    return shape, affine


def smooth_noise(
    rng: np.random.Generator, shape: tuple[int, ...], sigma_voxels: float | np.ndarray
) -> np.ndarray:
    """Gaussian-smoothed white noise scaled to unit standard deviation."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma_voxels)
    return field / max(float(field.std()), 1e-12)


def warp_template(
    template: Template,
    shape: tuple[int, ...],
    affine: np.ndarray,
    spacing: np.ndarray,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sample T1, GM and WM on the subject grid through a random smooth displacement field.

    A subject voxel v lands on template voxel A_t^-1 (A v + d(v)), where d is smoothed noise of RMS
    length ``_WARP_MM`` per axis, drawn on a ``_WARP_GRID_MM`` grid and interpolated linearly (it is
    smooth on that scale anyway, and this is much cheaper than smoothing full-resolution noise).
    """
    coarse = tuple(int(np.ceil(n * s / _WARP_GRID_MM)) + 1 for n, s in zip(shape, spacing, strict=True))
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
    spacing: np.ndarray,
    rng: np.random.Generator,
    target_ml: tuple[float, float] = APPEARANCES["t1"].target_ml,
) -> np.ndarray | None:
    """One irregular lesion mask, or None when the drawn one falls outside ``LESION_ML``.

    The lesion is a level set of an anisotropic distance (in mm) from a random centre (drawn with
    probability ``centre_weight``), divided by a smoothly varying factor so the outline is lobulated; it
    keeps the ``target`` voxels of lowest distance that are brain tissue and not ``forbidden``, and then
    only the connected piece that holds the centre. The target volume is log-uniform in ``target_ml``.
    """
    flat = centre_weight.ravel() * ~forbidden.ravel()
    if flat.sum() <= 0:
        return None
    centre = np.array(np.unravel_index(rng.choice(flat.size, p=flat / flat.sum()), tissue.shape))
    voxel_ml = float(np.prod(spacing)) / 1000.0
    target = max(2, int(round(np.exp(rng.uniform(*np.log(target_ml))) / voxel_ml)))
    half = np.ceil(_LESION_BOX_MM / spacing).astype(int)
    lo = np.maximum(centre - half, 0)
    hi = np.minimum(centre + half + 1, tissue.shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    offsets = np.indices(hi - lo, dtype=np.float32).reshape(3, -1) - (centre - lo)[:, None]
    rotation, _ = np.linalg.qr(rng.standard_normal((3, 3)))
    axes = np.diag(rng.uniform(0.6, 1.5, size=3))
    distance = np.linalg.norm(axes @ rotation @ (offsets * spacing[:, None]), axis=0).reshape(hi - lo)
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
    gm: np.ndarray,
    wm: np.ndarray,
    spacing: np.ndarray,
    rng: np.random.Generator,
    appearance: Appearance = APPEARANCES["t1"],
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Draw ``appearance.lesions`` separate lesions centred mostly in white matter (weight 2) or grey matter
    (weight 1).

    Returns the label volume (uint8) and each lesion's mask. Every new lesion avoids a band of
    ``_LESION_GAP_VOXELS`` around the earlier ones, so lesions never merge into one component.
    """
    tissue = gm + wm
    core = ndimage.binary_erosion(tissue > 0.5, iterations=max(1, int(round(4.0 / float(spacing.min())))))
    centre_weight = (2.0 * wm + gm) * core
    n_lesions = int(rng.integers(appearance.lesions[0], appearance.lesions[1] + 1))
    masks: list[np.ndarray] = []
    forbidden = np.zeros(tissue.shape, dtype=bool)
    for _ in range(200):
        if len(masks) == n_lesions:
            break
        mask = draw_lesion(tissue, centre_weight, forbidden, spacing, rng, appearance.target_ml)
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


def lesion_weight(masks: list[np.ndarray], spacing: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """How far each voxel is pulled from tissue to the lesion core intensity, in [0, 1].

    1 in a lesion's core; ``1 - U(_RIM_MIX)`` (one draw per lesion) in its rim, the voxels of the lesion
    within ``_RIM_MM`` of its border (a lesion thinner than that is all rim); 0 outside. Blurred by 0.6
    voxel, so the edge is soft.
    """
    weight = np.zeros(masks[0].shape, dtype=np.float32)
    for mask in masks:
        depth = ndimage.distance_transform_edt(mask, sampling=spacing)
        weight[mask] = np.where(depth[mask] > _RIM_MM, 1.0, 1.0 - rng.uniform(*_RIM_MIX))
    return ndimage.gaussian_filter(weight, 0.6)


def bias_field(shape: tuple[int, ...], rng: np.random.Generator, strength: float = 0.15) -> np.ndarray:
    """A smooth multiplicative field exp(p(x)), p a random quadratic polynomial of the voxel position."""
    axes = [np.linspace(-1.0, 1.0, n, dtype=np.float32) for n in shape]
    x, y, z = np.meshgrid(*axes, indexing="ij")
    terms = [x, y, z, x * y, x * z, y * z, x * x, y * y, z * z]
    coeffs = rng.normal(0.0, strength / 2.0, size=len(terms))
    return np.exp(sum(c * t for c, t in zip(coeffs, terms, strict=True))).astype(np.float32)


def subject_geometry(index: int, spacing: float) -> tuple[str, np.ndarray]:
    """Geometry name and voxel size (mm, per axis) of subject ``index`` (0-based)."""
    geometry = GEOMETRIES[index % len(GEOMETRIES)]
    voxel = np.asarray(_ANISOTROPY if geometry == "anisotropic" else (1.0, 1.0, 1.0)) * spacing
    return geometry, voxel


def flip_axes(
    image: np.ndarray, label: np.ndarray, affine: np.ndarray, axes: tuple[int, ...]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The same volume stored with ``axes`` reversed: voxel ``n - 1 - i`` of a flipped axis is voxel ``i``
    before, so the affine's column of that axis changes sign and its origin moves to the far end."""
    affine = affine.copy()
    for axis in axes:
        affine[:3, 3] += affine[:3, axis] * (image.shape[axis] - 1)
        affine[:3, axis] *= -1
    return np.flip(image, axes).copy(), np.flip(label, axes).copy(), affine


def ventricle_distance(t1: np.ndarray, gm: np.ndarray, wm: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """Distance (mm) of every voxel from the ventricles: the CSF voxels (probability ``1 - gm - wm`` > 0.5)
    deeper than ``_CSF_DEPTH_MM`` in the head."""
    head = t1 > 0.02
    deep = ndimage.distance_transform_edt(head, sampling=spacing) > _CSF_DEPTH_MM
    return ndimage.distance_transform_edt(~((gm + wm < 0.5) & head & deep), sampling=spacing)


def flair_image(
    t1: np.ndarray,
    gm: np.ndarray,
    wm: np.ndarray,
    affine: np.ndarray,
    spacing: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """A FLAIR-like image of the warped template: each tissue's intensity (:data:`_FLAIR_TISSUE`) weighted by
    its probability (CSF = the rest of the head), plus periventricular hyperintensities.

    Tissue at distance ``d`` from the ventricles (:func:`ventricle_distance`) is brightened by
    ``g exp(-d / L)``, with ``g`` in ``_CAPS_GAIN`` and ``L`` in ``_CAPS_MM`` drawn for each hemisphere (world
    x < 0 or >= 0), so the bands are not mirror images.
    """
    head = t1 > 0.02
    csf = np.clip(1.0 - gm - wm, 0.0, 1.0) * head
    image = _FLAIR_TISSUE["gm"] * gm + _FLAIR_TISSUE["wm"] * wm + _FLAIR_TISSUE["csf"] * csf
    distance = ventricle_distance(t1, gm, wm, spacing)
    x_world = affine[0, 0] * np.arange(t1.shape[0]) + affine[0, 3]
    right = (x_world >= 0)[:, None, None]
    gain = rng.uniform(*_CAPS_GAIN, size=2)
    length = rng.uniform(*_CAPS_MM, size=2)
    caps = np.where(right, gain[1] * np.exp(-distance / length[1]), gain[0] * np.exp(-distance / length[0]))
    return (image + caps * (gm + wm)).astype(np.float32)


def white_matter_hyperintensities(
    image: np.ndarray,
    t1: np.ndarray,
    gm: np.ndarray,
    wm: np.ndarray,
    label: np.ndarray,
    spacing: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """``image`` with ``U{_WMH_COUNT}`` unlabelled punctate hyperintensities painted in: small blobs
    (:func:`draw_lesion`, ``_WMH_ML``) centred in white matter with weight ``wm exp(-d / _WMH_REACH_MM)``
    (``d``: distance from the ventricles), clear of the labelled lesions, blended like lesions
    (:func:`lesion_weight`) towards ``U(_WMH_LEVEL)`` times grey matter."""
    tissue = gm + wm
    weight = wm * np.exp(-ventricle_distance(t1, gm, wm, spacing) / _WMH_REACH_MM) * (wm > 0.5)
    forbidden = ndimage.binary_dilation(label > 0, np.ones((3, 3, 3), dtype=bool), iterations=2)
    masks = []
    for _ in range(int(rng.integers(_WMH_COUNT[0], _WMH_COUNT[1] + 1))):
        mask = draw_lesion(tissue, weight, forbidden, spacing, rng, _WMH_ML)
        if mask is not None:
            masks.append(mask)
            forbidden |= mask
    if not masks:
        return image
    blend = lesion_weight(masks, spacing, rng)
    return (1.0 - blend) * image + blend * rng.uniform(*_WMH_LEVEL)


def make_subject(
    template: Template, spacing: np.ndarray, rng: np.random.Generator, appearance: str = "t1"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One synthetic subject on a grid of ``spacing`` mm voxels: (image as int16, lesion label as uint8,
    affine).

    T1: a lesion's core takes ``U(_CORE_CONTRAST)`` times the template's CSF intensity (one draw per subject)
    and its rim lies ``U(_RIM_MIX)`` of the way back to the tissue (:func:`lesion_weight`):
    ``t1' = (1 - w) t1 + w c``, with 10 % texture on ``c``. FLAIR: the same on :func:`flair_image`, with a
    bright core of ``U(_FLAIR_LESION)`` times grey matter, then :func:`white_matter_hyperintensities`.
    """
    kind = APPEARANCES[appearance]
    shape, affine = demo_grid(template, spacing)
    t1, gm, wm = warp_template(template, shape, affine, spacing, rng)
    base = t1 if kind.name == "t1" else flair_image(t1, gm, wm, affine, spacing, rng)
    label, masks = paint_lesions(gm, wm, spacing, rng, kind)
    weight = lesion_weight(masks, spacing, rng)
    level = template.csf * rng.uniform(*_CORE_CONTRAST) if kind.name == "t1" else rng.uniform(*_FLAIR_LESION)
    core = level * (1.0 + 0.1 * smooth_noise(rng, shape, 1.0))
    lesioned = (1.0 - weight) * base + weight * core
    if kind.name == "flair":
        lesioned = white_matter_hyperintensities(lesioned, t1, gm, wm, label, spacing, rng)
    head = t1 > 0.02
    signal = lesioned * bias_field(shape, rng) * rng.uniform(600.0, 1400.0)
    sigma = rng.uniform(0.02, 0.04) * float(np.median(signal[wm > 0.9 * wm.max()]))  # white matter
    noisy = np.hypot(signal + rng.normal(0.0, sigma, shape), rng.normal(0.0, sigma, shape))
    image = np.where(head, np.round(noisy), 0).astype(np.int16)
    return image, label, affine


def make_demo_dataset(
    out_dir: Path,
    n_train: int = 20,
    n_test: int = 5,
    spacing: float = 2.0,
    seed: int = 0,
    appearance: str = "t1",
) -> Path:
    """Write the demo cohort to ``out_dir`` (nnU-Net v2 raw layout) and return ``out_dir``.

    Subjects ``demo_001`` ... ``demo_{n_train}`` go to ``imagesTr``/``labelsTr``, the next ``n_test``
    to ``imagesTs`` with their reference labels in ``labelsTs``. Subject ``i`` (0-based) has the geometry
    ``GEOMETRIES[i % 3]`` around the base voxel size ``spacing``, which must lie in 1-8 mm (the template
    has 1 mm voxels; at 8 mm a lesion is a handful of voxels), in the ``appearance`` of
    :data:`APPEARANCES` (``t1``: CSF-dark lesions; ``flair``: hyperintense lesions, many small). Demo files
    of an earlier, larger cohort in
    ``out_dir`` are removed, and ``dataset.json`` is written last, so its presence marks a complete and
    consistent dataset.
    """
    if n_train < 1 or n_test < 0 or not 1.0 <= spacing <= 8.0 or appearance not in APPEARANCES:
        raise PatchworkError(
            f"{out_dir}: the demo needs n_train >= 1, n_test >= 0, 1 <= spacing <= 8 mm and an appearance "
            f"of {list(APPEARANCES)} (got n_train={n_train}, n_test={n_test}, spacing={spacing}, "
            f"appearance={appearance!r})"
        )
    kind = APPEARANCES[appearance]
    out_dir = Path(out_dir)
    (out_dir / "dataset.json").unlink(missing_ok=True)
    templates: dict[tuple[float, ...], Template] = {}
    written = set()
    for index in range(n_train + n_test):
        subject = f"demo_{index + 1:03d}"
        geometry, voxel = subject_geometry(index, spacing)
        key = tuple(float(v) for v in voxel)
        if key not in templates:
            templates[key] = load_template(key)
        image, label, affine = make_subject(
            templates[key], voxel, np.random.default_rng([seed, index]), appearance
        )
        if geometry == "flipped":
            image, label, affine = flip_axes(image, label, affine, _FLIPPED_AXES)
        images, labels = ("imagesTr", "labelsTr") if index < n_train else ("imagesTs", "labelsTs")
        written |= {out_dir / images / f"{subject}_0000.nii.gz", out_dir / labels / f"{subject}.nii.gz"}
        save_image(image, affine, out_dir / images / f"{subject}_0000.nii.gz", np.int16)
        save_image(label, affine, out_dir / labels / f"{subject}.nii.gz", np.uint8)
        log.info("demo subject %s (%s): %d lesion voxels", subject, geometry, int(label.sum()))
    for stale in set(out_dir.glob("*/demo_*.nii.gz")) - written:
        stale.unlink()
    write_json(
        out_dir / "dataset.json",
        {
            "name": "PatchworkDemo",
            "description": (
                f"Synthetic stroke-like {kind.channel} lesions ({kind.look}, {LESION_ML[0]:g}-"
                f"{LESION_ML[1]:g} ml) on the MNI152 template (nilearn), isotropic {spacing:g} mm, "
                f"anisotropic and axis-flipped subjects, seed {seed}; test references in labelsTs"
            ),
            "channel_names": {"0": kind.channel},
            "labels": dict(LABELS),
            "numTraining": n_train,
            "file_ending": ".nii.gz",
        },
    )
    return out_dir

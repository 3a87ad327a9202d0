"""Lesion-wise scores: the 26-connected components of a prediction matched to those of a reference.

Let R_1..R_m be the components of the reference and P_1..P_n those of the prediction (full
connectivity, as :func:`patchwork.postprocessing.components.label_components`). A component *is detected* (or
*matches*) when it shares at least one voxel with the other mask:

* recall = |{i : R_i ∩ P ≠ ∅}| / m (reference lesions found),
* precision = |{j : P_j ∩ R ≠ ∅}| / n (predicted lesions that are real); the other n - |{j : P_j ∩ R ≠ ∅}|
  are the false-positive lesions,
* F1 = 2 · precision · recall / (precision + recall), 0 when both are 0. (The ATLAS R2.0 challenge's
  TP / (TP + (FP + FN) / 2) is the same number whenever no component overlaps two on the other side.)
* per-blob Dice = (1/m) Σ_i Dice(R_i, ∪{P_j : P_j ∩ R_i ≠ ∅}): each reference blob scored against
  the predicted components that touch it, 0 for a missed blob. False-positive components do not
  lower it (lesion precision and the count difference report them); this is the reading consistent
  with Table 1 of the ATLAS R2.0 ensemble paper, where the U-Net with the most false-positive blobs
  has the highest per-blob Dice.

Empty masks follow :mod:`patchwork.evaluation.metrics`: both empty, every score is 1; exactly one empty,
every score is 0.

The overlaps are counted once, sparsely: one ``np.unique`` over the pairs (reference label,
predicted label) of the voxels in both masks, so the cost does not grow with m · n.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from patchwork.postprocessing.components import label_components


@dataclass(frozen=True)
class LesionMatch:
    """Components of a prediction and a reference and how they overlap.

    ``ref_sizes[i]`` / ``pred_sizes[j]`` are the voxel counts of R_(i+1) / P_(j+1); the k-th overlap
    is ``overlap_voxels[k]`` voxels shared by R_(pair_ref[k]+1) and P_(pair_pred[k]+1), one entry per
    overlapping pair.
    """

    ref_sizes: np.ndarray
    pred_sizes: np.ndarray
    pair_ref: np.ndarray
    pair_pred: np.ndarray
    overlap_voxels: np.ndarray

    @classmethod
    def compute(cls, pred: np.ndarray, ref: np.ndarray) -> LesionMatch:
        """Label the components of the boolean masks ``pred`` and ``ref`` and count their overlaps."""
        ref_labels, n_ref = label_components(ref)
        pred_labels, n_pred = label_components(pred)
        both = (ref_labels > 0) & (pred_labels > 0)
        pairs, counts = np.unique(
            (ref_labels[both].astype(np.int64) - 1) * max(n_pred, 1) + pred_labels[both] - 1,
            return_counts=True,
        )
        return cls(
            ref_sizes=np.bincount(ref_labels.ravel(), minlength=n_ref + 1)[1:],
            pred_sizes=np.bincount(pred_labels.ravel(), minlength=n_pred + 1)[1:],
            pair_ref=pairs // max(n_pred, 1),
            pair_pred=pairs % max(n_pred, 1),
            overlap_voxels=counts,
        )

    @property
    def n_ref(self) -> int:
        """Number of reference lesions."""
        return int(self.ref_sizes.size)

    @property
    def n_pred(self) -> int:
        """Number of predicted lesions."""
        return int(self.pred_sizes.size)

    def _empty_score(self) -> float | None:
        """The convention's score when a mask is empty (1 both, 0 one), None when neither is."""
        if self.n_ref and self.n_pred:
            return None
        return 1.0 if self.n_ref == self.n_pred == 0 else 0.0

    def recall(self) -> float:
        """Share of reference lesions that touch the prediction."""
        empty = self._empty_score()
        return empty if empty is not None else np.unique(self.pair_ref).size / self.n_ref

    def precision(self) -> float:
        """Share of predicted lesions that touch the reference."""
        empty = self._empty_score()
        return empty if empty is not None else np.unique(self.pair_pred).size / self.n_pred

    def false_positives(self) -> int:
        """Predicted lesions that touch no reference lesion."""
        return self.n_pred - int(np.unique(self.pair_pred).size)

    def f1(self) -> float:
        """Harmonic mean of lesion-wise precision and recall."""
        p, r = self.precision(), self.recall()
        return 0.0 if p + r == 0 else 2.0 * p * r / (p + r)

    def per_blob_dice(self) -> float:
        """Mean over reference blobs of the Dice with the predicted components touching the blob."""
        empty = self._empty_score()
        if empty is not None:
            return empty
        shared = np.bincount(self.pair_ref, weights=self.overlap_voxels, minlength=self.n_ref)
        touching = np.bincount(self.pair_ref, weights=self.pred_sizes[self.pair_pred], minlength=self.n_ref)
        return float(np.mean(2.0 * shared / (self.ref_sizes + touching)))

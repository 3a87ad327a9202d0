"""Post-processing (nnU-Net's ``postprocessing``): connected components of a thresholded probability map,
the filter that keeps the large and confident ones, and its settings chosen on out-of-fold predictions
(:mod:`.components`)."""

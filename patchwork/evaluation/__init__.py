"""Evaluation (nnU-Net's ``evaluation``): per-subject metrics (:mod:`.metrics`, built on :mod:`.surface` and
:mod:`.lesions`), their summary over a cohort, and the HTML reports with their figures (:mod:`.report`,
:mod:`.plots`, the jinja2 pages in ``templates/``)."""

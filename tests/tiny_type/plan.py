"""The tiny type plans nothing: it has no size to fit a memory budget."""

from __future__ import annotations

from typing import Any


def plan_tiny(*cohort_and_budget: Any) -> dict[str, Any]:
    """No planned params (whatever the cohort and budget); the estimate of a step is nothing."""
    return {"params": {}, "derived": {"memory_gb": 0.0}}

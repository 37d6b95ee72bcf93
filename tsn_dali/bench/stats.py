"""Statistics of per-window figures."""
from __future__ import annotations

from typing import Sequence

import numpy as np


def summarize(values: Sequence[float]) -> dict:
    """Median, min, max and quartiles (numpy linear percentiles) of per-window figures."""
    v = np.asarray(list(values), dtype=np.float64)
    if v.size == 0:
        raise ValueError("summarize: expected at least one value")
    q1, med, q3 = np.percentile(v, [25, 50, 75])
    return {"median": float(med), "min": float(v.min()), "max": float(v.max()),
            "q1": float(q1), "q3": float(q3), "runs": [float(x) for x in v]}


__all__ = ["summarize"]

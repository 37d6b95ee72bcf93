"""Timing windows and their statistics."""
from __future__ import annotations

import time
from typing import Callable, List, Sequence

import numpy as np
import torch


def summarize(values: Sequence[float]) -> dict:
    """Median, min, max and quartiles (numpy linear percentiles) of per-window figures."""
    v = np.asarray(list(values), dtype=np.float64)
    if v.size == 0:
        raise ValueError("summarize: expected at least one value")
    q1, med, q3 = np.percentile(v, [25, 50, 75])
    return {"median": float(med), "min": float(v.min()), "max": float(v.max()),
            "q1": float(q1), "q3": float(q3), "runs": [float(x) for x in v]}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def windows(step: Callable[[], None], warmup: int, iters: int, repeats: int, device: torch.device) -> List[float]:
    """Seconds of each of ``repeats`` windows of ``iters`` calls of ``step()``, after ``warmup`` calls."""
    for _ in range(warmup):
        step()
    sync(device)
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(iters):
            step()
        sync(device)
        out.append(time.perf_counter() - t0)
    return out


__all__ = ["summarize", "sync", "windows"]

"""Accuracy as MMAction2 computes it (mmaction/evaluation/functional/accuracy.py)."""
from __future__ import annotations

from typing import Dict, Sequence

import numpy as np


def top_k_accuracy(scores: np.ndarray, labels: np.ndarray, topk: Sequence[int]) -> Dict[int, float]:
    """Fraction of videos whose label is among the k highest scores, for each k."""
    scores = np.asarray(scores)
    labels = np.asarray(labels).reshape(-1, 1)
    order = np.argsort(scores, axis=1)[:, ::-1]  # MMAction2: argsort, highest first
    return {k: float((order[:, :k] == labels).any(axis=1).mean()) for k in topk}


def mean_class_accuracy(scores: np.ndarray, labels: np.ndarray) -> float:
    """Mean over classes of per-class recall (MMAction2 mean_class_accuracy).

    As MMAction2: the classes are those that occur as a label or as a prediction; a class
    only ever predicted, never a label, counts as 0.
    """
    pred = np.argmax(np.asarray(scores), axis=1)
    labels = np.asarray(labels).astype(np.int64)
    classes = np.union1d(pred, labels)
    recalls = []
    for c in classes:
        n = int((labels == c).sum())
        recalls.append(float(((pred == c) & (labels == c)).sum()) / n if n else 0.0)
    return float(np.mean(recalls))

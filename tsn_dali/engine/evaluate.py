"""Scoring a split, for validation during training and for tsn_dali.test alike.

Each video's views go through the model and are averaged as MMAction2's TSN does
(``TSN.predict``: average_clips); the padding slots (``samples == -1``) are left out, and
the scores of all ranks are gathered by video, so each video counts exactly once. Accuracy
follows MMAction2's AccMetric (engine.metrics): one top-k rule for val and test.
"""
from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch

from tsn_dali.engine import distributed as dist_utils
from tsn_dali.engine.checkpoint import unwrap
from tsn_dali.engine.metrics import mean_class_accuracy, top_k_accuracy
from tsn_dali.engine.step import autocast, prepare_clips

Row = Tuple[int, int, np.ndarray]  # (sample, label, class scores)


@torch.no_grad()
def score_split(model, loader, device, mean, std, amp: str, bar=None) -> List[Row]:
    """This rank's ``(sample, label, scores)`` for every video of ``loader`` (padding left out);
    the model is in eval mode meanwhile and goes back to the mode it was in."""
    bare = unwrap(model)
    was_training = bare.training
    bare.eval()
    rows: List[Row] = []
    try:
        for batch in loader:
            keep = (batch.samples >= 0).cpu()
            if bool(keep.any()):
                with autocast(device, amp):
                    probs = bare.predict(prepare_clips(batch.clips, mean, std, amp))
                probs = probs.float().cpu()[keep].numpy()
                for s, label, p in zip(batch.samples.cpu()[keep].tolist(), batch.labels.cpu()[keep].tolist(), probs):
                    rows.append((int(s), int(label), p))
            if bar is not None:
                bar.update(1)
    finally:
        bare.train(was_training)
    return rows


def gather_scores(rows: List[Row], info) -> Tuple[List[int], np.ndarray, np.ndarray]:
    """Every rank's rows, by video: ``(samples in order, scores [n, classes], labels [n])``.
    A video scored by two ranks is an error (the loader's shards are disjoint)."""
    by_sample: Dict[int, Tuple[int, np.ndarray]] = {}
    for rank_rows in dist_utils.all_gather_objects(rows, info):
        for s, label, p in rank_rows:
            if s in by_sample:
                raise RuntimeError(f"video {s} was scored twice across ranks")
            by_sample[s] = (label, p)
    order = sorted(by_sample)
    if not order:
        return [], np.zeros((0, 0), np.float32), np.zeros(0, np.int64)
    scores = np.stack([by_sample[s][1] for s in order])
    labels = np.array([by_sample[s][0] for s in order], dtype=np.int64)
    return order, scores, labels


def accuracy(scores: np.ndarray, labels: np.ndarray, topk: Sequence[int] = (1, 5)) -> Dict[str, float]:
    """``top{k}`` and ``mean_class_accuracy`` in percent (MMAction2 AccMetric; a k beyond the
    class count takes every class, as MMAction2's argsort slice does)."""
    out = {f"top{k}": 100.0 * v for k, v in top_k_accuracy(scores, labels, topk).items()}
    out["mean_class_accuracy"] = 100.0 * mean_class_accuracy(scores, labels)
    return out


__all__ = ["accuracy", "gather_scores", "score_split"]

"""engine.metrics and engine.evaluate: MMAction2's top-k and mean class accuracy, the one rule
val and test use."""
from __future__ import annotations

import numpy as np
import pytest

from tsn_dali.engine.evaluate import accuracy
from tsn_dali.engine.metrics import mean_class_accuracy, top_k_accuracy


def test_top_k_and_mean_class_accuracy_follow_mmaction2():
    scores = np.array([[0.1, 0.7, 0.2, 0.0],   # pred 1, label 1: hit
                       [0.5, 0.1, 0.4, 0.0],   # pred 0, label 2: top-2 hit
                       [0.2, 0.3, 0.1, 0.4],   # pred 3, label 0: miss (top-3 has 0 at rank 3)
                       [0.6, 0.3, 0.05, 0.05]])  # pred 0, label 0: hit
    labels = np.array([1, 2, 0, 0])
    acc = top_k_accuracy(scores, labels, [1, 2, 3])
    assert acc == {1: 0.5, 2: 0.75, 3: 1.0}
    # classes seen (label or prediction): 0, 1, 2, 3 -> recalls 1/2, 1, 0, 0 (3 only predicted)
    assert mean_class_accuracy(scores, labels) == pytest.approx((0.5 + 1 + 0 + 0) / 4)


def test_accuracy_is_percent_of_the_same_rule():
    scores = np.array([[0.1, 0.7, 0.2], [0.5, 0.1, 0.4], [0.2, 0.3, 0.5]])
    labels = np.array([1, 2, 0])
    out = accuracy(scores, labels, (1, 2, 5))  # 5 > classes: every class, as MMAction2's slice
    assert out == {"top1": pytest.approx(100 / 3), "top2": pytest.approx(200 / 3), "top5": 100.0,
                   "mean_class_accuracy": pytest.approx(100 * mean_class_accuracy(scores, labels))}

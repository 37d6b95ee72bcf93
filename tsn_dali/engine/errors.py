"""Errors of the training and testing engine a user can cause (said in one line by tsn_dali.cli)."""
from __future__ import annotations


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read, written or used; ``str(err)`` is one line naming the file."""


class UsageError(ValueError):
    """A command-line choice this machine cannot honour (e.g. --device cuda without CUDA)."""


class TrainingDiverged(RuntimeError):
    """The loss became NaN/inf under ``train.nan_policy: stop``."""


class EvaluationError(RuntimeError):
    """Nothing could be scored (every video of the split skipped or left out)."""


__all__ = ["CheckpointError", "EvaluationError", "TrainingDiverged", "UsageError"]

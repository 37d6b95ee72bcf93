"""Errors of the training and testing engine a user can cause (said in one line by tsn_dali.cli)."""
from __future__ import annotations

from tsn_dali.errors import CheckpointError, UsageError, UserError


class TrainingDiverged(UserError, RuntimeError):
    """The loss became NaN/inf under ``train.nan_policy: stop``."""


class EvaluationError(UserError, RuntimeError):
    """Nothing could be scored (every video of the split skipped or left out)."""


__all__ = ["CheckpointError", "EvaluationError", "TrainingDiverged", "UsageError"]

"""Errors of the training and testing engine a user can cause (said in one line by tsn_dali.cli)."""
from __future__ import annotations

from tsn_dali.errors import CheckpointError, UsageError, UserError


class TrainingDiverged(UserError, RuntimeError):
    """The loss became NaN/inf under ``train.nan_policy: stop``."""


class EvaluationError(UserError, RuntimeError):
    """Nothing could be scored (every video of the split skipped or left out)."""


class WorkDirError(UserError, OSError):
    """A file a run writes beside its checkpoints (its recipe copy) that cannot be written,
    e.g. on a full disk; ``str(err)`` is one line naming it."""


__all__ = ["CheckpointError", "EvaluationError", "TrainingDiverged", "UsageError", "WorkDirError"]

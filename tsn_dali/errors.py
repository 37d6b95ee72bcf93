"""The root of the errors a user can cause and fix (a recipe, a list, a video, a checkpoint,
a command line). Every module raises its own subclass; ``tsn_dali.cli`` catches this root
and says ``str(err)`` in one line: status 2 for a ``UsageError``, 1 for the rest. It sits
below every other module, so raising one imports nothing of the package."""
from __future__ import annotations


class UserError(Exception):
    """Something the user can fix; ``str(err)`` is one line naming the file, line or key."""


class UsageError(UserError, ValueError):
    """A command-line choice this machine cannot honour (e.g. --device cuda without CUDA): status 2."""


class CheckpointError(UserError, RuntimeError):
    """A checkpoint that cannot be read, written or used; ``str(err)`` is one line naming the file."""


__all__ = ["CheckpointError", "UsageError", "UserError"]

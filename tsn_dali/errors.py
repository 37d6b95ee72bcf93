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


def one_line(exc: BaseException, limit: int = 300, named: bool = False) -> str:
    """An exception as one line: its first non-empty line, cut at ``limit`` characters, else
    its class name (for messages that must stay one line whatever was raised). ``named``:
    ``ClassName: line`` (the class name alone where the message is empty)."""
    lines = [t.strip() for t in str(exc).splitlines() if t.strip()]
    if not lines:
        return type(exc).__name__
    return f"{type(exc).__name__}: {lines[0][:limit]}" if named else lines[0][:limit]


__all__ = ["CheckpointError", "UsageError", "UserError", "one_line"]

"""What every command-line entry point shares: which errors are the user's, how they are
said (one line, no traceback) and the exit status each gives.

    status  meaning
    0       done
    1       a user error: a recipe, pipeline, list, video, checkpoint or data set that does
            not do (the line names the file and, where there is one, the line or key)
    2       a bad command line (argparse's own status, kept for the checks argparse cannot do:
            they raise UsageError)
    75      the loader stalled (``loader.stall_timeout``): try again later (sysexits'
            EX_TEMPFAIL); train saved a resumable checkpoint first
    130/143 stopped by SIGINT/SIGTERM after saving (128 + the signal's number)

Each ``tsn_dali.X`` module has ``run(...)`` for programs (returns its result, raises) and
``main(argv) -> int`` for the shell: ``raise SystemExit(cli.entry(main))``.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Callable, Optional, Sequence

from tsn_dali.errors import UsageError, UserError
from tsn_dali.engine.signals import EXIT_STALLED as STALLED

OK, USER_ERROR, USAGE = 0, 1, 2


class Stopped(Exception):
    """A run that stopped on purpose (a signal, a stall) after saving; ``code`` is its status."""

    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser whose errors are one line (``prog: error: ...; see --help``) with
    status 2, where argparse prints its whole usage block first."""

    def parse_known_args(self, args=None, namespace=None):
        self._argv = list(sys.argv[1:] if args is None else args)
        return super().parse_known_args(args, namespace)

    def error(self, message):
        self.exit(USAGE, f"{self.prog}: error: {message}{split_value_hint(getattr(self, '_argv', []))} "
                         f"(see {self.prog} --help)\n")


def split_value_hint(argv: Sequence[str]) -> str:
    """A hint where a ``--set`` value holds an unclosed ``[`` or ``{``: the shell split a
    value written with spaces (``--set train.milestones=[40, 80]``) into two arguments."""
    for flag, value in zip(argv, argv[1:]):
        if flag == "--set" and (value.count("[") > value.count("]") or value.count("{") > value.count("}")):
            return f"; the shell split --set {value!r} at a space: quote the whole value, " \
                   f"e.g. --set \"train.milestones=[40, 80]\""
    return ""


def user_errors() -> tuple:
    """The exception classes a user can cause: said in one line, status 1. Every one derives
    from ``tsn_dali.errors.UserError`` (RecipeError, PipelineError, AnnotationError,
    VideoDecodeError, DatasetError, CheckpointError, TrainingDiverged, EvaluationError)."""
    return (UserError,)


def run_main(fn: Callable[[], object], usage_errors: Sequence[type] = (), more_errors: Sequence[type] = ()) -> int:
    """Call ``fn()`` (an int it returns is the status, else 0) and turn what it raises into
    the exit status (module docstring), printing one line to stderr; argparse's SystemExit
    (parse inside ``fn``) gives its code (2, or 0 for --help). ``usage_errors``: further classes
    that mean a bad command line (2); ``more_errors``: further user errors of that command (1)."""
    from tsn_dali.data.errors import LoaderStalled

    try:
        status = fn()
        return status if isinstance(status, int) and not isinstance(status, bool) else OK
    except SystemExit as exc:  # argparse has printed the usage or the help
        return exit_status(exc.code)
    except Stopped as exc:
        _say(str(exc))
        return exc.code
    except LoaderStalled as exc:
        _say(f"error: {exc}")
        return STALLED
    except (UsageError, *usage_errors) as exc:
        _say(f"error: {exc}")
        return USAGE
    except (*user_errors(), *more_errors) as exc:
        _say(f"error: {exc}")
        return USER_ERROR


def exit_status(code) -> int:
    """A SystemExit code as a status: None 0, an int itself, anything else said and 1 (as Python does)."""
    if code is None or isinstance(code, int):
        return int(code or 0)
    _say(str(code))
    return USER_ERROR


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def entry(main: Callable[[Optional[Sequence[str]]], int]) -> int:
    """``main()``'s status, for ``raise SystemExit(entry(main))``. After a stall the process
    ends at once (``os._exit``, output flushed): the hung decode cannot be stopped, and the
    interpreter's normal exit would wait for it where it blocks a non-daemon thread."""
    status = main(None)
    if status == STALLED:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(STALLED)
    return status


__all__ = ["OK", "STALLED", "USAGE", "USER_ERROR", "ArgumentParser", "Stopped", "UsageError", "entry", "run_main", "user_errors"]

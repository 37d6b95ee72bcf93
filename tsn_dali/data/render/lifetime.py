"""Loaders end with the interpreter: a script that never calls ``close()`` exits as Python
would (its own status; nothing on stderr that it did not cause).

The rule, at interpreter exit: every loader still alive is closed (``ClipLoader.close``: its
render thread finishes the render in progress and stops, then the executor it built drops
its pipelines), in the thread that runs the exit hooks, before DALI's own hook
(``nvidia.dali.pipeline._shutdown_pipelines``) shuts down every pipeline still registered
and asserts that none is left. A render thread left running goes on building and running
pipelines while DALI shuts them down: its assertion fails ("Exception ignored in atexit
callback") and the C++ runtime aborts ("terminate called without an active exception",
status 134).

Python runs exit hooks last-registered-first (the atexit module), and DALI registers its
hook when ``nvidia.dali.pipeline`` is first imported, which for ``dali-cpu`` is in the
render thread, at the first run. So ``watch`` imports DALI's module first where the
executor is a DALI one, then registers ours again: it runs before DALI's, whichever was
imported when. Non-daemon threads (thread pools) are joined by Python before any exit hook;
the render thread is a daemon and is stopped here.
"""
from __future__ import annotations

import atexit
import logging
import threading
import weakref

logger = logging.getLogger(__name__)

_LIVE: "weakref.WeakSet" = weakref.WeakSet()
_LOCK = threading.Lock()


def watch(loader, uses_dali: bool) -> None:
    """Close ``loader`` at interpreter exit if it is still alive then (module docstring)."""
    if uses_dali:
        try:
            import nvidia.dali.pipeline  # noqa: F401  (registers DALI's exit hook before ours)
        except ImportError:
            pass
    with _LOCK:
        _LIVE.add(loader)
        atexit.unregister(close_live_loaders)
        atexit.register(close_live_loaders)


def live_loaders() -> list:
    """The loaders ``watch`` was given that are still alive (not garbage-collected)."""
    with _LOCK:
        return list(_LIVE)


def close_live_loaders() -> None:
    """Close every live loader (the exit hook); a loader whose close fails is said in one
    line and the others are still closed."""
    for loader in live_loaders():
        try:
            loader.close()
        except Exception as exc:  # noqa: BLE001 - one loader must not keep the others open
            logger.warning("closing a loader at exit: %s: %s", type(exc).__name__, exc)


__all__ = ["close_live_loaders", "live_loaders", "watch"]

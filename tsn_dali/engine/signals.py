"""SIGINT / SIGTERM during training: finish the current step, save, exit 130 / 143; a stalled
loader exits 75 (tsn_dali.cli)."""
from __future__ import annotations

import os
import signal
import threading
from typing import Optional

EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}  # 128 + signal number, shell convention


class StopRequest:
    """Installs handlers that record the signal instead of raising; ``uninstall`` restores them.

    The training loop polls ``signum`` after every step (agreed over ranks), saves a
    resumable checkpoint and exits with ``exit_code``. A second signal of the same kind
    falls back to the previous handler (Ctrl-C twice stops at once).
    """

    def __init__(self):
        self.signum: Optional[int] = None
        self._previous = {}

    def install(self) -> "StopRequest":
        if threading.current_thread() is not threading.main_thread():
            return self
        for sig in EXIT_CODES:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.signum is not None:
            previous = self._previous.get(signum)
            if callable(previous):
                previous(signum, frame)
                return
            signal.signal(signum, signal.SIG_DFL)  # default action: terminate now
            os.kill(os.getpid(), signum)
        self.signum = signum

    def uninstall(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    @property
    def exit_code(self) -> int:
        return EXIT_CODES.get(self.signum, 1)

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum else ""


# The loader stalled (loader.stall_timeout): sysexits' EX_TEMPFAIL, "try again later". Train
# saved a resumable latest.pth first.
EXIT_STALLED = 75

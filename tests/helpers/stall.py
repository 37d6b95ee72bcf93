"""An executor that blocks, for the stall tests; run as a script it is the train/test entry
point with every executor it builds wrapped:

    python tests/helpers/stall.py BLOCK_AT {train|test} ARGS...

blocks the BLOCK_AT-th run call of the process (1-based, counted over all executors) for
ever, inside a non-daemon pool thread holding the executor's lock, as a DALI decode that hangs
would. With STALL_RANK set (under torchrun), only that rank's executors block.
"""
from __future__ import annotations

import itertools
import os
import runpy
import sys
import threading
from concurrent.futures import ThreadPoolExecutor


class BlockingExecutor:
    """Wraps ``inner`` (executors/base.py contract); the run call whose number (from
    ``counter``) is ``block_at`` waits on ``release`` in a pool worker while holding the
    executor lock (``close`` takes it too), as a hung decode would."""

    def __init__(self, inner, block_at: int, counter=None, release=None):
        self.inner, self.block_at = inner, block_at
        self.name, self.device, self.stats = inner.name, inner.device, inner.stats
        self.counter = counter or itertools.count(1)
        self.release = release or threading.Event()
        self.blocked = threading.Event()  # set when the blocking call started
        self.paths = []  # the videos of the blocked call
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="stall-test-decode")

    def prepare(self, plans, **kw):
        return list(plans), self.inner.prepare(plans, **kw)

    def run(self, prepared):
        plans, inner = prepared
        with self._lock:
            if next(self.counter) == self.block_at:
                self.paths = [p.path for p in plans]
                self.blocked.set()
                self._pool.submit(self.release.wait).result()
            return self.inner.run(inner)

    def render(self, plans, **kw):
        return self.run(self.prepare(plans, **kw))

    def check_videos(self, streams):
        return self.inner.check_videos(streams)

    def close(self):
        with self._lock:
            self.inner.close()
        self._pool.shutdown(wait=False)


def main():
    block_at, entry, args = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
    if os.environ.get("STALL_RANK", os.environ.get("RANK", "0")) != os.environ.get("RANK", "0"):
        block_at = 0  # never
    import tsn_dali.data.render.executors as executors

    build, counter = executors.build_executor, itertools.count(1)
    executors.build_executor = lambda *a, **kw: BlockingExecutor(build(*a, **kw), block_at, counter)
    sys.argv = [f"tsn_dali.{entry}", *args]
    runpy.run_module(f"tsn_dali.{entry}", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()

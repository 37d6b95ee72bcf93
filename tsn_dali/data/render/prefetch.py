"""Background rendering in two stages, so that the decoder is never idle.

``Prefetcher(items, prepare, finish, depth)`` runs on one background thread, in order:

    prepare(item)                 on a pool of ``workers`` threads, for up to ``depth``
                                  items ahead of the one being finished (reading,
                                  slicing, CPU decoding: host work)
    finish(item, prepared, error) on the background thread, one item at a time (the
                                  executor's run: the decode proper); ``error`` is what
                                  prepare raised (then ``prepared`` is None)

and hands the results to the consumer through a queue of ``depth``. The consumer's
``get()`` returns them in item order and raises what ``finish`` raised. ``close()``
stops the thread (it does not wait for a prepare or finish that never returns).
"""
from __future__ import annotations

import queue
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, Optional

_END = object()


class Prefetcher:
    def __init__(self, items: Iterable, prepare: Callable, finish: Callable, depth: int,
                 workers: int = 2, name: str = "tsn_dali-prefetch"):
        self._items = list(items)
        self._prepare, self._finish = prepare, finish
        self._depth = max(1, int(depth))
        self._queue: queue.Queue = queue.Queue(maxsize=self._depth)
        self._stop = threading.Event()
        self.stalled = False  # a get() timed out
        self._pool = ThreadPoolExecutor(max(1, int(workers)), thread_name_prefix=f"{name}-prepare")
        self._thread = threading.Thread(target=self._run, daemon=True, name=name)
        self._thread.start()

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def _run(self):
        pending: deque = deque()
        it = iter(self._items)

        def submit_next():
            item = next(it, _END)
            if item is not _END:
                pending.append((item, self._pool.submit(self._prepare, item)))

        try:
            for _ in range(self._depth):
                submit_next()
            while pending and not self._stop.is_set():
                item, future = pending.popleft()
                submit_next()
                try:
                    prepared, error = future.result(), None
                except Exception as exc:  # handed to finish, which retries or raises
                    prepared, error = None, exc
                if not self._put(("ok", self._finish(item, prepared, error))):
                    return
        except BaseException as exc:  # handed to the consumer, raised there
            self._put(("error", exc))
            return
        finally:
            for _, future in pending:
                future.cancel()
        self._put(("end", None))

    def get(self, timeout: Optional[float] = None):
        """The next result (``queue.Empty``, and ``stalled`` set, after ``timeout`` seconds
        without one); StopIteration once closed."""
        if self._stop.is_set():
            raise StopIteration
        try:
            kind, value = self._queue.get(timeout=timeout)
        except queue.Empty:
            self.stalled = True
            raise
        if kind == "error":
            raise value
        if kind == "end":
            raise StopIteration
        return value

    def close(self, timeout: float = 5.0) -> bool:
        """Stop: drain the queue so the thread can leave, wait up to ``timeout`` seconds for
        it; whether it stopped (a hung render cannot be stopped: its daemon thread stays)."""
        self._stop.set()
        if threading.current_thread() is self._thread:  # closed from its own finish: it ends after it
            self._pool.shutdown(wait=False, cancel_futures=True)
            return True
        deadline = time.monotonic() + timeout
        while self._thread.is_alive():
            try:
                self._queue.get(timeout=0.05)
            except queue.Empty:
                pass
            if time.monotonic() >= deadline:
                break
        self._pool.shutdown(wait=False, cancel_futures=True)
        return not self._thread.is_alive()


__all__ = ["Prefetcher"]

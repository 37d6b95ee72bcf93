"""Handing batches to torch without a race: a batch is never reused while queued kernels read it.

A DALI output viewed through DLPack goes back to DALI's memory pool, in order on DALI's
stream, as soon as torch drops it. The trainer queues its kernels ahead of the GPU, so
"dropped" comes long before "read": DALI could then write the next batch where queued
kernels still read this one. The guard holds every batch it hands out until an event
recorded after the consumer's work on it has completed:

- ``view`` (no copy): the event is recorded on the consumer's current stream when the
  consumer asks for the next batch, i.e. after it queued its step on this one (the
  usual ``for batch in loader`` loop); the batch is released once the event completes.
- ``copy``: the batch is copied into torch-owned memory on the consumer's current
  stream; DALI's buffer is held only until that copy has run. Costs one device copy
  per batch (shown by the benchmark); the consumer may then keep the batch as long as
  it likes.

On the CPU there is no queue (torch's CPU kernels have run when they return), so the
guard holds nothing. ``max_held`` bounds the batches held: past it the oldest event is
waited for.
"""
from __future__ import annotations

from collections import deque
from typing import Callable, Optional

import torch

MODES = ("view", "copy")


class HandoffGuard:
    """``hand_out(clips)`` before giving a batch away, ``next_requested()`` when the
    consumer asks for another, ``close()`` at the end (waits for what it holds).

    ``new_event``: makes an event with ``record()``, ``query()`` and ``synchronize()``
    (default ``torch.cuda.Event`` on CUDA devices; None on the CPU: nothing is held).
    """

    def __init__(self, device, mode: str = "view", new_event: Optional[Callable[[], object]] = None,
                 max_held: int = 4):
        if mode not in MODES:
            raise ValueError(f"loader.handoff: {mode!r}; expected one of {', '.join(MODES)}")
        self.mode = mode
        device = torch.device(device)
        if new_event is None and device.type == "cuda":
            new_event = torch.cuda.Event
        self._new_event = new_event
        self.max_held = max(1, int(max_held))
        self._held: deque = deque()  # (tensor, event or None until recorded)

    @property
    def held(self) -> int:
        return len(self._held)

    def hand_out(self, clips: torch.Tensor) -> torch.Tensor:
        """The tensor to give the consumer: ``clips`` itself (view) or a copy (copy)."""
        if self._new_event is None:
            return clips
        self._release()
        if self.mode == "copy":
            out = torch.empty_strided(clips.size(), clips.stride(), dtype=clips.dtype, device=clips.device)
            out.copy_(clips)
            event = self._new_event()
            event.record()
            self._held.append((clips, event))
            return out
        self._held.append((clips, None))
        return clips

    def next_requested(self) -> None:
        """The consumer asks for another batch: its work on the last one is queued."""
        if self._held and self._held[-1][1] is None:
            event = self._new_event()
            event.record()
            self._held[-1] = (self._held[-1][0], event)
        self._release()

    def _release(self) -> None:
        while self._held and self._held[0][1] is not None and self._held[0][1].query():
            self._held.popleft()
        while len(self._held) > self.max_held and self._held[0][1] is not None:
            self._held[0][1].synchronize()
            self._held.popleft()

    def close(self) -> None:
        """Wait for every held batch's consumer work, then let them go."""
        self.next_requested()
        while self._held:
            _, event = self._held.popleft()
            if event is not None:
                event.synchronize()


__all__ = ["HandoffGuard", "MODES"]

"""Where rendering runs on a GPU, and how a batch reaches the consumer without a host wait.

The render thread works on a CUDA stream of the loader's own (``RenderStream``): DALI's
output is taken on it (a DLPack import makes it wait for DALI's stream), and the batch's
own device work (label copies from pinned memory, the copy of a padded or two-path batch,
a bfloat16 cast) is queued on it, never on the trainer's stream. Nothing in the render
thread waits for a stream or the device: objects that queued work still reads (a DALI view
copied from, a pinned label buffer) are kept alive until an event after that work has
completed (``Retainer``), checked without blocking.

A batch is ready on the stream that was current in the thread that asked for it, at the
time of asking: ``consume`` makes that stream wait for the batch's ready event (a device
side wait) and marks the batch's torch-allocated memory as used there (``record_stream``),
so the caching allocator does not hand it out again before that stream is done with it.

On the CPU there are no streams: every method is a no-op (``HostStream``).
"""
from __future__ import annotations

import contextlib
from collections import deque
from typing import Iterable

import torch


class Retainer:
    """Keeps objects alive until the work queued on the current stream when ``retain`` was
    called has run, without waiting: each call records an event; ``sweep`` (called by every
    ``retain``) lets go of those whose event has completed; ``close`` waits for the rest.

    ``new_event``: an event factory with ``record()``, ``query()`` and ``synchronize()``
    (default ``torch.cuda.Event``; on the CPU nothing is held)."""

    def __init__(self, device, new_event=None):
        device = torch.device(device)
        if new_event is None and device.type == "cuda":
            new_event = torch.cuda.Event
        self._new_event = new_event
        self._held: deque = deque()

    @property
    def held(self) -> int:
        return len(self._held)

    def retain(self, *objects) -> None:
        if self._new_event is None:
            return
        event = self._new_event()
        event.record()
        self._held.append((event, objects))
        self.sweep()

    def sweep(self) -> None:
        while self._held and self._held[0][0].query():
            self._held.popleft()

    def close(self) -> None:
        while self._held:
            event, _ = self._held.popleft()
            event.synchronize()


class HostStream:
    """The CPU: kernels have run when they return; nothing to order or keep."""

    def __init__(self, device=None):
        self.device = torch.device("cpu") if device is None else torch.device(device)

    def rendering(self):
        return contextlib.nullcontext()

    def to_device(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.to(self.device)

    def ready(self):
        return None

    def consume(self, tensors: Iterable[torch.Tensor], ready) -> None:
        return None

    def retain(self, *objects) -> None:
        return None

    def close(self) -> None:
        return None


class RenderStream:
    """A CUDA stream of the loader's own for the render thread (module docstring).

    ``cuda``: the module that provides ``Stream``, ``Event``, ``stream`` and
    ``current_stream`` (``torch.cuda``; tests pass a recording stand-in)."""

    def __init__(self, device, cuda=None):
        self.device = torch.device(device)
        self.cuda = cuda if cuda is not None else torch.cuda
        self.stream = self.cuda.Stream(device=self.device)
        self._retainer = Retainer(self.device, new_event=self.cuda.Event)

    def rendering(self):
        """Context for the render thread: its torch work goes on the loader's stream."""
        return self.cuda.stream(self.stream)

    def to_device(self, tensor: torch.Tensor) -> torch.Tensor:
        """A host tensor on the device: pinned, then copied without blocking (on the current
        stream: the loader's, inside ``rendering``)."""
        if tensor.device.type == "cuda":
            return tensor
        return tensor.pin_memory().to(self.device, non_blocking=True)

    def ready(self):
        """An event after every piece of work queued on the loader's stream so far."""
        event = self.cuda.Event()
        event.record(self.stream)
        return event

    def consume(self, tensors: Iterable[torch.Tensor], ready) -> None:
        """The asking thread's current stream waits for ``ready``; the batch's torch memory
        is marked as used on it (a DALI view is not torch's: the hand-off guard keeps it)."""
        if ready is None:
            return
        consumer = self.cuda.current_stream(self.device)
        consumer.wait_event(ready)
        for tensor in tensors:
            try:
                tensor.record_stream(consumer)
            except RuntimeError:  # memory torch did not allocate (a DLPack view of DALI's)
                pass

    def retain(self, *objects) -> None:
        self._retainer.retain(*objects)

    def close(self) -> None:
        self._retainer.close()


def render_stream(device, cuda=None):
    """``RenderStream`` on a CUDA device, ``HostStream`` elsewhere."""
    device = torch.device(device)
    return RenderStream(device, cuda) if device.type == "cuda" else HostStream(device)


__all__ = ["HostStream", "RenderStream", "Retainer", "render_stream"]

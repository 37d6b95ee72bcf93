"""What the training loop measures: losses read back in windows, and the epoch's timing.

``LossReadback``: the step leaves each loss on the device; the loop reads the pending ones
back in one go (one host sync) at its check points (every ``train.log_interval`` steps, the
epoch's end, a stop), and learns there which step first went non-finite.

``EpochMeter``: timing and throughput of one epoch and of each log window: clips/s, the
share of time spent waiting for the loader, the mean loss; the progress bar (rank 0) and
the JSONL record of each window (torchvision's MetricLogger has the same job).
"""
from __future__ import annotations

import math
import time
from typing import List, Optional, Tuple

import numpy as np
import torch

from tsn_dali.engine.logs import progress_bar


class LossReadback:
    """Device losses of the steps since the last read-back: ``(loss, batch number, step)``."""

    def __init__(self):
        self.pending: List[Tuple[torch.Tensor, int, int]] = []

    def add(self, loss: torch.Tensor, batch_no: int, step: int) -> None:
        self.pending.append((loss.detach(), batch_no, step))

    def read(self) -> Tuple[List[float], Optional[int]]:
        """The pending losses as floats (one host sync) and the index of the first one that
        is not finite (None if all are); the window is then empty."""
        values = torch.stack([x for x, _, _ in self.pending]).float().tolist() if self.pending else []
        first_bad = next((i for i, v in enumerate(values) if not math.isfinite(v)), None)
        return values, first_bad

    def where(self, index: int) -> Tuple[int, int]:
        """(batch number, global step) of pending entry ``index``."""
        _, batch_no, step = self.pending[index]
        return batch_no, step

    def clear(self) -> None:
        self.pending = []

    def finite_values(self) -> List[float]:
        """The pending losses that are finite (host sync), e.g. for a checkpoint after a stall."""
        return [v for v in (float(x) for x, _, _ in self.pending) if math.isfinite(v)]

    def __len__(self) -> int:
        return len(self.pending)


class EpochMeter:
    """Timing, losses and the progress bar of one epoch (module docstring).

    ``losses``/``skipped`` start from a resumed mid-epoch checkpoint's ``partial`` figures.
    ``wait()`` brackets the loader; ``done(clips, step)`` after each step; ``window()``
    returns the log record of the window that just ended (or None between log steps).
    """

    def __init__(self, epoch: int, epochs: int, num_steps: int, first: int, log_interval: int, lr: float,
                 show: bool, partial: Optional[dict] = None):
        partial = partial or {}
        self.epoch, self.num_steps, self.log_interval, self.lr = epoch, num_steps, log_interval, lr
        self.losses: List[float] = list(partial.get("losses", []))
        self.skipped = int(partial.get("skipped", 0))
        self.batch_no = first
        self.bar = progress_bar(num_steps, f"epoch {epoch + 1}/{epochs}", show, initial=first)
        self.t_start = self._t_window = self._t_ready = time.perf_counter()
        self.waited = self._window_wait = 0.0
        self.clips = self._window_clips = 0
        self._window_losses: List[float] = []

    def got_batch(self) -> int:
        """A batch arrived: the time since the last step ended was spent waiting; returns its number."""
        now = time.perf_counter()
        self.waited += now - self._t_ready
        self._window_wait += now - self._t_ready
        self.batch_no += 1
        return self.batch_no

    def add_losses(self, values: List[float]) -> None:
        finite = [v for v in values if math.isfinite(v)]
        self.losses += finite
        self._window_losses += finite

    def log_step(self) -> bool:
        return self.batch_no % self.log_interval == 0 or self.batch_no == self.num_steps

    def step_done(self, clips: int, step: int) -> Optional[dict]:
        """Count a finished step; at a log step, the window's record (else None)."""
        self.clips += clips
        self._window_clips += clips
        if self.bar is not None:
            self.bar.update(1)
        record = None
        if self.log_step():
            now = time.perf_counter()
            span = max(now - self._t_window, 1e-9)
            record = {"kind": "train", "epoch": self.epoch + 1, "iter": self.batch_no, "step": step,
                      "loss": float(np.mean(self._window_losses)) if self._window_losses else float("nan"),
                      "lr": self.lr, "clips_per_s": self._window_clips / span,
                      "data_wait_share": self._window_wait / span}
            if self.bar is not None:
                self.bar.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{self.lr:.3g}",
                                     clips_s=f"{record['clips_per_s']:.1f}", wait=f"{record['data_wait_share']:.0%}")
            self._window_losses, self._t_window, self._window_wait, self._window_clips = [], now, 0.0, 0
        self._t_ready = time.perf_counter()
        return record

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def summary(self) -> dict:
        """The epoch's figures (``history`` entry fields)."""
        elapsed = max(time.perf_counter() - self.t_start, 1e-9)
        return {"epoch": self.epoch + 1, "loss": float(np.mean(self.losses)) if self.losses else float("nan"),
                "lr": self.lr, "clips_per_s": self.clips / elapsed, "data_wait_share": self.waited / elapsed,
                "skipped_steps": self.skipped, "seconds": elapsed}

    def partial(self) -> dict:
        """What a mid-epoch checkpoint keeps of the running epoch."""
        return {"losses": list(self.losses), "skipped": self.skipped}


__all__ = ["EpochMeter", "LossReadback"]

"""CheckpointSaver: one object owns a run's checkpoints (as timm's CheckpointSaver does).

    latest.pth     after every epoch and on a stop (mid-epoch, resumable)
    best.pth       the epoch with the best val top-1 so far
    epoch_N.pth    every ``train.checkpoint_interval`` epochs, and the last

Rank 0 writes (atomically: engine.checkpoint.save_checkpoint) and links, and every rank
learns whether it all worked (one broadcast), so that all of them stop on a failed write or
link. ``best`` and ``epoch_N`` are hard links to ``latest`` (copies where links fail). A
rank that must save while the others may be blocked (a stalled loader) writes alone
(``save_alone``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from tsn_dali.engine import distributed as dist_utils
from tsn_dali.engine.checkpoint import link_or_copy, save_checkpoint
from tsn_dali.engine.errors import CheckpointError


class CheckpointSaver:
    def __init__(self, work_dir, info, checkpoint_interval: int, epochs: int):
        self.work_dir = Path(work_dir)
        self.info = info
        self.checkpoint_interval, self.epochs = int(checkpoint_interval), int(epochs)
        self.latest = self.work_dir / "latest.pth"
        self.best = self.work_dir / "best.pth"

    def save(self, state: Callable[[], dict], links=()) -> None:
        """Rank 0 writes ``state()`` to latest.pth and links it to each of ``links``; every rank
        raises the same CheckpointError if any of that failed."""
        error = None
        if self.info.is_main:
            try:
                save_checkpoint(state(), self.latest)
                for path in links:
                    link_or_copy(self.latest, path)
            except CheckpointError as exc:
                error = str(exc)
        error = dist_utils.broadcast_object(error, self.info)
        if error:
            raise CheckpointError(error)

    def save_epoch(self, state: Callable[[], dict], epoch_done: int, improved: bool) -> None:
        """After an epoch: latest.pth, and best.pth / epoch_N.pth where they are due."""
        links = [self.best] if improved else []
        if epoch_done % self.checkpoint_interval == 0 or epoch_done == self.epochs:
            links.append(self.work_dir / f"epoch_{epoch_done}.pth")
        self.save(state, links)

    def save_alone(self, state: Callable[[], dict], losses_finite: bool) -> str:
        """Write latest.pth from this rank alone (the others may be blocked in a collective);
        not when a loss since the last check is not finite. Returns what happened, in words."""
        if not losses_finite:
            return f"{self.latest} not written (a loss since the last check is not finite)"
        try:
            save_checkpoint(state(), self.latest)
        except CheckpointError as err:
            return str(err)
        return f"saved {self.latest}"


__all__ = ["CheckpointSaver"]

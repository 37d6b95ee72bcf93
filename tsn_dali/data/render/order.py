"""Which samples a rank renders, batch by batch: torch's DistributedSampler rules, made explicit.

- train: every epoch a permutation of all samples from
  ``numpy.random.default_rng([seed, epoch])``, padded with its own first entries to a
  multiple of ``world_size``; rank ``r`` takes ``r::world_size`` of it and drops its last
  incomplete batch. Every rank gets the same number of batches.
- val/test: the samples in list order, rank ``r`` takes ``r::world_size``; the last
  batch is padded with ``-1`` entries so that every rank has the same number of batches
  and every video is counted exactly once.

``BatchOrder`` adds the position within an epoch (``state_dict`` / ``load_state_dict``),
so a resumed run continues at the batch it stopped before, and moves to the next epoch by
itself when a pass ran to its end (``complete_pass``) and nobody chose an epoch since: a
plain ``for`` over the loader, epoch after epoch, sees a new shuffle each time, as
torch's DataLoader over a DistributedSampler would only with ``set_epoch``.
"""
from __future__ import annotations

import math
import warnings
from typing import List, Optional

import numpy as np


def epoch_permutation(num_samples: int, epoch: int, seed: int) -> np.ndarray:
    return np.random.default_rng([int(seed), int(epoch)]).permutation(num_samples)


def train_order(num_samples: int, batch_size: int, epoch: int, seed: int, rank: int = 0,
                world_size: int = 1) -> np.ndarray:
    """This rank's train samples for ``epoch``: ``[num_batches * batch_size]`` int64 (module docstring)."""
    perm = epoch_permutation(num_samples, epoch, seed)
    per_rank = math.ceil(num_samples / world_size)
    padded = np.resize(perm, per_rank * world_size)  # np.resize repeats from the start
    mine = padded[rank::world_size]
    return mine[: (per_rank // batch_size) * batch_size].astype(np.int64)


def eval_order(num_samples: int, batch_size: int, rank: int = 0, world_size: int = 1) -> np.ndarray:
    """This rank's val/test samples in list order (``rank::world_size``), padded with -1 to
    ``num_batches * batch_size`` where ``num_batches = ceil(ceil(n / world_size) / batch_size)``."""
    per_rank = math.ceil(num_samples / world_size)
    num_batches = math.ceil(per_rank / batch_size)
    out = np.full(num_batches * batch_size, -1, np.int64)
    mine = np.arange(rank, num_samples, world_size, dtype=np.int64)
    out[: len(mine)] = mine
    return out


class BatchOrder:
    """The batches of one rank, epoch by epoch, and how many of the current epoch are done."""

    def __init__(self, num_samples: int, batch_size: int, *, train: bool, seed: int = 0,
                 rank: int = 0, world_size: int = 1):
        self.num_samples, self.batch_size = int(num_samples), int(batch_size)
        self.train, self.seed = bool(train), int(seed)
        self.rank, self.world_size = int(rank), int(world_size)
        self.epoch = 0
        self.done = 0  # batches handed out in the current pass
        self.skip = 0  # batches to skip at the start of the next pass (load_state_dict)
        self.completed = False  # the last pass over ``epoch`` ran to its end

    def __len__(self) -> int:
        per_rank = math.ceil(self.num_samples / self.world_size)
        return per_rank // self.batch_size if self.train else math.ceil(per_rank / self.batch_size)

    def batches(self, epoch: Optional[int] = None) -> List[np.ndarray]:
        """The sample ids of every batch of this rank for ``epoch`` (default: the current one)."""
        epoch = self.epoch if epoch is None else epoch
        if self.train:
            order = train_order(self.num_samples, self.batch_size, epoch, self.seed, self.rank,
                                self.world_size)
        else:
            order = eval_order(self.num_samples, self.batch_size, self.rank, self.world_size)
        return [order[i:i + self.batch_size] for i in range(0, len(order), self.batch_size)]

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch for the next pass (exactly: no advance); a new epoch starts at batch 0."""
        if int(epoch) != self.epoch:
            self.done = self.skip = 0
        self.epoch = int(epoch)
        self.completed = False

    def start_pass(self) -> List[np.ndarray]:
        """The batches this pass renders: the epoch's, after those a resume skips; the next
        epoch's where the last pass ran to its end and no epoch was chosen since."""
        if self.completed:
            self.epoch += 1
            self.done = self.skip = 0
            self.completed = False
        start, self.skip = self.skip, 0
        self.done = start
        return self.batches()[start:]

    def complete_pass(self) -> None:
        """The pass handed out its last batch."""
        self.completed = True

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "batches_done": self.done, "num_batches": len(self),
                "world_size": self.world_size, "seed": self.seed}

    def load_state_dict(self, state: dict) -> None:
        """Resume: the next pass over ``state['epoch']`` starts after its finished batches."""
        if state.get("num_batches", len(self)) != len(self) or \
                state.get("world_size", self.world_size) != self.world_size:
            warnings.warn(f"ClipLoader.load_state_dict: saved with {state.get('num_batches')} batches "
                          f"on {state.get('world_size')} ranks, now {len(self)} on {self.world_size}; "
                          "the resumed epoch's batches differ", stacklevel=3)
        self.epoch = int(state["epoch"])
        self.skip = self.done = min(int(state["batches_done"]), len(self))
        self.completed = False


__all__ = ["BatchOrder", "epoch_permutation", "eval_order", "train_order"]

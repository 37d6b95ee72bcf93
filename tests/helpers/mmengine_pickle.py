"""Checkpoints laid out as mmengine's CheckpointHook writes them: beside the state dict, a
``message_hub`` holding objects of a class (mmengine's HistoryBuffer) that cannot be
imported where the file is read: its module exists only while saving."""
from __future__ import annotations

import sys
import types

import torch


def save_mmengine_checkpoint(path, state_dict, loss_values=(0.5, 0.25)):
    """Write ``{"state_dict", "meta", "message_hub"}`` to ``path`` with an unimportable object."""
    hub = types.ModuleType("fake_mmengine_logging")

    class HistoryBuffer:
        def __init__(self):
            self.values = list(loss_values)

    HistoryBuffer.__module__ = hub.__name__
    HistoryBuffer.__qualname__ = "HistoryBuffer"
    hub.HistoryBuffer = HistoryBuffer
    sys.modules[hub.__name__] = hub
    try:
        torch.save({"state_dict": state_dict, "meta": {"epoch": 100},
                    "message_hub": {"log_scalars": {"train/loss": HistoryBuffer()}}}, path)
    finally:
        del sys.modules[hub.__name__]
    return path

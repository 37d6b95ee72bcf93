"""Checkpoints laid out as mmengine's CheckpointHook writes them: beside the state dict,
``meta`` (numpy scalars among plain values) and a ``message_hub`` holding mmengine's
HistoryBuffer objects (numpy arrays inside), under their real module names. mmengine is
not installed where the file is read: its modules exist only while saving."""
from __future__ import annotations

import sys
import types

import numpy as np
import torch

HISTORY_MODULE = "mmengine.logging.history_buffer"


def save_mmengine_checkpoint(path, state_dict, loss_values=(0.5, 0.25), legacy: bool = False):
    """Write ``{"state_dict", "meta", "message_hub"}`` to ``path`` with unimportable objects;
    ``legacy``: in torch's pre-1.6 format (not a zip), as MMAction2's 2020 checkpoints are."""
    names = ["mmengine", "mmengine.logging", HISTORY_MODULE]
    saved = {name: sys.modules.get(name) for name in names}
    modules = {name: types.ModuleType(name) for name in names}

    class HistoryBuffer:
        def __init__(self):
            self._max_length = 1000000
            self._log_history = np.asarray(loss_values, dtype=np.float64)
            self._count_history = np.ones(len(loss_values), dtype=np.int64)

    HistoryBuffer.__module__ = HISTORY_MODULE
    HistoryBuffer.__qualname__ = "HistoryBuffer"
    modules[HISTORY_MODULE].HistoryBuffer = HistoryBuffer
    sys.modules.update(modules)
    try:
        torch.save({"state_dict": state_dict,
                    "meta": {"epoch": 100, "seed": np.int64(0), "mmengine_version": "0.10.4"},
                    "message_hub": {"log_scalars": {"train/loss": HistoryBuffer()}}}, path,
                   _use_new_zipfile_serialization=not legacy)
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
    return path

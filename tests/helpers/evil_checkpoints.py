"""Checkpoints that run code when fully unpickled: each writes ``marker`` if it ever runs.

Every kind a user could be handed: a torch.save zip, torch's pre-1.6 format, a raw pickle,
an MMAction2-like file with the payload in ``meta`` (zip, and pre-1.6 with numpy metadata
before the payload, which a reader learns one global at a time), a payload under an
allow-listed metadata name (mmengine's), a tiny one that is nothing but the payload, and
random bytes.
"""
from __future__ import annotations

import os
import pickle
import sys
import types

import numpy as np
import torch

HISTORY_MODULE = "mmengine.logging.history_buffer"


class Payload:
    """Unpickled, calls ``os.system("touch <marker>")``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class MmengineNamedCall:
    """Pickles as a call of a function named like mmengine metadata
    (``mmengine.logging.history_buffer.HistoryBuffer``) with a shell command: only an
    unpickler that imported and called real code could act on it."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (_fake_mmengine_function(), (f"touch {self.marker}",))


def _fake_mmengine_function():
    for name in ("mmengine", "mmengine.logging", HISTORY_MODULE):
        sys.modules.setdefault(name, types.ModuleType(name))
    module = sys.modules[HISTORY_MODULE]

    def HistoryBuffer(command):  # noqa: N802 - the name mmengine's class has
        os.system(command)

    HistoryBuffer.__module__ = HISTORY_MODULE
    HistoryBuffer.__qualname__ = "HistoryBuffer"
    module.HistoryBuffer = HistoryBuffer
    return HistoryBuffer


def write_all(folder, marker, state_dict) -> dict:
    """name -> path of each malicious checkpoint under ``folder``."""
    os.makedirs(folder, exist_ok=True)
    out = {}

    def path(name):
        out[name] = os.path.join(folder, name + ".pth")
        return out[name]

    torch.save({"model": state_dict, "format": "tsn_dali", "payload": Payload(marker)}, path("zip"))
    torch.save({"model": state_dict, "payload": Payload(marker)}, path("legacy"), _use_new_zipfile_serialization=False)
    with open(path("raw_pickle"), "wb") as f:
        pickle.dump({"state_dict": {k: v.numpy() for k, v in state_dict.items()}, "x": Payload(marker)}, f)
    torch.save({"state_dict": state_dict, "meta": {"epoch": 100, "hook": Payload(marker)}}, path("mmaction_like"))
    torch.save({"state_dict": state_dict, "meta": {"seed": np.int64(0), "best_score": np.float64(0.5),
                                                   "hook": Payload(marker)}},
               path("legacy_mmaction_like"), _use_new_zipfile_serialization=False)
    try:
        torch.save({"state_dict": state_dict, "message_hub": MmengineNamedCall(marker)}, path("mmengine_named"))
    finally:
        for name in ("mmengine", "mmengine.logging", HISTORY_MODULE):
            sys.modules.pop(name, None)
    with open(path("tiny"), "wb") as f:
        pickle.dump(Payload(marker), f)
    with open(path("random_bytes"), "wb") as f:
        f.write(os.urandom(4096))
    return out

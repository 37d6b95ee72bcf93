"""Checkpoints that run code when fully unpickled: each writes ``marker`` if it ever runs.

Every kind a user could be handed: a torch.save zip, torch's pre-1.6 format, a raw pickle,
an MMAction2-like file with the payload in ``meta`` (zip, and pre-1.6 with numpy metadata
before the payload, which a reader learns one global at a time), a payload under an
allow-listed metadata name (mmengine's), a tiny one that is nothing but the payload,
random bytes, and payloads hidden behind ``builtins.getattr`` (the one builtin mmengine's
metadata pickles) in a message_hub as mmengine writes it: ``getattr(os, "system")(...)``,
``getattr(getattr(getattr, "__self__"), "eval")(...)`` and a getattr chain to
``__import__("os").system`` that names no global but getattr.
"""
from __future__ import annotations

import builtins
import io
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


class Call:
    """Pickles as ``func(*args)``; ``func`` may be another Call (a call of what a call returned)."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return (self.func, self.args)

    def __call__(self, *args):  # pickle wants a callable ``func``; never called here
        raise AssertionError("a Call is only pickled")


class _ModulePickler(pickle._Pickler):
    """Pickles a module object (``os``, which plain pickle refuses) by reference, as a
    global of a module that imported it (e.g. ``posixpath.os``)."""

    def reducer_override(self, obj):
        if isinstance(obj, types.ModuleType):
            return obj.__name__
        return NotImplemented


_MODULE_PICKLE = types.SimpleNamespace(Pickler=_ModulePickler, __name__="pickle")


def getattr_payloads(marker) -> dict:
    """name -> object that, fully unpickled, writes ``marker`` through builtins.getattr."""
    command = f"touch {marker}"
    builtins_module = Call(getattr, getattr, "__self__")  # getattr.__self__ is the builtins module
    return {
        "getattr_os_system": Call(Call(getattr, os, "system"), command),
        "getattr_eval": Call(Call(getattr, builtins_module, "eval"), f"__import__('os').system({command!r})"),
        "getattr_import_chain": Call(Call(getattr, Call(Call(getattr, builtins_module, "__import__"), "os"),
                                          "system"), command),
    }


def save_in_message_hub(path, state_dict, payload) -> None:
    """torch.save of a checkpoint with ``payload`` where mmengine keeps its HistoryBuffers."""
    torch.save({"state_dict": state_dict, "meta": {"epoch": 1},
                "message_hub": {"log_scalars": {"train/loss": payload}, "runtime_info": {}}},
               path, pickle_module=_MODULE_PICKLE)


def _fake_mmengine_function():
    for name in ("mmengine", "mmengine.logging", HISTORY_MODULE):
        sys.modules[name] = types.ModuleType(name)
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
    saved = {name: sys.modules.get(name) for name in ("mmengine", "mmengine.logging", HISTORY_MODULE)}
    try:  # the real mmengine, where it is imported, is put back untouched
        torch.save({"state_dict": state_dict, "message_hub": MmengineNamedCall(marker)}, path("mmengine_named"))
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
    with open(path("tiny"), "wb") as f:
        pickle.dump(Payload(marker), f)
    with open(path("random_bytes"), "wb") as f:
        f.write(os.urandom(4096))
    for name, payload in getattr_payloads(marker).items():
        save_in_message_hub(path(name), state_dict, payload)
    return out

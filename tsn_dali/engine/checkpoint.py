"""Checkpoint files: atomic writes, one-line load errors, RNG state, MMAction2 detection.

Format of a tsn_dali checkpoint (a dict; ``torch.load(..., weights_only=True)`` reads it):

    model       state dict of the bare TSN (no DDP/compile prefixes)
    recipe      the resolved recipe, ``Recipe.to_dict()``
    format      "tsn_dali", version 1
    epoch       epochs completed
    step        optimiser steps taken
    loader      ClipLoader.state_dict() of a run stopped mid-epoch, else None
    optimizer, scheduler, scaler (None without fp16), rng, best_top1, world_size,
    batch_size  (per rank), history (per-epoch dicts), meta (torch version, time)

``model`` + ``recipe`` alone (what ``tsn_dali.convert`` writes) is enough for testing.
An MMAction2 checkpoint is ``{'state_dict': {'backbone.*', 'cls_head.fc_cls.*'}, 'meta': ...}``.
"""
from __future__ import annotations

import os
import pickle
import random
import types
import warnings
import zipfile
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from tsn_dali.engine.errors import CheckpointError

FORMAT = "tsn_dali"
VERSION = 1


def save_checkpoint(state: dict, path) -> Path:
    """Write ``state`` to ``path`` atomically: temp file in the same folder, fsync, os.replace.

    On any failure (full disk, permissions) the temp file is removed, the file already at
    ``path`` is left as it was, and CheckpointError is raised.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except (OSError, RuntimeError, pickle.PicklingError) as exc:
        try:
            tmp.unlink()
        except OSError:
            pass
        reason = getattr(exc, "strerror", None) or str(exc).splitlines()[0]
        raise CheckpointError(f"{path}: could not write the checkpoint ({reason}); "
                              "the previous file there is unchanged") from exc
    return path


def link_or_copy(src, dst) -> None:
    """``dst`` as a hard link to ``src`` (a copy where links are not supported), atomically."""
    src, dst = Path(src), Path(dst)
    tmp = dst.with_name(f".{dst.name}.tmp{os.getpid()}")
    try:
        if tmp.exists():
            tmp.unlink()
        try:
            os.link(src, tmp)
        except OSError:
            import shutil
            shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    except OSError as exc:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise CheckpointError(f"{dst}: could not write the checkpoint ({exc.strerror or exc}); "
                              "the previous file there is unchanged") from exc


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load_checkpoint(path, map_location="cpu", allow_pickle: bool = False) -> dict:
    """Read a checkpoint dict; one-line CheckpointError for a missing, truncated or foreign file.

    ``weights_only=True`` first. MMAction2 checkpoints carry pickled mmengine objects in
    ``meta``/``message_hub``; with ``allow_pickle`` such a file is read with full unpickling
    after a warning (only for files you trust).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights_only" not in str(exc):
            raise CheckpointError(f"{path}: not a readable PyTorch checkpoint "
                                  f"({_first_line(exc)})") from None
        if not allow_pickle:
            raise CheckpointError(f"{path}: holds pickled objects beyond tensors, e.g. mmengine's "
                                  f"in an MMAction2 checkpoint ({_first_line(exc)}): pass "
                                  f"--allow-pickle if you trust the file") from None
        warnings.warn(f"{path}: holds pickled objects beyond tensors (an MMAction2 checkpoint?); "
                      "loading it with full unpickling, classes that cannot be imported here "
                      "(mmengine's) as placeholders", stacklevel=2)
        try:
            obj = torch.load(path, map_location=map_location, weights_only=False,
                             pickle_module=_lenient_pickle)
        except Exception as exc2:  # noqa: BLE001 - any unpickling failure is a bad file
            raise CheckpointError(f"{path}: not a readable PyTorch checkpoint "
                                  f"({_first_line(exc2)})") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint, truncated or corrupt "
                              f"({_first_line(exc)})") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a dict checkpoint, got {type(obj).__name__}")
    return obj


class Placeholder:
    """Stands in for a pickled object whose class cannot be imported (e.g. mmengine's
    HistoryBuffer in an MMAction2 checkpoint's ``message_hub``); keeps its state."""

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs

    def __setstate__(self, state):
        self.state = state


class _LenientUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        try:
            return super().find_class(module, name)
        except (ImportError, AttributeError):
            return type(name, (Placeholder,), {"__module__": module})


_lenient_pickle = types.SimpleNamespace(Unpickler=_LenientUnpickler, load=pickle.load,
                                        __name__="tsn_dali_lenient_pickle")


def _first_line(exc: BaseException) -> str:
    text = [t.strip() for t in str(exc).strip().splitlines() if t.strip()]
    for t in text:  # torch's weights_only refusal: the useful line is further down
        if "Unsupported global" in t:
            return t.split(" Please use")[0]
    return text[0] if text else type(exc).__name__


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The bare module under DDP and torch.compile wrappers."""
    while True:
        if hasattr(model, "module") and isinstance(model.module, torch.nn.Module):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


# --------------------------------------------------------------------------- RNG


def rng_state() -> dict:
    """torch (CPU, CUDA), numpy and Python RNG states as tensors and plain types."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"torch": torch.get_rng_state(),
             "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "cached": float(cached)},
             "python": _py_state_to_plain(random.getstate())}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Optional[dict]) -> None:
    if not state:
        return
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached"]))
    random.setstate(_py_state_from_plain(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        cuda = state["cuda"]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)


def _py_state_to_plain(st):
    version, internal, gauss = st
    return [version, list(internal), gauss]


def _py_state_from_plain(st):
    version, internal, gauss = st
    return (version, tuple(internal), gauss)

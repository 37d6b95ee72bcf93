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

import errno
import os
import pickle
import shutil
import random
import re
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from tsn_dali.errors import CheckpointError, one_line
from tsn_dali.models.safe_load import ALLOW_PICKLE_RISK, Inert, inert_class, load_checkpoint  # noqa: F401

FORMAT = "tsn_dali"
VERSION = 1


def save_checkpoint(state: dict, path) -> Path:
    """Write ``state`` to ``path`` atomically: temp file in the same folder, fsync, os.replace.

    On any failure (full disk, permissions) the temp file is removed, the file already at
    ``path`` is left as it was, and CheckpointError is raised. An interrupt (a second Ctrl-C
    while saving) removes the temp file too, then goes on as the interrupt it is.
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
        raise CheckpointError(f"{path}: could not write the checkpoint ({write_failure(exc, state, path.parent)}); "
                              "the previous file there is unchanged") from exc
    except BaseException:  # KeyboardInterrupt, SystemExit: no half-written temp file left behind
        try:
            tmp.unlink()
        except OSError:
            pass
        raise
    return path


def state_bytes(obj) -> int:
    """Bytes of the tensors in a (nested) checkpoint dict: about its size on disk."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(state_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(state_bytes(v) for v in obj)
    return 0


def write_failure(exc: BaseException, state, folder: Path, size: Optional[int] = None) -> str:
    """Why a write failed, in words: a full disk is said as such, with the size needed
    (``size`` bytes, else the tensors of ``state``), whether the OS said ENOSPC or torch's
    writer said only ``[enforce fail at inline_container.cc] ... unexpected pos`` (how it
    reports a short write)."""
    text = str(exc)
    full = getattr(exc, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or (
        "inline_container" in text and ("unexpected pos" in text or "write" in text))
    if full:
        try:
            free = f", {shutil.disk_usage(folder).free / 2 ** 20:.0f} MB free"
        except OSError:
            free = ""
        needed = state_bytes(state) if size is None else size
        return f"no space left on device (needed ~{max(1, round(needed / 2 ** 20))} MB{free})"
    return getattr(exc, "strerror", None) or one_line(exc)


TEMP_PATTERN = re.compile(r"^\.(?P<name>.+\.pth)\.tmp(?P<pid>\d+)$")

# A temp file whose writer's pid is running and that changed this recently may be a write in
# progress (another run in the same work dir): left alone. Older, it is an orphan whose pid
# was reused (a container restarted numbers its processes from 1 again).
LIVE_WRITE_SECONDS = 600.0


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, another user's
        return True
    return True


def _being_written(tmp: Path, pid: int) -> bool:
    if not _alive(pid):
        return False
    try:
        return time.time() - tmp.stat().st_mtime < LIVE_WRITE_SECONDS
    except OSError:
        return False


def _progress(ckpt: dict) -> tuple:
    return int(ckpt.get("epoch") or 0), int(ckpt.get("step") or 0)


def recover_temp_checkpoints(work_dir) -> list:
    """Temp files a killed write left in ``work_dir`` (``.<name>.pth.tmp<pid>`` of a process
    no longer running): a complete ``latest.pth`` temp that verifies (reads as a tsn_dali
    training checkpoint, weights only) and is further on than ``latest.pth`` is promoted
    to it; every other temp file is removed. A temp file its writer may still be writing
    (its pid running, changed in the last LIVE_WRITE_SECONDS) is left alone. Returns one
    line per file, saying which."""
    folder = Path(work_dir)
    lines = []
    if not folder.is_dir():
        return lines
    for tmp in sorted(folder.iterdir()):
        match = TEMP_PATTERN.match(tmp.name)
        if not match or not tmp.is_file():
            continue
        if _being_written(tmp, int(match.group("pid"))):
            lines.append(f"{tmp}: left alone (process {match.group('pid')} is running and may be writing it)")
            continue
        final = folder / match.group("name")
        verdict = "removed"
        if final.name == "latest.pth":
            refused = None
            try:
                ckpt = load_checkpoint(tmp)
                complete = ckpt.get("format") == FORMAT and all(k in ckpt for k in ("model", "optimizer", "epoch"))
            except CheckpointError as err:
                ckpt, complete = None, False
                said = str(err).split(": ", 1)[-1]
                refused = said.split("; refused (", 1)[0] if "; refused (" in said else None
            if complete:
                try:
                    newer = not final.is_file() or _progress(ckpt) > _progress(load_checkpoint(final))
                except CheckpointError:  # latest.pth itself unreadable: the temp is better
                    newer = True
                if newer:
                    os.replace(tmp, final)
                    _fsync_dir(folder)
                    lines.append(f"{tmp}: a complete checkpoint a stopped write left (epoch {_progress(ckpt)[0]}, "
                                 f"step {_progress(ckpt)[1]}): promoted to {final}")
                    continue
                verdict = f"removed (complete, but not further on than {final})"
            elif refused:
                verdict = f"refused, as it carries code (it {refused}): removed, never loaded"
            else:
                verdict = "removed (incomplete: its write was stopped)"
        tmp.unlink(missing_ok=True)
        lines.append(f"{tmp}: a temp file a stopped write left: {verdict}")
    return lines


def link_or_copy(src, dst) -> None:
    """``dst`` as a hard link to ``src`` (a copy where links are not supported), atomically;
    a failure is one CheckpointError line (a full disk said as such, with ``src``'s size)."""
    src, dst = Path(src), Path(dst)
    tmp = dst.with_name(f".{dst.name}.tmp{os.getpid()}")
    try:
        if tmp.exists():
            tmp.unlink()
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    except OSError as exc:
        try:
            tmp.unlink()
        except OSError:
            pass
        try:
            size = src.stat().st_size
        except OSError:
            size = 0
        raise CheckpointError(f"{dst}: could not write the checkpoint ({write_failure(exc, None, dst.parent, size)}); "
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

"""Reading checkpoint files without running code from them.

``torch.load(weights_only=True)`` reads tensors and plain containers only. MMAction2 and
mmpretrain files also pickle their metadata (mmengine's HistoryBuffer and ConfigDict,
numpy arrays and scalars, and since mmengine 0.7.3 (April 2023) a ``builtins.getattr``
call per HistoryBuffer statistic, ``getattr(HistoryBuffer, 'mean')``): each such global
becomes an inert stand-in (``Inert``), never imported or called; the stand-in for getattr
reads no attribute of anything. What a file builds from them (``meta``, ``message_hub``,
``optimizer``, ``param_schedulers``) is inert data. Calling an object the file built itself
(the result of a getattr, e.g. ``getattr(getattr(getattr, '__self__'), 'eval')(...)``) is
refused by torch's weights-only unpickler: only allow-listed globals are called. A file
naming any other global (``os.system``, ``builtins.eval``, a class of someone's code) is
refused with its name. Full unpickling only with ``allow_pickle`` (the commands'
``--allow-pickle``), after one line naming the risk.
"""
from __future__ import annotations

import pickle
import re
import sys
import types
import warnings
import zipfile
from pathlib import Path

import torch

from tsn_dali.errors import CheckpointError, one_line

# Modules whose pickled objects MMAction2 (mmengine's CheckpointHook) and mmpretrain put
# beside the weights: ``meta`` and ``message_hub`` (HistoryBuffer, ConfigDict, numpy arrays,
# scalars and dtypes). Read without ``--allow-pickle``, each such class or function becomes
# an inert stand-in (``Inert``): nothing of theirs is imported or called.
METADATA_MODULES = ("mmengine.", "mmcv.", "mmaction.", "mmpretrain.", "mmcls.", "numpy.")

# Builtins such metadata pickles, read as inert stand-ins too: mmengine >= 0.7.3's
# HistoryBuffer.__getstate__ keeps its statistics methods, which pickle as
# ``getattr(HistoryBuffer, 'min')`` (mmengine/logging/history_buffer.py). The stand-in
# records (object, name) and reads no attribute; its result cannot be called (weights-only
# unpickling calls allow-listed globals only).
INERT_BUILTINS = ("builtins.getattr",)


def inert_name(name: str) -> bool:
    """Whether a global ``name`` a file names is read as an inert stand-in."""
    return name.startswith(METADATA_MODULES) or name in INERT_BUILTINS

ALLOW_PICKLE_RISK = ("full unpickling runs whatever code the file names: use --allow-pickle only "
                     "for a file whose origin you trust")


def load_checkpoint(path, map_location="cpu", allow_pickle: bool = False) -> dict:
    """Read a checkpoint dict; one-line CheckpointError for a missing, truncated, foreign or
    unsafe file. Never runs code from the file unless ``allow_pickle``.

    ``torch.load(weights_only=True)``, with each global the file names from
    ``METADATA_MODULES`` or ``INERT_BUILTINS`` (MMAction2's metadata) mapped to an inert
    stand-in; a file naming any other global (``os.system``, ``builtins.eval``, a class of
    someone's code) is refused with its name, and one that calls what it built itself (a
    getattr's result) is refused as such. ``allow_pickle`` (the commands' ``--allow-pickle``) reads with full
    unpickling after one line on stderr naming the risk: trusted files only.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    if allow_pickle:
        print(f"warning: {path}: reading with full unpickling (--allow-pickle); {ALLOW_PICKLE_RISK}",
              file=sys.stderr, flush=True)
        return _checked(path, _load(path, map_location, weights_only=False, pickle_module=_lenient_pickle))
    foreign = _foreign_globals(path)
    refused = [name for name in foreign if not inert_name(name)]
    if refused:
        more = f" and {len(refused) - 1} more" if len(refused) > 1 else ""
        raise CheckpointError(f"{path}: names {_short(refused[0])}{more}, which loading would import and "
                              f"may call; refused ({ALLOW_PICKLE_RISK})")
    for _ in range(MAX_LEGACY_GLOBALS):
        try:
            with torch.serialization.safe_globals([(inert_class(name), name) for name in foreign]):
                return _checked(path, _load(path, map_location, weights_only=True))
        except _MetadataGlobal as named:  # torch's pre-1.6 format: no listing, learnt one at a time
            foreign.append(named.name)
    raise CheckpointError(f"{path}: names over {MAX_LEGACY_GLOBALS} metadata classes; refused ({ALLOW_PICKLE_RISK})")


# A file in torch's pre-1.6 format (MMAction2's 2020 checkpoints) cannot be listed without
# unpickling: each metadata global it names is learnt from weights-only loading's refusal and
# the load retried, at most this many times.
MAX_LEGACY_GLOBALS = 32


class _MetadataGlobal(Exception):
    """Weights-only loading met a global read as a stand-in (``inert_name``), not yet mapped."""

    def __init__(self, name: str):
        super().__init__(name)
        self.name = name


def _foreign_globals(path: Path) -> list:
    """The globals a checkpoint's pickle names beyond torch's weights-only allow-list, read
    from its opcodes without unpickling. [] for a file in torch's pre-1.6 format or not a
    zip at all: weights-only loading then refuses any global by itself (one that
    ``inert_name`` admits is then mapped and the load retried)."""
    try:
        return list(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
    except Exception:  # noqa: BLE001 - not a zip checkpoint: torch.load says what it is
        return []


def _load(path: Path, map_location, weights_only: bool, pickle_module=None):
    kwargs = {"pickle_module": pickle_module} if pickle_module is not None else {}
    try:
        with warnings.catch_warnings():  # torch's note on a pickle protocol: not the user's business
            warnings.filterwarnings("ignore", message=".*pickle protocol", category=UserWarning)
            return torch.load(path, map_location=map_location, weights_only=weights_only, **kwargs)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        named = re.search(r"GLOBAL (\S+)", text)
        name = _global_name(named.group(1)) if named else None
        if weights_only and name and inert_name(name):
            raise _MetadataGlobal(name) from None
        if weights_only and name:
            raise CheckpointError(f"{path}: names {_short(name)}, which loading would import and "
                                  f"may call; refused ({ALLOW_PICKLE_RISK})") from None
        if weights_only and any(words in text for words in _SELF_BUILT_CALLS):
            raise CheckpointError(f"{path}: calls or builds an object of its own making (e.g. what a "
                                  f"getattr returned), which loading would run; refused "
                                  f"({ALLOW_PICKLE_RISK})") from None
        if weights_only and "weights_only" in text:
            raise CheckpointError(f"{path}: not a PyTorch checkpoint that loads without running code (a plain "
                                  f"pickle or other bytes); refused ({ALLOW_PICKLE_RISK})") from None
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({_first_line(exc)})") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError, AttributeError, TypeError,
            ImportError, IndexError, KeyError) as exc:
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint, truncated or corrupt "
                              f"({_first_line(exc)})") from None


# torch's weights-only refusals of a REDUCE / NEWOBJ / BUILD on an object that is not an
# allow-listed global (torch/_weights_only_unpickler.py)
_SELF_BUILT_CALLS = ("call reduce for unrecognized function", "Can only create new object",
                     "Can only build Tensor")


def _global_name(text: str) -> str:
    """A global's full name as torch's refusal writes it: builtins without their module
    (``GLOBAL getattr``), everything else in full."""
    return text if "." in text else "builtins." + text


def _checked(path: Path, obj) -> dict:
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a dict checkpoint, got {type(obj).__name__}")
    return obj


def _short(text: str, limit: int = 80) -> str:
    """``text`` as one printable line of at most ``limit`` characters (a name read from a
    file may hold anything)."""
    text = "".join(c if c.isprintable() else "?" for c in str(text))
    return text if len(text) <= limit else text[:limit - 3] + "..."


class _InertType(type):
    def __repr__(cls):
        return f"<inert class {cls._name}>"


class Inert(metaclass=_InertType):
    """What a metadata object of a checkpoint becomes when read without --allow-pickle: it
    keeps the arguments and state it was built with, and does nothing else."""

    _name = "Inert"

    def __new__(cls, *args, **kwargs):
        obj = object.__new__(cls)
        obj.args, obj.kwargs = args, kwargs
        return obj

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        self.state = state

    def __repr__(self):
        return f"<inert {self._name}>"


class InertGetattr(Inert):
    """``builtins.getattr`` as a checkpoint names it: ``InertGetattr(obj, name)`` is an inert
    record of the two (``.args``); no attribute of ``obj`` or of anything else is read."""

    _name = "builtins.getattr"

    def __repr__(self):
        if len(self.args) >= 2:
            return f"<inert getattr({self.args[0]!r}, {_short(repr(self.args[1]), 40)})>"
        return "<inert getattr>"


_INERT: dict = {"builtins.getattr": InertGetattr}


def inert_class(name: str) -> type:
    """One Inert subclass per global name (so the unpickler can tell them apart), cached."""
    if name not in _INERT:
        _INERT[name] = type(name.rpartition(".")[2] or "Inert", (Inert,), {"_name": name})
    return _INERT[name]


class Placeholder:
    """Stands in, under --allow-pickle, for a pickled object whose class cannot be imported
    (e.g. mmengine's HistoryBuffer where mmengine is not installed); keeps its state."""

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
    return one_line(exc)



__all__ = ["ALLOW_PICKLE_RISK", "INERT_BUILTINS", "Inert", "InertGetattr", "METADATA_MODULES", "inert_class",
           "inert_name", "load_checkpoint"]

"""Executors carry out ClipPlans: ``build_executor(name, ...)`` picks one.

``reference``: torch DataLoader + decord/PyAV + MMAction2-style transforms (reference.py).
``dali-cpu`` / ``dali-gpu``: the DALI graph on CPU, or NVDEC + GPU ops (dali.py, imported
only when asked for, so that DALI is not needed for the reference path).
``auto``: dali-gpu where CUDA is there and DALI's mixed video decoder can be built,
else dali-cpu; reference (with a warning) where DALI cannot be imported.
"""
from __future__ import annotations

import functools
import warnings
from typing import Optional

import torch

from tsn_dali.data.executors.reference import ReferenceExecutor

EXECUTORS = ("auto", "dali-gpu", "dali-cpu", "reference")
DECODES = ("native", "mmaction")  # loader.decode: DALI decodes what it can | decord decodes all


def _dali_importable() -> Optional[str]:
    """None where DALI and our DALI executor import; else the reason they do not."""
    try:
        import nvidia.dali  # noqa: F401
        from tsn_dali.data.executors import dali  # noqa: F401
    except Exception as exc:  # ImportError, or a broken DALI install
        return f"{type(exc).__name__}: {exc}"
    return None


@functools.lru_cache(maxsize=None)
def mixed_decoder_available(device_id: int = 0) -> bool:
    """Whether DALI's 'mixed' (NVDEC) video decoder can be built on this machine."""
    if not torch.cuda.is_available():
        return False
    try:
        from nvidia.dali import fn, pipeline_def, types

        @pipeline_def(batch_size=1, num_threads=1, device_id=device_id)
        def probe():
            encoded = fn.external_source(name="encoded", dtype=types.UINT8, ndim=1)
            return fn.experimental.decoders.video(encoded, device="mixed")

        pipe = probe()
        pipe.build()
        del pipe
        return True
    except Exception:
        return False


def resolve_executor_name(name: str, device="cpu") -> str:
    """``auto`` -> the executor this machine can run; other names are checked and returned."""
    if name not in EXECUTORS:
        raise ValueError(f"loader.executor: unknown executor {name!r}; expected one of {', '.join(EXECUTORS)}")
    if name != "auto":
        return name
    reason = _dali_importable()
    if reason is not None:
        warnings.warn(f"loader.executor auto: DALI not usable ({reason}); using the reference executor",
                      stacklevel=3)
        return "reference"
    dev = torch.device(device)
    if dev.type == "cuda" and mixed_decoder_available(dev.index or 0):
        return "dali-gpu"
    return "dali-cpu"


def build_executor(name: str, *, device="cpu", num_threads: int = 4, decode_workers: int = 4,
                   prefetch: int = 2, reference_workers: Optional[int] = None,
                   filename_tmpl: str = "img_{:05}.jpg", decode: str = "native"):
    """An executor by name: 'dali-gpu' | 'dali-cpu' | 'reference' | 'auto'.

    ``device`` is where the rendered batches should land (``auto`` picks dali-gpu only
    for a CUDA device). ``reference_workers`` is the reference executor's DataLoader
    worker count (default ``decode_workers``); ``filename_tmpl`` names rawframe files.
    ``decode``: "native" (DALI decodes the codecs its decoder reads) or "mmaction" (every
    video decoded with decord, as MMAction2's DecordDecode, and fed to DALI as frames; the
    reference executor always decodes so).
    """
    if decode not in DECODES:
        raise ValueError(f"loader.decode: {decode!r}; expected one of {', '.join(DECODES)}")
    resolved = resolve_executor_name(name, device)
    if resolved == "reference":
        workers = decode_workers if reference_workers is None else reference_workers
        return ReferenceExecutor(device=device, workers=workers, filename_tmpl=filename_tmpl)
    from tsn_dali.data.executors.dali import DaliExecutor  # lazy: DALI only when asked for

    if resolved == "dali-gpu":
        dev = torch.device(device)
        if dev.type != "cuda":
            dev = torch.device("cuda", torch.cuda.current_device() if torch.cuda.is_available() else 0)
        return DaliExecutor(device=str(dev) if dev.index else "cuda", num_threads=num_threads,
                            decode_workers=decode_workers, prefetch=prefetch, decode=decode)
    return DaliExecutor(device="cpu", num_threads=num_threads, decode_workers=decode_workers,
                        prefetch=prefetch, decode=decode)


__all__ = ["DECODES", "EXECUTORS", "ReferenceExecutor", "build_executor", "mixed_decoder_available",
           "resolve_executor_name"]

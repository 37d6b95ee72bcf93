"""Executors carry out ClipPlans: ``build_executor(name, ...)`` picks one.

``reference``: torch DataLoader + decord/PyAV + MMAction2-style transforms (reference.py).
``dali-cpu`` / ``dali-gpu``: the DALI graph on CPU, or NVDEC + GPU ops (dali.py, imported
only when asked for, so that DALI is not needed for the reference path).
``auto``: dali-gpu where CUDA is there and NVDEC decodes a test clip (else dali-cpu;
reference, with a warning, where DALI cannot be imported); on a CPU device the fastest CPU
loader measured (docs/measurements.md): the reference executor decoding only the GOPs a
clip needs and resizing in uint8 with OpenCV, for every view. The contract every executor
keeps is ``base.Executor``.
"""
from __future__ import annotations

import functools
import warnings
from typing import Optional

import torch

from tsn_dali.config import EXECUTORS  # the one list of executor names
from tsn_dali.errors import UsageError
from tsn_dali.data.render.executors.base import DECODES, Executor
from tsn_dali.data.render.executors.reference import ReferenceExecutor


def _dali_importable() -> Optional[str]:
    """None where DALI and our DALI executor import; else the reason they do not."""
    try:
        import nvidia.dali  # noqa: F401
        from tsn_dali.data.render.executors import dali  # noqa: F401
    except Exception as exc:  # ImportError, or a broken DALI install
        return f"{type(exc).__name__}: {exc}"
    return None


@functools.lru_cache(maxsize=None)
def nvdec_unusable(device_id: Optional[int] = 0) -> Optional[str]:
    """None where DALI's mixed (NVDEC) decoder really decodes a tiny H.264 or VP9 clip on
    this GPU (building one proves nothing: libnvcuvid loads at the first decode); else
    the reason, one line. Asked once per process and GPU."""
    if not torch.cuda.is_available():
        return "no CUDA device"
    from tsn_dali.data.render.executors.nvdec import nvdec_works

    return nvdec_works(torch.cuda.current_device() if device_id is None else device_id)


def cuda_pairing(torch_cuda: Optional[str], dali_cuda: Optional[int]) -> Optional[str]:
    """None where torch's CUDA build (``torch.version.cuda``, e.g. '13.0') and DALI's
    (``nvidia.dali.__cuda_version__``, e.g. 12986) have the same major version, or one is
    unknown; else the one-line advice of docs/data_path.md, "DALI and CUDA"."""
    try:
        torch_major = int(str(torch_cuda).split(".")[0])
        dali_major = int(dali_cuda) // 1000
    except (TypeError, ValueError):
        return None
    if torch_major == dali_major:
        return None
    return (f"DALI is built for CUDA {dali_major} and torch for CUDA {torch_major}: install "
            f"nvidia-dali-cuda{torch_major}0 in place of nvidia-dali-cuda{dali_major}0 (docs/data_path.md: DALI and CUDA)")


def _warn_cuda_pairing() -> None:
    import nvidia.dali

    advice = cuda_pairing(torch.version.cuda, getattr(nvidia.dali, "__cuda_version__", None))
    if advice is not None:
        warnings.warn(advice, stacklevel=3)


def resolve_executor_name(name: str, device="cpu") -> str:
    """``auto`` -> the executor this machine can run; other names are checked and returned.

    ``auto``: on a CPU device the reference executor (``build_executor`` gives it its fast
    settings: the fastest CPU loader measured, ahead of dali-cpu on every view); on a CUDA
    device dali-gpu where NVDEC decodes a test clip, else dali-cpu (saying why, in one
    line); reference where DALI cannot be imported.
    """
    if name not in EXECUTORS:
        raise ValueError(f"loader.executor: unknown executor {name!r}; expected one of {', '.join(EXECUTORS)}")
    if name != "auto":
        return name
    if torch.device(device).type != "cuda":
        return "reference"
    reason = _dali_importable()
    if reason is not None:
        warnings.warn(f"loader.executor auto: DALI not usable ({reason}); using the reference executor",
                      stacklevel=3)
        return "reference"
    dev = torch.device(device)
    why = nvdec_unusable(dev.index)  # None: the current device (cuda:0 is device 0)
    if why is None:
        return "dali-gpu"
    warnings.warn(f"loader.executor auto: NVDEC did not decode a test clip ({why}); using dali-cpu",
                  stacklevel=3)
    return "dali-cpu"


def build_executor(name: str, *, device="cpu", num_threads: int = 4, decode_workers: int = 4,
                   decode_sessions: int = 16, slice_gops: bool = True, decode: str = "native",
                   reference_workers: Optional[int] = None, filename_tmpl: str = "img_{:05}.jpg",
                   cpu_decoder: Optional[str] = None, resize: Optional[str] = None):
    """An executor by name: 'dali-gpu' | 'dali-cpu' | 'reference' | 'auto'.

    ``device`` is where the rendered batches should land (``auto`` picks dali-gpu only
    for a CUDA device). ``reference_workers`` is the reference executor's DataLoader
    worker count (default ``decode_workers``); ``decode_sessions``, ``slice_gops`` and
    ``decode`` are the DALI executors' (DaliExecutor); ``filename_tmpl`` names rawframe
    files. ``cpu_decoder`` (gops | auto | decord | pyav) decodes outside DALI (the reference
    executor, dali-cpu's frames path; executors/cpu.py), ``resize`` (uint8 | float) is the
    reference executor's; None: each executor's default (the reference executor's is the
    exact oracle, decord and float; ``auto`` builds it with gops and uint8).
    """
    if decode not in DECODES:
        raise ValueError(f"loader.decode: {decode!r}; expected one of {', '.join(DECODES)}")
    resolved = resolve_executor_name(name, device)
    if resolved == "reference":
        workers = decode_workers if reference_workers is None else reference_workers
        fast = name == "auto"  # the fastest CPU loader; the reference by name stays the exact oracle
        return ReferenceExecutor(device=device, workers=workers, filename_tmpl=filename_tmpl,
                                 decoder=cpu_decoder or ("gops" if fast else "auto"),
                                 resize=resize or ("uint8" if fast else "float"))
    from tsn_dali.data.render.executors.dali import DaliExecutor  # lazy: DALI only when asked for

    dali_device = "cpu"
    if resolved == "dali-gpu":
        if not torch.cuda.is_available():
            raise UsageError("loader.executor dali-gpu: this machine has no CUDA device torch can use; "
                             "use dali-cpu, reference or auto")
        _warn_cuda_pairing()
        dev = torch.device(device)
        if dev.type != "cuda" or dev.index is None:  # cuda:0 is device 0, not "the current one"
            dev = torch.device("cuda", torch.cuda.current_device())
        dali_device = str(dev)
    return DaliExecutor(device=dali_device, num_threads=num_threads, decode_workers=decode_workers,
                        decode_sessions=decode_sessions, slice_gops=slice_gops, decode=decode,
                        filename_tmpl=filename_tmpl, **({"cpu_decoder": cpu_decoder} if cpu_decoder else {}))


__all__ = ["DECODES", "EXECUTORS", "Executor", "ReferenceExecutor", "build_executor", "cuda_pairing",
           "nvdec_unusable", "resolve_executor_name"]

"""What the figures were measured on, and NVDEC's utilisation while they were (torch is imported
where a device is asked about: ``cpu_name`` alone costs nothing)."""
from __future__ import annotations

import datetime
import os
import platform
import re
import shlex
import threading
import time
from typing import TYPE_CHECKING, List, Optional, Sequence

from tsn_dali.errors import one_line

if TYPE_CHECKING:  # annotations only
    import torch


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def version(module: str) -> Optional[str]:
    try:
        mod = __import__(module, fromlist=["__version__"])
        return str(getattr(mod, "__version__", "unknown"))
    except Exception:
        return None


def environment(device: torch.device, argv: Sequence[str]) -> dict:
    """Device name, CPU count, library versions, date and the command line."""
    import torch

    cuda = device.type == "cuda"
    return {
        "device": torch.cuda.get_device_name(device) if cuda else cpu_name(),
        "device_type": device.type,
        "cpu_name": cpu_name(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "load_average_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda if cuda else None,
        "dali": version("nvidia.dali"),
        "timm": version("timm"),
        "torchvision": version("torchvision"),
        "pyav": version("av"),
        "decord": version("decord"),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": "python -m tsn_dali.bench " + " ".join(shlex.quote(a) for a in argv),
    }


def device_slug(device: torch.device) -> str:
    """'cpu', or the GPU's name in lower case with dashes (e.g. 'nvidia-h100-80gb-hbm3')."""
    if device.type != "cuda":
        return "cpu"
    import torch

    return re.sub(r"[^a-z0-9]+", "-", torch.cuda.get_device_name(device).lower()).strip("-")


def nvml_device(torch_index: int, visible: Optional[str] = None, uuid: Optional[str] = None):
    """How NVML names torch's CUDA device ``torch_index``: its UUID where torch gives one
    (``"GPU-..."``), else the ``torch_index``-th entry of ``CUDA_VISIBLE_DEVICES`` (an NVML
    index, or a UUID), else ``torch_index``. NVML counts every GPU of the machine and
    ignores CUDA_VISIBLE_DEVICES; torch counts only the visible ones, so index 0 of a
    process given GPU 3 is NVML's 3."""
    if uuid:
        return uuid if uuid.startswith(("GPU-", "MIG-")) else f"GPU-{uuid}"
    entries = [e.strip() for e in (visible or "").split(",") if e.strip()]
    if torch_index < len(entries):
        entry = entries[torch_index]
        return int(entry) if entry.isdigit() else entry
    return torch_index


def _torch_uuid(device: torch.device) -> Optional[str]:
    import torch

    try:
        return str(torch.cuda.get_device_properties(device).uuid)
    except Exception:  # an old torch, or no CUDA
        return None


def _nvml_handle(nvml, name):
    return nvml.nvmlDeviceGetHandleByUUID(name) if isinstance(name, str) else nvml.nvmlDeviceGetHandleByIndex(name)


def _import_nvml():
    try:
        import pynvml  # nvidia-ml-py
    except ImportError:
        return None
    return pynvml


class DecoderMonitor:
    """NVDEC utilisation read through NVML (nvidia-ml-py's ``pynvml``,
    ``nvmlDeviceGetDecoderUtilization``) every ``interval`` seconds while in use (``with
    DecoderMonitor(device) as m: ...; m.summary(spans)``), each sample timed as it is
    read. Nothing where the device is not CUDA; where NVML cannot be used, ``unavailable``
    says why. ``nvml``: the module (tests pass a stand-in)."""

    def __init__(self, device: torch.device, interval: float = 0.1, nvml=None):
        self.device, self.interval, self._nvml = device, float(interval), nvml
        self.samples: List[tuple] = []  # (time, percent)
        self.unavailable: Optional[str] = None
        self._stop = threading.Event()
        self._thread = None
        self._nvml_in_use = None

    def __enter__(self):
        if self.device.type != "cuda":
            return self
        nvml = self._nvml or _import_nvml()
        if nvml is None:
            self.unavailable = "NVDEC utilisation not read: nvidia-ml-py (pynvml) is not installed"
            return self
        self._nvml_in_use = None
        try:
            nvml.nvmlInit()
            self._nvml_in_use = nvml
            import torch

            index = self.device.index if self.device.index is not None else torch.cuda.current_device()
            visible = os.environ.get("CUDA_VISIBLE_DEVICES")
            try:
                handle = _nvml_handle(nvml, nvml_device(index, visible, _torch_uuid(self.device)))
            except Exception:  # a UUID NVML does not know: CUDA_VISIBLE_DEVICES, then the index
                handle = _nvml_handle(nvml, nvml_device(index, visible))
            nvml.nvmlDeviceGetDecoderUtilization(handle)  # fails here, not in the thread
        except Exception as exc:  # no driver library, a sandbox without NVML
            self.unavailable = f"NVDEC utilisation not read: NVML: {one_line(exc, named=True)}"
            self.__exit__()
            return self
        self._thread = threading.Thread(target=self._poll, args=(nvml, handle), daemon=True,
                                        name="tsn_dali-nvml")
        self._thread.start()
        return self

    def _poll(self, nvml, handle) -> None:
        while not self._stop.wait(self.interval):
            try:
                percent, _period_us = nvml.nvmlDeviceGetDecoderUtilization(handle)
            except Exception as exc:
                self.unavailable = f"NVDEC utilisation stopped: NVML: {one_line(exc, named=True)}"
                return
            self.samples.append((time.time(), float(percent)))

    def __exit__(self, *exc):
        if self._thread is not None:
            self._stop.set()
            self._thread.join(timeout=5)
            self._thread = None
        nvml, self._nvml_in_use = getattr(self, "_nvml_in_use", None), None
        if nvml is not None:
            try:
                nvml.nvmlShutdown()
            except Exception:
                pass

    def summary(self, spans=None) -> Optional[dict]:
        """Mean and max NVDEC utilisation (percent) over the samples (those taken within one
        of ``spans``, (start, end) times, where given), or None."""
        values = [v for t, v in self.samples if spans is None or any(a <= t <= b for a, b in spans)]
        if not values:
            return None
        return {"mean": sum(values) / len(values), "max": max(values), "samples": len(values)}


__all__ = ["DecoderMonitor", "cpu_name", "device_slug", "environment", "nvml_device", "version"]

"""What the figures were measured on, and NVDEC's utilisation while they were."""
from __future__ import annotations

import datetime
import os
import platform
import re
import shlex
import shutil
import subprocess
import threading
import time
from typing import List, Optional, Sequence

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
    return re.sub(r"[^a-z0-9]+", "-", torch.cuda.get_device_name(device).lower()).strip("-")


def parse_dmon(lines: Sequence[str]) -> List[float]:
    """The ``dec`` column (NVDEC utilisation, percent) of ``nvidia-smi dmon -s u`` output."""
    column, out = None, []
    for line in lines:
        fields = line.split()
        if line.startswith("#"):
            names = [f for f in fields[1:]]
            if "dec" in names:
                column = names.index("dec")
            continue
        if column is not None and len(fields) > column:
            try:
                out.append(float(fields[column]))
            except ValueError:
                pass  # "-": not reported
    return out


class DecoderMonitor:
    """NVDEC utilisation sampled once a second by ``nvidia-smi dmon -s u`` while in use
    (``with DecoderMonitor(device) as m: ...; m.summary()``); nothing where there is no
    GPU or no nvidia-smi."""

    def __init__(self, device: torch.device):
        self.device = device
        self.lines: List[str] = []
        self._proc = None
        self._thread = None

    def __enter__(self):
        tool = shutil.which("nvidia-smi")
        if self.device.type == "cuda" and tool:
            index = self.device.index if self.device.index is not None else torch.cuda.current_device()
            self._proc = subprocess.Popen([tool, "dmon", "-s", "u", "-d", "1", "-i", str(index)],
                                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            self._thread = threading.Thread(target=self._read, daemon=True)
            self._thread.start()
        return self

    def _read(self):
        for line in self._proc.stdout:
            self.lines.append((time.time(), line))

    def __exit__(self, *exc):
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(timeout=5)
            self._thread.join(timeout=5)

    def summary(self, spans=None) -> Optional[dict]:
        """Mean and max NVDEC utilisation (percent) over the samples (those taken within one
        of ``spans``, (start, end) times, where given), or None."""
        lines = [line for t, line in self.lines
                 if spans is None or line.startswith("#") or any(a <= t <= b for a, b in spans)]
        values = parse_dmon(lines)
        if not values:
            return None
        return {"mean": sum(values) / len(values), "max": max(values), "samples": len(values)}


__all__ = ["DecoderMonitor", "cpu_name", "device_slug", "environment", "parse_dmon", "version"]

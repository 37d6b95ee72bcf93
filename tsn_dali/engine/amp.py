"""Mixed precision per device: ``train.amp`` (``auto`` | ``bf16`` | ``fp16`` | ``off``) resolved
to what autocast runs, by ``resolve_amp``, the one rule train, test and bench share.

``auto`` (the default):
- CUDA: bf16 where the GPU computes it natively (compute capability 8.0 and later: Ampere,
  Hopper, ...; ROCm: ``torch.cuda.is_bf16_supported()``), else fp16 with a GradScaler.
- CPU: bf16 where the CPU has bf16 instructions (x86 AVX512-BF16 or AMX-BF16, Arm BF16)
  and torch's oneDNN runs bf16 (``torch.ops.mkldnn._is_mkldnn_bf16_supported()``), else
  off. Without them autocast emulates bf16: a ResNet-18 training step ran 20x slower than
  float32 on an AVX2-only AMD EPYC.
- any other device: off.

An explicit value is kept as written; where it will be slow (bf16 on a CPU or GPU without
native bf16, fp16 on a CPU) the choice carries a one-line warning for the caller to print.
"""
from __future__ import annotations

import platform
from dataclasses import dataclass
from typing import Optional

import torch

AMP_MODES = ("bf16", "fp16", "off")  # what autocast runs (tsn_dali.engine.step.AMP_DTYPES)
AMP_CHOICES = ("auto",) + AMP_MODES  # what a recipe, --amp or --set may say
CPUINFO = "/proc/cpuinfo"  # the kernel's CPU flags (Linux), read where torch cannot tell


@dataclass(frozen=True)
class AmpChoice:
    """``amp``: bf16 | fp16 | off; ``reason``: why, in a few words; ``warning``: a one-line
    warning where an explicit value will be slow, else None."""

    amp: str
    reason: str
    warning: Optional[str] = None

    def describe(self) -> str:
        return f"{self.amp} ({self.reason})"


def cpu_capabilities() -> dict:
    """The CPU's instruction-set flags: torch.cpu.get_capabilities() where torch has it, else
    the flags of /proc/cpuinfo (Linux), else only the architecture."""
    get = getattr(torch.cpu, "get_capabilities", None)
    if get is not None:
        try:
            return dict(get())
        except Exception:  # an unusual build: fall back to the kernel's view
            pass
    caps = {"architecture": platform.machine()}
    try:
        with open(CPUINFO, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                name, _, value = line.partition(":")
                if name.strip() in ("flags", "Features"):
                    caps.update({flag: True for flag in value.split()})
                    break
    except OSError:
        pass
    return caps


def _mkldnn_bf16() -> bool:
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except Exception:  # torch built without oneDNN
        return False


def cpu_bf16_feature() -> Optional[str]:
    """The CPU feature that runs bf16 natively ("AMX-BF16", "AVX512-BF16", "Arm BF16"), or None
    where bf16 would be emulated (or torch's oneDNN cannot run it)."""
    caps = cpu_capabilities()
    arch = str(caps.get("architecture", platform.machine())).lower()
    if arch in ("x86_64", "amd64", "x86", "i686"):
        feature = ("AMX-BF16" if caps.get("amx_bf16") else
                   "AVX512-BF16" if caps.get("avx512_bf16") else None)
    elif arch in ("aarch64", "arm64"):
        feature = "Arm BF16" if caps.get("bf16") or caps.get("sve_bf16") else None
    else:
        feature = None
    return feature if feature and _mkldnn_bf16() else None


def cuda_bf16_native(device: torch.device) -> bool:
    """Whether the GPU computes bf16 natively (compute capability 8.0+; ROCm: torch's check)."""
    if getattr(torch.version, "hip", None):
        return bool(torch.cuda.is_bf16_supported())
    index = device.index if device.index is not None else torch.cuda.current_device()
    return torch.cuda.get_device_capability(index)[0] >= 8


def _cuda_name(device: torch.device) -> str:
    index = device.index if device.index is not None else torch.cuda.current_device()
    major, minor = torch.cuda.get_device_capability(index)
    return f"GPU sm_{major}{minor}"


def resolve_amp(requested: str, device) -> AmpChoice:
    """``requested`` (auto | bf16 | fp16 | off) on ``device`` -> AmpChoice (rule: module docstring)."""
    if requested not in AMP_CHOICES:
        raise ValueError(f"train.amp: {requested!r}; expected one of {', '.join(AMP_CHOICES)}")
    device = torch.device(device)
    if device.type == "cuda":
        native, what = cuda_bf16_native(device), _cuda_name(device)
        if requested == "auto":
            return (AmpChoice("bf16", f"auto: {what} has bf16") if native else
                    AmpChoice("fp16", f"auto: {what} has no bf16, fp16 with a GradScaler"))
        warning = None
        if requested == "bf16" and not native:
            warning = (f"train.amp=bf16 on a {what} without native bf16 is slow; "
                       "auto picks fp16 with a GradScaler there")
        return AmpChoice(requested, "as set", warning)
    if device.type == "cpu":
        feature = cpu_bf16_feature()
        if requested == "auto":
            return (AmpChoice("bf16", f"auto: CPU has {feature}") if feature else
                    AmpChoice("off", "auto: CPU has no native bf16 (AVX512-BF16, AMX or Arm BF16)"))
        warning = None
        if requested == "bf16" and not feature:
            warning = ("train.amp=bf16 on a CPU without native bf16 (no AVX512-BF16, AMX or Arm BF16): "
                       "autocast emulates it (a ResNet-18 step ran 20x slower than off on an AVX2 CPU); "
                       "use auto or off")
        elif requested == "fp16":
            warning = "train.amp=fp16 on a CPU is slow on most CPUs; auto picks bf16 or off"
        return AmpChoice(requested, "as set", warning)
    if requested == "auto":
        return AmpChoice("off", f"auto: no mixed precision rule for {device.type}")
    return AmpChoice(requested, "as set")


LOADER_DTYPES = {"bf16": "bfloat16", "fp16": "float16", "off": "float32"}


def loader_dtype(recipe, device, amp: Optional[str] = None) -> str:
    """``loader.dtype`` as a run uses it: as written, or for ``auto`` the dtype the model's
    autocast computes in on ``device`` (``amp``, the run's resolved mode, where given, else
    ``train.amp`` resolved by ``resolve_amp``): bfloat16, float16, or float32 where AMP is
    off. The model is fed what it computes in."""
    if recipe.loader.dtype != "auto":
        return recipe.loader.dtype
    return LOADER_DTYPES[amp if amp is not None else resolve_amp(recipe.train.amp, device).amp]


__all__ = ["AMP_CHOICES", "LOADER_DTYPES", "loader_dtype", "AMP_MODES", "AmpChoice", "cpu_bf16_feature", "cpu_capabilities",
           "cuda_bf16_native", "resolve_amp"]

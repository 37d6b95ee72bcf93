"""One training step of the TSN schedule, shared by ``tsn_dali.train`` and ``tsn_dali.bench``.

    forward: clips prepared (uint8 normalised here; half input widened when AMP is off),
             autocast (bf16, or fp16), logits, cross-entropy in float32
    update:  backward (through a GradScaler for fp16), gradient-norm clip at
             ``train.grad_clip`` (MMAction2's ``clip_grad=dict(max_norm=40, norm_type=2)``),
             optimiser step, gradients dropped (set to None)

Nothing here reads a value back to the host: the loss stays a device tensor, so the CPU
can queue the next step while the GPU still runs this one. ``tsn_dali.train`` reads its
losses once per log interval; the fp16 GradScaler is the one exception (its step reads the
inf check, as torch's does).
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from tsn_dali.data.render.executors.base import normalise

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "off": None}


def autocast(device: torch.device, amp: str):
    """torch.autocast for ``amp`` ("bf16" | "fp16" | "off") on ``device``'s type."""
    dtype = AMP_DTYPES[amp]
    return torch.autocast(device_type=device.type, dtype=dtype or torch.float32, enabled=dtype is not None)


def prepare_clips(clips: torch.Tensor, mean: Sequence[float], std: Sequence[float], amp: str) -> torch.Tensor:
    """Model input from a loader batch: uint8 pixels are normalised here ((x - mean) / std);
    without AMP half-precision input is widened to float32. Strides (channels_last) are kept."""
    if clips.dtype == torch.uint8:  # the loader's rule (executors.base.normalise), channels last
        return normalise(clips.permute(0, 1, 3, 4, 2), mean, std, "float32").permute(0, 1, 4, 2, 3)
    if amp == "off" and clips.dtype != torch.float32:
        return clips.float()
    return clips


class TrainStep:
    """``step(clips, labels)``: forward, backward and SGD update; returns the detached loss.

    ``net``: the model as trained (DDP and/or compiled wrapper); ``optimizer``: its
    parameters are the ones clipped; ``amp``: a key of AMP_DTYPES; ``grad_clip``: max
    gradient norm, 0/None for none; ``scaler``: a torch.amp.GradScaler for fp16, else None.
    ``forward`` and ``update`` are the two halves, for a caller that looks at the loss in
    between (``train.nan_policy: skip``). With ``skippable`` (that policy), ``forward`` first
    copies the model's buffers (batch-norm running statistics and counts, which a training
    forward updates in place) and ``skip`` puts them back, so a skipped step changes nothing:
    no parameter, no optimiser state, no buffer. The copies are buffers only (a ResNet-50's
    159 are 0.2 MB), made on the device without a host sync, into copies allocated once, by
    one ``torch._foreach_copy_`` each way (on an AVX2 CPU 70 us a step against 290 us for a
    fresh clone of each buffer; on a GPU a few launches instead of 159). Restoring the
    buffers is exact where recomputing them (undoing a momentum update) would not be, and
    costs less than a second, clean forward.
    """

    def __init__(self, net: torch.nn.Module, optimizer: torch.optim.Optimizer, *, amp: str,
                 grad_clip: Optional[float], mean: Sequence[float], std: Sequence[float],
                 scaler: Optional["torch.amp.GradScaler"] = None, skippable: bool = False):
        if amp not in AMP_DTYPES:
            raise ValueError(f"amp {amp!r}; expected one of {', '.join(AMP_DTYPES)}")
        self.net, self.optimizer, self.amp = net, optimizer, amp
        self.grad_clip = float(grad_clip or 0.0)
        self.mean, self.std = tuple(mean), tuple(std)
        self.scaler = scaler
        self.params = [p for group in optimizer.param_groups for p in group["params"]]
        self.buffers = [b for b in net.buffers()] if skippable else []
        self._saved_buffers = [b.detach().clone() for b in self.buffers]

    def forward(self, clips: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.buffers:
            with torch.no_grad():
                torch._foreach_copy_(self._saved_buffers, self.buffers)
        clips = prepare_clips(clips, self.mean, self.std, self.amp)
        with autocast(clips.device, self.amp):
            logits = self.net(clips)
        return F.cross_entropy(logits.float(), labels)

    def update(self, loss: torch.Tensor) -> None:
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            if self.grad_clip:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            if self.grad_clip:
                torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip)
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def skip(self) -> None:
        """Leave this step out: drop whatever gradients exist, touch no parameter, and put the
        buffers its forward changed back as they were (``skippable``)."""
        self.optimizer.zero_grad(set_to_none=True)
        if self.buffers:
            with torch.no_grad():
                torch._foreach_copy_(self.buffers, self._saved_buffers)

    def __call__(self, clips: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        loss = self.forward(clips, labels)
        self.update(loss)
        return loss.detach()

"""What users would pick instead, measured as systems beside ours on the same clips and plans.

- ``mmaction2``: MMAction2's own transforms in a torch DataLoader (``--reference-workers``
  workers): ``DecordInit`` and ``DecordDecode`` at the plan's frame indices, ``Resize`` to
  the plan's short side, the plan's crop boxes (test view: MMAction2's ``ThreeCrop`` /
  ``TenCrop`` / ``CenterCrop`` give the same boxes), ``Resize`` to the output size and
  ``Flip`` where the plan flips; then normalised in float32 and cast as our loaders do.
  Needs ``mmaction2`` (1.2.0 wants mmcv < 2.2; mmcv-lite 2.1 does on a CPU: benchmarks/README.md).
- ``torchcodec`` / ``torchcodec-cuda``: ``torchcodec.decoders.VideoDecoder.get_frames_at``
  at the plan's indices (decoding on the CPU in DataLoader workers, or with NVDEC in the
  main process), then the plan's resize, crops, flips and normalisation in torch (uint8
  between steps, resizes to the same size left out, as the other loaders do).

Each peer's first clip is compared, pixel by pixel, with the reference executor's render
of the same plan (uint8, before normalisation): the report shows the mean and max
difference in grey levels, so a peer measured on different frames or crops would show.
A peer whose package is missing raises PeerUnavailable with the reason (its row is skipped,
saying why).
"""
from __future__ import annotations

import functools
from typing import Optional, Sequence, Tuple

import numpy as np
import torch

from tsn_dali.bench.options import PEERS
from tsn_dali.errors import one_line


class PeerUnavailable(RuntimeError):
    """A peer that cannot run here (its package is missing, or no GPU); ``str`` says why."""


# --------------------------------------------------------------------------- clip makers


def _mmaction_transforms():
    try:
        from mmaction.datasets.transforms import DecordDecode, DecordInit, Flip, Resize
    except Exception as exc:  # ImportError, or mmcv/mmengine missing beneath it
        raise PeerUnavailable(f"mmaction2 does not import ({one_line(exc, named=True)})") from None
    return DecordInit, DecordDecode, Resize, Flip


class MmactionClip:
    """One plan through MMAction2's transforms -> uint8 ``[V, H, W, 3]`` (crop-major)."""

    def __init__(self):
        DecordInit, DecordDecode, Resize, Flip = _mmaction_transforms()
        self.init, self.decode = DecordInit(), DecordDecode()
        self.Resize, self.Flip = Resize, Flip

    def __call__(self, plan) -> np.ndarray:
        results = {"filename": plan.path, "start_index": 0, "modality": "RGB"}
        results = self.init(results)
        results.update(frame_inds=np.asarray(plan.frame_indices), clip_len=1,
                       num_clips=len(plan.frame_indices))
        results = self.decode(results)
        results = self.Resize(scale=tuple(plan.resize_to), keep_ratio=False)(results)
        frames = results["imgs"]
        views = []
        out_w, out_h = plan.out_size
        for box, flip in zip(plan.crops, plan.crop_flips):
            x1, y1, x2, y2 = (int(v) for v in box)
            crop = {"imgs": [f[y1:y2, x1:x2] for f in frames], "modality": "RGB"}
            crop = self.Resize(scale=(out_w, out_h), keep_ratio=False)(crop)
            if flip:
                crop = self.Flip(flip_ratio=1.0)(crop)
            views += crop["imgs"]
        return np.stack(views)


class TorchcodecClip:
    """One plan through torchcodec's decoder -> uint8 ``[V, H, W, 3]`` (crop-major)."""

    def __init__(self, device: str = "cpu"):
        try:
            from torchcodec.decoders import VideoDecoder
        except Exception as exc:  # not installed, or FFmpeg's shared libraries missing
            raise PeerUnavailable(f"torchcodec does not import ({one_line(exc, named=True)})") from None
        self.VideoDecoder, self.device = VideoDecoder, device

    def __call__(self, plan) -> torch.Tensor:
        decoder = self.VideoDecoder(plan.path, device=self.device)
        x = decoder.get_frames_at([int(i) for i in plan.frame_indices]).data  # [T, 3, H, W] uint8
        x = resize_uint8(x, plan.resize_to)
        views = []
        for box, flip in zip(plan.crops, plan.crop_flips):
            x1, y1, x2, y2 = (int(v) for v in box)
            v = resize_uint8(x[:, :, y1:y2, x1:x2], plan.out_size)
            views.append(v.flip(-1) if flip else v)
        return torch.cat(views).permute(0, 2, 3, 1)


def resize_uint8(x: torch.Tensor, size) -> torch.Tensor:
    """uint8 ``[T, C, H, W]`` resized to ``size`` (w, h), bilinear as cv2 (half-pixel centres,
    no antialias) and rounded to uint8, as every loader here does after each resize; a resize
    to the same size is left out (cv2 copies there), as a user of torchcodec would."""
    import torch.nn.functional as F

    w, h = int(size[0]), int(size[1])
    if tuple(x.shape[-2:]) == (h, w):
        return x
    y = F.interpolate(x.float(), size=(h, w), mode="bilinear", align_corners=False, antialias=False)
    return y.round_().clamp_(0, 255).to(torch.uint8)


# --------------------------------------------------------------------------- the system


class _Plans(torch.utils.data.Dataset):
    def __init__(self, plans, make):
        self.plans, self.make = plans, make

    def __len__(self):
        return len(self.plans)

    def __getitem__(self, i):
        return torch.as_tensor(np.asarray(self.make(self.plans[i])))


class PeerWindow:
    """A system (tsn_dali.bench.interleave): one window of a peer loader over the plans our
    loader makes for that round (``planning``: a ClipLoader whose plans are used), batches of
    ``batch_size`` clips, normalised as ours (``(x - mean) / std`` in float32, cast to the
    recipe's dtype; raw pixels for uint8) on ``device``."""

    def __init__(self, make, planning, batch_size: int, iters: int, device: torch.device, workers: int,
                 mean, std, dtype: torch.dtype):
        self.make, self.planning, self.batch, self.iters = make, planning, int(batch_size), int(iters)
        self.device, self.workers = device, int(workers)
        self.mean = torch.tensor(mean, dtype=torch.float32, device=device)
        self.std = torch.tensor(std, dtype=torch.float32, device=device)
        self.dtype = dtype

    def plans(self, epoch: int) -> list:
        samples = [int(s) for ids in self.planning.batch_samples(epoch) for s in ids]
        need = self.batch * (1 + self.iters)
        samples = (samples * (need // max(len(samples), 1) + 1))[:need]
        return [self.planning.plan(s, epoch) for s in samples]

    def __call__(self, round_no: int) -> float:
        epoch = round_no + 100
        data = torch.utils.data.DataLoader(_Plans(self.plans(epoch), self.make), batch_size=self.batch,
                                           num_workers=self.workers, collate_fn=torch.stack,
                                           pin_memory=self.device.type == "cuda")
        from tsn_dali.bench.measure import timed

        it = iter(data)
        try:
            seconds = timed(functools.partial(self._next, it), self.iters, self.device)
        finally:
            del it  # its workers stop now, not at the next window
        return self.iters * self.batch / seconds

    def _next(self, it) -> torch.Tensor:
        return self._out(next(it))

    def _out(self, clips: torch.Tensor) -> torch.Tensor:
        x = clips.to(self.device, non_blocking=True)
        if self.dtype == torch.uint8:  # raw pixels, as our loaders give with loader.dtype uint8
            return x
        return ((x.float() - self.mean) / self.std).to(self.dtype)

    def costs(self) -> dict:
        return {}


def pixel_check(make, reference, plan) -> dict:
    """The peer's uint8 views of ``plan`` against the reference executor's: mean and max
    absolute difference (grey levels) and whether the shapes agree."""
    mine = torch.as_tensor(np.asarray(make(plan))).to(torch.int16)
    theirs = reference.render([plan])[0].permute(0, 2, 3, 1).to(torch.int16).cpu()
    if mine.shape != theirs.shape:
        return {"same_shape": False, "peer_shape": list(mine.shape), "ours_shape": list(theirs.shape)}
    diff = (mine - theirs).abs().float()
    return {"same_shape": True, "mean_abs_diff": float(diff.mean()), "max_abs_diff": float(diff.max()),
            "frame_indices": [int(i) for i in plan.frame_indices]}


def peer_system(name: str, recipe, split: str, paths: Sequence[str], index, batch_size: int, iters: int,
                device: torch.device, workers: int, executors: dict) -> Tuple[PeerWindow, Optional[dict]]:
    """(the peer's system, its pixel check against the reference executor, or None where that
    executor is not measured). PeerUnavailable where it cannot run here."""
    from tsn_dali.bench.measure import make_loader
    from tsn_dali.data.render.executors.base import TORCH_DTYPES

    if name == "mmaction2":
        make = MmactionClip()
    elif name == "torchcodec":
        make = TorchcodecClip("cpu")
    elif name == "torchcodec-cuda":
        if device.type != "cuda":
            raise PeerUnavailable("no CUDA device (torchcodec's NVDEC decoding needs one)")
        make, workers = TorchcodecClip("cuda"), 0
    else:
        raise PeerUnavailable(f"unknown peer {name!r}")
    planning = make_loader(recipe, split, paths, index, None, batch_size, 1 + iters, device)
    from tsn_dali.engine.amp import loader_dtype

    dtype = TORCH_DTYPES[loader_dtype(recipe, device)]
    system = PeerWindow(make, planning, batch_size, iters, device, workers, recipe.data.mean, recipe.data.std,
                        dtype)
    check = None
    reference = next((ex for label, ex in executors.items() if label == "reference"), None)
    if reference is not None:
        check = pixel_check(make, reference, planning.plan(0, 0))
    return system, check


__all__ = ["MmactionClip", "PEERS", "PeerUnavailable", "PeerWindow", "TorchcodecClip", "peer_system",
           "pixel_check"]

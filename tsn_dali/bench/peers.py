"""What users would pick instead, measured as systems beside ours on the same clips.

- ``mmaction2``: MMAction2 1.2.0's own config pipeline, as its users run it
  (tsn_dali.bench.mmaction_peer): the recipe's MMAction2 config, its train/val/test
  pipeline through ``Compose`` (its own SampleFrames, crops, Flip, FormatShape,
  PackActionInputs) in a torch DataLoader (``--reference-workers`` workers, mmengine's
  ``pseudo_collate``) over the same videos; its random draws are its own. Needs
  ``mmaction2`` (1.2.0 wants mmcv < 2.2; mmcv-lite 2.1 does on a CPU: benchmarks/README.md).
- ``decord-opencv``: the simplest fast loader a user could write, on our plans: decord's
  ``get_batch`` at the plan's frame indices (one thread), ``cv2.resize`` (INTER_LINEAR on
  uint8, as MMAction2's Resize) to the plan's size, the plan's crop boxes cut with numpy,
  each box resized to the output size where it differs, mirrored where the plan flips.
- ``torchcodec`` / ``torchcodec-cuda``: ``torchcodec.decoders.VideoDecoder.get_frames_at``
  at the plan's indices (decoding on the CPU in DataLoader workers, or with NVDEC in the
  main process), then the plan's resize, crops, flips and normalisation in torch (uint8
  between steps, resizes to the same size left out, as the other loaders do).

Checks (the report's parity table): a peer on our plans (decord-opencv, torchcodec) has its
first clip compared, pixel by pixel, with the reference executor's render of the same plan;
the ``mmaction2`` peer, on val and test views, has MMAction2's frame indices and crop boxes
compared with our plan's for the same video, and its pixels with the reference executor's
(mmaction_peer.view_check). A peer whose package is missing raises PeerUnavailable with the
reason (its row is skipped, saying why).
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


class DecordOpencvClip:
    """One plan through decord and OpenCV -> uint8 ``[V, H, W, 3]`` (crop-major): the
    simplest fast loader a user could write (module docstring)."""

    def __init__(self):
        try:
            import cv2
        except Exception as exc:
            raise PeerUnavailable(f"OpenCV does not import ({one_line(exc, named=True)})") from None
        from tsn_dali.data.media.decoding import import_decord

        self.decord, self.cv2 = import_decord(), cv2
        if self.decord is None:
            raise PeerUnavailable("decord is not installed")
        cv2.setNumThreads(1)  # one clip per DataLoader worker

    def _resize(self, frames: np.ndarray, size) -> np.ndarray:
        w, h = int(size[0]), int(size[1])
        if frames.shape[1:3] == (h, w):
            return frames
        return np.stack([self.cv2.resize(f, (w, h), interpolation=self.cv2.INTER_LINEAR) for f in frames])

    def __call__(self, plan) -> np.ndarray:
        reader = self.decord.VideoReader(plan.path, num_threads=1)
        frames = self._resize(reader.get_batch([int(i) for i in plan.frame_indices]).asnumpy(), plan.resize_to)
        views = []
        for box, flip in zip(plan.crops, plan.crop_flips):
            x1, y1, x2, y2 = (int(v) for v in box)
            crop = self._resize(frames[:, y1:y2, x1:x2], plan.out_size)
            views.append(crop[:, :, ::-1] if flip else crop)
        return np.ascontiguousarray(np.concatenate(views))


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
    """A system (tsn_dali.bench.interleave): one window of a peer loader over the samples our
    loader takes in that round (``planning``: a ClipLoader whose order and plans are used),
    batches of ``batch_size`` clips, normalised as ours (``(x - mean) / std`` in float32,
    cast to the recipe's dtype; raw pixels for uint8) on ``device``.

    ``make(plan)`` renders one of our plans; or, with ``videos`` (a peer that draws its own
    frames, ``videos(records) -> Dataset``), the dataset gets the samples' (path, label)
    and ``collate`` / ``to_batch`` turn its items into ``[N, V, ...]`` uint8 (channels last, or
    ``channels_first``)."""

    def __init__(self, make, planning, batch_size: int, iters: int, device: torch.device, workers: int,
                 mean, std, dtype: torch.dtype, videos=None, collate=None, to_batch=None,
                 channels_first: bool = False):
        self.make, self.planning, self.batch, self.iters = make, planning, int(batch_size), int(iters)
        self.device, self.workers = device, int(workers)
        self.mean = torch.tensor(mean, dtype=torch.float32, device=device)
        self.std = torch.tensor(std, dtype=torch.float32, device=device)
        if channels_first:  # [N, V, C, H, W] batches (MMAction2's FormatShape NCHW)
            self.mean, self.std = self.mean.view(-1, 1, 1), self.std.view(-1, 1, 1)
        self.dtype = dtype
        self.videos, self.collate, self.to_batch = videos, collate or torch.stack, to_batch or (lambda x: x)

    @property
    def warm(self) -> int:
        """Untimed batches: one per worker. A DataLoader worker makes whole batches, its
        workers all at once, so after fewer the next batches are part-made."""
        return max(1, self.workers)

    def samples(self, epoch: int) -> list:
        samples = [int(s) for ids in self.planning.batch_samples(epoch) for s in ids]
        need = self.batch * (self.warm + self.iters)
        return (samples * (need // max(len(samples), 1) + 1))[:need]

    def plans(self, epoch: int) -> list:
        return [self.planning.plan(s, epoch) for s in self.samples(epoch)]

    def dataset(self, epoch: int):
        if self.videos is not None:
            records = [self.planning.records[s] for s in self.samples(epoch)]
            return self.videos([(r.path, r.label) for r in records])
        return _Plans(self.plans(epoch), self.make)

    def __call__(self, round_no: int) -> float:
        epoch = round_no + 100
        data = torch.utils.data.DataLoader(self.dataset(epoch), batch_size=self.batch, num_workers=self.workers,
                                           collate_fn=self.collate, pin_memory=self.device.type == "cuda")
        from tsn_dali.bench.measure import timed

        it = iter(data)
        try:
            seconds = timed(functools.partial(self._next, it), self.iters, self.device, warm=self.warm)
        finally:
            del it  # its workers stop now, not at the next window
        return self.iters * self.batch / seconds

    def _next(self, it) -> torch.Tensor:
        return self._out(self.to_batch(next(it)))

    def _out(self, clips: torch.Tensor) -> torch.Tensor:
        x = clips.to(self.device, non_blocking=True)
        if self.dtype == torch.uint8:  # raw pixels, as our loaders give with loader.dtype uint8
            return x
        return ((x.float() - self.mean) / self.std).to(self.dtype)

    def costs(self) -> dict:
        return {}


def pixel_check(make, reference, plan, executors: Optional[dict] = None) -> dict:
    """The peer's uint8 views of ``plan`` against the reference executor's: mean and max
    absolute difference (grey levels) and whether the shapes agree; and against each of
    ``executors`` (label -> executor: ``executors``, per label)."""
    from tsn_dali.bench.mmaction_peer import differences

    mine = torch.as_tensor(np.asarray(make(plan))).to(torch.int16)
    theirs = reference.render([plan])[0].permute(0, 2, 3, 1).to(torch.int16).cpu()
    if mine.shape != theirs.shape:
        return {"same_shape": False, "peer_shape": list(mine.shape), "ours_shape": list(theirs.shape)}
    diff = (mine - theirs).abs().float()
    return {"compared": "pixels on our plan", "same_shape": True, "mean_abs_diff": float(diff.mean()),
            "max_abs_diff": float(diff.max()), "frame_indices": [int(i) for i in plan.frame_indices],
            "executors": differences(mine, renders(executors or {}, plan))}


def renders(executors: dict, plan) -> dict:
    """Each executor's uint8 views ``[V, H, W, C]`` of ``plan`` (label -> tensor)."""
    return {label: ex.render([plan])[0].permute(0, 2, 3, 1).cpu() for label, ex in executors.items()}


def _reference(executors: dict):
    """The measured reference executor, or one of our own (no workers) for the checks."""
    found = next((ex for label, ex in executors.items() if label == "reference"), None)
    if found is not None:
        return found, False
    from tsn_dali.data.render.executors.reference import ReferenceExecutor

    return ReferenceExecutor(workers=0), True


def _mmaction_system(recipe, split: str, planning, batch_size: int, iters: int, device, workers: int, mean, std,
                     dtype, executors: dict):
    from tsn_dali.bench import mmaction_peer as mm

    try:
        pipeline, facts = mm.config_pipeline(recipe, split)
        collate = mm.collate()
    except mm.MmactionMissing as why:
        raise PeerUnavailable(str(why)) from None
    system = PeerWindow(None, planning, batch_size, iters, device, workers, mean, std, dtype,
                        videos=lambda records: mm.MmactionVideos(records, pipeline), collate=collate,
                        to_batch=mm.stack_inputs, channels_first=True)
    plan = planning.plan(0, 0)
    reference, own = _reference(executors)
    try:
        ours = reference.render([plan])[0].permute(0, 2, 3, 1).cpu() if split != "train" else None
    finally:
        if own:
            reference.close()
    mine = renders(executors, plan) if split != "train" else None
    check = dict(mm.view_check(pipeline, split, plan, ours, mine), **facts)
    if split == "train":
        check["same_shape"] = check["peer_shape"] == [plan.num_views, plan.out_size[1], plan.out_size[0], 3]
    return system, check


def peer_system(name: str, recipe, split: str, paths: Sequence[str], index, batch_size: int, iters: int,
                device: torch.device, workers: int, executors: dict) -> Tuple[PeerWindow, Optional[dict]]:
    """(the peer's system, its check: pixels against the reference executor on our plan, or
    for ``mmaction2`` frames and boxes against our plan; None where a plan peer has no
    reference executor measured beside it). PeerUnavailable where it cannot run here."""
    from tsn_dali.bench.measure import make_loader
    from tsn_dali.data.render.executors.base import TORCH_DTYPES
    from tsn_dali.engine.amp import loader_dtype

    if name not in PEERS:
        raise PeerUnavailable(f"unknown peer {name!r}")
    if name == "torchcodec-cuda" and device.type != "cuda":
        raise PeerUnavailable("no CUDA device (torchcodec's NVDEC decoding needs one)")
    planning = make_loader(recipe, split, paths, index, None, batch_size, max(1, workers) + iters, device)
    dtype = TORCH_DTYPES[loader_dtype(recipe, device)]
    mean, std = recipe.data.mean, recipe.data.std
    if name == "mmaction2":
        return _mmaction_system(recipe, split, planning, batch_size, iters, device, workers, mean, std, dtype,
                                executors)
    if name == "decord-opencv":
        make = DecordOpencvClip()
    elif name == "torchcodec":
        make = TorchcodecClip("cpu")
    else:
        make, workers = TorchcodecClip("cuda"), 0
    system = PeerWindow(make, planning, batch_size, iters, device, workers, mean, std, dtype)
    reference = next((ex for label, ex in executors.items() if label == "reference"), None)
    check = pixel_check(make, reference, planning.plan(0, 0), executors) if reference is not None else None
    return system, check


__all__ = ["DecordOpencvClip", "PEERS", "PeerUnavailable", "PeerWindow", "TorchcodecClip", "peer_system",
           "pixel_check", "renders"]

"""The reference executor: what a user would run without DALI.

A torch DataLoader whose worker processes decode each plan's frames with decord
(``VideoReader.get_batch``, as MMAction2's DecordDecode) or PyAV (tsn_dali.data.media.decoding),
then apply the
plan's transforms in numpy/torch on the CPU, as MMAction2's pipeline does:

    resize the whole frame to ``plan.resize_to`` (bilinear)
    -> cut ``plan.crops[k]`` -> resize the box to ``plan.out_size`` if it differs
    -> mirror where ``plan.crop_flips[k]`` -> stack crop-major ``[V, H, W, C]`` uint8.

Bilinear resizing is ``torch.nn.functional.interpolate(mode="bilinear",
align_corners=False, antialias=False)`` on float32, rounded to uint8: the same
sampling grid and weights as mmcv.imresize's cv2 ``INTER_LINEAR`` (MMAction2's
Resize), up to cv2's fixed-point rounding (at most 1 grey level). PIL's BILINEAR is
not used: it low-pass filters when shrinking, which cv2 does not.

It is the parity oracle of the DALI executors (same plan -> same frames and crops)
and the speed baseline of the benchmarks.
"""
from __future__ import annotations

import gc
import threading
from typing import List, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from tsn_dali.data.media.decoding import DECODERS, decode_frames
from tsn_dali.data.errors import VideoDecodeError
from tsn_dali.data.render.executors.base import check_render_args, no_slow_path, normalise
from tsn_dali.data.plan.clip_plan import ClipPlan


# --------------------------------------------------------------------------- transforms


def resize_bilinear(frames: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    """``[T, H, W, C]`` uint8 -> ``[T, h, w, C]`` uint8 for ``size=(w, h)``.

    cv2 INTER_LINEAR sampling (half-pixel centres, no antialias), as mmcv.imresize.
    """
    w, h = int(size[0]), int(size[1])
    if frames.shape[1:3] == (h, w):
        return frames
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()
    y = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False, antialias=False)
    return y.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


def apply_plan(frames: np.ndarray, plan: ClipPlan) -> np.ndarray:
    """Decoded frames ``[T, H, W, C]`` -> the plan's views ``[K*T, h, w, C]`` uint8, crop-major.

    Resize whole frames to ``resize_to``, cut each crop box (x1, y1, x2, y2), resize it to
    ``out_size`` if it differs, mirror where ``crop_flips`` (ClipPlan docstring).
    """
    resized = resize_bilinear(frames, plan.resize_to)
    views = []
    for (x1, y1, x2, y2), flip in zip(np.asarray(plan.crops).tolist(), np.asarray(plan.crop_flips).tolist()):
        crop = resized[:, y1:y2, x1:x2]
        crop = resize_bilinear(crop, plan.out_size)
        if flip:
            crop = crop[:, :, ::-1]
        views.append(crop)
    return np.ascontiguousarray(np.concatenate(views, axis=0))


def render_plan(plan: ClipPlan, decoder: str = "auto", filename_tmpl: str = "img_{:05}.jpg") -> np.ndarray:
    """One plan's views ``[V, H, W, C]`` uint8 (decode, then ``apply_plan``)."""
    frames = decode_frames(plan.path, plan.frame_indices, decoder, filename_tmpl)
    return apply_plan(frames, plan)


# --------------------------------------------------------------------------- DataLoader plumbing


class _PlanDataset(torch.utils.data.Dataset):
    """Map-style dataset whose keys are the plans themselves (sent to the workers by the sampler)."""

    def __init__(self, decoder: str, filename_tmpl: str):
        self.decoder, self.filename_tmpl = decoder, filename_tmpl

    def __getitem__(self, plan: ClipPlan):
        try:
            return torch.from_numpy(render_plan(plan, self.decoder, self.filename_tmpl)), None
        except VideoDecodeError as err:
            return None, (err.path, err.reason)


class _PlanSampler(torch.utils.data.Sampler):
    """Yields the plans of the current ``render`` call; refilled before each pass."""

    def __init__(self):
        self.plans: List[ClipPlan] = []

    def __iter__(self):
        return iter(list(self.plans))

    def __len__(self):
        return len(self.plans)


def _keep(item):
    return item


class ReferenceExecutor:
    """Executor on a torch DataLoader (``workers`` processes; 0 decodes in the caller).

    ``render(plans)`` hands the plans to persistent DataLoader workers, one plan per
    task, and stacks the returned views into ``[N, V, H, W, C]``.
    """

    name = "reference"

    def __init__(self, device="cpu", workers: int = 0, decoder: str = "auto",
                 filename_tmpl: str = "img_{:05}.jpg"):
        if decoder not in DECODERS:
            raise ValueError(f"reference executor: decoder {decoder!r}; expected one of {', '.join(DECODERS)}")
        if workers < 0:
            raise ValueError(f"reference executor: workers {workers}; expected 0 or more")
        self.device = torch.device(device)
        self.workers = int(workers)
        self.decoder = decoder
        self.filename_tmpl = filename_tmpl
        self._dataset = _PlanDataset(decoder, filename_tmpl)
        self._sampler = _PlanSampler()
        self._lock = threading.Lock()
        self._loader = None
        self.stats = {"clips": 0}
        if self.workers > 0:
            self._loader = torch.utils.data.DataLoader(
                self._dataset, sampler=self._sampler, batch_size=None, collate_fn=_keep,
                num_workers=self.workers, persistent_workers=True,
                # Its own generator: each new iterator draws a worker seed, which must not
                # come from torch's global generator (that would race with dropout in the
                # training thread and break --deterministic).
                generator=torch.Generator().manual_seed(0))

    def _views(self, plans: Sequence[ClipPlan]):
        if self._loader is None:
            return [self._dataset[p] for p in plans]
        with self._lock:
            self._sampler.plans = list(plans)
            return list(self._loader)

    def prepare(self, plans: Sequence[ClipPlan], *, mean=None, std=None, dtype="uint8"):
        """Nothing to do ahead: the workers read and decode inside ``run``."""
        plans, _, _ = check_render_args(plans, mean, std, dtype)
        return plans, mean, std, dtype

    def run(self, prepared) -> torch.Tensor:
        """Plans -> ``[N, V, C, H, W]``, a permuted view of ``[N, V, H, W, C]`` on ``self.device``.

        With mean/std: ``(x - mean) / std`` computed in float32 and cast to ``dtype``;
        without: raw pixels (uint8 unless ``dtype`` says otherwise).
        Raises VideoDecodeError for the first plan whose video fails.
        """
        plans, mean, std, dtype = prepared
        results = self._views(plans)
        for views, error in results:
            if error is not None:
                raise VideoDecodeError(*error)
        buf = torch.empty((len(plans),) + tuple(results[0][0].shape), dtype=torch.uint8,
                          pin_memory=self.device.type == "cuda")
        for i, (views, _) in enumerate(results):
            buf[i].copy_(views)
        self.stats["clips"] += len(plans)
        self.stats["frames_path_clips"] = self.stats.get("frames_path_clips", 0) + len(plans)
        self.stats["frames_path_frames"] = self.stats.get("frames_path_frames", 0) + sum(
            len(set(p.frame_indices.tolist())) for p in plans)
        for p in plans:
            key = f"clips frames {p.codec or 'unknown'}"
            self.stats[key] = self.stats.get(key, 0) + 1
        x = buf.to(self.device, non_blocking=True)
        return normalise(x, mean, std, dtype).permute(0, 1, 4, 2, 3)

    def render(self, plans: Sequence[ClipPlan], *, mean=None, std=None, dtype="uint8") -> torch.Tensor:
        """``run(prepare(plans, ...))`` (executors/base.py)."""
        return self.run(self.prepare(plans, mean=mean, std=std, dtype=dtype))

    check_videos = staticmethod(no_slow_path)

    def close(self):
        """Stop the worker processes: the DataLoader (and with it its persistent iterator)
        is dropped, and the iterator shuts its workers down as it is collected."""
        loader, self._loader = self._loader, None
        if loader is not None:
            del loader
            gc.collect()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

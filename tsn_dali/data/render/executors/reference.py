"""The reference executor: what a user would run without DALI.

A pool of worker processes that decode each plan's frames with decord
(``VideoReader.get_batch``, as MMAction2's DecordDecode) or PyAV (tsn_dali.data.media.decoding:
upright, and the index's stream of a file that has several), then apply the
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

import threading
from typing import Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from tsn_dali.data.media.decoding import DECODERS, decode_frames
from tsn_dali.data.errors import VideoDecodeError
from tsn_dali.data.render.executors.base import (check_frame_size, check_render_args, clip_count_key, no_slow_path,
                                                 normalise, pyav_stream)
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
    frames = decode_frames(plan.path, plan.frame_indices, decoder, filename_tmpl, stream=pyav_stream(plan))
    check_frame_size(plan, frames)
    return apply_plan(frames, plan)


# --------------------------------------------------------------------------- worker processes


def _render_one(plan: ClipPlan, decoder: str, filename_tmpl: str):
    """In a worker: ``(views tensor, None)`` or ``(None, (path, reason))``. The tensor goes
    back through shared memory (torch.multiprocessing's reductions), not a pickled copy."""
    try:
        return torch.from_numpy(render_plan(plan, decoder, filename_tmpl)), None
    except VideoDecodeError as err:
        return None, (err.path, err.reason)


def _worker_init() -> None:
    """One decode per process (the pool is the parallelism); signals are the parent's to
    handle: a worker ignores SIGINT (a terminal sends it to the whole process group), so it
    prints no traceback of its own, and dies on SIGTERM, which is how ``close`` stops it
    (Pool.terminate). A forked worker inherits the parent's Python handlers: the trainer's
    SIGTERM handler (engine/signals.py) only records the signal, so a worker blocked on the
    pool's task-queue lock, which terminate holds, would never end and close would hang."""
    import signal

    torch.set_num_threads(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


class ReferenceExecutor:
    """Executor on ``workers`` persistent worker processes (0: decode in the caller).

    ``prepare(plans)`` hands each plan to the pool at once, so the workers decode the
    batches the loader prepares ahead while the current one is used: they stream from batch
    to batch as a torch DataLoader's workers do over an epoch, never waiting at a batch's
    end. ``run`` collects the views in plan order into ``[N, V, H, W, C]``.
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
        self._lock = threading.Lock()
        self._pool = None
        self.stats = {"clips": 0}

    def _workers(self):
        with self._lock:
            if self._pool is None and self.workers > 0:
                import torch.multiprocessing as tmp

                self._pool = tmp.get_context("fork").Pool(self.workers, initializer=_worker_init)
            return self._pool

    def prepare(self, plans: Sequence[ClipPlan], *, mean=None, std=None, dtype="uint8"):
        """Hand every plan to the worker pool now (decoded while earlier batches are used)."""
        plans, _, _ = check_render_args(plans, mean, std, dtype)
        pool = self._workers()
        if pool is None:
            return plans, None, mean, std, dtype
        jobs = [pool.apply_async(_render_one, (plan, self.decoder, self.filename_tmpl)) for plan in plans]
        return plans, jobs, mean, std, dtype

    def run(self, prepared) -> torch.Tensor:
        """Plans -> ``[N, V, C, H, W]``, a permuted view of ``[N, V, H, W, C]`` on ``self.device``.

        With mean/std: ``(x - mean) / std`` computed in float32 and cast to ``dtype``;
        without: raw pixels (uint8 unless ``dtype`` says otherwise).
        Raises VideoDecodeError for the first plan whose video fails.
        """
        plans, jobs, mean, std, dtype = prepared
        if jobs is None:
            results = [_render_one(p, self.decoder, self.filename_tmpl) for p in plans]
        else:
            results = [job.get() for job in jobs]
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
            key = clip_count_key("frames", p)
            self.stats[key] = self.stats.get(key, 0) + 1
        x = buf.to(self.device, non_blocking=True)
        return normalise(x, mean, std, dtype).permute(0, 1, 4, 2, 3)

    def render(self, plans: Sequence[ClipPlan], *, mean=None, std=None, dtype="uint8") -> torch.Tensor:
        """``run(prepare(plans, ...))`` (executors/base.py)."""
        return self.run(self.prepare(plans, mean=mean, std=std, dtype=dtype))

    check_videos = staticmethod(no_slow_path)

    def close(self):
        """Stop the worker processes."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.terminate()
            pool.join()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

"""The reference executor: what a user would run without DALI, and the fastest CPU loader.

A pool of worker processes (``workers``; 0: the caller renders) that carry out each plan
on the CPU, as MMAction2's pipeline does:

    decode the plan's frames (executors/cpu.py ``decode_plan``)
    -> resize the whole frame to ``plan.resize_to`` (bilinear)
    -> cut ``plan.crops[k]`` -> resize the box to ``plan.out_size`` if it differs
    -> mirror where ``plan.crop_flips[k]`` -> crop-major ``[V, H, W, C]`` uint8.

Two settings pick how (``build_executor`` gives the fast pair to ``auto`` on a CPU):

- ``decoder``: ``auto`` (decord, as MMAction2's DecordDecode; PyAV where it fails, or where
  decord cannot be told the index's stream or turn) or ``gops`` (PyAV decoding only the
  GOPs a clip needs, frames nothing depends on skipped: the same pixels, fewer decoded);
- ``resize``: ``float``, the exact rule: ``torch.nn.functional.interpolate(mode="bilinear",
  align_corners=False, antialias=False)`` on float32, rounded to uint8, the same sampling
  grid and weights as mmcv.imresize's cv2 ``INTER_LINEAR`` (MMAction2's Resize) without
  cv2's fixed-point rounding (at most 1 grey level apart); or ``uint8``, cv2 itself on uint8
  as MMAction2 runs it, each view written once into the batch. PIL's BILINEAR is not
  used: it low-pass filters when shrinking, which cv2 does not.

Workers write their views straight into the batch (a shared-memory buffer, on a CPU
device), so nothing is copied after rendering; for a CUDA device they render into shared
memory and the batch is copied once into pinned memory. ``stats`` counts clips, frames,
what the GOP decoder fed and decoded, and the copies of rendered clips (``clip_copies``).

With its defaults (decord, float) it is the parity oracle of the DALI executors (same plan
-> same frames and crops) and the speed baseline of the benchmarks.
"""
from __future__ import annotations

import threading
from collections import deque
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from tsn_dali.data.errors import VideoDecodeError
from tsn_dali.data.render.executors.base import check_render_args, clip_count_key, no_slow_path, normalise
from tsn_dali.data.render.executors.cpu import CPU_DECODERS, RESIZES, decode_plan, render_uint8
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


def render_plan(plan: ClipPlan, decoder: str = "auto", filename_tmpl: str = "img_{:05}.jpg",
                resize: str = "float", out: Optional[np.ndarray] = None,
                counts: Optional[Dict[str, int]] = None) -> np.ndarray:
    """One plan's views ``[V, H, W, C]`` uint8: decoded (``decode_plan``), then ``apply_plan``
    (``resize="float"``) or ``render_uint8`` (``"uint8"``), written into ``out`` where given."""
    frames = decode_plan(plan, decoder, filename_tmpl, counts=counts)
    if resize == "uint8":
        return render_uint8(frames, plan, out)
    views = apply_plan(frames, plan)
    if out is None:
        return views
    out[...] = views
    return out


def view_shape(plan: ClipPlan) -> Tuple[int, int, int, int]:
    """``(V, h, w, 3)``: the shape of a plan's rendered views."""
    ow, oh = (int(v) for v in plan.out_size)
    return (plan.num_views, oh, ow, 3)


def shared_empty(shape) -> torch.Tensor:
    """An uninitialised uint8 tensor in shared memory (no copy: ``share_memory_`` would copy)."""
    nbytes = int(np.prod(shape))
    storage = torch.UntypedStorage._new_shared(max(nbytes, 1))
    return torch.empty(0, dtype=torch.uint8).set_(storage, 0, tuple(shape))


def storage_users(t: torch.Tensor) -> Optional[int]:
    """How many tensors (views included) hold ``t``'s memory, ``t`` itself counted; None
    where torch does not say (its private ``_storage_Use_Count``)."""
    count = getattr(torch._C, "_storage_Use_Count", None)
    if count is None:
        return None
    storage = t.untyped_storage()
    return int(count(storage._cdata)) - 1  # less the storage object asked


class SharedBuffers:
    """Shared-memory batch buffers, reused once no tensor outside holds them.

    A fresh shared buffer costs its page faults each time it is written (measured: 34 ms
    to fill a 38 MB test-view clip fresh, 7 ms reused), so batches are written into
    buffers made before, but only into one no batch handed out still views (torch's
    count of a storage's users): a batch is never overwritten while in use. At most
    ``keep`` idle buffers are kept."""

    def __init__(self, keep: int = 8):
        self.keep = int(keep)
        self._lock = threading.Lock()
        self._idle: List[torch.Tensor] = []  # handed out once; free when nothing else holds them

    def take(self, shape) -> torch.Tensor:
        shape = tuple(int(v) for v in shape)
        with self._lock:
            for i, t in enumerate(self._idle):
                if tuple(t.shape) == shape and storage_users(t) == 1:
                    return self._idle.pop(i)
        return shared_empty(shape)

    def give_back(self, t: torch.Tensor) -> None:
        """``t`` is handed out now; it may be reused once its users are gone."""
        with self._lock:
            self._idle.append(t)
            while len(self._idle) > self.keep:
                self._idle.pop(0)


# --------------------------------------------------------------------------- worker processes


def _render_one(plan: ClipPlan, decoder: str, filename_tmpl: str, resize: str, out: Optional[torch.Tensor]):
    """In a worker (or the caller): render ``plan`` into ``out`` (a slot of the shared batch),
    or, where None, into shared memory of its own, handed back as a handle (torch's
    reductions), not a pickled copy. Returns ``(views or None, error or None, counts)``."""
    counts: Dict[str, int] = {}
    try:
        target = out if out is not None else shared_empty(view_shape(plan))
        render_plan(plan, decoder, filename_tmpl, resize, target.numpy(), counts)
        return (None if out is not None else target), None, counts
    except VideoDecodeError as err:
        return None, (err.path, err.reason), counts


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
    """Executor on ``workers`` persistent worker processes (0: render in the caller);
    ``decoder`` and ``resize``: the module docstring.

    ``prepare(plans)`` hands each plan to the pool at once, so the workers render the
    batches the loader prepares ahead while the current one is used: they stream from batch
    to batch as a torch DataLoader's workers do over an epoch, never waiting at a batch's
    end. ``run`` waits for them and gives ``[N, V, H, W, C]`` in plan order.
    """

    name = "reference"

    def __init__(self, device="cpu", workers: int = 0, decoder: str = "auto",
                 filename_tmpl: str = "img_{:05}.jpg", resize: str = "float"):
        if decoder not in CPU_DECODERS:
            raise ValueError(f"reference executor: decoder {decoder!r}; expected one of {', '.join(CPU_DECODERS)}")
        if resize not in RESIZES:
            raise ValueError(f"reference executor: resize {resize!r}; expected one of {', '.join(RESIZES)}")
        if workers < 0:
            raise ValueError(f"reference executor: workers {workers}; expected 0 or more")
        self.device = torch.device(device)
        self.workers = int(workers)
        self.decoder = decoder
        self.resize = resize
        self.filename_tmpl = filename_tmpl
        self._lock = threading.Lock()
        self._pool = None
        self._buffers = SharedBuffers()
        self._submitted: deque = deque()  # the pool's jobs not yet seen done (wait_idle)
        self.stats = {"clips": 0}

    def _workers(self):
        with self._lock:
            if self._pool is None and self.workers > 0:
                import torch.multiprocessing as tmp

                self._pool = tmp.get_context("fork").Pool(self.workers, initializer=_worker_init)
            return self._pool

    def prepare(self, plans: Sequence[ClipPlan], *, mean=None, std=None, dtype="uint8"):
        """Hand every plan to the worker pool now (rendered while earlier batches are used)."""
        plans, _, _ = check_render_args(plans, mean, std, dtype)
        pool = self._workers()
        shape = (len(plans),) + view_shape(plans[0])
        direct = self.writes_into_batch()
        if pool is None:
            buf = torch.empty(shape, dtype=torch.uint8)
            return plans, buf, None, (mean, std, dtype)
        buf = self._buffers.take(shape) if direct else None
        jobs = [pool.apply_async(_render_one, (plan, self.decoder, self.filename_tmpl, self.resize,
                                               buf[i] if direct else None)) for i, plan in enumerate(plans)]
        with self._lock:
            while self._submitted and self._submitted[0].ready():
                self._submitted.popleft()
            self._submitted.extend(jobs)
        return plans, buf, jobs, (mean, std, dtype)

    def wait_idle(self, timeout: Optional[float] = None) -> None:
        """Wait until the workers have finished every job handed to them, those of batches
        prepared ahead and never run included (a pass closed early leaves them queued; a
        benchmark waits here so that they do not run while another system is timed)."""
        with self._lock:
            jobs, self._submitted = list(self._submitted), deque()
        for job in jobs:
            job.wait(timeout)

    def writes_into_batch(self) -> bool:
        """Whether workers write their views into the batch itself (a CPU device), or into
        memory of their own copied into pinned memory once (a CUDA device)."""
        return self.device.type == "cpu"

    def run(self, prepared) -> torch.Tensor:
        """Plans -> ``[N, V, C, H, W]``, a permuted view of ``[N, V, H, W, C]`` on ``self.device``.

        With mean/std: ``(x - mean) / std`` computed in float32 and cast to ``dtype``;
        without: raw pixels (uint8 unless ``dtype`` says otherwise).
        Raises VideoDecodeError for the first plan whose video fails.
        """
        plans, buf, jobs, (mean, std, dtype) = prepared
        if jobs is None:
            results = [_render_one(p, self.decoder, self.filename_tmpl, self.resize, buf[i])
                       for i, p in enumerate(plans)]
        else:
            results = [job.get() for job in jobs]
        for _, error, _ in results:
            if error is not None:
                raise VideoDecodeError(*error)
        copies = 0
        if jobs is not None and buf is not None:
            self._buffers.give_back(buf)  # reused once the batch handed out is dropped
        if buf is None:  # rendered into the workers' own memory: one copy into pinned memory
            buf = torch.empty((len(plans),) + tuple(results[0][0].shape), dtype=torch.uint8,
                              pin_memory=self.device.type == "cuda")
            for i, (views, _, _) in enumerate(results):
                buf[i].copy_(views)
            copies = len(plans)
        self._count(plans, [c for _, _, c in results], copies)
        x = buf.to(self.device, non_blocking=True)
        return normalise(x, mean, std, dtype).permute(0, 1, 4, 2, 3)

    def _count(self, plans: List[ClipPlan], counts: List[Dict[str, int]], copies: int) -> None:
        s = self.stats
        s["clips"] += len(plans)
        s["frames_path_clips"] = s.get("frames_path_clips", 0) + len(plans)
        s["frames_path_frames"] = s.get("frames_path_frames", 0) + sum(len(set(p.frame_indices.tolist()))
                                                                       for p in plans)
        s["clip_copies"] = s.get("clip_copies", 0) + copies
        for c in counts:
            for k, v in c.items():
                s[k] = s.get(k, 0) + v
        for p in plans:
            key = clip_count_key("frames", p)
            s[key] = s.get(key, 0) + 1

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

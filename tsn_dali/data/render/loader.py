"""ClipLoader: batches of rendered clips for one rank, the loader API other projects reuse.

Order and sharding: tsn_dali.data.render.order (torch's DistributedSampler rules, explicit).
Plans come from the ClipPlanner (``[seed, epoch, sample]`` randomness), so a batch
depends on (seed, epoch, rank, world_size, batch number) only: a resumed loader
(``load_state_dict``) yields the same remaining batches as an uninterrupted one,
and skips the finished ones without rendering them.

Rendering (tsn_dali.data.render.prefetch): a background thread keeps ``prefetch`` batches ready;
the executor's host-side ``prepare`` for the next batches runs in threads while its
``run`` decodes the current one. Val/test render ``eval_videos_per_run`` videos per
executor run (several batches at once, handed out one by one). ``prefetch: 0`` renders
in the caller. On a GPU the render thread queues its work on a CUDA stream of its own and
never waits for the device; a batch is ready on the stream that was current where it was
asked for (tsn_dali.data.render.streams). Batches are handed out through a guard
(tsn_dali.data.render.handoff) that keeps each one from being reused while the consumer's
queued kernels may still read it.

Bad videos: videos the index cannot use are dropped before sharding (listed in
``stats['dropped']``; ``on_bad_video: error`` raises instead). A video that fails while
rendering is, at train time, replaced by the next usable sample of the epoch's
permutation (``stats['replaced']``); at val/test time its slot gets ``samples == -1``
(``stats['skipped']``) under ``on_bad_video: skip``, else VideoDecodeError is raised.
The policy is ``recipe.data.on_bad_video`` for train and val, ``recipe.test.on_bad_video``
for test. Failures take one retry path (``_render``), whichever stage found them.

No silent stall: the consumer waits at most ``stall_timeout`` seconds for each batch, then
raises LoaderStalled naming the batch's videos. A render that hung cannot be stopped: its
daemon thread is left behind, and ``close()`` does not wait for it.

Ending: ``close()`` stops the render thread (after the render in progress), then closes the
executor the loader built. A loader is closed too when it is garbage-collected, and at
interpreter exit where it is still alive (tsn_dali.data.render.lifetime: before DALI's own
exit hook), so that a script that takes one batch and ends, or ends on an uncaught
exception or Ctrl-C, exits as Python would. An iterator that is dropped stops its pass's
render thread.
"""
from __future__ import annotations

import logging
import os
import queue
import threading
import weakref
from dataclasses import dataclass
from typing import Dict, List, NamedTuple, Optional, Sequence

import numpy as np
import torch

from tsn_dali.data.errors import DatasetError, LoaderStalled, PipelineError, PipelineFailure, VideoDecodeError
from tsn_dali.data.render.executors.base import TORCH_DTYPES
from tsn_dali.data.render import lifetime
from tsn_dali.data.render.handoff import HandoffGuard
from tsn_dali.data.render.order import BatchOrder, epoch_permutation
from tsn_dali.data.render.prefetch import Prefetcher
from tsn_dali.data.render.streams import render_stream

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


DEFAULT_STALL_TIMEOUT = 600.0  # seconds without a batch before LoaderStalled (loader.stall_timeout)


class Batch(NamedTuple):
    clips: torch.Tensor  # [N, V, C, H, W], channels_last per frame
    labels: torch.Tensor  # [N] int64 (-1 for padding)
    samples: torch.Tensor  # [N] int64: index into loader.records; -1 marks padding


class MetaBatch(NamedTuple):
    """A batch with each clip's plan facts (``ClipLoader(metadata=True)``)."""

    clips: torch.Tensor
    labels: torch.Tensor
    samples: torch.Tensor
    meta: List[Optional[dict]]  # per clip: path, frame_indices, crops, crop_flips, ... (None: padding)


def clip_meta(plan) -> dict:
    """What a clip is, from its plan: the video, the frame indices (in view order), the
    crop boxes ``[x1, y1, x2, y2]`` in the resized frame, which crops are mirrored, the
    whole-frame resize and the output size."""
    return {"path": plan.path, "label": int(plan.label), "frame_indices": [int(i) for i in plan.frame_indices],
            "resize_to": tuple(int(v) for v in plan.resize_to), "crops": plan.crops.tolist(),
            "crop_flips": [bool(f) for f in plan.crop_flips], "out_size": tuple(int(v) for v in plan.out_size)}


class EpochSetter:
    """``loader.sampler``: what a framework that calls ``sampler.set_epoch(epoch)`` on its data
    loaders (PyTorch Lightning's fit loop does) reaches; it sets the loader's epoch."""

    def __init__(self, loader):
        self._loader = weakref.ref(loader)  # no cycle: a dropped loader is closed at once (``__del__``)

    def set_epoch(self, epoch: int) -> None:
        loader = self._loader()
        if loader is None:
            raise ReferenceError("loader.sampler: its loader was garbage-collected")
        loader.set_epoch(epoch)


def resolve_dtype(dtype: Optional[str], mean, std, device: torch.device) -> str:
    """The batch dtype a loader gives (no silent defaults):

    - ``dtype`` None: ``mean``/``std`` given -> normalised float, in the dtype of the
      autocast in effect on ``device`` where one is (bfloat16/float16), else float32; none
      given -> raw ``uint8`` pixels;
    - mean/std with ``uint8``, a float dtype without mean/std, or a mean/std scaled to 0-1
      while the pixels are 0-255 are refused (PipelineError, one line).
    """
    from tsn_dali.config import DTYPES

    given = mean is not None or std is not None
    if given and (mean is None or std is None):
        raise PipelineError("ClipLoader", "mean/std", "give both mean and std, or neither")
    if given:
        mean, std = [float(v) for v in mean], [float(v) for v in std]
        if len(mean) != 3 or len(std) != 3:
            raise PipelineError("ClipLoader", "mean/std", f"expected 3 values each (RGB), got {mean} and {std}")
        if any(s <= 0 for s in std):
            raise PipelineError("ClipLoader", "std", f"expected values > 0, got {std}")
        if max(mean) <= 1.0 and max(std) <= 1.0:
            raise PipelineError("ClipLoader", "mean/std", f"{mean} and {std} look scaled to 0-1, but the pixels "
                                "are 0-255: multiply them by 255 (ImageNet's are [123.675, 116.28, 103.53] and "
                                "[58.395, 57.12, 57.375])")
    if dtype is None:
        if not given:
            return "uint8"
        kind = device.type if device.type in ("cuda", "cpu") else "cpu"
        if torch.is_autocast_enabled(kind):
            return {torch.bfloat16: "bfloat16", torch.float16: "float16"}.get(torch.get_autocast_dtype(kind),
                                                                              "float32")
        return "float32"
    if dtype not in DTYPES:
        raise PipelineError("ClipLoader", "dtype", f"expected one of {', '.join(DTYPES)}, got {dtype!r}")
    if dtype == "uint8" and given:
        raise PipelineError("ClipLoader", "dtype", "uint8 gives raw pixels: leave mean/std out, or ask for a "
                            "float dtype (float32, float16, bfloat16)")
    if dtype != "uint8" and not given:
        raise PipelineError("ClipLoader", "dtype", f"{dtype} batches are normalised: give mean and std "
                            "(0-255 scale), or dtype uint8 for raw pixels")
    return dtype


def short_videos(records, index) -> List[dict]:
    """Videos that decode fewer frames than their container's duration implies (VideoInfo.short):
    used (their frames are sampled), and said once, in one log line."""
    out = []
    for rec in records:
        why = getattr(index[rec.path], "short", None) if rec.path in index else None
        if why:
            out.append({"path": rec.path, "reason": why})
    if out:
        logger.warning("%d video(s) decode fewer frames than their duration implies (truncated files?), e.g. "
                       "%s: %s; listed in loader.stats['short']", len(out), out[0]["path"], out[0]["reason"])
    return out


def usable_records(records, index):
    """(records whose video the index can use, one dict per record left out: path and
    reason); each left-out record is said in one warning line."""
    kept, dropped = [], []
    for rec in records:
        info = index[rec.path] if rec.path in index else None
        ok = info is not None and getattr(info, "ok", True) and getattr(info, "num_frames", 1) > 0
        if ok:
            kept.append(rec)
            continue
        why = "not in the index" if info is None else (getattr(info, "error", None) or "no frames")
        dropped.append({"path": rec.path, "reason": why, "line": getattr(rec, "line", 0)})
        logger.warning("%s: left out (%s)", rec.path, why)
    return kept, dropped


@dataclass
class _Prepared:
    """One render group's plans and the executor's prepared inputs (the fast path)."""

    slots: list  # [(position in the group, sample)]
    plans: list
    inputs: object


class ClipLoader:
    """Iterates ``Batch(clips, labels, samples)`` for one rank.

    ``records``: the split's usable VideoRecords (``samples`` index into them);
    ``index``: path -> VideoInfo (a VideoIndex or a dict); ``planner``: a ClipPlanner;
    ``executor``: from ``build_executor`` (executors/base.py). ``train=True`` shuffles per
    epoch, drops the last incomplete batch and replaces videos that fail; else val/test
    order and padding. ``on_bad_video``: 'skip' (replace at train, skip at val/test) or
    'error'. ``handoff``: 'view' or 'copy' (tsn_dali.data.render.handoff). ``stall_timeout``:
    seconds the consumer waits for a batch before LoaderStalled (None or 0: forever; needs
    ``prefetch >= 1``).
    """

    def __init__(self, records: Sequence, index, planner, executor, *, batch_size: int,
                 train: bool, rank: int = 0, world_size: int = 1, device="cpu",
                 mean: Optional[Sequence[float]] = None, std: Optional[Sequence[float]] = None,
                 dtype: Optional[str] = None, prefetch: int = 2, seed: int = 0,
                 on_bad_video: str = "error", owns_executor: bool = False, handoff: str = "view",
                 eval_videos_per_run: int = 8, stall_timeout: Optional[float] = DEFAULT_STALL_TIMEOUT,
                 split: Optional[str] = None, metadata: bool = False):
        records, dropped = usable_records(records, index)
        short = short_videos(records, index)
        if not records:
            raise DatasetError("<records>", "no usable videos" + (f" ({len(dropped)} left out: "
                               f"{dropped[0]['path']}: {dropped[0]['reason']})" if dropped else ""))
        if not 0 <= rank < world_size:
            raise ValueError(f"ClipLoader: rank {rank} not in 0..{world_size - 1}")
        if batch_size <= 0:
            raise ValueError(f"ClipLoader: batch_size {batch_size}; expected a positive integer")
        if on_bad_video not in ("skip", "error"):
            raise ValueError(f"ClipLoader: on_bad_video {on_bad_video!r}; expected skip or error")
        dtype = resolve_dtype(dtype, mean, std, torch.device(device))
        self.records = list(records)
        self.index = index
        self.planner = planner
        self.executor = executor
        self.order = BatchOrder(len(self.records), batch_size, train=train, seed=seed, rank=rank,
                                world_size=world_size)
        self.batch_size = int(batch_size)
        self.train = bool(train)
        self.rank, self.world_size = int(rank), int(world_size)
        self.device = torch.device(device)
        self.mean, self.std, self.dtype = mean, std, dtype
        self.prefetch = int(prefetch)
        self.seed = int(seed)
        self.on_bad_video = on_bad_video
        self.owns_executor = owns_executor
        self.handoff = handoff
        HandoffGuard(self.device, handoff)  # checks the mode now, not at the first batch
        self.batches_per_run = 1 if self.train else max(1, int(eval_videos_per_run) // self.batch_size)
        self.metadata = bool(metadata)
        self.classes: Optional[List[str]] = None  # class names, where the videos came from class folders
        self.sampler = EpochSetter(self)  # what Lightning calls set_epoch on
        self.stats: Dict[str, object] = {"replaced": [], "skipped": [], "dropped": dropped, "frames_path": [],
                                         "short": short,
                                         # the executor's live counters: clips per path and codec
                                         # ("clips decoder vp9", "clips frames h264"), frames fed
                                         "decoded": getattr(executor, "stats", {})}
        self.list_file: Optional[str] = None
        self.stall_timeout = float(stall_timeout) if stall_timeout else None
        self.split = split or ("train" if self.train else "val")
        self._bad: Dict[int, str] = {}  # sample -> reason, found while rendering
        self._active: Optional[Prefetcher] = None
        self._hung = False  # a render thread was left blocked (a stall): never wait for it
        self._pass = 0  # the pass (iter()) in progress; an older one ends at its next next()
        self._last_good: Optional[tuple] = None  # (sample, epoch) that last rendered
        self._blamed_in_a_row = 0
        self._streams = render_stream(self.device)
        if self.train and len(self) == 0:
            raise ValueError(f"ClipLoader: {len(self.records)} videos over {world_size} rank(s) "
                             f"give no full batch of {batch_size}; expected at least "
                             f"{batch_size * world_size} videos or a smaller batch size")
        lifetime.watch(self, uses_dali=str(getattr(executor, "name", "")).startswith("dali"))

    # ------------------------------------------------------------------ public

    def __len__(self) -> int:
        return len(self.order)

    @property
    def epoch(self) -> int:
        return self.order.epoch

    @property
    def executor_name(self) -> str:
        return self.executor.name

    @property
    def num_views(self) -> int:
        return self.plan(0, 0).num_views

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch of the next pass (train order and plans), exactly: the next pass
        is ``epoch``'s from batch 0. Without calls, each pass that ran to its end is
        followed by the next epoch's (order.BatchOrder)."""
        self.order.set_epoch(epoch)

    def clip_axes(self, clips: torch.Tensor) -> torch.Tensor:
        """A batch's ``[N, V, C, H, W]`` as ``[N, clips, crops, clip_len, C, H, W]`` (a view,
        no copy): V is crop-major (crop ``k``'s frames are views ``k*T .. k*T+T-1``), and a
        crop's T frames are ``clips`` clips of ``clip_len`` frames each (the sampling op's
        ``num_clips`` and ``clip_len``; e.g. TSN's 25x10 test: ``[N, 25, 10, 1, C, H, W]``).
        Average over axes 1-2 for MMAction2's multi-view score."""
        plan = self.plan(0, 0)
        crops, frames = len(plan.crops), len(plan.frame_indices)
        sampling = next(op for op in self.planner.ops if op.kind == "sampling")
        clip_len = int(getattr(sampling, "clip_len", 1))
        if clips.shape[1] != crops * frames or frames % clip_len:
            raise ValueError(f"clip_axes: {clips.shape[1]} views; expected {crops} crops x {frames} frames")
        return clips.unflatten(1, (crops, frames // clip_len, clip_len)).transpose(1, 2)

    def state_dict(self) -> dict:
        return self.order.state_dict()

    def load_state_dict(self, state: dict) -> None:
        """Resume: the next pass over ``state['epoch']`` starts after its finished batches."""
        self.order.load_state_dict(state)

    def batch_samples(self, epoch: Optional[int] = None) -> List[np.ndarray]:
        """The sample ids of every batch of this rank for ``epoch`` (before bad-video handling)."""
        return self.order.batches(epoch)

    def plan(self, sample: int, epoch: int):
        """The ClipPlan of ``sample`` (an index into ``records``) in ``epoch``."""
        rec = self.records[sample]
        return self.planner.plan(sample, rec.path, rec.label, self.index[rec.path], epoch)

    def __iter__(self):
        """A pass over this rank's batches of the current epoch: the next epoch's where the
        last pass ran to its end and ``set_epoch`` was not called since (order.BatchOrder).
        One pass at a time: a new ``iter()`` starts a new pass and ends the one before, whose
        next ``next()`` raises StopIteration (as at the end of an epoch); it never hangs."""
        self._stop_active()
        self._pass += 1
        todo = self.order.start_pass()
        return self._iterate(self._pass, self.epoch, todo)

    def _iterate(self, token: int, epoch: int, todo):
        k = self.batches_per_run
        groups = [np.concatenate(todo[i:i + k]) for i in range(0, len(todo), k)]
        guard = HandoffGuard(self.device, self.handoff)
        try:
            for batches, ready in self._rendered(groups, epoch, token):
                for batch in batches:
                    if token != self._pass:  # a newer pass has begun: this one ends here
                        return
                    self._streams.consume(batch, ready)  # ready on the asking thread's stream
                    clips = guard.hand_out(batch.clips)
                    self.order.done += 1
                    yield self._outgoing(Batch(clips, batch.labels, batch.samples), epoch)
                    guard.next_requested()
            if token == self._pass:
                self.order.complete_pass()
        finally:
            guard.close()

    def _outgoing(self, batch: Batch, epoch: int):
        """The batch as handed out: with ``metadata``, a MetaBatch whose ``meta`` holds each
        clip's plan facts (None for padding)."""
        if not self.metadata:
            return batch
        meta = [None if int(s) < 0 else clip_meta(self.plan(int(s), epoch)) for s in batch.samples.tolist()]
        return MetaBatch(batch.clips, batch.labels, batch.samples, meta)

    def close(self) -> None:
        """Stop the prefetch thread (and the executor, where this loader built it). After a
        stall the blocked render is left behind and the executor's close is time-boxed. A pass
        in progress ends: its next ``next()`` raises StopIteration."""
        self._pass += 1
        self._stop_active()
        if not self._hung:
            self._streams.close()
        if self.owns_executor and self.executor is not None:
            if self._hung:
                _close_time_boxed(self.executor.close, 2.0, f"executor {self.executor_name}")
            else:
                self.executor.close()

    # ------------------------------------------------------------------ rendering

    def _rendered(self, groups, epoch, token: int):
        """Each group's batches, in order: rendered here (prefetch 0) or in the background."""
        if self.prefetch <= 0:
            for ids in groups:
                if token != self._pass:
                    return
                yield self._finish(ids, epoch, None, None)
            return
        prefetcher = Prefetcher(groups, lambda ids: self._prepare(ids, epoch),
                                lambda ids, prepared, error: self._finish(ids, epoch, prepared, error),
                                self.prefetch)
        self._active = prefetcher
        try:
            for ids in groups:
                if token != self._pass:
                    return
                try:
                    batches = prefetcher.get(self.stall_timeout)
                except StopIteration:
                    return
                except queue.Empty:
                    raise self._stalled(ids, epoch) from None
                yield batches
        finally:
            self._close_prefetcher(prefetcher)
            if self._active is prefetcher:
                self._active = None

    def _stop_active(self):
        active, self._active = self._active, None
        if active is not None:
            self._close_prefetcher(active)

    def _close_prefetcher(self, prefetcher: Prefetcher) -> None:
        """Stop it; a render still running after ``stall_timeout`` (at once after a stall)
        is left in its daemon thread."""
        if not prefetcher.close(0.0 if prefetcher.stalled else (self.stall_timeout or 5.0)):
            self._hung = True
            if not prefetcher.stalled:  # else LoaderStalled said it
                logger.warning("a render thread is still blocked in executor %s; left it running",
                               self.executor_name)

    def _stalled(self, ids, epoch: int) -> LoaderStalled:
        """The error for a consumer that waited ``stall_timeout`` for the group ``ids``."""
        paths = [self.records[int(s)].path for s in ids if s >= 0]
        return LoaderStalled(self.stall_timeout, paths, split=self.split, epoch=epoch,
                             batch=self.order.done + 1, num_batches=len(self))

    def _split(self, batch: Batch) -> List[Batch]:
        """A render group's batch cut into loader batches of ``batch_size``."""
        n = self.batch_size
        if len(batch.labels) == n:
            return [batch]
        return [Batch(batch.clips[i:i + n], batch.labels[i:i + n], batch.samples[i:i + n])
                for i in range(0, len(batch.labels), n)]

    def _prepare(self, ids: np.ndarray, epoch: int) -> Optional[_Prepared]:
        """Fast path, stage 1 (any thread): plans and the executor's host-side work. None
        where a sample is already known bad (the retry path handles that group)."""
        slots = [(i, int(s)) for i, s in enumerate(ids) if s >= 0]
        if not slots or any(s in self._bad for _, s in slots):
            return None
        plans = [self.plan(s, epoch) for _, s in slots]
        return _Prepared(slots, plans, self.executor.prepare(plans, mean=self.mean, std=self.std,
                                                             dtype=self.dtype))

    def _finish(self, ids: np.ndarray, epoch: int, prepared: Optional[_Prepared], error):
        """Stage 2 (the render thread; the caller's with ``prefetch: 0``): the group's
        batches and their ready event, rendered on the loader's stream."""
        if error is not None and not isinstance(error, VideoDecodeError):
            raise error
        with self._streams.rendering():
            batches = self._finish_group(ids, epoch, prepared, error)
            return batches, self._streams.ready()

    def _finish_group(self, ids: np.ndarray, epoch: int, prepared: Optional[_Prepared], error) -> List[Batch]:
        """Run the prepared group (the fast path); any decode failure, or a sample found bad
        since stage 1, goes to the retry path."""
        if error is None and prepared is not None and not any(s in self._bad for _, s in prepared.slots):
            try:
                clips = self._on_device(self.executor.run(prepared.inputs))
                self._rendered_ok(prepared.slots[0][1], epoch)
                return self._split(self._assemble(ids, prepared.slots, prepared.plans, clips, epoch))
            except VideoDecodeError:
                pass  # the retry path renders the group again and deals with the video
        return self._split(self._render(ids, epoch))

    def _render(self, ids, epoch: int) -> Batch:
        """The retry path (train and eval): render, and on a decode failure mark the video
        bad (replaced at train, skipped at eval, or raised under on_bad_video 'error')."""
        ids = [int(s) for s in ids]
        while True:
            if self.train:
                self._replace_bad(ids, epoch)
            slots = [(i, s) for i, s in enumerate(ids) if s >= 0 and s not in self._bad]
            if not slots:
                return self._assemble(ids, [], [], None, epoch)
            plans = [self.plan(s, epoch) for _, s in slots]
            try:
                clips = self._on_device(self.executor.render(plans, mean=self.mean, std=self.std,
                                                             dtype=self.dtype))
            except VideoDecodeError as err:
                self._mark_bad(err, [s for _, s in slots])
                self._check_still_works(err)
                continue
            self._rendered_ok(slots[0][1], epoch)
            return self._assemble(ids, slots, plans, clips, epoch)

    def _rendered_ok(self, sample: int, epoch: int) -> None:
        self._last_good, self._blamed_in_a_row = (sample, epoch), 0

    def _check_still_works(self, err: VideoDecodeError) -> None:
        """After a video was blamed, any executor: render the last sample that rendered; if
        that fails too (or nothing ever rendered and a third video in a row fails), the
        executor failed as a whole: PipelineFailure with the original error, no replacement
        cascade (the DALI executors apply the same rule inside their run)."""
        self._blamed_in_a_row += 1
        if self._last_good is None:
            if self._blamed_in_a_row >= 3:
                raise PipelineFailure(self.executor_name, f"{self._blamed_in_a_row} videos in a row failed and "
                                      "none ever rendered", str(err)) from None
            return
        sample, epoch = self._last_good
        try:
            self.executor.render([self.plan(sample, epoch)], mean=self.mean, std=self.std, dtype=self.dtype)
        except Exception:  # noqa: BLE001 - a sample that rendered before fails now: not the video's fault
            raise PipelineFailure(self.executor_name, "a video that rendered before fails now", str(err)) from None

    def _on_device(self, clips: torch.Tensor) -> torch.Tensor:
        if clips.device != self.device:
            clips = self._streams.to_device(clips)  # keeps the channels_last strides
        return clips

    def _mark_bad(self, err: VideoDecodeError, samples) -> None:
        failed = self._failed_samples(err, samples)
        if self.on_bad_video == "error" or not failed:
            raise err
        for s in failed:
            self._bad[s] = err.reason
            if not self.train:
                self.stats["skipped"].append({"sample": s, "path": self.records[s].path, "reason": err.reason})
        logger.warning("%s a video that failed to decode: %s", "replacing" if self.train else "skipping", err)

    def _failed_samples(self, err: VideoDecodeError, ids) -> List[int]:
        """Samples of ``ids`` whose video (or rawframe folder) is ``err.path``."""
        out = []
        for s in ids:
            path = self.records[s].path
            if err.path == path or err.path.startswith(path.rstrip(os.sep) + os.sep):
                out.append(int(s))
        return out

    def _replace_bad(self, ids: List[int], epoch: int) -> None:
        """Train: every known-bad sample of ``ids`` becomes the next usable one of the epoch
        that is not in this batch already (``_replacement``)."""
        for slot, s in enumerate(ids):
            if s in self._bad:
                r = self._replacement(s, epoch, taken=set(ids))
                self.stats["replaced"].append({"epoch": epoch, "sample": s, "path": self.records[s].path,
                                               "reason": self._bad[s], "replacement": r})
                ids[slot] = r

    def _replacement(self, sample: int, epoch: int, taken=frozenset()) -> int:
        """The next sample after ``sample`` in the epoch's permutation not known to be bad
        and not in ``taken`` (the batch's samples: a batch holds a video once while another
        usable one is left); where every usable one is taken, the next usable one."""
        perm = epoch_permutation(len(self.records), epoch, self.seed)
        pos = int(np.flatnonzero(perm == sample)[0])
        fallback = None
        for k in range(1, len(perm)):
            candidate = int(perm[(pos + k) % len(perm)])
            if candidate in self._bad:
                continue
            if candidate not in taken:
                return candidate
            fallback = candidate if fallback is None else fallback
        if fallback is not None:
            return fallback
        raise VideoDecodeError(self.records[sample].path,
                               "every video of the split failed to decode; nothing to replace it with")

    def _assemble(self, ids, slots, plans, clips, epoch: int) -> Batch:
        """The batch of ``ids``: rendered ``clips`` for ``slots``, zero clips (label and sample
        -1) for padding and skipped videos, in the same NVHWC layout."""
        n = len(ids)
        to_device = self._streams.to_device
        if clips is not None and len(slots) == n:
            labels = to_device(torch.tensor([p.label for p in plans], dtype=torch.int64))
            samples = to_device(torch.tensor([s for _, s in slots], dtype=torch.int64))
            return Batch(clips, labels, samples)
        if clips is None:
            template = self.plan(0, epoch)
            (w, h), v = template.out_size, template.num_views
            full = torch.zeros((n, v, h, w, 3), dtype=TORCH_DTYPES[self.dtype], device=self.device)
        else:
            nvhwc = clips.permute(0, 1, 3, 4, 2)
            full = torch.zeros((n,) + tuple(nvhwc.shape[1:]), dtype=clips.dtype, device=self.device)
            full[[i for i, _ in slots]] = nvhwc
            self._streams.retain(clips)  # may be a DALI view: kept until the copy has run
        labels = torch.full((n,), -1, dtype=torch.int64)
        samples = torch.full((n,), -1, dtype=torch.int64)
        for j, (i, s) in enumerate(slots):
            labels[i] = plans[j].label
            samples[i] = s
        return Batch(full.permute(0, 1, 4, 2, 3), to_device(labels), to_device(samples))

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


def _close_time_boxed(close, timeout: float, what: str) -> None:
    """Call ``close()`` in a daemon thread and wait at most ``timeout`` s for it: an executor
    whose render hangs holds its lock, and its ``close`` would wait for it forever."""
    thread = threading.Thread(target=close, daemon=True, name="tsn_dali-close")
    try:
        thread.start()
    except RuntimeError:  # no new thread while the interpreter shuts down
        logger.info("%s not closed: a render is still blocked and the interpreter is shutting down", what)
        return
    thread.join(timeout)
    if thread.is_alive():
        logger.info("%s did not close within %g s (a render is still blocked); left it", what, timeout)


# --------------------------------------------------------------------------- from a recipe


def _rawframe_index(records, filename_tmpl: str, start_index: int):
    """VideoInfo per rawframe folder: frame count from the list, size from its first frame."""
    from PIL import Image

    from tsn_dali.data.index.video_index import VideoInfo

    index = {}
    for rec in records:
        info = VideoInfo(path=rec.path, num_frames=int(rec.num_frames or 0), codec="jpeg")
        first = os.path.join(rec.path, filename_tmpl.format(start_index))
        try:
            with Image.open(first) as img:
                info.width, info.height = img.size
        except (OSError, ValueError) as exc:
            info.error = f"cannot read first frame {first}: {exc}"
        index[rec.path] = info
    return index


def _build_index(recipe, records, progress: bool, rank: int, world_size: int):
    """The video index (cached on disk); under torch.distributed the ranks share the
    probing and hand their shares over through the cache folder (no long collective)."""
    from tsn_dali.data.index.cache import index_cache_dir
    from tsn_dali.data.index import build_index

    data = recipe.data
    if data.format == "rawframes":
        return _rawframe_index(records, data.filename_tmpl, data.start_index)
    cache = index_cache_dir(recipe)
    return build_index([r.path for r in records], cache_dir=cache, workers=data.index_workers,
                       progress=progress and rank == 0, rank=rank, world_size=world_size)


def check_duplicates(records, list_file, split: str, allowed: bool, rank: int = 0) -> None:
    """A path listed more than once: refused for test, where each video is scored once
    (DatasetError naming the first), and said in one warning line for train and val, unless
    ``data.allow_duplicates``."""
    from tsn_dali.data.index.annotations import duplicates

    repeated, conflicting = duplicates(records)
    if allowed or not (repeated or conflicting):
        return
    summary = (f"{len(repeated)} repeated line(s) and {len(conflicting)} with a conflicting label, e.g. "
               f"{(conflicting or repeated)[0]}")
    if split == "test":
        raise DatasetError(list_file, f"{summary}: a video would be scored more than once (data.allow_duplicates: "
                           "true scores the lines as listed)")
    if rank == 0:
        logger.warning("%s: %s; kept as listed (data.allow_duplicates: true silences this)", list_file, summary)


def bad_videos_error(source: str, bad, key: str) -> DatasetError:
    """The error for videos the index cannot use under ``on_bad_video: error``: one line
    naming ``source`` (the list, folder or "videos"), every ``(path, reason)`` and the key."""
    listed = "; ".join(f"{path}: {why}" for path, why in bad)
    return DatasetError(source, f"{len(bad)} bad video(s) ({key} is error): {listed}")


def bad_video_policy(recipe, split: str) -> str:
    """``recipe.test.on_bad_video`` for test, ``recipe.data.on_bad_video`` for train and val."""
    return recipe.test.on_bad_video if split == "test" else recipe.data.on_bad_video


def build_loader(recipe, split: str, *, rank: int = 0, world_size: int = 1, device="cpu",
                 executor=None, seed: int = 0, dtype: Optional[str] = None,
                 progress: bool = True) -> ClipLoader:
    """The ClipLoader of ``split`` ('train' | 'val' | 'test') of a recipe, for one rank.

    Reads ``data.{split}_list`` (under ``data.root``, paths under ``data.{split}_prefix``),
    indexes the videos, drops bad ones per the split's on_bad_video, plans with
    ``data.{split}_pipeline`` and renders with ``executor`` (default: built from
    ``recipe.loader``). ``dtype`` overrides ``loader.dtype`` ('uint8' gives raw pixels).
    """
    from tsn_dali.config import RecipeError, resolve_data_path
    from tsn_dali.data.index.annotations import read_rawframe_list, read_video_list
    from tsn_dali.data.render.executors import build_executor
    from tsn_dali.data.plan.planner import ClipPlanner, load_pipeline

    if split not in SPLITS:
        raise ValueError(f"build_loader: split {split!r}; expected one of {', '.join(SPLITS)}")
    data = recipe.data
    list_rel = getattr(data, f"{split}_list")
    if not list_rel:
        raise RecipeError(recipe.source or "<recipe>", f"data.{split}_list",
                          f"expected an annotation list for the {split} split")
    list_file = resolve_data_path(recipe, list_rel)
    prefix = resolve_data_path(recipe, getattr(data, f"{split}_prefix"))
    policy = bad_video_policy(recipe, split)
    if data.format == "rawframes":
        records, problems = read_rawframe_list(
            list_file, prefix, num_classes=recipe.model.num_classes, skip_bad=policy == "skip",
            filename_tmpl=data.filename_tmpl, start_index=data.start_index)
    else:
        records, problems = read_video_list(list_file, prefix, num_classes=recipe.model.num_classes,
                                            skip_bad=policy == "skip")
    check_duplicates(records, list_file, split, data.allow_duplicates, rank)
    index = _build_index(recipe, records, progress, rank, world_size)
    bad = [(r, index[r.path].error or "no frames") for r in records if not index[r.path].ok]
    if bad and policy == "error":
        key = "test.on_bad_video" if split == "test" else "data.on_bad_video"
        raise bad_videos_error(list_file, [(r.path, why) for r, why in bad], key)
    dropped = [{"path": None, "reason": p} for p in problems]
    dropped += [{"path": r.path, "reason": why, "line": r.line} for r, why in bad]
    if dropped and rank == 0:
        logger.warning("%s: %d of %d entries left out:\n%s", list_file, len(dropped),
                       len(records) + len(problems),
                       "\n".join(d["reason"] if d["path"] is None else f"{d['path']}: {d['reason']}"
                                 for d in dropped))
    bad_paths = {r.path for r, _ in bad}
    records = [r for r in records if r.path not in bad_paths]

    planner = ClipPlanner(load_pipeline(getattr(data, f"{split}_pipeline"), data), seed)
    cfg = recipe.loader
    owns = executor is None
    if executor is None:
        executor = build_executor(cfg.executor, device=device, num_threads=cfg.num_threads,
                                  decode_workers=cfg.decode_workers, decode_sessions=cfg.decode_sessions,
                                  slice_gops=cfg.slice_gops, decode=cfg.decode,
                                  reference_workers=cfg.reference_workers, filename_tmpl=data.filename_tmpl)
    dtype = dtype or (None if cfg.dtype == "auto" else cfg.dtype)  # auto: ClipLoader's rule (resolve_dtype)
    normalised = dtype != "uint8"
    batch_size = cfg.test_batch_size if split == "test" else cfg.batch_size
    if not records:
        raise DatasetError(list_file, "no usable videos left after dropping bad ones")
    if split == "train" and batch_size * world_size > len(records):
        if owns:
            executor.close()
        raise DatasetError(list_file, f"loader.batch_size {batch_size} x {world_size} rank(s) is more than its "
                           f"{len(records)} usable video(s): not one full batch (train drops the last partial one)")
    loader = ClipLoader(records, index, planner, executor, batch_size=batch_size,
                        train=split == "train", rank=rank, world_size=world_size, device=device,
                        mean=data.mean if normalised else None, std=data.std if normalised else None,
                        dtype=dtype, prefetch=cfg.prefetch, seed=seed, on_bad_video=policy, owns_executor=owns, handoff=cfg.handoff,
                        eval_videos_per_run=cfg.eval_videos_per_run, stall_timeout=cfg.stall_timeout,
                        split=split)
    loader.stats["dropped"] = dropped
    loader.stats["frames_path"] = _slow_path_videos(executor, records, index, rank == 0)
    loader.list_file = list_file
    return loader


def _slow_path_videos(executor, records, index, log: bool) -> list:
    """The videos the executor renders on its slower path (e.g. what NVDEC cannot decode
    goes to CPU decoding), asked once at start-up and named once in the log."""
    from tsn_dali.data.plan.clip_plan import StreamFacts

    slow = executor.check_videos({r.path: StreamFacts.from_info(index[r.path]) for r in records})
    if slow and log:
        reasons: Dict[str, int] = {}
        for why in slow.values():
            reasons[why] = reasons.get(why, 0) + 1
        logger.warning("%s: %d of %d video(s) take the frames path, decoded on the CPU outside DALI (%s); "
                       "listed in loader.stats['frames_path']", executor.name, len(slow), len(records),
                       "; ".join(f"{n} x {why}" for why, n in reasons.items()))
    return [{"path": p, "reason": why} for p, why in slow.items()]

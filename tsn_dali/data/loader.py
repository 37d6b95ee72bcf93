"""ClipLoader: batches of rendered clips for one rank, the loader API other projects reuse.

Order and sharding (the rules of torch's DistributedSampler, made explicit):

- train: every epoch a permutation of all samples from
  ``numpy.random.default_rng([seed, epoch])``, padded with its own first entries to a
  multiple of ``world_size``; rank ``r`` takes ``r::world_size`` of it and drops its last
  incomplete batch. Every rank gets the same number of batches.
- val/test: the samples in list order, rank ``r`` takes ``r::world_size``; the last
  batch is padded with ``samples == -1`` entries (zero clips, label -1) so that every
  rank has the same number of batches and every video is counted exactly once.

Plans come from the ClipPlanner (``[seed, epoch, sample]`` randomness), so a batch
depends on (seed, epoch, rank, world_size, batch number) only: a resumed loader
(``load_state_dict``) yields the same remaining batches as an uninterrupted one,
and skips the finished ones without rendering them.

Bad videos: videos the index cannot use are dropped before sharding (listed in
``stats['dropped']``; ``on_bad_video: error`` raises instead). A video that fails while
rendering is, at train time, replaced by the next usable sample of the epoch's
permutation (``stats['replaced']``); at val/test time its slot gets ``samples == -1``
(``stats['skipped']``) under ``on_bad_video: skip``, else VideoDecodeError is raised.
The policy is ``recipe.data.on_bad_video`` for train and val, ``recipe.test.on_bad_video``
for test.
"""
from __future__ import annotations

import logging
import math
import os
import queue
import threading
import warnings
from typing import Dict, List, NamedTuple, Optional, Sequence

import numpy as np
import torch

from tsn_dali.data.errors import VideoDecodeError

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


class Batch(NamedTuple):
    clips: torch.Tensor  # [N, V, C, H, W], channels_last per frame
    labels: torch.Tensor  # [N] int64 (-1 for padding)
    samples: torch.Tensor  # [N] int64: index into loader.records; -1 marks padding


# --------------------------------------------------------------------------- order and shards


def train_order(num_samples: int, batch_size: int, epoch: int, seed: int, rank: int = 0,
                world_size: int = 1) -> np.ndarray:
    """This rank's train samples for ``epoch``: ``[num_batches * batch_size]`` int64.

    Permutation from ``default_rng([seed, epoch])``, padded (repeating its start) to a
    multiple of ``world_size``, ``rank::world_size``, last incomplete batch dropped.
    """
    perm = epoch_permutation(num_samples, epoch, seed)
    per_rank = math.ceil(num_samples / world_size)
    padded = np.resize(perm, per_rank * world_size)  # np.resize repeats from the start
    mine = padded[rank::world_size]
    return mine[: (per_rank // batch_size) * batch_size].astype(np.int64)


def epoch_permutation(num_samples: int, epoch: int, seed: int) -> np.ndarray:
    return np.random.default_rng([int(seed), int(epoch)]).permutation(num_samples)


def eval_order(num_samples: int, batch_size: int, rank: int = 0, world_size: int = 1) -> np.ndarray:
    """This rank's val/test samples in list order (``rank::world_size``), padded with -1 to
    ``num_batches * batch_size`` where ``num_batches = ceil(ceil(n / world_size) / batch_size)``."""
    per_rank = math.ceil(num_samples / world_size)
    num_batches = math.ceil(per_rank / batch_size)
    out = np.full(num_batches * batch_size, -1, np.int64)
    mine = np.arange(rank, num_samples, world_size, dtype=np.int64)
    out[: len(mine)] = mine
    return out


# --------------------------------------------------------------------------- prefetch


class _Prefetcher:
    """Runs ``fn`` over ``items`` in a background thread, at most ``depth`` results ahead."""

    def __init__(self, fn, items, depth: int):
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(fn, list(items)), daemon=True,
                                        name="tsn_dali-prefetch")
        self._thread.start()

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, fn, items):
        try:
            for item in items:
                if self._stop.is_set() or not self._put(("ok", fn(item))):
                    return
        except BaseException as exc:  # handed to the consumer, raised there
            self._put(("error", exc))
            return
        self._put(("end", None))

    def get(self):
        kind, value = self._queue.get()
        if kind == "error":
            raise value
        if kind == "end":
            raise StopIteration
        return value

    def close(self):
        self._stop.set()
        while self._thread.is_alive():
            try:
                self._queue.get(timeout=0.05)
            except queue.Empty:
                pass
        self._thread.join()


# --------------------------------------------------------------------------- the loader


class ClipLoader:
    """Iterates ``Batch(clips, labels, samples)`` for one rank.

    ``records``: the split's usable VideoRecords (``samples`` index into them);
    ``index``: path -> VideoInfo (a VideoIndex or a dict); ``planner``: a ClipPlanner;
    ``executor``: from ``build_executor``. ``train=True`` shuffles per epoch, drops the
    last incomplete batch and replaces videos that fail; else val/test order and padding.
    ``on_bad_video``: 'skip' (replace at train, skip at val/test) or 'error'.
    """

    def __init__(self, records: Sequence, index, planner, executor, *, batch_size: int,
                 train: bool, rank: int = 0, world_size: int = 1, device="cpu",
                 mean: Optional[Sequence[float]] = None, std: Optional[Sequence[float]] = None,
                 dtype: str = "uint8", prefetch: int = 2, seed: int = 0,
                 on_bad_video: str = "error", owns_executor: bool = False):
        if not records:
            raise ValueError("ClipLoader: expected at least one usable video, got none")
        if not 0 <= rank < world_size:
            raise ValueError(f"ClipLoader: rank {rank} not in 0..{world_size - 1}")
        if batch_size <= 0:
            raise ValueError(f"ClipLoader: batch_size {batch_size}; expected a positive integer")
        if on_bad_video not in ("skip", "error"):
            raise ValueError(f"ClipLoader: on_bad_video {on_bad_video!r}; expected skip or error")
        if dtype == "uint8":
            mean = std = None
        self.records = list(records)
        self.index = index
        self.planner = planner
        self.executor = executor
        self.batch_size = int(batch_size)
        self.train = bool(train)
        self.rank, self.world_size = int(rank), int(world_size)
        self.device = torch.device(device)
        self.mean, self.std, self.dtype = mean, std, dtype
        self.prefetch = int(prefetch)
        self.seed = int(seed)
        self.on_bad_video = on_bad_video
        self.owns_executor = owns_executor
        self.stats: Dict[str, list] = {"replaced": [], "skipped": [], "dropped": []}
        self.epoch = 0
        self._done = 0  # batches yielded in the current pass
        self._skip = 0  # batches to skip on the next pass (load_state_dict)
        self._bad: Dict[int, str] = {}  # sample -> reason, found while rendering
        self._active: Optional[_Prefetcher] = None
        if self.train and len(self) == 0:
            raise ValueError(f"ClipLoader: {len(self.records)} videos over {world_size} rank(s) "
                             f"give no full batch of {batch_size}; expected at least "
                             f"{batch_size * world_size} videos or a smaller batch size")

    # ------------------------------------------------------------------ public

    def __len__(self) -> int:
        n, ws, bs = len(self.records), self.world_size, self.batch_size
        per_rank = math.ceil(n / ws)
        return per_rank // bs if self.train else math.ceil(per_rank / bs)

    @property
    def executor_name(self) -> str:
        return self.executor.name

    @property
    def num_views(self) -> int:
        return self._plan(0, 0).num_views

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch (train order and plans); a new epoch starts at batch 0."""
        if int(epoch) != self.epoch:
            self._done = self._skip = 0
        self.epoch = int(epoch)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "batches_done": self._done, "num_batches": len(self),
                "world_size": self.world_size, "seed": self.seed}

    def load_state_dict(self, state: dict) -> None:
        """Resume: the next pass over ``state['epoch']`` starts after its finished batches."""
        if state.get("num_batches", len(self)) != len(self) or \
                state.get("world_size", self.world_size) != self.world_size:
            warnings.warn(f"ClipLoader.load_state_dict: saved with {state.get('num_batches')} batches "
                          f"on {state.get('world_size')} ranks, now {len(self)} on {self.world_size}; "
                          "the resumed epoch's batches differ", stacklevel=2)
        self.epoch = int(state["epoch"])
        self._skip = self._done = min(int(state["batches_done"]), len(self))

    def batch_samples(self, epoch: Optional[int] = None) -> List[np.ndarray]:
        """The sample ids of every batch of this rank for ``epoch`` (before bad-video handling)."""
        epoch = self.epoch if epoch is None else epoch
        n, bs = len(self.records), self.batch_size
        if self.train:
            order = train_order(n, bs, epoch, self.seed, self.rank, self.world_size)
        else:
            order = eval_order(n, bs, self.rank, self.world_size)
        return [order[i:i + bs] for i in range(0, len(order), bs)]

    def __iter__(self):
        epoch = self.epoch
        start, self._skip = self._skip, 0
        todo = self.batch_samples(epoch)[start:]
        self._done = start
        self._stop_active()
        if self.prefetch <= 0:
            for ids in todo:
                batch = self._render(ids, epoch)
                self._done += 1
                yield batch
            return
        prefetcher = _Prefetcher(lambda ids: self._render(ids, epoch), todo, self.prefetch)
        self._active = prefetcher
        try:
            while True:
                try:
                    batch = prefetcher.get()
                except StopIteration:
                    return
                self._done += 1
                yield batch
        finally:
            prefetcher.close()
            if self._active is prefetcher:
                self._active = None

    def close(self) -> None:
        """Stop the prefetch thread (and the executor, where this loader built it)."""
        self._stop_active()
        if self.owns_executor and self.executor is not None:
            self.executor.close()

    # ------------------------------------------------------------------ internals

    def _stop_active(self):
        active, self._active = self._active, None
        if active is not None:
            active.close()

    def _plan(self, sample: int, epoch: int):
        rec = self.records[sample]
        return self.planner.plan(sample, rec.path, rec.label, self.index[rec.path], epoch)

    def _failed_samples(self, err: VideoDecodeError, ids) -> List[int]:
        """Samples of ``ids`` whose video (or rawframe folder) is ``err.path``."""
        out = []
        for s in ids:
            path = self.records[s].path
            if err.path == path or err.path.startswith(path.rstrip(os.sep) + os.sep):
                out.append(int(s))
        return out

    def _render(self, ids: np.ndarray, epoch: int) -> Batch:
        if self.train:
            return self._render_train(ids, epoch)
        return self._render_eval(ids, epoch)

    def _render_call(self, plans):
        clips = self.executor.render(plans, mean=self.mean, std=self.std, dtype=self.dtype)
        if clips.device != self.device:
            clips = clips.to(self.device, non_blocking=True)  # keeps the channels_last strides
        return clips

    def _replacement(self, sample: int, epoch: int) -> int:
        """The next sample after ``sample`` in the epoch's permutation not known to be bad."""
        perm = epoch_permutation(len(self.records), epoch, self.seed)
        pos = int(np.flatnonzero(perm == sample)[0])
        for k in range(1, len(perm)):
            candidate = int(perm[(pos + k) % len(perm)])
            if candidate not in self._bad:
                return candidate
        raise VideoDecodeError(self.records[sample].path,
                               "every video of the split failed to decode; nothing to replace it with")

    def _render_train(self, ids, epoch) -> Batch:
        ids = [int(s) for s in ids]
        while True:
            for slot, s in enumerate(ids):
                if s in self._bad:
                    r = self._replacement(s, epoch)
                    self.stats["replaced"].append({"epoch": epoch, "sample": s, "path": self.records[s].path,
                                                   "reason": self._bad[s], "replacement": r})
                    ids[slot] = r
            plans = [self._plan(s, epoch) for s in ids]
            try:
                clips = self._render_call(plans)
                break
            except VideoDecodeError as err:
                failed = self._failed_samples(err, ids)
                if self.on_bad_video == "error" or not failed:
                    raise
                for s in failed:
                    self._bad[s] = err.reason
                logger.warning("replacing a video that failed to decode: %s", err)
        labels = torch.tensor([p.label for p in plans], dtype=torch.int64).to(self.device)
        samples = torch.tensor(ids, dtype=torch.int64).to(self.device)
        return Batch(clips, labels, samples)

    def _render_eval(self, ids, epoch) -> Batch:
        slots = [(i, int(s)) for i, s in enumerate(ids) if s >= 0 and int(s) not in self._bad]
        clips = None
        while slots:
            plans = [self._plan(s, epoch) for _, s in slots]
            try:
                clips = self._render_call(plans)
                break
            except VideoDecodeError as err:
                failed = self._failed_samples(err, [s for _, s in slots])
                if self.on_bad_video == "error" or not failed:
                    raise
                for s in failed:
                    self._bad[s] = err.reason
                    self.stats["skipped"].append({"sample": s, "path": self.records[s].path,
                                                  "reason": err.reason})
                    logger.warning("skipping a video that failed to decode: %s", err)
                slots = [(i, s) for i, s in slots if s not in self._bad]
        n = len(ids)
        if clips is not None and len(slots) == n:
            labels = torch.tensor([p.label for p in plans], dtype=torch.int64).to(self.device)
            return Batch(clips, labels, torch.as_tensor(np.asarray(ids), dtype=torch.int64).to(self.device))
        # Padding: zero clips, label -1, sample -1, in the same NVHWC layout.
        if clips is None:
            template = self._plan(0, epoch)
            (w, h), v = template.out_size, template.num_views
            dtype = getattr(torch, self.dtype)
            full = torch.zeros((n, v, h, w, 3), dtype=dtype, device=self.device)
        else:
            nvhwc = clips.permute(0, 1, 3, 4, 2)
            full = torch.zeros((n,) + tuple(nvhwc.shape[1:]), dtype=clips.dtype, device=self.device)
            full[[i for i, _ in slots]] = nvhwc
        labels = torch.full((n,), -1, dtype=torch.int64)
        samples = torch.full((n,), -1, dtype=torch.int64)
        for j, (i, s) in enumerate(slots):
            labels[i] = plans[j].label
            samples[i] = s
        return Batch(full.permute(0, 1, 4, 2, 3), labels.to(self.device), samples.to(self.device))

    def __del__(self):
        try:
            self._stop_active()
        except Exception:
            pass


# --------------------------------------------------------------------------- from a recipe


def _rawframe_index(records, filename_tmpl: str, start_index: int):
    """VideoInfo per rawframe folder: frame count from the list, size from its first frame."""
    from PIL import Image

    from tsn_dali.data.video_index import VideoInfo

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
    """The video index (cached on disk); under torch.distributed rank 0 probes first."""
    from tsn_dali.config import resolve_data_path
    from tsn_dali.data.video_index import build_index

    data = recipe.data
    if data.format == "rawframes":
        return _rawframe_index(records, data.filename_tmpl, data.start_index)
    cache = resolve_data_path(recipe, data.index_cache) if data.index_cache else \
        os.path.join(data.root, ".tsn_dali_index")
    paths = [r.path for r in records]
    dist = torch.distributed
    shared = world_size > 1 and dist.is_available() and dist.is_initialized()
    if shared and rank != 0:
        dist.barrier()  # rank 0 fills the cache first
    index = build_index(paths, cache_dir=cache, workers=recipe.loader.decode_workers,
                        progress=progress and rank == 0)
    if shared and rank == 0:
        dist.barrier()
    return index


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
    from tsn_dali.data.annotations import read_rawframe_list, read_video_list
    from tsn_dali.data.executors import build_executor
    from tsn_dali.data.planner import ClipPlanner, load_pipeline

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
    index = _build_index(recipe, records, progress, rank, world_size)
    bad = [(r, index[r.path].error or "no frames") for r in records if not index[r.path].ok]
    if bad and policy == "error":
        listed = "; ".join(f"{r.path}: {why}" for r, why in bad)
        key = "test.on_bad_video" if split == "test" else "data.on_bad_video"
        raise VideoDecodeError(list_file, f"{len(bad)} bad video(s) ({key} is error): {listed}")
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
    owns = executor is None
    if executor is None:
        cfg = recipe.loader
        executor = build_executor(cfg.executor, device=device, num_threads=cfg.num_threads,
                                  decode_workers=cfg.decode_workers, prefetch=cfg.prefetch,
                                  reference_workers=cfg.reference_workers,
                                  filename_tmpl=data.filename_tmpl, decode=cfg.decode)
    if hasattr(executor, "hint_codecs"):  # DALI: route by the index's codec, no re-probe
        executor.hint_codecs({r.path: index[r.path].codec for r in records})
    dtype = dtype or recipe.loader.dtype
    batch_size = recipe.loader.test_batch_size if split == "test" else recipe.loader.batch_size
    if not records:
        raise VideoDecodeError(list_file, "no usable videos left after dropping bad ones")
    loader = ClipLoader(records, index, planner, executor, batch_size=batch_size,
                        train=split == "train", rank=rank, world_size=world_size, device=device,
                        mean=data.mean, std=data.std, dtype=dtype, prefetch=recipe.loader.prefetch,
                        seed=seed, on_bad_video=policy, owns_executor=owns)
    loader.stats["dropped"] = dropped
    loader.list_file = list_file
    return loader

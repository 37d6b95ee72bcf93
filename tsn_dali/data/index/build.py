"""Building the video index: on one process, or shared by every torchrun rank.

``build_index`` takes every video whose cache entry still matches its file and probes the
rest (``video_index.probe_video`` on a thread pool), saving partial progress as it goes
(``tsn_dali.data.index.cache``).

Across ranks (``torch.distributed`` initialised, ``world_size > 1``, a cache folder every
rank sees): rank r owns the unique paths ``r::world_size`` (interleaved, so every share
gets a like mix of classes and sizes), checks them against the cache, probes its misses
on its own threads and writes its share to ``build-<token>/rank<r>.json`` (atomic
rename). Every rank then polls that folder until all shares are there and builds the
same index from them. The collectives are a broadcast of the build token when the build
starts, an all_gather of which cache files each rank read, and a barrier once every
share has been read: all ranks reach each within seconds of each other, so no rank waits
in a collective while others probe (NCCL's default process-group timeout is 10 minutes).
When every rank read the same cache files a share holds only its rank's new rows (the
others take its cache hits from their own copy), else all its rows. Each rank writes a
heartbeat, ``rank<r>.progress`` (videos probed, those in flight), every second; a rank
whose count has not moved for ``stall_timeout`` seconds stops the others with an error
naming it. Rank 0 merges the shares into the cache and removes the build folder.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import sys
import tempfile
import time
import uuid
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from tsn_dali.data.index import video_index
from tsn_dali.data.index.cache import (IndexCache, check_cached, info_fields, info_row, list_folder,
                                       read_rows, row_info, sweep, write_rows)
from tsn_dali.data.index.video_index import VideoIndex, VideoInfo

BUILD_PREFIX = "build-"
SAVE_EVERY = 30.0  # seconds between partial saves
STALL_TIMEOUT = 600.0  # seconds a rank may make no progress before the others stop


class IndexBuildError(RuntimeError):
    """A distributed index build that cannot finish (a rank stalled or died, a folder not shared)."""


def default_workers() -> int:
    """Probe threads per process: the node's cores over its local ranks (torchrun's
    ``LOCAL_WORLD_SIZE``), at least 1."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    local = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1))
    return max(1, cores // local)


def _read_json(file: str) -> Optional[dict]:
    try:
        with open(file, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _write_json(file: str, data: dict) -> None:
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=os.path.dirname(file))
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(data, fh)
    os.replace(tmp, file)



# --------------------------------------------------------------------------- probing


def probe_all(paths: Sequence[str], workers: int, on_done: Callable[[str, VideoInfo], None],
              on_tick: Callable[[list], None] = lambda in_flight: None, tick: float = 1.0
              ) -> Dict[str, VideoInfo]:
    """Probe ``paths`` with ``video_index.probe_video`` on ``workers`` threads (at most
    4 x workers queued, so an interrupt stops soon); ``on_done(path, info)`` per video,
    ``on_tick([(path, started), ...in flight])`` about every ``tick`` seconds."""
    probe = video_index.probe_video  # looked up per build: tests stub it
    workers = max(1, int(workers))
    out: Dict[str, VideoInfo] = {}
    todo = iter(paths)
    pending: dict = {}
    pool = ThreadPoolExecutor(workers, thread_name_prefix="tsn_dali-probe")

    def fill():
        while len(pending) < 4 * workers:
            path = next(todo, None)
            if path is None:
                return
            pending[pool.submit(probe, path)] = (path, time.time())

    try:
        fill()
        last = time.monotonic()
        while pending:
            done, _ = wait(list(pending), timeout=tick, return_when=FIRST_COMPLETED)
            for fut in [f for f in pending if f in done]:  # in submission order: a failure
                # (an interrupt) comes after the videos probed before it, which are kept
                path, _ = pending.pop(fut)
                out[path] = fut.result()
                on_done(path, out[path])
            fill()
            if time.monotonic() - last >= tick:
                on_tick(list(pending.values()))
                last = time.monotonic()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return out


class _Saver:
    """Collects probed VideoInfos and writes them as a partial file every ``every`` seconds."""

    def __init__(self, cache: Optional[IndexCache], every: float, tag: str = ""):
        self.cache, self.every, self.tag = cache, every, tag
        self.new: List[VideoInfo] = []
        self.last = time.monotonic()

    def add(self, info: VideoInfo) -> None:
        self.new.append(info)
        if self.cache is not None and time.monotonic() - self.last >= self.every:
            self.flush()

    def flush(self) -> None:
        if self.cache is not None and self.new:
            self.cache.save_partial(self.new, self.tag)
        self.new, self.last = [], time.monotonic()


def _bar(total: int, progress: bool, desc: str = "probing videos"):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="video", disable=not progress, dynamic_ncols=True)


# --------------------------------------------------------------------------- one process


def build_index(paths, cache_dir=None, workers: Optional[int] = None, progress: bool = True, *,
                rank: Optional[int] = None, world_size: Optional[int] = None,
                save_every: float = SAVE_EVERY, stall_timeout: float = STALL_TIMEOUT,
                poll: float = 0.2) -> VideoIndex:
    """The VideoIndex of ``paths``: cached entries whose file is unchanged, the rest probed
    (``workers`` threads, default ``default_workers()``) and written back to ``cache_dir``.

    Under an initialised ``torch.distributed`` group with ``world_size > 1`` and a cache
    folder, the ranks share the probing (module docstring); every rank gets the same index.
    ``rank``/``world_size`` default to the group's. The returned index has ``stats``:
    ``{"probed", "cached", "seconds"}`` (this process's share under torchrun).
    """
    start = time.monotonic()
    paths = [str(p) for p in paths]
    workers = int(workers) if workers else default_workers()
    group = _process_group(rank, world_size)
    cache = IndexCache(cache_dir) if cache_dir else None
    if group is not None and cache is not None:  # loads the cache once the ranks agree to start
        infos, probed = _build_shared(paths, cache, workers, progress, group, save_every,
                                      stall_timeout, poll)
    else:
        infos, probed = _build_local(paths, cache and cache.load(), workers, progress, save_every)
    index = VideoIndex(infos[p] for p in dict.fromkeys(paths))
    index.stats = {"probed": probed, "cached": len(infos) - probed,
                   "seconds": round(time.monotonic() - start, 3)}
    return index


def _build_local(paths, cache, workers, progress, save_every) -> Tuple[Dict[str, VideoInfo], int]:
    unique = list(dict.fromkeys(paths))
    infos, todo = check_cached(unique, cache, workers)
    if not todo:
        if cache is not None and cache.has_partials:
            cache.save([])  # fold a killed build's partial files into the main file
        return infos, 0
    saver = _Saver(cache, save_every)
    with _bar(len(todo), progress) as bar:
        try:
            infos.update(probe_all(todo, workers, lambda p, i: (saver.add(i), bar.update(1))))
        except BaseException:
            saver.flush()  # a killed or failed build keeps what it probed
            raise
    if cache is not None:
        cache.save(info_row(infos[p], cache.fields) for p in todo)
    return infos, len(todo)


# --------------------------------------------------------------------------- across ranks


def _process_group(rank, world_size) -> Optional[Tuple[int, int]]:
    """(rank, world_size) when torch.distributed is initialised with more than one rank."""
    if "torch" not in sys.modules:
        return None
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return None
    world = dist.get_world_size() if world_size is None else int(world_size)
    if world <= 1:
        return None
    return (dist.get_rank() if rank is None else int(rank)), world


def _agree_token(rank: int, cache: IndexCache) -> str:
    """A fresh build token, made on rank 0 and broadcast (the build's first collective)."""
    import torch.distributed as dist

    token = [None]
    if rank == 0:
        sweep(cache.folder, BUILD_PREFIX)  # folders of killed builds, a day old
        token[0] = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
        folder = os.path.join(cache.folder, BUILD_PREFIX + token[0])
        os.makedirs(folder, exist_ok=True)
        _write_json(os.path.join(folder, "token.json"), {"token": token[0], "host": socket.gethostname()})
    dist.broadcast_object_list(token, src=0)
    return token[0]


def _wait_visible(folder: str, rank: int, timeout: float, poll: float) -> None:
    """Rank 0's build folder must appear here: the cache folder must be shared storage."""
    deadline = time.monotonic() + timeout
    while not os.path.isfile(os.path.join(folder, "token.json")):
        if time.monotonic() > deadline:
            raise IndexBuildError(
                f"{folder}: rank 0's index build folder is not visible from rank {rank} "
                f"({socket.gethostname()}) after {timeout:.0f} s; the index cache must be on storage "
                "every node shares (set data.index_cache), or build it first with python -m tsn_dali.index")
        time.sleep(poll)


class _Heartbeat:
    """``rank<r>.progress``: what this rank has probed, written about every second."""

    def __init__(self, folder: str, rank: int, total: Optional[int]):
        self.file = os.path.join(folder, f"rank{rank}.progress")
        self.state = {"rank": rank, "host": socket.gethostname(), "pid": os.getpid(),
                      "done": 0, "total": total, "in_flight": [], "finished": False}
        self.write()

    def write(self, in_flight: Sequence[Tuple[str, float]] = ()) -> None:
        now = time.time()
        self.state["in_flight"] = [[p, round(now - t, 1)] for p, t in sorted(in_flight, key=lambda x: x[1])[:3]]
        self.state["time"] = now
        _write_json(self.file, self.state)


def _paths_digest(unique: Sequence[str]) -> str:
    return hashlib.sha1("\n".join(unique).encode("utf-8", "surrogateescape")).hexdigest()


def _build_shared(paths, cache, workers, progress, group, save_every, stall_timeout, poll
                  ) -> Tuple[Dict[str, VideoInfo], int]:
    import torch.distributed as dist

    rank, world = group
    token = _agree_token(rank, cache)
    folder = os.path.join(cache.folder, BUILD_PREFIX + token)
    _wait_visible(folder, rank, min(120.0, stall_timeout), poll)
    # Loaded after the token: a previous build's save on rank 0 is done by then. When
    # every rank read the same files, a share lists only what its rank probed and the
    # others take its cache hits from their own copy (half the JSON a warm start parses).
    cache.load()
    snapshots = [None] * world
    dist.all_gather_object(snapshots, cache.snapshot())
    compact = len(set(snapshots)) == 1
    unique = list(dict.fromkeys(paths))
    mine = unique[rank::world]
    beat = _Heartbeat(folder, rank, None)  # alive while it checks its share against the cache
    infos, todo = check_cached(mine, cache, workers)
    beat.state["total"] = len(todo)
    beat.write()
    watch = _Watch(folder, world, rank, len(todo), stall_timeout, progress and rank == 0)
    saver = _Saver(cache, save_every, tag=f"{token}-r{rank}-")

    def done(path, info):
        saver.add(info)
        beat.state["done"] += 1
        watch.local(1)

    def tick(in_flight):
        beat.write(in_flight)
        watch.refresh()

    try:
        probed = probe_all(todo, workers, done, tick)
    except BaseException:
        saver.flush()
        raise
    infos.update(probed)
    rows = [info_row(infos[p], cache.fields, absolute=False) for p in (todo if compact else mine)]
    write_rows(os.path.join(folder, f"rank{rank}.json"), rows, cache.fields, rank=rank,
               world_size=world, digest=_paths_digest(unique), probed=len(todo), compact=compact)
    beat.state["finished"] = True
    beat.write()
    shares = watch.wait(poll)
    everything = _merge_shares(shares, unique, world, cache, folder)
    dist.barrier()  # every rank has read every share: reached within seconds of each other
    if rank == 0:
        if any(header.get("probed") for header, _ in shares.values()) or cache.has_partials:
            cache.save((info_row(everything[p], cache.fields) for p in unique),
                       remove=[os.path.join(cache.partial_dir, n) for n in list_folder(cache.partial_dir)
                               if n.startswith(token)])
        shutil.rmtree(folder, ignore_errors=True)
    cache.rows = {}
    return everything, len(todo)


def _merge_shares(shares: Dict[int, tuple], unique, world, cache: IndexCache, folder) -> Dict[str, VideoInfo]:
    """VideoInfo by path from every rank's share: its rows, and for a compact share the
    rest of its paths (its cache hits) from this rank's copy of the same cache files."""
    digest = _paths_digest(unique)
    col = cache.fields.index("path")
    out: Dict[str, VideoInfo] = {}
    for r in range(world):
        header, rows = shares[r]
        if header.get("digest") != digest or header.get("world_size") != world:
            raise IndexBuildError(f"{folder}/rank{r}.json: rank {r} indexed another list of videos "
                                  f"than this rank; expected every rank to build the same lists")
        for row in rows:
            out[row[col]] = row_info(row, cache.fields, row[col])
        if header.get("compact"):
            for path in unique[r::world]:
                if path not in out:
                    row = cache.rows.get(os.path.abspath(path))
                    if row is None:
                        raise IndexBuildError(f"{folder}/rank{r}.json: {path} is neither in rank {r}'s "
                                              "share nor in this rank's cache")
                    out[path] = row_info(row, cache.fields, path)
    missing = [p for p in unique if p not in out]
    if missing:
        raise IndexBuildError(f"{folder}: the ranks' shares lack {len(missing)} video(s), e.g. {missing[0]}")
    return out


class _Watch:
    """Polls a build folder for every rank's share; shows the ranks' summed progress on
    rank 0; stops with IndexBuildError when an unfinished rank's count has not moved for
    ``stall_timeout`` seconds."""

    def __init__(self, folder: str, world: int, rank: int, own_total: int, stall_timeout: float,
                 progress: bool):
        self.folder, self.world, self.rank, self.stall_timeout = folder, world, rank, stall_timeout
        self.seen: Dict[int, Tuple[object, float]] = {}
        self.beats: Dict[int, dict] = {}
        self.own, self.own_total = 0, own_total
        self.bar = _bar(own_total, True, desc=f"probing videos ({world} ranks)") if progress else None
        self.last_check = 0.0

    def local(self, n: int) -> None:
        self.own += n
        if self.bar is not None:
            self.bar.update(n)

    def refresh(self, names: Optional[set] = None) -> None:
        """Read the other ranks' heartbeats (at most every 2 s); update the bar; check stalls."""
        now = time.monotonic()
        if now - self.last_check < 2.0:
            return
        self.last_check = now
        names = set(list_folder(self.folder)) if names is None else names
        for r in range(self.world):
            if r == self.rank:
                continue
            finished = f"rank{r}.json" in names
            if finished and r in self.beats:
                self.beats[r]["done"] = self.beats[r].get("total") or 0
                continue
            beat = _read_json(os.path.join(self.folder, f"rank{r}.progress"))
            if beat is not None:
                self.beats[r] = beat
            if finished:
                continue
            key = (beat or {}).get("done", -1)
            seen = self.seen.get(r)
            if seen is None or seen[0] != key:
                self.seen[r] = (key, now)
            elif now - seen[1] > self.stall_timeout:
                raise IndexBuildError(self._stall_message(r, beat, now - seen[1]))
        if self.bar is not None:
            self.bar.total = sum(int(b.get("total") or 0) for b in self.beats.values()) + self.own_total
            self.bar.n = sum(int(b.get("done") or 0) for b in self.beats.values()) + self.own
            self.bar.refresh()

    def _stall_message(self, r: int, beat: Optional[dict], idle: float) -> str:
        if beat is None:
            return (f"{self.folder}: rank {r} has written no progress for {idle:.0f} s "
                    "(died, or cannot see this folder?); stopping the index build")
        flight = "; in flight: " + ", ".join(f"{p} ({age:.0f} s)" for p, age in beat.get("in_flight", [])) \
            if beat.get("in_flight") else ""
        return (f"{self.folder}: rank {r} ({beat.get('host')}, pid {beat.get('pid')}) has probed nothing "
                f"for {idle:.0f} s ({beat.get('done')} of {beat.get('total')} done{flight}); "
                "stopping the index build")

    def wait(self, poll: float) -> Dict[int, tuple]:
        """Every rank's (header, rows) once all shares are written."""
        while True:
            names = set(list_folder(self.folder))
            if all(f"rank{r}.json" in names for r in range(self.world)):
                break
            self.refresh(names)
            time.sleep(poll)
        if self.bar is not None:
            self.bar.close()
        shares = {}
        for r in range(self.world):
            got = read_rows(os.path.join(self.folder, f"rank{r}.json"), info_fields())
            if got is None:
                raise IndexBuildError(f"{self.folder}/rank{r}.json: unreadable share of rank {r}")
            shares[r] = got
        return shares

"""A ClipLoader from the videos a user has, no recipe and no list file needed: ``loader_from``.

    from tsn_dali.data import loader_from

    train = loader_from([("a.mp4", 0), ("b.webm", 1), ...], split="train", batch_size=8,
                        mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375])

``videos`` is any of:

- a sequence of ``(path, label)`` pairs (or VideoRecords);
- a folder laid out as ``root/<class>/<video>``: classes sorted by name (or ``classes``
  given), a class's index is its label (``loader.classes`` lists them);
- an MMAction2 video list file (``relative/path.mp4 label`` a line), its paths under
  ``prefix`` (default: the list's own folder).

The videos are indexed once (frames, size, codec, keyframes; cached in ``index_cache``,
default ``~/.cache/tsn_dali/index``, shared by the ranks of a torch.distributed job);
unusable ones are left out with one log line each and listed in ``loader.stats["dropped"]``,
or, with ``on_bad_video="error"``, raise DatasetError naming them (as ``build_loader``).
``pipeline``: the view, as a pipeline name (``tsn_train``, ``tsn_val``, ``tsn_test_threecrop``,
... in ``pipelines/``; default per ``split``), a YAML file, or a list of ops
(``tsn_dali.data.SampleFrames`` and the rest). A pipeline file's ``$num_segments``,
``$input_size``, ``$short_side`` and ``$flip_label_map`` are this call's arguments of those
names. ``rank``/``world_size`` default to torch.distributed's where a process group is up.
The other arguments are ClipLoader's and the executor's (``loader.*`` recipe settings of
the same names, docs/loader.md).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Optional, Sequence

import torch

from tsn_dali.data.errors import DatasetError, PipelineError
from tsn_dali.data.render.loader import DEFAULT_STALL_TIMEOUT, ClipLoader, _slow_path_videos, bad_videos_error

VIDEO_EXTENSIONS = (".mp4", ".avi", ".webm", ".mkv", ".mov", ".m4v", ".mpg", ".mpeg", ".flv")
DEFAULT_PIPELINES = {"train": "tsn_train", "val": "tsn_val", "test": "tsn_test_tencrop"}
logger = logging.getLogger(__name__)


def default_index_cache() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "tsn_dali", "index")


def records_from(videos, prefix: Optional[str] = None, classes: Optional[Sequence[str]] = None):
    """(VideoRecords, class names or None, what a folder left out or None) from pairs, a
    ``root/<class>/<video>`` folder, or an MMAction2 list file (module docstring)."""
    from tsn_dali.data.index.annotations import VideoRecord, read_video_list

    if isinstance(videos, (str, os.PathLike)):
        path = Path(videos)
        if path.is_dir():
            return scan_folder(path, classes)
        if path.is_file():
            records, _ = read_video_list(path, str(path.parent) if prefix is None else prefix, skip_bad=True,
                                         check_files=False)
            return records, None, None
        raise DatasetError(str(path), "no such folder or list file")
    out = []
    for i, item in enumerate(videos):
        if isinstance(item, VideoRecord):
            out.append(item)
            continue
        try:
            path, label = item
        except (TypeError, ValueError):
            raise DatasetError("videos", f"item {i}: expected a (path, label) pair, got {item!r}") from None
        if not isinstance(label, int) or isinstance(label, bool) or label < 0:
            raise DatasetError("videos", f"item {i} ({path}): expected a label >= 0, got {label!r}")
        full = os.path.join(prefix, str(path)) if prefix else str(path)
        out.append(VideoRecord(path=full, label=label, line=i + 1, source="videos"))
    return out, None, None


# Folders that file managers, archivers and notebooks leave beside a dataset's classes
# (macOS zips, Synology, Windows volumes, Jupyter, Python); hidden names (".x") go with them.
SYSTEM_FOLDERS = frozenset({"__MACOSX", "@eaDir", "$RECYCLE.BIN", "System Volume Information", "lost+found",
                            "__pycache__"})


def hidden(name: str) -> bool:
    """A hidden or system entry: a dot name (``.git``, ``.ipynb_checkpoints``, macOS's
    ``._clip.mp4`` resource forks) or one of SYSTEM_FOLDERS. Never a class or a video."""
    return name.startswith(".") or name in SYSTEM_FOLDERS


def _videos_under(folder: Path, other: dict) -> list:
    """The video files under ``folder`` at any depth, sorted, skipping hidden entries at any
    level; every other file is counted in ``other`` by its extension."""
    videos = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not hidden(d))
        for name in sorted(filenames):
            if hidden(name):
                continue
            ext = os.path.splitext(name)[1].lower()
            if ext in VIDEO_EXTENSIONS:
                videos.append(Path(dirpath) / name)
            else:
                other[ext or "(none)"] = other.get(ext or "(none)", 0) + 1
    return sorted(videos)


def folder_summary(root: Path, left: dict) -> str:
    """One line: what ``scan_folder`` found under ``root`` and left out (empty if nothing)."""
    parts = []
    if left["hidden"]:
        parts.append(f"{len(left['hidden'])} hidden or system folder(s) ({', '.join(left['hidden'])})")
    if left["empty"]:
        parts.append(f"{len(left['empty'])} folder(s) with no video ({', '.join(left['empty'])})")
    if left["top_videos"]:
        parts.append(f"{len(left['top_videos'])} video(s) directly under the root, in no class folder "
                     f"({', '.join(left['top_videos'][:3])}{', ...' if len(left['top_videos']) > 3 else ''})")
    if left["other_files"]:
        kinds = ", ".join(f"{ext} {n}" for ext, n in sorted(left["other_files"].items(), key=lambda kv: (-kv[1], kv[0])))
        parts.append(f"{sum(left['other_files'].values())} file(s) of other types ({kinds})")
    return f"{root}: left out {'; '.join(parts)}" if parts else ""


def scan_folder(root: Path, classes: Optional[Sequence[str]] = None):
    """``root/<class>/<video>`` -> (records, class names, what was left out).

    Classes are the subfolders that hold a video, sorted by name; hidden and system folders
    and files (``hidden``) are never classes or videos. With ``classes`` given, those names
    are the classes in that order (an empty one keeps its label). Left out: those folders,
    folders with no video, videos directly under ``root``, files of other types
    (``folder_summary`` says it in one line)."""
    from tsn_dali.data.index.annotations import VideoRecord

    entries = sorted(root.iterdir(), key=lambda p: p.name)
    left = {"hidden": [p.name for p in entries if p.is_dir() and hidden(p.name)], "empty": [],
            "top_videos": [p.name for p in entries if p.is_file() and not hidden(p.name)
                           and p.suffix.lower() in VIDEO_EXTENSIONS], "other_files": {}}
    for p in entries:
        if p.is_file() and not hidden(p.name) and p.suffix.lower() not in VIDEO_EXTENSIONS:
            ext = p.suffix.lower() or "(none)"
            left["other_files"][ext] = left["other_files"].get(ext, 0) + 1
    folders = {p.name: _videos_under(p, left["other_files"]) for p in entries if p.is_dir() and not hidden(p.name)}
    if classes is not None:
        names = list(classes)
        unknown = [c for c in folders if c not in names and folders[c]]
        if unknown:
            raise DatasetError(str(root), f"folder {unknown[0]!r} is not one of the {len(names)} classes given")
    else:
        names = [c for c in folders if folders[c]]
    left["empty"] = [c for c in folders if not folders[c] and c not in names]
    records = [VideoRecord(path=str(path), label=label, source=str(root))
               for label, name in enumerate(names) for path in folders.get(name, [])]
    if not records:
        said = folder_summary(root, left)
        raise DatasetError(str(root), f"no video files ({', '.join(VIDEO_EXTENSIONS)}) in its class folders"
                           + (f"; {said.split(': left out ', 1)[1]} left out" if said else ""))
    return records, names, left


def folder_records(root: Path, classes: Optional[Sequence[str]] = None):
    """``root/<class>/<video>``: one record per video file, labelled by its class's index
    (``scan_folder``) -> (records, class names)."""
    return scan_folder(Path(root), classes)[:2]


SIZE_DEFAULTS = {"num_segments": 8, "input_size": 224, "short_side": 256}


def _check_sizes(pipeline, split: str, given: dict) -> None:
    """Every size a caller gives is used by the view, or the call is refused (PipelineError,
    one line): a list of ops fixes its own sizes, and a pipeline without ``$num_segments``
    (the test views: MMAction2's protocol fixes 25 clips) would silently ignore it."""
    from tsn_dali.data.plan.planner import _resolve_path, pipeline_uses

    if not given:
        return
    name, value = next(iter(given.items()))
    if isinstance(pipeline, (list, tuple)):
        raise PipelineError("loader_from", "", f"{name}={value} is not used: pipeline= is a list of ops, "
                            "which carry their own sizes; set it in the ops")
    uses = pipeline_uses(pipeline)
    for name, value in given.items():
        if name not in uses:
            why = {"num_segments": "fixes its clip count" + (" (MMAction2's test protocol)" if split == "test" else ""),
                   "input_size": "fixes its crop size", "short_side": "fixes its resize"}[name]
            example = (f", e.g. [SampleFrames(clip_len=1, num_clips={value}, test_mode=True), Resize(scale=(-1, 256)), "
                       "TenCrop(crop_size=224)]" if name == "num_segments" else "")
            raise PipelineError("loader_from", "", f"{name}={value} is not taken by split={split!r}'s pipeline "
                                f"'{pipeline}', which {why}: no ${name} in {_resolve_path(pipeline)}; leave it "
                                f"out, or give pipeline= a view that takes it{example}")


def _pipeline_ops(pipeline, split: str, sizes: dict, flip_label_map):
    from tsn_dali.config import DataConfig
    from tsn_dali.data.plan.ops import Op, check_pipeline
    from tsn_dali.data.plan.planner import load_pipeline

    if pipeline is None:
        pipeline = DEFAULT_PIPELINES[split]
    _check_sizes(pipeline, split, {k: v for k, v in sizes.items() if v is not None})
    num_segments, input_size, short_side = (SIZE_DEFAULTS[k] if sizes[k] is None else sizes[k] for k in SIZE_DEFAULTS)
    if isinstance(pipeline, (list, tuple)):
        bad = [op for op in pipeline if not isinstance(op, Op)]
        if bad:
            raise PipelineError("pipeline", "", f"expected ops (tsn_dali.data.SampleFrames, Resize, ...), "
                                f"got {bad[0]!r}")
        try:
            check_pipeline(list(pipeline))
        except ValueError as exc:
            raise PipelineError("pipeline", "", str(exc)) from None
        return list(pipeline)
    cfg = DataConfig(num_segments=num_segments, input_size=input_size, short_side=short_side,
                     flip_label_map=dict(flip_label_map or {}))
    return load_pipeline(pipeline, cfg)


def _distributed(rank, world_size):
    if rank is not None and world_size is not None:
        return int(rank), int(world_size)
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return (dist.get_rank() if rank is None else int(rank),
                dist.get_world_size() if world_size is None else int(world_size))
    return int(rank or 0), int(world_size or 1)


def loader_from(videos, *, split: str = "train", pipeline=None, prefix: Optional[str] = None,
                classes: Optional[Sequence[str]] = None, batch_size: int = 8, num_segments: Optional[int] = None,
                input_size: Optional[int] = None, short_side: Optional[int] = None, flip_label_map: Optional[dict] = None,
                mean: Optional[Sequence[float]] = None, std: Optional[Sequence[float]] = None,
                dtype: Optional[str] = None, device=None, executor: str = "auto", rank: Optional[int] = None,
                world_size: Optional[int] = None, seed: int = 0, on_bad_video: str = "skip",
                index_cache: Optional[str] = None, prefetch: int = 2, handoff: str = "view",
                stall_timeout: Optional[float] = DEFAULT_STALL_TIMEOUT, metadata: bool = False, num_threads: int = 4,
                decode_workers: int = 4, decode_sessions: int = 16, reference_workers: int = 4,
                eval_videos_per_run: int = 8, progress: bool = False):
    """A ClipLoader over ``videos`` for one rank (module docstring). ``split``: "train"
    shuffles per epoch, drops the last incomplete batch and replaces a video that fails to
    decode; "val"/"test" keep list order and pad the last batch (samples -1).
    ``num_segments``/``input_size``/``short_side`` (default 8/224/256) fill the pipeline's
    ``$`` sizes; one given that the view does not take is refused, never ignored."""
    from tsn_dali.data.index import build_index
    from tsn_dali.data.plan.planner import ClipPlanner
    from tsn_dali.data.render.executors import build_executor

    if split not in DEFAULT_PIPELINES:
        raise ValueError(f"loader_from: split {split!r}; expected one of {', '.join(DEFAULT_PIPELINES)}")
    device = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
    rank, world_size = _distributed(rank, world_size)
    records, names, left = records_from(videos, prefix, classes)
    if left is not None and rank == 0 and folder_summary(Path(videos), left):
        logger.warning("%s", folder_summary(Path(videos), left))
    ops = _pipeline_ops(pipeline, split, dict(num_segments=num_segments, input_size=input_size,
                                              short_side=short_side), flip_label_map)
    index = build_index([r.path for r in records], cache_dir=index_cache or default_index_cache(),
                        progress=progress and rank == 0, rank=rank, world_size=world_size)
    bad = [(r.path, index[r.path].error or "no frames") for r in records if not index[r.path].ok]
    if bad and on_bad_video == "error":
        raise bad_videos_error(str(videos) if isinstance(videos, (str, os.PathLike)) else "videos", bad,
                               "on_bad_video")
    built = build_executor(executor, device=device, num_threads=num_threads, decode_workers=decode_workers,
                           decode_sessions=decode_sessions, reference_workers=reference_workers)
    try:
        loader = ClipLoader(records, index, ClipPlanner(ops, seed), built, batch_size=batch_size,
                            train=split == "train", rank=rank, world_size=world_size, device=device, mean=mean,
                            std=std, dtype=dtype, prefetch=prefetch, seed=seed, on_bad_video=on_bad_video,
                            owns_executor=True, handoff=handoff, eval_videos_per_run=eval_videos_per_run,
                            stall_timeout=stall_timeout, split=split, metadata=metadata)
    except ValueError as exc:
        built.close()
        if isinstance(exc, (DatasetError, PipelineError)):
            raise
        raise DatasetError("videos", str(exc)) from None
    except BaseException:
        built.close()
        raise
    loader.classes = names
    if left is not None:
        loader.stats["left_out"] = left
    loader.stats["frames_path"] = _slow_path_videos(built, loader.records, index, rank == 0)
    return loader


__all__ = ["DEFAULT_PIPELINES", "default_index_cache", "folder_records", "folder_summary", "hidden", "loader_from",
           "records_from", "scan_folder"]

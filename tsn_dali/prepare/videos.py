"""Re-encode a video data set for fast sparse sampling: ``python -m tsn_dali.prepare``.

    python -m tsn_dali.prepare data/kinetics400/kinetics400_train_list_videos.txt \\
        --prefix data/kinetics400/videos_train --out data/k400_gop16/videos_train \\
        --gop 16 --short-side 320

TSN reads 8 (or 25) frames spread over a whole video. A decoder reaches a frame only from
the keyframe before it, so with Kinetics' usual long GOP (one keyframe in 250 frames)
every clip costs about as many decoded frames as the video has; with keyframes every 16
frames it costs about 8 x 8.5 (benchmarks/README.md, "frames decoded per clip"). This
command writes every video of an MMAction2 video list again as H.264 (or VP9, ``--codec
vp9``: the codec DALI's CPU decoder reads) with a fixed keyframe interval (``--gop``,
scene-cut keyframes off), optionally resized to a short
side (``--short-side``, aspect kept, even sizes for yuv420p; MMAction2's
tools/data/resize_videos.py does the same resize with ffmpeg), and writes the list for
the new files beside them. Every frame is kept, at the source's average frame rate, so
frame indices, and with them the clip plans, mean the same frames as before. The stream
written is the one the index describes (a file of several: decord's, FFmpeg's best), its
frames written upright (a display matrix applied, as the loader shows them).

The trade-off: a shorter GOP means more keyframes, so bigger files (more bytes read and
fed per clip) for fewer decoded frames. The DALI executors feed the decoder only the GOP
pieces a clip needs (tsn_dali.data.render.slicing), so their cost follows the GOP: GOP 16 is
about 8 x 8.5 frames per 8-frame clip, GOP 4 about 8 x 2.5 at larger files, all-intra
(``--gop 1``) exactly the 8 frames at the largest files. The bench's ``gop`` part
measures bytes, frames and clips/s of each (``--help`` shows one CPU run).

Outputs are written to a temporary name and renamed when complete, so a rerun skips
what is done (an interrupted run loses only the videos in flight). A video that cannot
be read is reported and left out of the new list; the rest go on. Exit status 0 when
every video was written, 1 when some failed (listed in ``<out>/prepare_failed.txt``).

``python -m tsn_dali.prepare lists DATASET ...`` writes the lists themselves from Kinetics'
or Something-Something V2's official annotation files (``tsn_dali.prepare.lists``).
"""
from __future__ import annotations

import argparse
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Tuple

import av
import numpy as np

from tsn_dali import cli
from tsn_dali.engine.errors import UsageError
from tsn_dali.data.index.annotations import AnnotationError, read_video_list
from tsn_dali.data.index.video_index import indexed_stream
from tsn_dali.data.media.decoding import display_rotation, upright
from tsn_dali.data.media.videoio import video_extension, write_video

DEFAULT_GOP = 16
CODECS = ("h264", "vp9")


def scaled_size(width: int, height: int, short_side: Optional[int]) -> Tuple[int, int]:
    """(w, h) with the short side ``short_side`` and the aspect kept (mmcv rounding,
    ``int(x + 0.5)``), each then rounded down to even (yuv420p). ``None``: the source size,
    rounded down to even."""
    if short_side:
        if width <= height:
            width, height = short_side, int(height * short_side / width + 0.5)
        else:
            width, height = int(width * short_side / height + 0.5), short_side
    return max(2, width - width % 2), max(2, height - height % 2)


def _frames(container, stream, short_side: Optional[int]) -> Iterator[np.ndarray]:
    """The stream's frames upright (turned by the first frame's display matrix), resized so
    that the upright frame is ``scaled_size`` of the upright source."""
    size, turn = None, 0
    for frame in container.decode(stream):
        if size is None:
            turn = display_rotation(getattr(frame, "rotation", 0))
            sideways = turn in (90, 270)
            w, h = scaled_size(*((frame.height, frame.width) if sideways else (frame.width, frame.height)),
                               short_side)
            size = (h, w) if sideways else (w, h)  # stored way round
        if (frame.width, frame.height) != size:
            frame = frame.reformat(width=size[0], height=size[1], format="rgb24", interpolation="BICUBIC")
        yield np.ascontiguousarray(upright(frame.to_ndarray(format="rgb24")[None], turn)[0])


def reencode_video(src: str, dst: str, gop: Optional[int] = DEFAULT_GOP, short_side: Optional[int] = None,
                   crf: Optional[int] = None, codec: str = "h264") -> str:
    """``src`` (its indexed stream, upright) decoded with PyAV and written to ``dst`` as
    ``codec`` (h264 | vp9) with keyframes every ``gop`` frames (None: the encoder's default
    interval), resized per ``scaled_size``. Written to a ``.part`` name beside ``dst`` (folders made as needed)
    and renamed when complete; raises on a video it cannot read."""
    os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
    with av.open(src) as container:
        if not container.streams.video:
            raise ValueError("no video stream")
        stream = indexed_stream(container, src)
        rate = float(stream.average_rate or stream.guessed_rate or 30)
        tmp = dst + ".part" + video_extension(codec)
        try:
            write_video(tmp, _frames(container, stream, short_side), fps=rate, codec=codec, gop=gop, crf=crf)
            with av.open(tmp) as check:
                if not check.streams.video or check.streams.video[0].codec_context.width == 0:
                    raise ValueError("no frame could be decoded")
        except BaseException:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise
    os.replace(tmp, dst)
    return dst


@dataclass
class Job:
    src: str
    rel: str  # output path relative to --out (the source's list path, the codec's extension)
    label: int
    line: int


def output_rel(list_path: str, codec: str = "h264") -> str:
    """The new file's path relative to ``--out``: the list's path with the codec's extension
    (``.mp4`` for H.264, ``.webm`` for VP9)."""
    return str(Path(list_path).with_suffix(video_extension(codec)))


def plan_jobs(list_file: str, prefix: str, codec: str = "h264") -> Tuple[List[Job], List[Tuple[int, str, str]]]:
    """(jobs, missing) for the list's lines: a malformed line raises AnnotationError naming
    file and line before anything is written; a video that is not there is ``missing``
    ([(line, path, reason)]) and the rest go on."""
    records, _ = read_video_list(list_file, prefix, check_files=False)
    jobs, missing, sources = [], [], {}
    for r in records:
        rel = os.path.relpath(r.path, prefix) if prefix else r.path
        if os.path.isabs(rel):
            rel = rel.lstrip(os.sep)  # an absolute list path is mirrored under --out
        if rel == ".." or rel.startswith(".." + os.sep):
            raise AnnotationError(list_file, r.line, f"{r.path} is outside --prefix {prefix}; "
                                  "expected paths under it")
        if not os.path.isfile(r.path):
            missing.append((r.line, r.path, "file not found"))
            continue
        job = Job(src=r.path, rel=output_rel(rel, codec), label=r.label, line=r.line)
        other = sources.setdefault(job.rel, job)
        if other.src != job.src:
            raise AnnotationError(list_file, r.line, f"{job.src} and {other.src} (line {other.line}) "
                                  f"would both be written to {job.rel}")
        jobs.append(job)
    return jobs, missing


def prepare(list_file: str, prefix: str, out: str, *, gop: Optional[int] = DEFAULT_GOP,
            short_side: Optional[int] = None, crf: Optional[int] = None, workers: int = 1,
            overwrite: bool = False, progress: bool = True, codec: str = "h264") -> dict:
    """Re-encode every video of ``list_file`` into ``out``; returns a summary dict:
    ``list`` (the new list file), ``written``, ``skipped`` (already there), ``failed``
    ([(list line, path, reason)]), ``failed_file``."""
    jobs, failed = plan_jobs(list_file, prefix, codec)
    new_list = os.path.join(out, Path(list_file).name)
    if os.path.realpath(new_list) == os.path.realpath(list_file):
        raise AnnotationError(list_file, None, f"--out {out} would overwrite this list; expected another folder")
    for job in jobs:
        if os.path.realpath(os.path.join(out, job.rel)) == os.path.realpath(job.src):
            raise AnnotationError(list_file, job.line, f"--out {out} would overwrite {job.src}; "
                                  "expected another folder")
    os.makedirs(out, exist_ok=True)

    def run(job: Job):
        dst = os.path.join(out, job.rel)
        if os.path.isfile(dst) and not overwrite:
            return "skipped", None
        try:
            reencode_video(job.src, dst, gop=gop, short_side=short_side, crf=crf, codec=codec)
        except Exception as exc:  # PyAV's errors, or ours: a video that cannot be read
            return "failed", f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
        return "written", None

    unique = list({job.rel: job for job in jobs}.values())  # a video listed twice is encoded once
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=len(unique), desc="prepare", unit="video", dynamic_ncols=True)
    counts = {"written": 0, "skipped": 0}
    outcome = {}
    pool = ThreadPoolExecutor(max(1, int(workers)), thread_name_prefix="tsn_dali-prepare")
    try:
        for job, result in zip(unique, pool.map(run, unique)):
            outcome[job.rel] = result
            if result[0] != "failed":
                counts[result[0]] += 1
            if bar is not None:
                bar.update(1)
    finally:  # on Ctrl-C: the videos in flight finish, queued ones are dropped
        pool.shutdown(wait=True, cancel_futures=True)
    done = []
    for job in jobs:
        status, reason = outcome[job.rel]
        if status == "failed":
            failed.append((job.line, job.src, reason))
        else:
            done.append(job)
    if bar is not None:
        bar.close()

    tmp = new_list + ".part"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.writelines(f"{job.rel} {job.label}\n" for job in done)
    os.replace(tmp, new_list)
    failed.sort()
    failed_file = os.path.join(out, "prepare_failed.txt")
    if failed:
        with open(failed_file, "w", encoding="utf-8") as fh:
            fh.writelines(f"{list_file}:{line}: {path}: {reason}\n" for line, path, reason in failed)
    elif os.path.exists(failed_file):
        os.remove(failed_file)
    return {"list": new_list, "written": counts["written"], "skipped": counts["skipped"],
            "failed": failed, "failed_file": failed_file if failed else None}


TRADE_OFF = """\
the trade-off (a 340x256 VP9 K400-like clip, 8 frames from 300; DALI CPU loader, 2-core
AMD EPYC, benchmarks/results/cpu-2026-11-25-gop-vp9):
  --gop     file size  frames decoded per clip  clips/s
  original* 837 KiB   257                      12.8
  16        635 KiB     63                      42.1
  4         952 KiB     20                      66.7
  1        2001 KiB      8                      80.3
  * keyframes at 0 and 250, other encoder settings: its size does not compare
with --gop, shorter GOPs decode fewer frames per clip but make bigger files; 16 is the default"""


def build_parser() -> argparse.ArgumentParser:
    p = cli.ArgumentParser(prog="python -m tsn_dali.prepare", description=__doc__.splitlines()[0],
                                epilog=TRADE_OFF, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("list", help="MMAction2 video list: 'relative/path.mp4 label' a line")
    p.add_argument("--prefix", default="", help="folder the list's paths are relative to")
    p.add_argument("--out", required=True, help="folder for the new videos and the new list")
    p.add_argument("--gop", type=int, default=DEFAULT_GOP,
                   help=f"keyframe every N frames (default {DEFAULT_GOP}; 0: the encoder's default)")
    p.add_argument("--codec", choices=CODECS, default="h264",
                   help="h264 (NVDEC, decord) or vp9 (also DALI's CPU decoder); default h264")
    p.add_argument("--short-side", type=int, help="resize to this short side (default: keep the size)")
    p.add_argument("--crf", type=int, help="x264 quality, lower is better (default: x264's 23)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="videos encoded at once")
    p.add_argument("--overwrite", action="store_true", help="write videos already in --out again")
    p.add_argument("--no-progress", action="store_true")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    return cli.run_main(lambda: prepare_cli(args))


def prepare_cli(args) -> int:
    """``prepare`` as the command line says; 1 where some video failed (listed), else 0."""
    if args.gop < 0 or (args.short_side is not None and args.short_side < 2):
        raise UsageError("--gop must be >= 0 and --short-side >= 2")
    summary = prepare(args.list, args.prefix, args.out, gop=args.gop or None,
                      short_side=args.short_side, crf=args.crf, workers=args.workers,
                      overwrite=args.overwrite, progress=not args.no_progress, codec=args.codec)
    print(f"tsn_dali.prepare: {summary['written']} written, {summary['skipped']} already there, "
          f"{len(summary['failed'])} failed; list: {summary['list']}"
          + (f"; failures: {summary['failed_file']}" if summary["failed"] else ""), flush=True)
    for line, path, reason in summary["failed"][:10]:
        print(f"  {args.list}:{line}: {path}: {reason}", file=sys.stderr)
    return 1 if summary["failed"] else 0


"""dali-gpu against dali-cpu on every H.264 clip of a folder, same plans: frames and speed.

Run on a machine with a GPU and the package installed (README, "Two commands"):

    python benchmarks/gpu_check.py /path/to/videos [--numbered 6] [--batch 4] [--repeats 5]

dali-gpu runs twice: feeding NVDEC the clips' GOP slices (its default) and whole files;
the two must give the same pixels, bit for bit, and ``sliced==whole`` says so per video.

For each video of the folder and its sub-folders (H.264 only; others are listed as skipped) one plan of 8 frames (TSN test
sampling: segment centres, plus a repeated and an out-of-order index), resized to short
side 256 (mmcv rounding), three 224 crops, the middle one mirrored, out 224. Both executors
render it; the script prints per video whether the frames match (numbered clips: frame
numbers read back; real clips: every view's nearest dali-cpu view is the same index) and
the mean / max abs pixel difference (uint8 levels), then loader clips/s of both executors
on batches of ``--batch`` plans (normalised float16, as training feeds the model).
``--numbered N`` first writes N numbered H.264 clips (320x240, 64 frames) into a temp
folder beside the given one, where frame identities are exact.
Exit status 1 where any identity check fails.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from tsn_dali.data.render.executors.dali import DaliExecutor
from tsn_dali.data.plan.clip_plan import ClipPlan, StreamFacts
from tsn_dali.data.index.video_index import probe_video
from tsn_dali.data.media.videoio import read_frame_number, write_numbered_video

MEAN, STD = [123.675, 116.28, 103.53], [58.395, 57.12, 57.375]
EXTS = (".mp4", ".avi", ".mkv", ".mov", ".webm")


def make_plan(path: str, num_frames: int, size, stream: StreamFacts, num_segments: int = 8, short_side: int = 256,
              crop: int = 224):
    w, h = size
    # MMAction2 SampleFrames test mode: segment centres; then one repeat and one out-of-order index
    seg = num_frames / num_segments
    idx = [int(seg / 2 + seg * i) for i in range(num_segments)]
    idx[-1], idx[-2] = idx[1], idx[-1]
    rw, rh = (int(w * short_side / h + 0.5), short_side) if w >= h else (short_side, int(h * short_side / w + 0.5))
    c = min(crop, rw, rh)
    boxes = [(0, 0, c, c), ((rw - c) // 2, (rh - c) // 2, (rw - c) // 2 + c, (rh - c) // 2 + c), (rw - c, rh - c, rw, rh)]
    return ClipPlan(sample=0, path=path, label=0, num_frames=num_frames, orig_size=(w, h),
                    frame_indices=np.asarray(idx, np.int32), resize_to=(rw, rh),
                    crops=np.asarray(boxes, np.int32), crop_flips=np.array([False, True, False]),
                    out_size=(crop, crop), stream=stream)


def whole_frame_plan(plan: ClipPlan) -> ClipPlan:
    """The same frames, uncropped and unflipped (for reading frame numbers)."""
    w, h = plan.orig_size
    return ClipPlan(sample=0, path=plan.path, label=0, num_frames=plan.num_frames, orig_size=(w, h),
                    frame_indices=plan.frame_indices, resize_to=(w, h), crops=np.array([[0, 0, w, h]], np.int32),
                    crop_flips=np.array([False]), out_size=(w, h), stream=plan.stream)


def clips_per_second(ex, plans, batch: int, repeats: int) -> float:
    batches = [plans[i:i + batch] for i in range(0, len(plans), batch)]
    batches = [b for b in batches if len(b) == batch] or [plans[:batch]]
    for b in batches[:1]:  # build the pipeline outside the timing
        ex.render(b, mean=MEAN, std=STD, dtype="float16")
    if ex.device.type == "cuda":
        torch.cuda.synchronize(ex.device)
    start, n = time.perf_counter(), 0
    for _ in range(repeats):
        for b in batches:
            ex.render(b, mean=MEAN, std=STD, dtype="float16")
            n += len(b)
    if ex.device.type == "cuda":
        torch.cuda.synchronize(ex.device)
    return n / (time.perf_counter() - start)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder")
    ap.add_argument("--numbered", type=int, default=4, help="numbered H.264 clips to write and check (0: none)")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--decode-workers", type=int, default=8)
    ap.add_argument("--device", default="cuda:0", help="dali-gpu's device; 'cpu' dry-runs this script "
                    "on dali-cpu against itself")
    args = ap.parse_args(argv)

    if args.device != "cpu" and not torch.cuda.is_available():
        print("gpu_check: no CUDA device; dali-gpu needs one")
        return 2
    gpu = DaliExecutor(args.device, num_threads=args.threads, decode_workers=args.decode_workers)
    whole = DaliExecutor(args.device, num_threads=args.threads, decode_workers=args.decode_workers,
                         slice_gops=False)
    cpu = DaliExecutor("cpu", num_threads=args.threads, decode_workers=args.decode_workers)
    videos = sorted(str(p) for p in Path(args.folder).rglob("*") if p.suffix.lower() in EXTS)
    numbered = set()
    if args.numbered:
        tmp = tempfile.mkdtemp(prefix="gpu_check_")
        for i in range(args.numbered):
            path = os.path.join(tmp, f"numbered_{i}.mp4")
            write_numbered_video(path, 64, 320, 240, codec="h264", gop=[None, 12, 1, 250][i % 4])
            numbered.add(path)
        videos = sorted(numbered) + videos
    failures, plans = 0, []
    print(f"{'video':40s} {'frames':>6s} {'size':>10s}  ids   mean|d|  max|d|  sliced==whole")
    for path in videos:
        info = probe_video(path)
        name = os.path.basename(path)
        if info.codec != "h264" or not info.ok:
            print(f"{name:40s} skipped (codec {info.codec or 'unreadable'}{', ' + info.error if info.error else ''})")
            continue
        n, size = info.num_frames, (info.width, info.height)
        plan = make_plan(path, n, size, StreamFacts.from_info(info))
        plans.append(plan)
        try:
            a = gpu.render([plan]).cpu()
            same = bool(torch.equal(a, whole.render([plan]).cpu()))
            b = cpu.render([plan])
        except Exception as exc:
            failures += 1
            print(f"{name:40s} {n:6d} {size[0]:4d}x{size[1]:<5d} ERROR {type(exc).__name__}: {exc}")
            continue
        diff = (a.int() - b.int()).abs().float()
        if path in numbered:
            wa = gpu.render([whole_frame_plan(plan)]).cpu()
            got = [read_frame_number(v.permute(1, 2, 0).numpy()) for v in wa[0]]
            ok = got == plan.frame_indices.tolist()
        else:  # every dali-gpu view is closest to the dali-cpu view of the same index
            fa = a[0].flatten(1).float()
            fb = b[0].flatten(1).float()
            nearest = torch.cdist(fa, fb).argmin(1)
            same = plan.frame_indices.tolist() * len(plan.crops)
            ok = all(same[i] == same[j] for i, j in enumerate(nearest.tolist()))
        failures += (not ok) + (not same)
        print(f"{name:40s} {n:6d} {size[0]:4d}x{size[1]:<5d} {'ok ' if ok else 'BAD'} "
              f"{diff.mean().item():8.3f} {diff.max().item():7.0f}  {'yes' if same else 'NO'}")
    if plans:
        plans = (plans * ((args.batch * 4) // len(plans) + 1))[: max(args.batch * 4, len(plans))]
        for ex in (gpu, whole, cpu):
            rate = clips_per_second(ex, plans, args.batch, args.repeats)
            kind = "GOP slices" if ex.slice_gops else "whole files"
            print(f"{ex.name} ({ex.device}, {kind}): {rate:.1f} clips/s (batch {args.batch}, 24 views of 224x224, "
                  f"float16; {ex.stats['frames_fed'] / max(ex.stats['decoder_clips'], 1):.0f} frames fed per clip)")
    for ex in (gpu, whole, cpu):
        ex.close()
    print("identity checks:", "all ok" if not failures else f"{failures} FAILED")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

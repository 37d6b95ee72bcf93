"""dali-gpu on the GPU: checks that can fail, and its speed beside dali-cpu, interleaved.

    python benchmarks/gpu_check.py FOLDER [--numbered 4] [--device cuda:0] [--out DIR]

Every check prints PASS or FAIL with what it compared, and goes into ``--out``/results.json
as it finishes; the exit status is 1 where any check failed (2: could not run at all).

- ``numbered``: clips whose frames carry their own number (written here, ``--numbered``),
  rendered uncropped by dali-gpu: the numbers read back are the plan's frame indices.
- ``sliced_vs_whole``: for every clip, dali-gpu fed GOP slices (its default) and fed whole
  files give the same bytes.
- ``gpu_vs_cpu``: every dali-gpu view is nearest to the dali-cpu view of the same frame
  index (their colour conversions differ slightly; the mean and max difference are shown).
- ``mixed_batch``: one batch of a clip NVDEC decodes and one it cannot (MJPEG: the frames
  path): both give their own frame numbers, in plan order.
- ``bfloat16``: a bfloat16 batch is the float32 batch rounded (relative error <= 2^-8).
- ``view_integrity``: batches handed over as views of DALI's buffers, each read by a real
  training step, have the checksums of the same batches handed over as copies.
- ``pipeline_failure``: a failure of the whole pipeline (the device's memory taken) is one
  line naming what failed, not a video (``not triggered`` where DALI still found memory).

Then clips/s of dali-gpu (slices), dali-gpu (whole files) and dali-cpu on the same plans,
measured interleaved (tsn_dali.bench.interleave), with frames fed per clip as counted.

``--device cpu`` dry-runs everything on dali-cpu against itself (numbered clips in VP9,
which DALI's CPU decoder reads); ``--inject-fault swap-frame|flip-byte`` corrupts the
candidate output of every comparison before it is checked, to show that each check fails.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import List, Optional, Sequence

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from tsn_dali.data.index.video_index import probe_video  # noqa: E402
from tsn_dali.data.media.videoio import read_frame_number, video_extension, write_numbered_video  # noqa: E402
from tsn_dali.data.plan.clip_plan import ClipPlan, StreamFacts  # noqa: E402
from tsn_dali.errors import one_line  # noqa: E402

MEAN, STD = [123.675, 116.28, 103.53], [58.395, 57.12, 57.375]
EXTS = (".mp4", ".avi", ".mkv", ".mov", ".webm")
FAULTS = ("none", "swap-frame", "flip-byte")


# --------------------------------------------------------------------------- the checks (pure)


def frames_match(got: Sequence[int], expected: Sequence[int]) -> Optional[str]:
    """None where the frame numbers read back are the plan's, else what differs."""
    got, expected = [int(g) for g in got], [int(e) for e in expected]
    return None if got == expected else f"read {got}, expected {expected}"


def identical(a: torch.Tensor, b: torch.Tensor) -> Optional[str]:
    """None where ``a`` and ``b`` are the same bytes, else where they first differ."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return f"shape/dtype {tuple(a.shape)} {a.dtype} vs {tuple(b.shape)} {b.dtype}"
    diff = (a != b)
    if not bool(diff.any()):
        return None
    first = [int(i) for i in torch.nonzero(diff)[0]]
    return f"{int(diff.sum())} value(s) differ, first at {first}"


def nearest_views_match(a: torch.Tensor, b: torch.Tensor, frame_ids: Sequence[int]) -> Optional[str]:
    """``a``, ``b``: ``[V, C, H, W]`` of one clip; ``frame_ids[v]``: the frame index of view
    v. None where, for every view of ``a``, a view of ``b`` of the same frame index is among
    its nearest (L2; a tie with a view of another frame that looks the same passes), else
    the first view that is not."""
    fa, fb = a.flatten(1).float(), b.flatten(1).float()
    d = torch.cdist(fa, fb)
    ids = torch.as_tensor(list(frame_ids))
    for v in range(d.shape[0]):
        same = d[v][ids == ids[v]].min()
        if same > d[v].min() * (1 + 1e-6) + 1e-3:
            j = int(d[v].argmin())
            return f"view {v} (frame {frame_ids[v]}) is nearer to view {j} (frame {frame_ids[j]})"
    return None


def bf16_close(bf16: torch.Tensor, f32: torch.Tensor) -> Optional[str]:
    """None where the bfloat16 batch is the float32 one rounded (|d| <= 2^-8 |x| + 1e-6)."""
    d = (bf16.float() - f32.float()).abs()
    bound = f32.float().abs() * 2.0 ** -8 + 1e-6
    bad = d > bound
    return None if not bool(bad.any()) else f"{int(bad.sum())} value(s) beyond bfloat16 rounding (max |d| {float(d.max()):.4g})"


def checksums_agree(view: Sequence[float], copy: Sequence[float]) -> Optional[str]:
    """None where each batch handed over as a view summed to what its copy did."""
    if len(view) != len(copy):
        return f"{len(view)} view batches, {len(copy)} copies"
    bad = [i for i, (a, b) in enumerate(zip(view, copy)) if a != b]
    return None if not bad else f"batch(es) {bad} differ (view {view[bad[0]]!r} vs copy {copy[bad[0]]!r})"


def inject(tensor: torch.Tensor, fault: str) -> torch.Tensor:
    """``tensor`` [V, ...] with one fault: two views swapped, or one value changed by one."""
    if fault == "none":
        return tensor
    out = tensor.contiguous().clone()
    if fault == "swap-frame" and out.shape[0] > 1:
        out[[0, 1]] = out[[1, 0]]
        if torch.equal(out, tensor):  # two identical views: change a value instead
            fault = "flip-byte"
    if fault == "flip-byte":
        flat = out.view(-1)
        flat[0] = flat[0] + 1 if flat[0] < 100 else flat[0] - 1
    return out


# --------------------------------------------------------------------------- plans


def make_plan(path: str, num_frames: int, size, stream: StreamFacts, num_segments: int = 8,
              short_side: int = 256, crop: int = 224) -> ClipPlan:
    """TSN test sampling (segment centres) plus a repeated and an out-of-order index; short
    side ``short_side``; three ``crop`` crops, the middle one mirrored."""
    w, h = size
    seg = num_frames / num_segments
    idx = [int(seg / 2 + seg * i) for i in range(num_segments)]
    idx[-1], idx[-2] = idx[1], idx[-1]
    rw, rh = (int(w * short_side / h + 0.5), short_side) if w >= h else (short_side, int(h * short_side / w + 0.5))
    c = min(crop, rw, rh)
    boxes = [(0, 0, c, c), ((rw - c) // 2, (rh - c) // 2, (rw - c) // 2 + c, (rh - c) // 2 + c),
             (rw - c, rh - c, rw, rh)]
    return ClipPlan(sample=0, path=path, label=0, num_frames=num_frames, orig_size=(w, h),
                    frame_indices=np.asarray(idx, np.int32), resize_to=(rw, rh),
                    crops=np.asarray(boxes, np.int32), crop_flips=np.array([False, True, False]),
                    out_size=(c, c), stream=stream)


def whole_frame_plan(plan: ClipPlan) -> ClipPlan:
    """The same frames, uncropped and unflipped (for reading frame numbers)."""
    w, h = plan.orig_size
    return ClipPlan(sample=0, path=plan.path, label=0, num_frames=plan.num_frames, orig_size=(w, h),
                    frame_indices=plan.frame_indices, resize_to=(w, h), crops=np.array([[0, 0, w, h]], np.int32),
                    crop_flips=np.array([False]), out_size=(w, h), stream=plan.stream)


def read_numbers(views: torch.Tensor) -> List[int]:
    return [read_frame_number(v.permute(1, 2, 0).cpu().numpy()) for v in views]


# --------------------------------------------------------------------------- the run


class Checks:
    """Records each check as it finishes (stdout and results.json)."""

    def __init__(self, out: Optional[Path]):
        self.out, self.results = out, {"checks": [], "speed": None}

    def add(self, name: str, subject: str, problem: Optional[str], **extra) -> None:
        status = "PASS" if problem is None else ("SKIP" if problem.startswith("not ") else "FAIL")
        self.results["checks"].append({"check": name, "subject": subject, "status": status,
                                       "detail": problem or "", **extra})
        print(f"{status} {name:16s} {subject}" + (f": {problem}" if problem else ""), flush=True)
        self.save()

    def save(self) -> None:
        if self.out is not None:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "gpu_check.json").write_text(json.dumps(self.results, indent=1))

    @property
    def failed(self) -> int:
        return sum(c["status"] == "FAIL" for c in self.results["checks"])


def executors(device: str, args):
    from tsn_dali.data.render.executors.dali import DaliExecutor

    kw = dict(num_threads=args.threads, decode_workers=args.decode_workers)
    return {"sliced": DaliExecutor(device, **kw), "whole": DaliExecutor(device, slice_gops=False, **kw),
            "cpu": DaliExecutor("cpu", **kw)}


def numbered_clips(folder: str, count: int, codec: str) -> List[str]:
    ext = video_extension(codec)
    return [write_numbered_video(os.path.join(folder, f"numbered_{i}{ext}"), 64, 320, 240, codec=codec,
                                 gop=[None, 12, 1, 250][i % 4]) for i in range(count)]


def check_clips(checks: Checks, ex, videos, numbered, codecs, fault: str) -> list:
    plans = []
    for path in videos:
        info = probe_video(path)
        name = os.path.basename(path)
        if not info.ok or info.codec not in codecs:
            print(f"skip {name} (codec {info.codec or 'unreadable'}{', ' + info.error if info.error else ''})")
            continue
        plan = make_plan(path, info.num_frames, (info.width, info.height), StreamFacts.from_info(info))
        plans.append(plan)
        try:
            sliced = ex["sliced"].render([plan])[0].cpu()
            whole = ex["whole"].render([plan])[0].cpu()
            on_cpu = ex["cpu"].render([plan])[0].cpu()
        except Exception as exc:  # noqa: BLE001 - a check that cannot run fails, saying why
            checks.add("render", name, one_line(exc, named=True))
            continue
        checks.add("sliced_vs_whole", name, identical(inject(sliced, fault), whole))
        ids = plan.frame_indices.tolist() * len(plan.crops)
        diff = (sliced.int() - on_cpu.int()).abs().float()
        checks.add("gpu_vs_cpu", name, nearest_views_match(inject(sliced, fault), on_cpu, ids),
                   mean_abs_diff=float(diff.mean()), max_abs_diff=float(diff.max()))
        if path in numbered:
            got = read_numbers(ex["sliced"].render([whole_frame_plan(plan)])[0])
            if fault == "swap-frame":
                got[0], got[1] = got[1], got[0]
            elif fault == "flip-byte":
                got[0] += 1
            checks.add("numbered", name, frames_match(got, plan.frame_indices.tolist()))
    return plans


def check_mixed(checks: Checks, ex, folder: str, fault: str, device: str) -> None:
    """A batch of a clip the device's decoder reads and one it does not (the frames path):
    H.264 and MJPEG on a GPU; VP9 and H.264 on the CPU."""
    first, second = ("h264", "mjpeg") if device != "cpu" else ("vp9", "h264")
    decodable = write_numbered_video(os.path.join(folder, "mixed_a" + video_extension(first)), 24, 160, 128,
                                     codec=first)
    other = write_numbered_video(os.path.join(folder, "mixed_b" + video_extension(second)), 24, 160, 128,
                                 codec=second)
    plans = []
    for path in (decodable, other):
        info = probe_video(path)
        plans.append(whole_frame_plan(make_plan(path, info.num_frames, (info.width, info.height),
                                                StreamFacts.from_info(info))))
    routes = [ex["sliced"].route(p)[0] for p in plans]
    out = ex["sliced"].render(plans)
    problems = []
    for i, plan in enumerate(plans):
        got = read_numbers(inject(out[i].cpu(), fault) if fault != "none" else out[i])
        why = frames_match(got, plan.frame_indices.tolist())
        if why:
            problems.append(f"sample {i}: {why}")
    if sorted(routes) != ["decoder", "frames"]:
        problems.append(f"routes {routes}: expected one decoder and one frames-path sample")
    checks.add("mixed_batch", f"{os.path.basename(decodable)} + {os.path.basename(other)}",
               "; ".join(problems) or None, routes=routes)


def check_bf16(checks: Checks, ex, plan: ClipPlan, fault: str) -> None:
    f32 = ex["sliced"].render([plan], mean=MEAN, std=STD, dtype="float32")[0].cpu()
    bf16 = ex["sliced"].render([plan], mean=MEAN, std=STD, dtype="bfloat16")[0].cpu()
    bf16 = inject(bf16, fault)
    checks.add("bfloat16", os.path.basename(plan.path), bf16_close(bf16, f32))


def check_view_integrity(checks: Checks, device: str, videos: Sequence[str], fault: str, args) -> None:
    """The same batches (same seed, epoch and plans) handed over as views and as copies,
    each read by a real training step before the next is asked for; checksums taken after
    the step must agree."""
    from tsn_dali.bench.measure import make_loader, make_train_step
    from tsn_dali.config import load_recipe
    from tsn_dali.data.index import build_index
    from tsn_dali.data.render.executors.dali import DaliExecutor
    from tsn_dali.models import build_model

    recipe = load_recipe("recipes/k400_r50.yaml", ["model.backbone=resnet18", "model.num_classes=8",
                                                     f"data.input_size={args.view_size}",
                                                     f"data.short_side={args.view_size + 16}",
                                                     "data.num_segments=4", "loader.dtype=float32"])
    index = build_index(list(videos), cache_dir=None, workers=2, progress=False)
    dev = torch.device(device if device != "cpu" else "cpu")
    sums = {}
    for mode in ("view", "copy"):
        with DaliExecutor(device, num_threads=args.threads, decode_workers=args.decode_workers) as ex:
            torch.manual_seed(0)
            step = make_train_step(build_model(recipe.model), recipe, dev)
            loader = make_loader(recipe, "train", list(videos), index, ex, args.batch, args.view_batches, dev,
                                 handoff=mode)
            loader.set_epoch(3)
            got = []
            for batch in loader:
                step(batch.clips, batch.labels)  # queued on the GPU; the batch must stay intact
                got.append(batch.clips.double().sum())
            loader.close()
            sums[mode] = [float(s) for s in got]  # read back at the end: the steps ran first
    view = sums["view"] if fault == "none" else [s + (1.0 if i == 0 else 0.0) for i, s in enumerate(sums["view"])]
    checks.add("view_integrity", f"{len(view)} batches of {args.batch}", checksums_agree(view, sums["copy"]))


def check_pipeline_failure(checks: Checks, ex, plan: ClipPlan, device: str) -> None:
    """Take the device's memory, then render: the failure must be one line naming the
    pipeline, not a video (PipelineFailure)."""
    from tsn_dali.data.errors import PipelineFailure, VideoDecodeError

    if device == "cpu":
        checks.add("pipeline_failure", "cpu", "not triggered (the CPU has no device memory to take)")
        return
    hog = []
    try:
        free, _ = torch.cuda.mem_get_info(torch.device(device))
        while free > 64 << 20:
            hog.append(torch.empty(int(free * 0.9), dtype=torch.uint8, device=device))
            free, _ = torch.cuda.mem_get_info(torch.device(device))
        big = make_plan(plan.path, plan.num_frames, plan.orig_size, plan.stream, num_segments=8,
                        short_side=2048, crop=2048)
        ex["whole"].render([big] * 16, mean=MEAN, std=STD, dtype="float32")
        problem = "not triggered (DALI found memory for a batch of 16 2048 px clips)"
    except PipelineFailure as exc:
        problem = None if "\n" not in str(exc) else f"more than one line: {exc!r}"
        print(f"  said: {exc}")
    except VideoDecodeError as exc:
        problem = f"charged to a video: {exc}"
    except Exception as exc:  # noqa: BLE001
        problem = f"{type(exc).__name__}, not PipelineFailure: {one_line(exc)}"
    finally:
        del hog
        torch.cuda.empty_cache()
    checks.add("pipeline_failure", "device memory taken", problem)


def speed(checks: Checks, ex, plans, args) -> None:
    """clips/s of each executor on batches of the same plans, interleaved."""
    from tsn_dali.bench.interleave import compare, run_rounds

    plans = (plans * ((args.batch * 4) // max(len(plans), 1) + 1))[: max(args.batch * 4, len(plans))]
    batches = [plans[i:i + args.batch] for i in range(0, len(plans), args.batch)]
    batches = [b for b in batches if len(b) == args.batch] or [plans[:args.batch]]

    def system(executor):
        def window(round_no):
            executor.render(batches[0], mean=MEAN, std=STD, dtype="float16")  # untimed
            if executor.device.type == "cuda":
                torch.cuda.synchronize(executor.device)
            t0 = time.perf_counter()
            for b in batches:
                executor.render(b, mean=MEAN, std=STD, dtype="float16")
            if executor.device.type == "cuda":
                torch.cuda.synchronize(executor.device)
            return sum(len(b) for b in batches) / (time.perf_counter() - t0)
        return window

    names = {"dali-gpu slices" if args.device != "cpu" else "dali-cpu slices": ex["sliced"],
             "dali-gpu whole files" if args.device != "cpu" else "dali-cpu whole files": ex["whole"],
             "dali-cpu": ex["cpu"]}
    before = {k: dict(e.stats) for k, e in names.items()}
    rates, errors, orders, _ = run_rounds({k: system(e) for k, e in names.items()}, args.rounds, warmup=1)
    rows = compare(rates, next(iter(names)))
    for row in rows:
        e = names[row["system"]]
        fed = e.stats.get("frames_fed", 0) - before[row["system"]].get("frames_fed", 0)
        decoded = e.stats.get("decoder_clips", 0) - before[row["system"]].get("decoder_clips", 0)
        row["frames_fed_per_clip"] = fed / decoded if decoded else None
        print(f"speed {row['system']:22s} {row['clips_per_s']['median']:8.1f} clips/s "
              f"({row['clips_per_s']['min']:.1f}-{row['clips_per_s']['max']:.1f}), {row['ratio']:.2f}x, "
              f"{row['verdict']}; frames fed/clip {row['frames_fed_per_clip']}")
    checks.results["speed"] = {"rows": rows, "errors": errors, "orders": orders, "batch": args.batch}
    checks.save()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", help="videos to check (searched recursively)")
    ap.add_argument("--numbered", type=int, default=4, help="numbered clips to write and check (0: none)")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3, help="interleaved speed rounds")
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--decode-workers", type=int, default=8)
    ap.add_argument("--view-batches", type=int, default=6, help="batches of the view-integrity check")
    ap.add_argument("--view-size", type=int, default=112, help="crop size of the view-integrity check")
    ap.add_argument("--max-videos", type=int, default=16, help="videos of FOLDER checked (the first ones)")
    ap.add_argument("--device", default="cuda:0", help="dali-gpu's device; 'cpu' dry-runs on dali-cpu")
    ap.add_argument("--checks", default="clips,mixed,bf16,view,failure,speed")
    ap.add_argument("--inject-fault", choices=FAULTS, default="none",
                    help="corrupt each comparison's candidate output (shows the checks can fail)")
    ap.add_argument("--out", default=None, help="folder for gpu_check.json (written as checks finish)")
    args = ap.parse_args(argv)
    if args.device != "cpu" and not torch.cuda.is_available():
        print("gpu_check: no CUDA device; dali-gpu needs one (--device cpu dry-runs on dali-cpu)", file=sys.stderr)
        return 2
    wanted = set(args.checks.split(","))
    checks = Checks(Path(args.out) if args.out else None)
    codec = "vp9" if args.device == "cpu" else "h264"
    codecs = ("vp9",) if args.device == "cpu" else ("h264", "hevc", "vp9", "vp8", "mpeg4", "av1")
    tmp = tempfile.mkdtemp(prefix="gpu_check_")
    numbered = numbered_clips(tmp, args.numbered, codec)
    videos = sorted(str(p) for p in Path(args.folder).rglob("*") if p.suffix.lower() in EXTS)[: args.max_videos]
    ex = executors(args.device, args)
    try:
        plans = check_clips(checks, ex, numbered + videos, set(numbered), codecs, args.inject_fault) \
            if "clips" in wanted else []
        if "mixed" in wanted:
            check_mixed(checks, ex, tmp, args.inject_fault, args.device)
        if "bf16" in wanted and plans:
            check_bf16(checks, ex, plans[0], args.inject_fault)
        if "view" in wanted and numbered:
            check_view_integrity(checks, args.device, numbered, args.inject_fault, args)
        if "speed" in wanted and plans:
            speed(checks, ex, plans, args)
        if "failure" in wanted and plans:  # last: it takes the device's memory for a moment
            check_pipeline_failure(checks, ex, plans[0], args.device)
    finally:
        for e in ex.values():
            e.close()
    total = len(checks.results["checks"])
    print(f"gpu_check: {total - checks.failed} of {total} checks passed" +
          (f"; {checks.failed} FAILED" if checks.failed else ""), flush=True)
    return 1 if checks.failed else 0


if __name__ == "__main__":
    sys.exit(main())

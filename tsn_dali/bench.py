"""Throughput benchmarks: clips/s of the loader, the model and both together.

``python -m tsn_dali.bench RECIPE --videos DIR_OR_LIST ...`` measures, in one process,
one after another on the same machine and the same videos:

- loader only: clips/s of each executor (dali-gpu where CUDA is present, dali-cpu,
  reference with N DataLoader workers) for the recipe's train view and test view,
  through the ClipLoader a training run uses (prefetch included); frames sampled per
  clip and a GOP-aware estimate of the frames a decoder must decode (``frames_decoded``);
- model only: clips/s of the trainer's own step (tsn_dali.engine.step: forward, backward,
  grad clip, SGD, fused on CUDA) on synthetic input (AMP: the recipe's ``train.amp`` resolved
  per device as the trainer does; channels_last), and with ``torch.compile`` where ``--compile``;
- end to end: training clips/s with each executor feeding that step, and the share of
  time the host spent blocked waiting for data;
- decode cost vs GOP: the videos re-encoded (H.264) with keyframes every 16 frames and
  every 250 (x264's default interval, without scene-cut keyframes), loader clips/s and
  frames decoded per clip.

Every measurement: ``--warmup`` batches excluded, then ``--repeats`` windows of
``--iters`` batches, each window one clips/s figure; the report gives the median,
min/max and the quartiles of the windows. Results: ``results.json``, ``results.md``
and ``throughput.png`` in ``--out`` (default ``benchmarks/results/<device>-<date>``).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import av  # noqa: F401  (PyAV before decord: see tsn_dali.data.video_index)
import numpy as np
import torch

from tsn_dali.config import PROJECT_ROOT, RecipeError, load_recipe
from tsn_dali.engine.amp import resolve_amp
from tsn_dali.engine.optim import build_optimizer
from tsn_dali.engine.step import TrainStep

VIDEO_EXTENSIONS = (".mp4", ".avi", ".webm", ".mkv", ".mov", ".m4v")
EXECUTOR_NAMES = ("dali-gpu", "dali-cpu", "reference")
SHORT_GOP = 16
LONG_GOP = 250  # x264's default keyint, here without its scene-cut keyframes


# --------------------------------------------------------------------------- statistics


def summarize(values: Sequence[float]) -> dict:
    """Median, min, max and quartiles (numpy linear percentiles) of per-window figures."""
    v = np.asarray(list(values), dtype=np.float64)
    if v.size == 0:
        raise ValueError("summarize: expected at least one value")
    q1, med, q3 = np.percentile(v, [25, 50, 75])
    return {"median": float(med), "min": float(v.min()), "max": float(v.max()),
            "q1": float(q1), "q3": float(q3), "runs": [float(x) for x in v]}


def frames_decoded(frame_indices: Sequence[int], keyframe_interval: Optional[float]) -> int:
    """GOP-aware estimate of the frames a seeking decoder decodes to return ``frame_indices``.

    Model: keyframes every ``G = round(keyframe_interval)`` frames (0, G, 2G, ...; the
    index's mean keyframe interval, so irregular GOPs are approximated), and the decoder
    (decord, DALI, NVDEC) visits the wanted frames in increasing order, going on from
    where it is when the next frame lies ahead in the same GOP, else seeking to the
    keyframe ``floor(f / G) * G`` before it. So each wanted frame ``f`` costs the frames
    ``[floor(f / G) * G, f]``, and the count is the size of the union of those ranges.
    B-frame reordering and the frames decoded past the last wanted one are ignored.
    ``None`` or ``<= 1`` (intra-only streams) gives the number of distinct frames.
    """
    wanted = sorted({int(f) for f in frame_indices})
    g = int(round(keyframe_interval)) if keyframe_interval and keyframe_interval > 1 else 1
    total, covered_to = 0, -1  # covered_to: last frame decoded so far
    for f in wanted:
        start = max((f // g) * g, covered_to + 1)
        if f >= start:
            total += f - start + 1
            covered_to = f
    return total


# --------------------------------------------------------------------------- environment


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(module: str) -> Optional[str]:
    try:
        mod = __import__(module, fromlist=["__version__"])
        return str(getattr(mod, "__version__", "unknown"))
    except Exception:
        return None


def environment(device: torch.device, argv: Sequence[str]) -> dict:
    """Device name, CPU count, library versions, date and the command line."""
    cuda = device.type == "cuda"
    return {
        "device": torch.cuda.get_device_name(device) if cuda else _cpu_name(),
        "device_type": device.type,
        "cpu_name": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "load_average_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda if cuda else None,
        "dali": _version("nvidia.dali"),
        "timm": _version("timm"),
        "torchvision": _version("torchvision"),
        "pyav": _version("av"),
        "decord": _version("decord"),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": "python -m tsn_dali.bench " + " ".join(shlex.quote(a) for a in argv),
    }


def device_slug(device: torch.device) -> str:
    """'cpu', or the GPU's name in lower case with dashes (e.g. 'nvidia-h100-80gb-hbm3')."""
    if device.type != "cuda":
        return "cpu"
    return re.sub(r"[^a-z0-9]+", "-", torch.cuda.get_device_name(device).lower()).strip("-")


# --------------------------------------------------------------------------- videos


def find_videos(sources: Sequence[str], prefix: Optional[str] = None) -> List[str]:
    """Video paths from directories (their video files, sorted), video files, and
    MMAction2 video lists (``path label`` per line, paths relative to ``prefix``, default
    the list's folder)."""
    from tsn_dali.data.annotations import read_video_list

    out: List[str] = []
    for src in sources:
        p = Path(src)
        if p.is_dir():
            found = sorted(str(f) for f in p.iterdir() if f.suffix.lower() in VIDEO_EXTENSIONS)
            if not found:
                raise ValueError(f"--videos {src}: no video files ({', '.join(VIDEO_EXTENSIONS)}) in this folder")
            out += found
        elif p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS:
            out.append(str(p))
        elif p.is_file():
            records, _ = read_video_list(str(p), prefix or str(p.parent))
            out += [r.path for r in records]
        else:
            raise ValueError(f"--videos {src}: expected a folder, a video file or a video list; not found")
    return out


def generate_videos(out_dir: str, num_videos: int, num_frames: int = 300, size=(340, 256),
                    fps: float = 30, gop: Optional[int] = None) -> List[str]:
    """K400-like H.264 clips (340x256, 10 s at 30 fps, the encoder's long GOP by default),
    written by ``tsn_dali.data.synthetic`` (the demo's generator; kept when already there)."""
    from tsn_dali.data.synthetic import SyntheticSpec, generate

    spec = SyntheticSpec(videos=num_videos, val_fraction=0.0, classes=min(8, num_videos),
                         frames=num_frames, width=size[0], height=size[1], fps=fps, codec="h264",
                         gop=gop, name="bench")
    out = generate(out_dir, spec, progress=False)
    return find_videos([os.path.join(out["out"], out["train_list"])],
                       os.path.join(out["out"], out["train_prefix"]))


def reencode(src: str, dst: str, gop: Optional[int]) -> str:
    """``src`` written again as H.264 with keyframes every ``gop`` frames (None: the
    encoder's default) by ``tsn_dali.prepare.reencode_video``. Kept if ``dst`` exists."""
    from tsn_dali.prepare import reencode_video

    if os.path.isfile(dst):
        return dst
    return reencode_video(src, dst, gop=gop)


# --------------------------------------------------------------------------- model


def build_tsn(model_cfg):
    """(model, builder): the recipe's TSN from ``tsn_dali.models.build_model``."""
    from tsn_dali.models import build_model

    return build_model(model_cfg), "tsn_dali.models.build_model"


def bench_amp(recipe, device: torch.device) -> str:
    """The AMP setting measured: ``train.amp`` resolved as the trainer does
    (tsn_dali.engine.amp.resolve_amp: ``auto`` is bf16 or fp16 on CUDA, bf16 or off on CPU)."""
    return resolve_amp(recipe.train.amp, device).amp


def make_train_step(model, recipe, device: torch.device, compile: bool = False) -> TrainStep:
    """The trainer's own step (tsn_dali.engine.step.TrainStep) with its optimiser (fused SGD
    on CUDA) for ``model``, channels_last, optionally torch.compile'd."""
    model = model.to(device).to(memory_format=torch.channels_last).train()
    net = torch.compile(model) if compile else model
    amp = bench_amp(recipe, device)
    optimizer = build_optimizer(model, recipe.train, recipe.train.lr, device)
    scaler = torch.amp.GradScaler(device.type) if amp == "fp16" else None
    return TrainStep(net, optimizer, amp=amp, grad_clip=recipe.train.grad_clip, mean=recipe.data.mean,
                     std=recipe.data.std, scaler=scaler)


def synthetic_batch(batch_size: int, num_views: int, size: int, num_classes: int, dtype: str,
                    device: torch.device):
    """Normalised-looking clips ``[N, V, C, H, W]`` (a view of NVHWC memory, as executors give)."""
    torch_dtype = getattr(torch, dtype if dtype != "uint8" else "float32")
    g = torch.Generator().manual_seed(0)
    x = torch.randn((batch_size, num_views, size, size, 3), generator=g).to(torch_dtype).to(device)
    labels = torch.randint(0, num_classes, (batch_size,), generator=g).to(device)
    return x.permute(0, 1, 4, 2, 3), labels


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --------------------------------------------------------------------------- measuring


def _windows(step, warmup: int, iters: int, repeats: int, device: torch.device) -> List[float]:
    """Seconds of each of ``repeats`` windows of ``iters`` calls of ``step()``, after ``warmup`` calls."""
    for _ in range(warmup):
        step()
    _sync(device)
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(iters):
            step()
        _sync(device)
        out.append(time.perf_counter() - t0)
    return out


def make_loader(recipe, split: str, paths: Sequence[str], index, executor, batch_size: int,
                num_batches: int, device: torch.device, seed: int = 0):
    """A ClipLoader over ``paths`` repeated to ``num_batches`` batches of ``batch_size``
    (train: the train view, shuffled and randomly cropped per epoch; test: the test view)."""
    from tsn_dali.data.annotations import VideoRecord
    from tsn_dali.data.loader import ClipLoader
    from tsn_dali.data.planner import ClipPlanner, load_pipeline

    data = recipe.data
    n = batch_size * num_batches
    records = [VideoRecord(path=paths[i % len(paths)], label=i % recipe.model.num_classes, line=i + 1,
                           source="<bench>") for i in range(n)]
    planner = ClipPlanner(load_pipeline(getattr(data, f"{split}_pipeline"), data), seed)
    dtype = recipe.loader.dtype
    return ClipLoader(records, index, planner, executor, batch_size=batch_size, train=split == "train",
                      device=device, mean=data.mean, std=data.std, dtype=dtype,
                      prefetch=recipe.loader.prefetch, seed=seed, on_bad_video="error")


def plan_costs(loader, index, max_plans: int = 64) -> dict:
    """Mean frames sampled (``len(frame_indices)``) and decoded (``frames_decoded``) per clip,
    views per clip, over the loader's first plans (epoch 0)."""
    sampled, decoded = [], []
    views = 0
    for s in range(min(max_plans, len(loader.records))):
        plan = loader._plan(s, 0)
        info = index[plan.path]
        sampled.append(len(plan.frame_indices))
        decoded.append(frames_decoded(plan.frame_indices, info.keyframe_interval))
        views = plan.num_views
    return {"views_per_clip": views, "frames_sampled_per_clip": float(np.mean(sampled)),
            "frames_decoded_per_clip": float(np.mean(decoded))}


def measure_loader(loader, warmup: int, iters: int, repeats: int, device: torch.device) -> dict:
    """Clips/s of iterating ``loader`` (one pass; warm-up batches excluded)."""
    it = iter(loader)

    def step():
        batch = next(it)
        if batch.clips.device.type == "cuda":
            torch.cuda.synchronize(batch.clips.device)

    secs = _windows(step, warmup, iters, repeats, device)
    loader.close()
    return {"clips_per_s": summarize([iters * loader.batch_size / s for s in secs])}


def measure_model(train_step: TrainStep, batch_size: int, num_views: int, size: int, num_classes: int,
                  dtype: str, warmup: int, iters: int, repeats: int, device: torch.device) -> dict:
    """Clips/s of ``train_step`` on one synthetic batch, reused every step."""
    clips, labels = synthetic_batch(batch_size, num_views, size, num_classes, dtype, device)
    secs = _windows(lambda: train_step(clips, labels), warmup, iters, repeats, device)
    return {"clips_per_s": summarize([iters * batch_size / s for s in secs])}


def measure_end_to_end(loader, train_step: TrainStep, warmup: int, iters: int, repeats: int,
                       device: torch.device) -> dict:
    """Training clips/s with ``loader`` feeding ``train_step``, and the share of each window's
    time the host spent blocked in ``next(loader)``. As in tsn_dali.train, nothing inside a
    window waits for the GPU (each window ends with one synchronize), so the host queues
    steps ahead and a wait shows only when the loader falls behind."""
    it = iter(loader)
    waited = [0.0]

    def step():
        t0 = time.perf_counter()
        batch = next(it)
        waited[0] += time.perf_counter() - t0
        train_step(batch.clips, batch.labels)

    rates, shares = [], []

    for _ in range(warmup):
        step()
    _sync(device)
    for _ in range(repeats):
        waited[0] = 0.0
        t0 = time.perf_counter()
        for _ in range(iters):
            step()
        _sync(device)
        secs = time.perf_counter() - t0
        rates.append(iters * loader.batch_size / secs)
        shares.append(waited[0] / secs)
    loader.close()
    return {"clips_per_s": summarize(rates), "data_wait_share": summarize(shares)}


# --------------------------------------------------------------------------- executors


def open_executors(names: Sequence[str], recipe, device: torch.device, reference_workers: int):
    """(executors by name, reasons for the unavailable ones). dali-gpu only where CUDA is present."""
    from tsn_dali.data.executors import build_executor

    cfg = recipe.loader
    opened, unavailable = {}, {}
    for name in names:
        if name == "dali-gpu" and device.type != "cuda":
            unavailable[name] = "no CUDA device (run with --device cuda on a GPU machine)"
            continue
        try:
            opened[name] = build_executor(name, device=device, num_threads=cfg.num_threads,
                                          decode_workers=cfg.decode_workers, prefetch=cfg.prefetch,
                                          reference_workers=reference_workers)
        except Exception as exc:  # DALI missing, no NVDEC, executor module not there yet
            unavailable[name] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return opened, unavailable


def _attempt(entry: dict, fn) -> dict:
    """``entry`` updated with ``fn()``, or with ``error`` where the measurement failed."""
    try:
        entry.update(fn())
    except Exception as exc:
        entry["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        print(f"  failed: {entry['error']}", file=sys.stderr)
    return entry


# --------------------------------------------------------------------------- the run


def run(args, argv: Sequence[str]) -> dict:
    from tsn_dali.data.video_index import build_index

    recipe = load_recipe(args.recipe, args.overrides)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cpu":
        # Denormal floats (tiny gradients once a repeated batch is fitted) slow x86 CPUs
        # down many times over; flushing them to zero keeps step times steady.
        torch.set_flush_denormal(True)
    if args.quick:
        args.repeats, args.warmup, args.iters = 1, 1, min(args.iters or 2, 2)
        args.gop_videos = min(args.gop_videos, 2)
    bs = args.batch_size or recipe.loader.batch_size
    test_bs = args.test_batch_size or recipe.loader.test_batch_size
    iters, warmup, repeats = args.iters or 5, args.warmup, args.repeats
    num_batches = warmup + iters * repeats
    work = args.work_dir or os.path.join(tempfile.gettempdir(), "tsn_dali_bench")
    names = [n.strip() for n in args.executors.split(",") if n.strip()]
    for n in names:
        if n not in EXECUTOR_NAMES:
            raise ValueError(f"--executors: unknown executor {n!r}; expected some of {', '.join(EXECUTOR_NAMES)}")

    paths = find_videos(args.videos, args.prefix) if args.videos else []
    if args.generate:
        paths += generate_videos(os.path.join(work, "generated"), args.generate, args.generate_frames)
    if not paths:
        raise ValueError("--videos: expected at least one video (or --generate N)")
    index = build_index(paths, cache_dir=os.path.join(work, "index"), workers=2, progress=False)
    bad = [i for i in (index[p] for p in paths) if not i.ok]
    if bad:
        raise ValueError(f"--videos: {bad[0].path}: {bad[0].error or 'no frames'}")

    result = {
        "env": environment(device, argv),
        "config": {
            "recipe": recipe.source, "overrides": list(args.overrides), "backbone": recipe.model.backbone,
            "num_segments": recipe.data.num_segments, "input_size": recipe.data.input_size,
            "short_side": recipe.data.short_side, "train_pipeline": recipe.data.train_pipeline,
            "test_pipeline": recipe.data.test_pipeline, "batch_size": bs, "test_batch_size": test_bs,
            "iters": iters, "warmup": warmup, "repeats": repeats, "device": str(device),
            "dtype": recipe.loader.dtype, "amp": bench_amp(recipe, device),
            "channels_last": True, "prefetch": recipe.loader.prefetch,
            "num_threads": recipe.loader.num_threads, "decode_workers": recipe.loader.decode_workers,
            "reference_workers": args.reference_workers, "compile": bool(args.compile),
            "quick": bool(args.quick), "note": args.note or "",
        },
        "videos": [{k: v for k, v in index[p].to_json().items() if k not in ("mtime", "error")}
                   for p in paths],
        "unavailable": {}, "loader": [], "model": [], "end_to_end": [], "gop": [],
    }
    executors, result["unavailable"] = open_executors(names, recipe, device, args.reference_workers)
    for name, why in result["unavailable"].items():
        print(f"[bench] {name}: unavailable ({why})", file=sys.stderr)

    try:
        # loader only: train view and test view
        for split, batch in (("train", bs), ("test", test_bs)):
            for name, ex in executors.items():
                print(f"[bench] loader {name} {split} view", file=sys.stderr)
                loader = make_loader(recipe, split, paths, index, ex, batch, num_batches, device)
                entry = {"executor": name, "view": split, "batch_size": batch, **plan_costs(loader, index)}
                result["loader"].append(_attempt(entry, lambda: measure_loader(loader, warmup, iters, repeats, device)))

        # model only (eager, then compiled)
        num_views = make_loader(recipe, "train", paths, index, None, bs, 1, device).num_views
        variants = [("eager", False)] + ([("compiled", True)] if args.compile else [])
        steps = {}
        for variant, compiled in variants:
            print(f"[bench] model {variant}", file=sys.stderr)
            torch.manual_seed(0)
            entry = {"variant": variant, "batch_size": bs, "views_per_clip": num_views}

            def model_run(compiled=compiled, variant=variant):
                model, result["config"]["model_builder"] = build_tsn(recipe.model)
                steps[variant] = make_train_step(model, recipe, device, compile=compiled)
                return measure_model(steps[variant], bs, num_views, recipe.data.input_size,
                                     recipe.model.num_classes, recipe.loader.dtype,
                                     warmup + (2 if compiled else 0), iters, repeats, device)

            result["model"].append(_attempt(entry, model_run))

        # end to end: each executor feeding the eager model
        for name, ex in executors.items():
            if "eager" not in steps:
                break
            print(f"[bench] end to end {name}", file=sys.stderr)
            loader = make_loader(recipe, "train", paths, index, ex, bs, num_batches, device)
            entry = {"executor": name, "model": "eager", "batch_size": bs}
            result["end_to_end"].append(_attempt(
                entry, lambda: measure_end_to_end(loader, steps["eager"], warmup, iters, repeats, device)))

        # decode cost vs GOP: the first videos re-encoded with a short and the default GOP
        if args.gop_videos > 0:
            sources = paths[: args.gop_videos]
            for label, gop in (("short", SHORT_GOP), ("long", LONG_GOP)):
                folder = os.path.join(work, f"gop_{gop or 'default'}")
                print(f"[bench] GOP {label}: re-encoding {len(sources)} videos", file=sys.stderr)
                gop_paths = [reencode(p, os.path.join(folder, f"{i:03d}_{Path(p).stem}.mp4"), gop)
                             for i, p in enumerate(sources)]
                gop_index = build_index(gop_paths, cache_dir=os.path.join(work, "index"), workers=2,
                                        progress=False)
                kfi = [gop_index[p].keyframe_interval for p in gop_paths]
                for name, ex in executors.items():
                    print(f"[bench] GOP {label} loader {name}", file=sys.stderr)
                    loader = make_loader(recipe, "train", gop_paths, gop_index, ex, bs, num_batches, device)
                    entry = {"gop": label, "requested_gop": gop,
                             "keyframe_interval": float(np.mean([k or 1 for k in kfi])),
                             "executor": name, "view": "train", "batch_size": bs,
                             **plan_costs(loader, gop_index)}
                    result["gop"].append(_attempt(
                        entry, lambda: measure_loader(loader, warmup, iters, repeats, device)))
    finally:
        for ex in executors.values():
            try:
                ex.close()
            except Exception:
                pass
    result["headline"] = headline(result)
    return result


def _median(entries, **match) -> Optional[float]:
    for e in entries:
        if all(e.get(k) == v for k, v in match.items()) and "clips_per_s" in e:
            return e["clips_per_s"]["median"]
    return None


def headline(result: dict) -> dict:
    """Ratios of medians: each DALI executor's loader vs the reference loader (train and test
    views), and each executor's end to end vs model only (eager)."""
    out = {"loader_vs_reference": {}, "end_to_end_vs_model": {}}
    for view in ("train", "test"):
        ref = _median(result["loader"], executor="reference", view=view)
        for name in ("dali-gpu", "dali-cpu"):
            fast = _median(result["loader"], executor=name, view=view)
            if ref and fast:
                out["loader_vs_reference"][f"{name} {view}"] = fast / ref
    model = _median(result["model"], variant="eager")
    for e in result["end_to_end"]:
        if model and "clips_per_s" in e:
            out["end_to_end_vs_model"][e["executor"]] = e["clips_per_s"]["median"] / model
    return out


# --------------------------------------------------------------------------- reports


def _fmt(stats: Optional[dict]) -> str:
    """``median (min–max)`` with three significant digits."""
    if not stats:
        return "n/a"
    return f"{stats['median']:.3g} ({stats['min']:.3g}–{stats['max']:.3g})"


def markdown(result: dict) -> str:
    """The results as markdown tables (median, min–max over the repeats)."""
    env, cfg = result["env"], result["config"]
    kinds = ", ".join(sorted({"{codec} {width}x{height}".format(**v) for v in result["videos"]}))
    lines = [
        f"# Throughput: {Path(cfg['recipe']).name} on {env['device']}",
        "",
        f"- date: {env['date']}",
        f"- device: {env['device']} ({env['device_type']}); CPUs: {env['cpu_count']} "
        f"({env['cpus_usable']} usable), load average at start {env['load_average_at_start']}",
        f"- versions: torch {env['torch']}, DALI {env['dali']}, timm {env['timm']}, "
        f"torchvision {env['torchvision']}, PyAV {env['pyav']}, decord {env['decord']}, Python {env['python']}",
        f"- command: `{env['command']}`",
        f"- model: {cfg['backbone']}, {cfg['num_segments']} segments, {cfg['input_size']} px, "
        f"batch {cfg['batch_size']} (test view batch {cfg['test_batch_size']}), AMP {cfg['amp']}, "
        f"loader dtype {cfg['dtype']}, channels_last",
        f"- timing: {cfg['warmup']} warm-up batches excluded, {cfg['repeats']} windows of "
        f"{cfg['iters']} batches; figures are clips/s, median (min–max) over the windows",
        f"- videos: {len(result['videos'])} "
        f"({kinds}); "
        f"reference workers {cfg['reference_workers']}, DALI threads {cfg['num_threads']}, "
        f"decode workers {cfg['decode_workers']}, prefetch {cfg['prefetch']}",
    ]
    for name, why in result["unavailable"].items():
        lines.append(f"- {name}: not measured ({why})")
    if cfg.get("note"):
        lines.append(f"- note: {cfg['note']}")
    lines += ["", "## Loader only", "",
              "| executor | view | batch | views/clip | frames sampled/clip | frames decoded/clip (est.) | clips/s |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    for e in result["loader"]:
        lines.append(f"| {e['executor']} | {e['view']} | {e['batch_size']} | {e['views_per_clip']} | "
                     f"{e['frames_sampled_per_clip']:.1f} | {e['frames_decoded_per_clip']:.1f} | "
                     f"{_fmt(e.get('clips_per_s')) if 'error' not in e else 'failed: ' + e['error']} |")
    lines += ["", "## Model only (the trainer's step, tsn_dali.engine.step, on synthetic input)", "",
              "| variant | batch | views/clip | clips/s |", "| --- | --- | --- | --- |"]
    for e in result["model"]:
        lines.append(f"| {e['variant']} | {e['batch_size']} | {e['views_per_clip']} | "
                     f"{_fmt(e.get('clips_per_s')) if 'error' not in e else 'failed: ' + e['error']} |")
    lines += ["", "## End to end (each executor feeding that step)", "",
              "| executor | batch | clips/s | share of time blocked waiting for data |",
              "| --- | --- | --- | --- |"]
    for e in result["end_to_end"]:
        if "error" in e:
            lines.append(f"| {e['executor']} | {e['batch_size']} | failed: {e['error']} | |")
            continue
        w = e["data_wait_share"]
        lines.append(f"| {e['executor']} | {e['batch_size']} | {_fmt(e['clips_per_s'])} | "
                     f"{100 * w['median']:.0f}% ({100 * w['min']:.0f}–{100 * w['max']:.0f}%) |")
    if result["gop"]:
        lines += ["", f"## Decode cost vs GOP (H.264 re-encoded, keyframes every {SHORT_GOP} vs {LONG_GOP} frames)",
                  "", "| GOP | mean keyframe interval | executor | frames sampled/clip | frames decoded/clip (est.) "
                  "| clips/s |", "| --- | --- | --- | --- | --- | --- |"]
    for e in result["gop"]:
        lines.append(f"| {e['gop']} ({e['requested_gop']}) | {e['keyframe_interval']:.1f} | {e['executor']} | "
                     f"{e['frames_sampled_per_clip']:.1f} | {e['frames_decoded_per_clip']:.1f} | "
                     f"{_fmt(e.get('clips_per_s')) if 'error' not in e else 'failed: ' + e['error']} |")
    h = result["headline"]
    lines += ["", "## Headline ratios (of medians)", ""]
    for k, v in h["loader_vs_reference"].items():
        lines.append(f"- loader {k} / reference: {v:.2f}x")
    for k, v in h["end_to_end_vs_model"].items():
        lines.append(f"- end to end with {k} / model only: {100 * v:.0f}%")
    if not h["loader_vs_reference"]:
        lines.append("- loader DALI / reference: n/a (no DALI executor measured)")
    lines += ["", "frames decoded/clip (est.): `tsn_dali.bench.frames_decoded`: keyframes every "
              "round(mean keyframe interval) frames; each wanted frame costs the frames from the "
              "keyframe before it, shared within a GOP.", ""]
    return "\n".join(lines)


def chart(result: dict, path: str) -> str:
    """Bar chart (matplotlib Agg): loader, model vs end to end, GOP; bars are medians,
    whiskers min/max."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        ("Loader only, train view", [(e["executor"], e) for e in result["loader"] if e["view"] == "train"]),
        ("Loader only, test view", [(e["executor"], e) for e in result["loader"] if e["view"] == "test"]),
        ("Training: model only vs end to end",
         [(f"model ({e['variant']})", e) for e in result["model"]] +
         [(f"e2e {e['executor']}", e) for e in result["end_to_end"]]),
        ("Loader vs GOP (train view)", [(f"{e['executor']} {e['gop']}", e) for e in result["gop"]]),
    ]
    fig, axes = plt.subplots(1, 4, figsize=(18, 4.5))
    for ax, (title, items) in zip(axes, panels):
        items = [(label, e["clips_per_s"]) for label, e in items if "clips_per_s" in e]
        ax.set_title(title, fontsize=10)
        ax.set_ylabel("clips/s")
        if not items:
            ax.text(0.5, 0.5, "not measured", ha="center", va="center", transform=ax.transAxes)
            continue
        med = [s["median"] for _, s in items]
        err = [[m - s["min"] for m, (_, s) in zip(med, items)], [s["max"] - m for m, (_, s) in zip(med, items)]]
        ax.bar(range(len(items)), med, yerr=err, capsize=4, color="#4C72B0")
        ax.set_xticks(range(len(items)))
        ax.set_xticklabels([label for label, _ in items], rotation=30, ha="right", fontsize=8)
    env, cfg = result["env"], result["config"]
    fig.suptitle(f"{Path(cfg['recipe']).name}: {cfg['backbone']}, {cfg['num_segments']} seg, "
                 f"{cfg['input_size']} px, batch {cfg['batch_size']} on {env['device']} "
                 f"({env['date'][:10]})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def write_outputs(result: dict, out_dir: str) -> Dict[str, str]:
    os.makedirs(out_dir, exist_ok=True)
    files = {"json": os.path.join(out_dir, "results.json"), "markdown": os.path.join(out_dir, "results.md"),
             "png": os.path.join(out_dir, "throughput.png")}
    with open(files["json"], "w") as fh:
        json.dump(result, fh, indent=1)
    with open(files["markdown"], "w") as fh:
        fh.write(markdown(result))
    chart(result, files["png"])
    return files


# --------------------------------------------------------------------------- CLI


def parse_args(argv: Optional[Sequence[str]] = None):
    p = argparse.ArgumentParser(prog="python -m tsn_dali.bench",
                                description="Loader, model and end-to-end clips/s of a recipe, side by side.")
    p.add_argument("recipe", help="recipe YAML (e.g. recipes/k400_r50.yaml)")
    p.add_argument("--videos", nargs="+", default=[], metavar="DIR_OR_LIST",
                   help="folders of videos, video files or MMAction2 video lists")
    p.add_argument("--prefix", default=None,
                   help="folder the paths of a --videos list are relative to (default: the list's folder)")
    p.add_argument("--generate", type=int, default=0, metavar="N",
                   help="also generate N K400-like H.264 clips (340x256, 30 fps, long GOP) in the work dir")
    p.add_argument("--generate-frames", type=int, default=300, help="frames per generated clip (default 300)")
    p.add_argument("--executors", default="dali-gpu,dali-cpu,reference")
    p.add_argument("--reference-workers", type=int, default=16, help="DataLoader workers of the reference executor")
    p.add_argument("--batch-size", type=int, default=None, help="train batch (default loader.batch_size)")
    p.add_argument("--test-batch-size", type=int, default=None, help="test view batch (default loader.test_batch_size)")
    p.add_argument("--iters", type=int, default=None, help="batches per timed window (default 5)")
    p.add_argument("--warmup", type=int, default=2, help="batches before timing (default 2)")
    p.add_argument("--repeats", type=int, default=3, help="timed windows (default 3)")
    p.add_argument("--gop-videos", type=int, default=4, help="videos re-encoded for the GOP comparison (0: skip it)")
    p.add_argument("--device", default=None, help="cuda | cpu (default: cuda where available)")
    p.add_argument("--compile", action="store_true", help="also measure the model under torch.compile")
    p.add_argument("--out", default=None, help="output folder (default benchmarks/results/<device>-<date>)")
    p.add_argument("--work-dir", default=None, help="index cache and re-encoded videos (default: a temp folder)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="recipe override, as in python -m tsn_dali.config")
    p.add_argument("--note", default=None, help="a line of context for the report (e.g. 'machine shared, under load')")
    p.add_argument("--quick", action="store_true", help="smoke run: 1 repeat, 1 warm-up, 2 iters, 2 GOP videos")
    return p.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    for name in ("iters", "warmup", "repeats", "batch_size", "test_batch_size"):
        value = getattr(args, name)
        if value is not None and value <= 0 and not (name == "warmup" and value == 0):
            print(f"error: --{name.replace('_', '-')}: expected a positive integer, got {value}", file=sys.stderr)
            return 2
    try:
        result = run(args, argv)
    except (RecipeError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    device = torch.device(result["config"]["device"])
    out = args.out or str(PROJECT_ROOT / "benchmarks" / "results" /
                          f"{device_slug(device)}-{datetime.date.today().isoformat()}")
    files = write_outputs(result, out)
    print(markdown(result))
    print(f"[bench] wrote {', '.join(files.values())}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

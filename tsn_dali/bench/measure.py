"""What the benchmark measures: executors (and their variants), loaders, the model's step.

An executor variant is a name and ``+``-joined options, e.g. ``dali-gpu+whole+copy``:

- ``whole``: feed DALI's decoder whole files, not GOP slices (``slice_gops=False``);
- ``copy``: hand batches over as torch-owned copies (``loader.handoff: copy``);
- ``sessionsN``: N concurrent NVDEC decodes (``loader.decode_sessions``);
- ``mmaction``: decode every video as MMAction2 does (decord), augment in DALI;
- ``gops`` / ``decord``: the CPU decoder of the reference executor and of dali-cpu's frames
  path (executors/cpu.py: only the GOPs a clip needs, or decord as MMAction2);
- ``uint8`` / ``float``: the reference executor's resize (cv2 on uint8, or the exact float rule).

``auto`` is measured as ``build_executor("auto")`` builds it on this device.
(parsed by tsn_dali.bench.options.parse_variant, which imports no torch)
"""
from __future__ import annotations

import time
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from tsn_dali.bench.options import EXECUTOR_NAMES, Variant, parse_variant  # noqa: F401  (kept here too)
from tsn_dali.bench.stats import summarize
from tsn_dali.data.render.executors.base import TORCH_DTYPES
from tsn_dali.engine.amp import loader_dtype, resolve_amp
from tsn_dali.engine.optim import build_optimizer
from tsn_dali.engine.step import TrainStep
from tsn_dali.errors import one_line


def open_executors(variants: Sequence[Variant], recipe, device: torch.device, reference_workers: int):
    """(executors by variant label, reasons for the unavailable ones). dali-gpu only on CUDA."""
    from tsn_dali.data.render.executors import build_executor

    cfg = recipe.loader
    opened, unavailable = {}, {}
    for v in variants:
        if v.executor == "dali-gpu" and device.type != "cuda":
            unavailable[v.label] = "no CUDA device (run with --device cuda on a GPU machine)"
            continue
        try:
            opened[v.label] = build_executor(
                v.executor, device=device, num_threads=cfg.num_threads, decode_workers=cfg.decode_workers,
                decode_sessions=v.decode_sessions or cfg.decode_sessions, slice_gops=v.slice_gops,
                decode=v.decode, reference_workers=reference_workers,
                **({"cpu_decoder": v.cpu_decoder} if v.cpu_decoder else {}),
                **({"resize": v.resize} if v.resize else {}))
        except Exception as exc:  # DALI missing, no NVDEC
            unavailable[v.label] = one_line(exc, named=True)
    return opened, unavailable


# --------------------------------------------------------------------------- loaders


def make_loader(recipe, split: str, paths: Sequence[str], index, executor, batch_size: int,
                num_batches: int, device: torch.device, seed: int = 0, handoff: str = "view"):
    """A ClipLoader over ``paths`` repeated to ``num_batches`` steps of ``batch_size`` clips
    (train: the train view, shuffled and randomly cropped per epoch; test: the test view).
    A test-view step is one executor run: ``loader.batches_per_run`` batches."""
    from tsn_dali.data.index.annotations import VideoRecord
    from tsn_dali.data.render.loader import ClipLoader
    from tsn_dali.data.plan.planner import ClipPlanner, load_pipeline

    data = recipe.data
    per_run = 1 if split == "train" else max(1, recipe.loader.eval_videos_per_run // batch_size)
    n = batch_size * num_batches * per_run
    records = [VideoRecord(path=paths[i % len(paths)], label=i % recipe.model.num_classes, line=i + 1,
                           source="<bench>") for i in range(n)]
    planner = ClipPlanner(load_pipeline(getattr(data, f"{split}_pipeline"), data), seed)
    dtype = loader_dtype(recipe, device)
    normalised = dtype != "uint8"
    return ClipLoader(records, index, planner, executor, batch_size=batch_size, train=split == "train",
                      device=device, mean=data.mean if normalised else None, std=data.std if normalised else None,
                      dtype=dtype,
                      prefetch=recipe.loader.prefetch, seed=seed, on_bad_video="error", handoff=handoff,
                      eval_videos_per_run=recipe.loader.eval_videos_per_run)


def frames_decoded(frame_indices: Sequence[int], keyframe_interval: Optional[float]) -> int:
    """GOP-aware estimate of the frames a seeking decoder (decord) decodes to return
    ``frame_indices``: with keyframes every ``G = round(keyframe_interval)`` frames, each
    wanted frame ``f`` costs the frames ``[floor(f / G) * G, f]``, shared within a GOP
    (the union of those ranges). ``None`` or ``<= 1`` (intra-only): the distinct frames.
    Used for the reference executor only; the DALI executors count what they feed."""
    wanted = sorted({int(f) for f in frame_indices})
    g = int(round(keyframe_interval)) if keyframe_interval and keyframe_interval > 1 else 1
    total, covered_to = 0, -1  # covered_to: last frame decoded so far
    for f in wanted:
        start = max((f // g) * g, covered_to + 1)
        if f >= start:
            total += f - start + 1
            covered_to = f
    return total


def plan_costs(loader, index, max_plans: int = 64) -> dict:
    """Views and frames sampled per clip, and the estimated frames decoded per clip (a
    seeking decoder, ``frames_decoded``), over the loader's first plans (epoch 0)."""
    sampled, decoded = [], []
    views = 0
    for s in range(min(max_plans, len(loader.records))):
        plan = loader.plan(s, 0)
        sampled.append(len(plan.frame_indices))
        decoded.append(frames_decoded(plan.frame_indices, index[plan.path].keyframe_interval))
        views = plan.num_views
    return {"views_per_clip": views, "frames_sampled_per_clip": float(np.mean(sampled)),
            "frames_decoded_per_clip": float(np.mean(decoded)), "frames_decoded_counted": False}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(step, iters: int, device: torch.device, warm: int = 1) -> float:
    """Seconds of ``iters`` calls of ``step()`` after ``warm`` untimed calls, the device's
    queued work included (a synchronize before and after the timed calls)."""
    for _ in range(max(1, int(warm))):
        step()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(iters):
        step()
    _sync(device)
    return time.perf_counter() - t0


def loader_warm_steps(prefetch: int) -> int:
    """Untimed steps before a loader's window: 1 + ``loader.prefetch``. A loader renders up to
    ``prefetch`` batches ahead, all at once where it has the threads (dali-cpu), so after a
    single step the next ones are part-made and a short window reads high; once as many
    steps as it keeps in flight have passed, each further step costs what a steady one does."""
    return 1 + max(0, int(prefetch))


class LoaderWindow:
    """A system (tsn_dali.bench.interleave): one timed window of iterating ``loader``.

    Each window is a pass of its own (``set_epoch``: new shuffle and crops each round):
    ``loader_warm_steps`` untimed steps, then ``iters`` timed steps (a step: one executor run, i.e.
    ``loader.batches_per_run`` batches), and the pass is closed and the executor's queued
    work waited for (``wait_idle``: the reference executor's workers go on with batches
    prepared ahead), so that nothing renders in the background while another system is
    timed. The executor's counters over its windows are summed for ``costs``."""

    def __init__(self, loader, iters: int, device: torch.device):
        self.loader, self.iters, self.device = loader, int(iters), device
        self.counted: Dict[str, int] = {}

    def _step(self, it):
        batch = None
        for _ in range(self.loader.batches_per_run):
            batch = next(it)
        return batch

    def __call__(self, round_no: int) -> float:
        before = dict(getattr(self.loader.executor, "stats", {}))
        self.loader.set_epoch(round_no + 100)
        it = iter(self.loader)
        try:
            seconds = timed(lambda: self._step(it), self.iters, self.device,
                            warm=loader_warm_steps(self.loader.prefetch))
        finally:
            it.close()
            wait_idle = getattr(self.loader.executor, "wait_idle", None)
            if wait_idle is not None:  # batches prepared ahead: not rendered while another system is timed
                wait_idle()
        after = getattr(self.loader.executor, "stats", {})
        for k, v in after.items():
            if isinstance(v, (int, float)):
                self.counted[k] = self.counted.get(k, 0) + v - before.get(k, 0)
        return self.iters * self.loader.batches_per_run * self.loader.batch_size / seconds

    def costs(self) -> dict:
        return counted_costs(self.counted)


def counted_costs(delta: Dict[str, int]) -> dict:
    """Per clip, from an executor's counters over the windows: frames and bytes fed to DALI's
    decoder, frames the frames path decoded, packets the CPU GOP decoder fed and frames it
    decoded, copies of rendered clips (all counted), and the clips of each path and codec."""
    clips = max(delta.get("clips", 0), 1)
    out = {"clips_counted": delta.get("clips", 0),
           "paths": {k[len("clips "):]: v for k, v in sorted(delta.items()) if k.startswith("clips ") and v},
           "frames_path_share": delta.get("frames_path_clips", 0) / clips}
    decoded = delta.get("decoder_clips", 0)
    if decoded:
        out.update(frames_fed_per_clip=delta.get("frames_fed", 0) / decoded,
                   bytes_per_clip=delta.get("bytes_fed", 0) / decoded,
                   sliced_share=delta.get("sliced_clips", 0) / decoded)
    if delta.get("frames_path_clips"):
        out["frames_path_frames_per_clip"] = delta.get("frames_path_frames", 0) / delta["frames_path_clips"]
    if delta.get("gop_clips"):  # the CPU GOP decoder (executors/cpu.py), counted
        out.update(gop_frames_decoded_per_clip=delta.get("frames_decoded", 0) / delta["gop_clips"],
                   gop_packets_fed_per_clip=delta.get("packets_fed", 0) / delta["gop_clips"])
    if "clip_copies" in delta:
        out["clip_copies_per_clip"] = delta["clip_copies"] / clips
    return out


# --------------------------------------------------------------------------- the model


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
                    device: torch.device) -> Tuple[torch.Tensor, torch.Tensor]:
    """Normalised-looking clips ``[N, V, C, H, W]`` (a view of NVHWC memory, as executors give)."""
    torch_dtype = TORCH_DTYPES[dtype if dtype != "uint8" else "float32"]
    g = torch.Generator().manual_seed(0)
    x = torch.randn((batch_size, num_views, size, size, 3), generator=g).to(torch_dtype).to(device)
    labels = torch.randint(0, num_classes, (batch_size,), generator=g).to(device)
    return x.permute(0, 1, 4, 2, 3), labels


class ModelWindow:
    """A system: ``iters`` timed steps of the trainer's step on one synthetic batch (after one
    untimed step)."""

    def __init__(self, train_step: TrainStep, clips: torch.Tensor, labels: torch.Tensor, iters: int,
                 device: torch.device):
        self.step, self.clips, self.labels, self.iters, self.device = train_step, clips, labels, int(iters), device

    def __call__(self, round_no: int) -> float:
        seconds = timed(lambda: self.step(self.clips, self.labels), self.iters, self.device)
        return self.iters * self.clips.shape[0] / seconds

    def costs(self) -> dict:
        return {}


class EndToEndWindow:
    """A system: training clips/s with ``loader`` feeding ``train_step`` over one window (a
    pass of its own, one untimed step), and the share of the window's time the host spent
    blocked in ``next(loader)``. As in tsn_dali.train, nothing inside a window waits for
    the GPU (the window ends with one synchronize), so a wait shows only where the loader
    falls behind."""

    def __init__(self, loader, train_step: TrainStep, iters: int, device: torch.device):
        self.loader, self.step, self.iters, self.device = loader, train_step, int(iters), device
        self.wait_shares: List[float] = []

    def __call__(self, round_no: int) -> float:
        self.loader.set_epoch(round_no + 100)
        it = iter(self.loader)
        try:
            batch = next(it)
            self.step(batch.clips, batch.labels)
            _sync(self.device)
            waited, t0 = 0.0, time.perf_counter()
            for _ in range(self.iters):
                w0 = time.perf_counter()
                batch = next(it)
                waited += time.perf_counter() - w0
                self.step(batch.clips, batch.labels)
            _sync(self.device)
            seconds = time.perf_counter() - t0
        finally:
            it.close()
        if round_no >= 0:
            self.wait_shares.append(waited / seconds)
        return self.iters * self.loader.batch_size / seconds

    def costs(self) -> dict:
        return {"data_wait_share": summarize(self.wait_shares)} if self.wait_shares else {}


__all__ = ["EXECUTOR_NAMES", "EndToEndWindow", "LoaderWindow", "ModelWindow", "Variant", "bench_amp", "build_tsn",
           "counted_costs", "frames_decoded", "loader_warm_steps", "make_loader", "make_train_step", "open_executors", "parse_variant",
           "plan_costs", "synthetic_batch", "timed"]

"""DaliExecutor: the ``dali-gpu`` and ``dali-cpu`` executors (graph in dali_pipeline.py).

Each sample takes one of two paths (``route``), chosen from the stream facts the plan
carries from the index:

- ``decoder``: DALI's video decoder reads the clip (NVDEC on ``dali-gpu``; on
  ``dali-cpu`` DALI's CPU decoder, which reads VP8/VP9/MJPEG only). It gets only what
  the clip's frames need (tsn_dali.data.render.slicing: the GOP pieces from the keyframe
  before each wanted frame, in an in-memory container, at sorted unique positions), and
  the graph restores the plan's order and repeats after decoding, and turns a rotated
  video's frames upright (fn.rotate by the plan's display rotation, on the decoder's
  device). A file of several video streams is always cut to the index's stream.
- ``frames``: the frames are decoded on the CPU outside DALI (executors/cpu.py, ``cpu_decoder``:
  by default the GOP decoder, only the GOPs a clip needs, where the index allows it; else
  decord as MMAction2's DecordDecode, PyAV as fallback, PIL for rawframes) and fed in;
  resizing, crops, flips and normalisation still run in DALI. Used for what the device's
  decoder cannot read (H.264/HEVC/MPEG-4 on the CPU; what NVDEC on this GPU cannot
  decode, executors/nvdec.py; several video streams that cannot be cut by packets,
  slicing.stream_problem), and for every video with ``decode="mmaction"`` (colour
  conversion as MMAction2's decord does it). Those frames come upright from the decode.

A video DALI's decoder fails on is blamed (``_blame``) with a reason that says its data is
damaged and names its file (DALI's own message says "memory file" for what it was fed).

A batch whose samples take both paths runs as two DALI runs and is put back together in
plan order. ``prepare`` (reading, slicing, decoding outside DALI: ``decode_workers``
threads) may run for later batches while ``run`` decodes this one. On ``dali-gpu`` the
decoder's concurrent NVDEC sessions are ``decode_sessions`` (DALI sizes the mixed
decoder's pool from the pipeline's thread count), apart from ``num_threads``, DALI's CPU
threads for the frames path.

Torch gets DALI's NFHWC output as a DLPack view (no copy), imported on the current stream
(the loader's render stream), which DALI's export makes wait for its own: DALI's dynamic
executor keeps a run's output alive while torch holds a reference, and returns the memory
to its pool (in order on its own stream) when torch drops it. A batch put together from
two runs, or cast to bfloat16, is copied on the current stream and the views it read are
kept (``streams.Retainer``) until that copy has run: no wait in the render thread. The loader's hand-off guard
(tsn_dali.data.render.handoff) keeps it referenced until the kernels that read it are done.
Pipelines are built once per (crops, out size, dtype, path, normalise, whole-frame resize
or not, rearrangement or not), sized for the
largest batch seen (smaller batches reuse them), and dropped by ``close()``.
"""
from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch

from tsn_dali.data.errors import PipelineFailure, VideoDecodeError
from tsn_dali.data.render.executors import dali_pipeline as graph
from tsn_dali.data.render.executors.base import DECODES, check_render_args, clip_count_key
from tsn_dali.data.render.executors.cpu import CPU_DECODERS, decode_plan
from tsn_dali.data.render.executors.nvdec import NvdecSupport
from tsn_dali.data.render.streams import Retainer
from tsn_dali.data.plan.clip_plan import ClipPlan, StreamFacts
from tsn_dali.data.render.slicing import clip_input, stream_problem, unique_frames

logger = logging.getLogger(__name__)

MAX_PIPELINES = 4  # cached pipelines per executor
RAWFRAME_CODECS = ("rawframes", "jpeg")


WHOLE_PIPELINE = (  # (what, pattern of the error's text): failures of the device, not of a video
    ("out of memory", r"out of memory|CUDA_ERROR_OUT_OF_MEMORY|cudaErrorMemoryAllocation"),
    ("a CUDA error", r"\bCUDA error\b|cudaError\w+|CUDA_ERROR_\w+|CUresult"),
    ("the DLPack hand-over", r"dlpack|DLPack"),
)


def whole_pipeline_error(exc: BaseException) -> Optional[str]:
    """What failed, where ``exc`` is plainly the device's and not a video's (torch's OOM
    error, CUDA error codes, DLPack), else None: those are the only failures charged to the
    pipeline without a test. The rest are tried again video by video (``_blame``)."""
    if isinstance(exc, (getattr(torch, "OutOfMemoryError", ()), BufferError)):
        return "out of memory" if not isinstance(exc, BufferError) else "the DLPack hand-over"
    import re

    text = str(exc)
    for what, pattern in WHOLE_PIPELINE:
        if re.search(pattern, text):
            return what
    return None


def probe_codec(path: str) -> str:
    """The codec of a video the plan carries no stream facts for ("rawframes" for a folder,
    "" where the file cannot be opened: the decode step then says why)."""
    if os.path.isdir(path):
        return "rawframes"
    try:
        import av

        with av.open(path) as container:
            return container.streams.video[0].codec_context.name or ""
    except Exception:
        return ""


def damaged_reason(plan: ClipPlan, message: str) -> str:
    """A blamed video's reason: DALI's decoder failed on its bytes although the index read
    them and, this not being a device failure, other samples decode: its data is damaged.
    DALI's name for in-memory input ("memory file") becomes the path."""
    message = message.replace('"memory file"', f'"{plan.path}"')
    return f"damaged {plan.codec or 'video'} data: DALI's decoder cannot decode it ({message})"


@dataclass
class PreparedBatch:
    """``prepare``'s result: per-sample graph inputs, the samples of each path, counters."""

    plans: List[ClipPlan]
    num_crops: int
    out_size: Tuple[int, int]
    dtype: str
    normalise: bool
    inputs: List[Dict[str, np.ndarray]]
    paths: Dict[str, List[int]]  # "decoder" | "frames" -> sample positions
    counts: Dict[str, int] = field(default_factory=dict)


class DaliExecutor:
    """Carries out ClipPlans with DALI on ``device`` "cpu" (dali-cpu) or "cuda[:i]" (dali-gpu).

    ``num_threads``: DALI's CPU threads; ``decode_workers``: host threads that read and
    slice clips and decode the frames path; ``decode_sessions``: concurrent NVDEC decodes
    (dali-gpu); ``slice_gops``: feed the decoder GOP slices (False: whole files, for
    comparison); ``decode``: "native" or "mmaction" (module docstring); ``nvdec``: the
    NVDEC capability check (default: rules and one real decode per format);
    ``filename_tmpl``: rawframe file names; ``cpu_decoder``: the frames path's decoder
    (executors/cpu.py; ``decode="mmaction"`` uses decord whatever it says).
    """

    def __init__(self, device="cpu", num_threads: int = 4, decode_workers: int = 4,
                 decode_sessions: int = 16, slice_gops: bool = True, decode: str = "native",
                 nvdec: Optional[NvdecSupport] = None, filename_tmpl: str = "img_{:05}.jpg",
                 cpu_decoder: str = "gops"):
        self.device = torch.device(device)
        if self.device.type not in ("cpu", "cuda"):
            raise ValueError(f"dali executor: device {device!r}; expected 'cpu' or 'cuda[:index]'")
        if decode not in DECODES:
            raise ValueError(f"loader.decode: {decode!r}; expected one of {', '.join(DECODES)}")
        self.dali_device = "gpu" if self.device.type == "cuda" else "cpu"
        self.name = "dali-gpu" if self.dali_device == "gpu" else "dali-cpu"
        self.device_id = None
        if self.dali_device == "gpu":
            self.device_id = self.device.index if self.device.index is not None else torch.cuda.current_device()
            self.device = torch.device("cuda", self.device_id)
        self.num_threads = max(1, int(num_threads))
        self.decode_workers = max(1, int(decode_workers))
        self.decode_sessions = max(1, int(decode_sessions))
        self.slice_gops = bool(slice_gops)
        self.decode = decode
        self.filename_tmpl = filename_tmpl
        if cpu_decoder not in CPU_DECODERS:
            raise ValueError(f"dali executor: cpu_decoder {cpu_decoder!r}; expected one of {', '.join(CPU_DECODERS)}")
        self.cpu_decoder = cpu_decoder
        self.nvdec = nvdec if nvdec is not None else NvdecSupport(self.device_id or 0)
        self.stats: Dict[str, int] = {"clips": 0, "decoder_clips": 0, "sliced_clips": 0,
                                      "frames_path_clips": 0, "frames_fed": 0, "bytes_fed": 0}
        self._pipelines: "OrderedDict[tuple, Tuple[int, object]]" = OrderedDict()
        self._pool: Optional[ThreadPoolExecutor] = None
        self._pool_lock = threading.Lock()
        self._lock = threading.Lock()  # one DALI run at a time
        self._retainer = Retainer(self.device)  # DALI views a queued copy reads
        self._known_good: Dict[tuple, dict] = {}  # pipeline key -> a sample that rendered
        self._unproven_failures: set = set()  # videos failed while nothing has worked yet

    # ------------------------------------------------------------------ routing

    def route(self, plan: ClipPlan) -> Tuple[str, Optional[str]]:
        """``("decoder" | "frames", reason)``: the path a sample takes (module docstring);
        ``reason`` says why NVDEC cannot take a video (None otherwise)."""
        codec = plan.codec or probe_codec(plan.path)
        if codec in RAWFRAME_CODECS or os.path.isdir(plan.path) or self.decode == "mmaction":
            return "frames", None
        if self.dali_device == "cpu":
            readable = codec in graph.DALI_CODECS["cpu"] and not stream_problem(plan.stream)
            return ("decoder" if readable else "frames"), None
        stream = plan.stream if plan.stream is not None else StreamFacts(codec=codec)
        reason = stream_problem(plan.stream) or self.nvdec.reason(stream, plan.path)
        return ("frames", reason) if reason else ("decoder", None)

    def check_videos(self, streams: Mapping[str, StreamFacts]) -> Dict[str, str]:
        """{path: reason} for the videos DALI's decoder on this device will not read: they
        take the frames path (decoded on the CPU outside DALI, augmented in DALI). dali-gpu:
        what NVDEC cannot decode, every format tried once here, at start-up; dali-cpu: every
        codec but VP8/VP9/MJPEG. ``decode: mmaction`` sends every video there by choice
        (nothing listed)."""
        if self.decode == "mmaction":
            return {}
        if self.dali_device == "cpu":
            readable = graph.DALI_CODECS["cpu"]
            out = {path: f"DALI's CPU decoder reads {'/'.join(sorted(readable))}, not {s.codec}"
                   for path, s in streams.items() if s.codec not in readable and s.codec not in RAWFRAME_CODECS}
            out.update((path, stream_problem(s)) for path, s in streams.items()
                       if path not in out and s.codec in readable and stream_problem(s))
            return out
        out = {}
        for path, stream in streams.items():
            if stream.codec in RAWFRAME_CODECS:
                continue
            reason = stream_problem(stream) or self.nvdec.reason(stream, path)
            if reason:
                out[path] = reason
        return out

    # ------------------------------------------------------------------ prepare

    def _map(self, fn, items):
        if len(items) == 1 or self.decode_workers == 1:
            return [fn(x) for x in items]
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.decode_workers, thread_name_prefix="tsn_dali-decode")
            pool = self._pool
        return list(pool.map(fn, items))

    def _sample(self, plan: ClipPlan, path: str, mean, std):
        """One sample's graph inputs and counters for ``path`` ("decoder" | "frames")."""
        if not os.path.exists(plan.path):
            raise VideoDecodeError(plan.path, "file not found")
        if path == "decoder":
            clip = clip_input(plan.path, plan.frame_indices, plan.stream, slice_gops=self.slice_gops)
            inputs = graph.plan_inputs(plan, order=clip.order, encoded=clip.data, positions=clip.positions,
                                       mean=mean, std=std)
            return inputs, {"frames_fed": clip.frames_fed, "bytes_fed": int(clip.data.size),
                            "sliced_clips": int(clip.sliced), "decoder_clips": 1}
        frames, order = unique_frames(plan.frame_indices)
        counts = {"frames_path_clips": 1, "frames_path_frames": int(len(frames))}
        decoder = "auto" if self.decode == "mmaction" else self.cpu_decoder  # auto: decord, as MMAction2
        decoded = np.ascontiguousarray(decode_plan(plan, decoder, self.filename_tmpl, frame_indices=frames,
                                                   counts=counts))
        return graph.plan_inputs(plan, order=order, frames=decoded, mean=mean, std=std), counts

    def prepare(self, plans: Sequence[ClipPlan], *, mean=None, std=None, dtype: str = "uint8") -> PreparedBatch:
        """Route, read, slice and (frames path) decode one batch (thread-safe)."""
        plans, num_crops, out_size = check_render_args(plans, mean, std, dtype)
        routes = [self.route(p)[0] for p in plans]
        results = self._map(lambda i: self._sample(plans[i], routes[i], mean, std), list(range(len(plans))))
        counts: Dict[str, int] = {"clips": len(plans)}
        for plan, route, (_, c) in zip(plans, routes, results):
            for k, v in c.items():
                counts[k] = counts.get(k, 0) + v
            key = clip_count_key(route, plan)
            counts[key] = counts.get(key, 0) + 1
        paths: Dict[str, List[int]] = {}
        for i, r in enumerate(routes):
            paths.setdefault(r, []).append(i)
        return PreparedBatch(plans, num_crops, out_size, dtype, mean is not None,
                             [inputs for inputs, _ in results], paths, counts)

    # ------------------------------------------------------------------ run

    def _pipeline(self, key, batch: int):
        """The cached pipeline for ``key`` that takes ``batch`` samples (built or rebuilt bigger)."""
        size, pipe = self._pipelines.pop(key, (0, None))
        if pipe is None or size < batch:
            (num_crops, out_size, out_dtype, source, normalise, resize_frames, reorder_frames, resize_crops,
             rotate_frames) = key
            threads = self.decode_sessions if (self.dali_device == "gpu" and source == "decoder") \
                else self.num_threads
            del pipe
            size = max(batch, size)
            pipe = graph.build_pipeline(device=self.dali_device, batch_size=size, num_crops=num_crops,
                                        out_size=out_size, out_dtype=out_dtype, source=source,
                                        normalise=normalise, num_threads=threads, device_id=self.device_id,
                                        resize_frames=resize_frames, reorder_frames=reorder_frames,
                                        resize_crops=resize_crops, rotate_frames=rotate_frames)
            while len(self._pipelines) >= MAX_PIPELINES:
                self._pipelines.popitem(last=False)
        self._pipelines[key] = (size, pipe)
        return pipe

    def _run_samples(self, key, samples) -> torch.Tensor:
        """One DALI run over ``samples`` -> torch ``[n, V, H, W, C]``."""
        pipe = self._pipeline(key, len(samples))
        graph.feed(pipe, samples, graph.input_names(key[0], key[3], key[4], key[5], key[6], key[7], key[8]))
        (out,) = pipe.run()
        return self._to_torch(out)

    def _to_torch(self, out) -> torch.Tensor:
        """DALI's dense output as torch: a DLPack view of DALI's own buffer where the dynamic
        executor keeps outputs alive while referenced; else one copy (feed_ndarray)."""
        from nvidia.dali.plugin.pytorch import feed_ndarray, to_torch_type

        tensor = out.as_tensor()
        if graph.OUTPUTS_OUTLIVE_RUN:
            try:
                view = torch.from_dlpack(tensor)
                if view.device == self.device:
                    return view
            except (TypeError, RuntimeError, BufferError):
                pass
        dst = torch.empty(tensor.shape(), dtype=to_torch_type[tensor.dtype], device=self.device)
        stream = torch.cuda.current_stream(self.device) if self.device.type == "cuda" else None
        feed_ndarray(tensor, dst, cuda_stream=stream)
        return dst

    def _failure(self, what: str, error) -> PipelineFailure:
        return PipelineFailure(self.name, what, graph.first_line(error))

    def _works(self, key, sample) -> bool:
        try:
            self._run_samples(key, [sample])
            return True
        except Exception:  # noqa: BLE001 - any failure of a sample that worked before
            self._pipelines.pop(key, None)
            return False

    def _blame(self, key, plans, samples, error) -> Exception:
        """DALI failed a run: the error to raise. A device failure (``whole_pipeline_error``)
        is the pipeline's at once. Else each sample runs alone: the first that fails is the
        video to blame, provided a sample that worked before still works (else the pipeline
        broke: PipelineFailure with the original error); where every sample fails, or none
        does alone, or nothing ever worked and a second video in a row fails, it is the
        pipeline's too."""
        what = whole_pipeline_error(error)
        if what:
            return self._failure(what, error)
        failing, worked = None, False
        if len(plans) > 1:
            for plan, sample in zip(plans, samples):
                if self._works(key, sample):
                    worked = True
                    self._known_good[key] = sample
                else:
                    failing = failing or plan
                if failing is not None and worked:
                    break  # one fails, another works: a video's fault, no need to go on
            if failing is None:
                return self._failure(f"the batch of {len(plans)} failed, each video alone decodes", error)
            if not worked:
                return self._failure(f"every one of {len(plans)} videos failed", error)
        else:
            failing = plans[0]
        good = self._known_good.get(key)
        if good is not None and not self._works(key, good):
            return self._failure("a video that decoded before fails now", error)
        if good is None:
            self._unproven_failures.add(failing.path)
            if len(self._unproven_failures) >= 2:
                return self._failure(f"{len(self._unproven_failures)} videos in a row failed and none ever "
                                     "decoded", error)
        return VideoDecodeError(failing.path, damaged_reason(failing, graph.first_line(error)))

    def run(self, prepared: PreparedBatch) -> torch.Tensor:
        """The batch ``[N, V, C, H, W]`` (executors/base.py) from ``prepare``'s result."""
        out_dtype = "float32" if prepared.dtype == "bfloat16" else prepared.dtype
        parts = []
        with self._lock:
            for source, positions in sorted(prepared.paths.items()):
                resize_frames = any(graph.needs_resize(prepared.plans[i]) for i in positions)
                reorder_frames = any(graph.needs_reorder(prepared.inputs[i]["frame_order"]) for i in positions)
                resize_crops = any(graph.crops_need_resize(prepared.plans[i]) for i in positions)
                rotate_frames = source == "decoder" and any(graph.needs_rotate(prepared.inputs[i]) for i in positions)
                key = (prepared.num_crops, prepared.out_size, out_dtype, source, prepared.normalise, resize_frames,
                       reorder_frames, resize_crops, rotate_frames)
                samples = [prepared.inputs[i] for i in positions]
                try:
                    parts.append((positions, self._run_samples(key, samples)))
                except Exception as exc:
                    self._pipelines.pop(key, None)  # a pipeline that raised is not reused
                    raise self._blame(key, [prepared.plans[i] for i in positions], samples, exc) from None
                self._known_good[key] = samples[0]
                self._unproven_failures.clear()
            for k, v in prepared.counts.items():
                self.stats[k] = self.stats.get(k, 0) + v
        buf = parts[0][1]
        if len(parts) > 1:  # two paths: put the samples back in plan order (one copy)
            buf = torch.empty((len(prepared.plans),) + tuple(buf.shape[1:]), dtype=buf.dtype, device=buf.device)
            for positions, part in parts:
                buf[positions] = part
        if prepared.dtype == "bfloat16":
            buf = buf.to(torch.bfloat16)
        if buf is not parts[0][1]:  # the copies above read DALI's views: kept until they ran
            self._retainer.retain(*(part for _, part in parts))
        return buf.permute(0, 1, 4, 2, 3)

    def render(self, plans: Sequence[ClipPlan], *, mean=None, std=None, dtype: str = "uint8") -> torch.Tensor:
        """Plans -> ``[N, V, C, H, W]``: ``run(prepare(...))`` (executors/base.py).

        With mean/std: ``(x - mean) / std`` in ``dtype`` (float16/float32 written by DALI;
        bfloat16 computed as float32 in DALI and cast in torch). Without: raw pixels.
        """
        return self.run(self.prepare(plans, mean=mean, std=std, dtype=dtype))

    def close(self):
        """Tear down the cached DALI pipelines and the host threads."""
        with self._lock:
            self._retainer.close()
            self._pipelines.clear()
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


__all__ = ["DaliExecutor", "PreparedBatch", "probe_codec"]

"""DaliExecutor: the ``dali-gpu`` and ``dali-cpu`` executors (graph in dali_pipeline.py).

``dali-gpu`` (device "cuda"): the file's bytes go into the graph, fn.decoders.video on
``mixed`` (NVDEC) decodes ``frame_indices``, every op runs on the GPU, and torch gets
DALI's NFHWC output as a DLPack view (no copy; DALI's dynamic executor keeps a run's
output alive while it is referenced), or one GPU-to-GPU copy on DALI builds without it.

``dali-cpu`` (device "cpu"): DALI's CPU decoder reads VP8/VP9/MJPEG only. A batch whose
videos are all of those codecs is decoded in the graph; any other batch (H.264, HEVC,
MPEG-4, rawframe folders, or a mix) is decoded outside DALI, every sample of it, by
decord ``VideoReader.get_batch`` (MMAction2's DecordDecode) with PyAV as fallback
(reference.decode_frames), in a pool of ``decode_workers`` threads, and fed in as
frames; resizing, crops, flips and normalisation still run in DALI. So there are two
graph variants ("decoder", "frames"), chosen per batch from the videos' codecs.

Pipelines are cached per (batch size, views, out size, dtype, variant) and reused by
later render calls; ``close()`` drops them and the thread pool.
"""
from __future__ import annotations

import os
import re
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, Mapping, Optional, Sequence

import numpy as np
import torch

from tsn_dali.data.errors import VideoDecodeError
from tsn_dali.data.executors import dali_pipeline as graph
from tsn_dali.data.plan import ClipPlan

_TORCH_DTYPES = {"uint8": torch.uint8, "float16": torch.float16, "bfloat16": torch.bfloat16,
                 "float32": torch.float32}
MAX_PIPELINES = 4  # cached pipelines per executor (e.g. the full batch and an epoch's last one)


def probe_codec(path: str) -> str:
    """The video stream's codec name as PyAV names it ("h264", "vp9", ...); "rawframes"
    for a folder; "" where the file cannot be opened (the decode step then says why)."""
    if os.path.isdir(path):
        return "rawframes"
    try:
        import av

        with av.open(path) as container:
            return container.streams.video[0].codec_context.name or ""
    except Exception:
        return ""


def _first_line(exc: BaseException) -> str:
    """One line from a DALI error: the text after "encountered:" (DALI's own message,
    without its pipeline traceback and C++ context), else the first non-empty line."""
    text = str(exc)
    if "encountered:" in text:
        text = text.split("encountered:", 1)[1].split("C++ context", 1)[0]
        text = re.sub(r'^\s*Assert on ".*?" failed:\s*', "", text, flags=re.S)
    text = " ".join(line.strip() for line in text.splitlines() if line.strip())
    return text[:300] or type(exc).__name__


class DaliExecutor:
    """Carries out ClipPlans with DALI on ``device`` "cpu" (dali-cpu) or "cuda[:i]" (dali-gpu).

    ``num_threads``: DALI's CPU worker threads; ``decode_workers``: threads decoding
    outside DALI (dali-cpu, codecs DALI's CPU decoder lacks); ``prefetch``: passed to DALI
    as prefetch_queue_depth, but render runs one batch per call synchronously, so it adds
    no look-ahead (that is the loader's prefetch thread); ``codecs``: optional
    {path: codec} hint (e.g. from the VideoIndex) that saves a PyAV probe per video;
    ``decode``: "native", or "mmaction" to decode every video outside DALI (decord, as
    MMAction2's DecordDecode) whatever its codec.
    """

    def __init__(self, device="cpu", num_threads: int = 4, decode_workers: int = 4, prefetch: int = 2,
                 codecs: Optional[Mapping[str, str]] = None, decode: str = "native"):
        self.device = torch.device(device)
        if self.device.type not in ("cpu", "cuda"):
            raise ValueError(f"dali executor: device {device!r}; expected 'cpu' or 'cuda[:index]'")
        self.dali_device = "gpu" if self.device.type == "cuda" else "cpu"
        self.name = "dali-gpu" if self.dali_device == "gpu" else "dali-cpu"
        self.device_id = None
        if self.dali_device == "gpu":
            self.device_id = self.device.index if self.device.index is not None else torch.cuda.current_device()
            self.device = torch.device("cuda", self.device_id)
        self.num_threads = max(1, int(num_threads))
        self.decode_workers = max(1, int(decode_workers))
        self.prefetch = max(1, int(prefetch))
        self.decode = decode
        self._codecs: Dict[str, str] = dict(codecs or {})
        self._pipelines: "OrderedDict[tuple, object]" = OrderedDict()
        self._pool: Optional[ThreadPoolExecutor] = None
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ choices

    def hint_codecs(self, codecs: Mapping[str, str]):
        """Record {path: codec} (e.g. VideoInfo.codec from the index) to skip PyAV probes."""
        self._codecs.update(codecs)

    def codec(self, path: str) -> str:
        if path not in self._codecs:
            self._codecs[path] = probe_codec(path)
        return self._codecs[path]

    def source_for(self, plans: Sequence[ClipPlan]) -> str:
        """'decoder' where DALI's decoder on this device reads every video of the batch, else 'frames'
        ('frames' always with decode="mmaction")."""
        if self.decode == "mmaction":
            return "frames"
        known = graph.DALI_CODECS[self.dali_device]
        return "decoder" if all(self.codec(p.path) in known for p in plans) else "frames"

    def _map(self, fn, items):
        if len(items) == 1 or self.decode_workers == 1:
            return [fn(x) for x in items]
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.decode_workers, thread_name_prefix="tsn_dali-decode")
        return list(self._pool.map(fn, items))

    # ------------------------------------------------------------------ inputs

    def _read_bytes(self, plan: ClipPlan) -> np.ndarray:
        try:
            data = np.fromfile(plan.path, dtype=np.uint8)
        except OSError as exc:
            raise VideoDecodeError(plan.path, f"cannot read file: {exc.strerror or exc}") from None
        if data.size == 0:
            raise VideoDecodeError(plan.path, "empty file")
        return data

    def _decode_outside(self, plan: ClipPlan) -> np.ndarray:
        from tsn_dali.data.executors.reference import decode_frames

        return np.ascontiguousarray(decode_frames(plan.path, plan.frame_indices))

    def _sample_inputs(self, plans, source, mean, std):
        def one(plan):
            if not os.path.exists(plan.path):
                raise VideoDecodeError(plan.path, "file not found")
            if source == "decoder":
                return graph.plan_inputs(plan, encoded=self._read_bytes(plan), mean=mean, std=std)
            return graph.plan_inputs(plan, frames=self._decode_outside(plan), mean=mean, std=std)

        return self._map(one, plans)

    # ------------------------------------------------------------------ pipelines

    def _pipeline(self, key):
        pipe = self._pipelines.pop(key, None)
        if pipe is None:
            batch, num_crops, out_size, out_dtype, source, normalise = key
            pipe = graph.build_pipeline(device=self.dali_device, batch_size=batch, num_crops=num_crops,
                                        out_size=out_size, out_dtype=out_dtype, source=source,
                                        normalise=normalise, num_threads=self.num_threads,
                                        device_id=self.device_id, prefetch=self.prefetch)
            while len(self._pipelines) >= MAX_PIPELINES:
                _, old = self._pipelines.popitem(last=False)
                del old
        self._pipelines[key] = pipe
        return pipe

    def _drop(self, key):
        self._pipelines.pop(key, None)

    def _run(self, key, samples, names):
        """Run one batch; returns the torch tensor [N, V, H, W, C] (see _to_torch)."""
        pipe = self._pipeline(key)
        graph.feed(pipe, samples, names)
        (out,) = pipe.run()
        return self._to_torch(out)

    def _to_torch(self, out) -> torch.Tensor:
        """DALI's dense NFHWC output as a torch tensor: a DLPack view of DALI's own buffer
        (no copy) where the pipeline runs with DALI's dynamic executor, whose outputs live
        as long as a reference to them does; else one copy (feed_ndarray)."""
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

    def _find_bad_sample(self, key, plans, samples, names, error) -> VideoDecodeError:
        """DALI failed a whole batch: render samples one at a time to name the failing video."""
        single = (1,) + key[1:]
        for plan, sample in zip(plans, samples):
            try:
                self._run(single, [sample], names)
            except Exception as exc:  # DALI raises RuntimeError / IndexError / ValueError
                self._drop(single)
                return VideoDecodeError(plan.path, f"DALI: {_first_line(exc)}")
        paths = ", ".join(p.path for p in plans)
        return VideoDecodeError(paths, f"DALI failed the batch but no single video: {_first_line(error)}")

    # ------------------------------------------------------------------ API

    def render(self, plans: Sequence[ClipPlan], *, mean=None, std=None, dtype="uint8") -> torch.Tensor:
        """Plans -> ``[N, V, C, H, W]``: a permuted view of the ``[N, V, H, W, C]`` buffer DALI
        wrote (each frame channels_last), on ``self.device``, views crop-major.

        With mean/std: ``(x - mean) / std`` in ``dtype`` (float16/float32 written by DALI;
        bfloat16 computed as float32 in DALI and cast in torch). Without: raw pixels,
        uint8 unless ``dtype`` says otherwise (then cast by DALI, values unchanged).
        """
        plans = list(plans)
        if not plans:
            raise ValueError("render: expected at least one plan")
        if dtype not in _TORCH_DTYPES:
            raise ValueError(f"render: dtype {dtype!r}; expected one of {', '.join(_TORCH_DTYPES)}")
        if (mean is None) != (std is None):
            raise ValueError("render: give both mean and std, or neither")
        normalise = mean is not None
        if normalise and dtype == "uint8":
            raise ValueError("render: mean/std need a float dtype (float16, bfloat16, float32), got uint8")
        shapes = {(len(p.crops), len(p.frame_indices), tuple(int(v) for v in p.out_size)) for p in plans}
        if len(shapes) != 1:
            raise ValueError(f"render: plans give views of different shapes {sorted(shapes)}; "
                             "expected one crop count, frame count and out_size per batch")
        num_crops, _, out_size = shapes.pop()
        out_dtype = "float32" if dtype == "bfloat16" else dtype
        with self._lock:
            source = self.source_for(plans)
            names = graph.input_names(num_crops, source, normalise)
            samples = self._sample_inputs(plans, source, mean, std)
            key = (len(plans), num_crops, out_size, out_dtype, source, normalise)
            try:
                buf = self._run(key, samples, names)
            except Exception as exc:
                self._drop(key)  # a DALI pipeline that raised is not reused
                if len(plans) == 1:
                    raise VideoDecodeError(plans[0].path, f"DALI: {_first_line(exc)}") from None
                raise self._find_bad_sample(key, plans, samples, names, exc) from None
        if dtype == "bfloat16":
            buf = buf.to(torch.bfloat16)
        return buf.permute(0, 1, 4, 2, 3)

    def close(self):
        """Tear down the cached DALI pipelines and the decode threads."""
        with self._lock:
            pipes = list(self._pipelines.values())
            self._pipelines.clear()
            del pipes
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


__all__ = ["DaliExecutor", "probe_codec"]

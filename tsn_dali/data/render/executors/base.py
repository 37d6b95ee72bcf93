"""The executor contract: what every executor (dali-gpu, dali-cpu, reference) offers.

An executor carries out ClipPlans and decides nothing (randomness lives in the planner).
Rendering is two steps so that a loader can overlap them: ``prepare`` does the host-side
work for a batch (reading, slicing, decoding outside the graph; thread-safe, several
batches may be prepared at once) and ``run`` turns prepared inputs into the batch (one at
a time). ``render`` is the two in a row.

Output of ``run``/``render``: ``[N, V, C, H, W]``, a permuted view of an ``[N, V, H, W, C]``
buffer (each frame channels_last) on ``executor.device``, views crop-major (ClipPlan
docstring). With mean/std: ``(x - mean) / std`` in ``dtype``; without: raw pixels. A video
that cannot be decoded raises VideoDecodeError naming it.
"""
from __future__ import annotations

from typing import Dict, List, Mapping, Protocol, Sequence, Tuple, runtime_checkable

import torch

from tsn_dali.config import DTYPES
from tsn_dali.data.plan.clip_plan import ClipPlan, StreamFacts

# loader.decode: DALI decodes what its decoder reads | decord decodes every video (MMAction2)
DECODES = ("native", "mmaction")

# loader.dtype names (tsn_dali.config.DTYPES, the one list) -> torch dtypes; bfloat16 is
# written by torch, not DALI
TORCH_DTYPES = {name: getattr(torch, name) for name in DTYPES}


@runtime_checkable
class Executor(Protocol):
    name: str
    device: torch.device
    stats: Dict[str, int]  # counters since construction (executor-specific keys)

    def prepare(self, plans: Sequence[ClipPlan], *, mean=None, std=None, dtype: str = "uint8"):
        """Host-side work for one batch; returns what ``run`` takes."""

    def run(self, prepared) -> torch.Tensor:
        """The batch ``[N, V, C, H, W]`` from ``prepare``'s result."""

    def render(self, plans: Sequence[ClipPlan], *, mean=None, std=None, dtype: str = "uint8") -> torch.Tensor:
        """``run(prepare(plans, ...))``."""

    def check_videos(self, streams: Mapping[str, StreamFacts]) -> Dict[str, str]:
        """{path: reason} for videos this executor renders on a slower path than its own
        (e.g. what NVDEC cannot decode); empty where all take the usual path."""

    def close(self) -> None:
        """Release threads, worker processes and pipelines."""


def check_render_args(plans: Sequence[ClipPlan], mean, std, dtype: str) -> Tuple[List[ClipPlan], int, Tuple[int, int]]:
    """Validate one render call; returns ``(plans, num_crops, out_size)``.

    One crop count, frame count and out_size per batch; mean and std both or neither;
    mean/std need a float dtype.
    """
    plans = list(plans)
    if not plans:
        raise ValueError("render: expected at least one plan")
    if dtype not in TORCH_DTYPES:
        raise ValueError(f"render: dtype {dtype!r}; expected one of {', '.join(TORCH_DTYPES)}")
    if (mean is None) != (std is None):
        raise ValueError("render: give both mean and std, or neither")
    if mean is not None and dtype == "uint8":
        raise ValueError("render: mean/std need a float dtype (float16, bfloat16, float32), got uint8")
    shapes = {(len(p.crops), len(p.frame_indices), tuple(int(v) for v in p.out_size)) for p in plans}
    if len(shapes) != 1:
        raise ValueError(f"render: plans give views of different shapes {sorted(shapes)}; "
                         "expected one crop count, frame count and out_size per batch")
    num_crops, _, out_size = shapes.pop()
    return plans, num_crops, out_size


def normalise(x: torch.Tensor, mean=None, std=None, dtype: str = "uint8") -> torch.Tensor:
    """``[..., C]`` pixels -> ``(x - mean) / std`` in ``dtype``, computed in float32 (the
    rule the DALI graph's crop_mirror_normalize follows too). Without mean/std the
    pixels are only cast."""
    out = TORCH_DTYPES[dtype]
    if mean is None:
        return x if x.dtype == out else x.to(out)
    m = torch.as_tensor(mean, dtype=torch.float32, device=x.device)
    s = torch.as_tensor(std, dtype=torch.float32, device=x.device)
    return ((x.float() - m) / s).to(out)


def clip_count_key(route: str, plan: ClipPlan) -> str:
    """The counter of the clips a path decoded, per codec (``loader.stats["decoded"]``):
    ``clips decoder vp9`` (DALI's decoder), ``clips frames h264`` (decoded outside DALI)."""
    return f"clips {route} {plan.codec or 'unknown'}"


DECORD_TURNS = ("mov,mp4,m4a,3gp,3g2,mj2",)  # containers whose display matrix decord 0.6 applies


def pyav_stream(plan: ClipPlan):
    """The stream a CPU decode outside DALI must take with PyAV (its container stream
    index), None where decord decodes it as the index describes. PyAV takes a file of
    several video streams (decord decodes only its own choice) and a rotated one outside
    MP4/MOV (decord 0.6's FFmpeg 4.1 reads display matrices there only: measured, a
    rotated WebM comes out of decord as stored); tsn_dali.data.media.decoding."""
    stream = plan.stream
    if stream is None:
        return None
    if int(stream.video_streams or 1) > 1 or (stream.rotation and stream.container not in DECORD_TURNS):
        return int(stream.stream_index)
    return None


def check_frame_size(plan: ClipPlan, frames) -> None:
    """Decoded frames ``[T, H, W, C]`` must have the plan's upright size (``orig_size``),
    else a decoder gave another stream or turn than the index describes: VideoDecodeError,
    not a silently squashed clip."""
    h, w = (int(v) for v in frames.shape[1:3])
    want = tuple(int(v) for v in plan.orig_size)
    if (w, h) != want:
        from tsn_dali.data.errors import VideoDecodeError

        facts = plan.stream or StreamFacts()
        raise VideoDecodeError(plan.path, f"decoded frames are {w}x{h}, the index says {want[0]}x{want[1]} upright "
                                          f"(stream {facts.stream_index}, rotation {facts.rotation}); index it again")


def no_slow_path(streams: Mapping[str, StreamFacts]) -> Dict[str, str]:
    """``check_videos`` for executors with one path for every video."""
    return {}


__all__ = ["DECODES", "Executor", "TORCH_DTYPES", "check_render_args", "clip_count_key", "no_slow_path", "normalise",
           "check_frame_size", "pyav_stream"]

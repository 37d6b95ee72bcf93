"""The loader's regression guard: counts, not times.

A CPU executor that decodes outside DALI counts what its decoder did (executors/cpu.py,
tsn_dali.data.media.gops: ``packets_fed``, ``frames_decoded``) and how often it copied a
rendered clip (``clip_copies``). ``decode_budget`` works out, from the video itself and
independently of the decoder's code, the most a plan needs:

- ``fed``: per GOP a wanted frame lies in, the packets from its keyframe (the index's
  closed-GOP starts) up to the last packet, in decode order, shown no later than the
  GOP's last wanted frame (the frames it is predicted from are decoded before it);
- ``decoded``: of those, the ones a wanted frame or a later frame can depend on: every
  packet but H.264 non-reference pictures (``nal_ref_idc`` 0 in each slice NAL header of
  the length-prefixed packets of MP4/Matroska), which nothing is predicted from and which
  only count where they are wanted. Other codecs: every packet fed.

``check`` compares an executor's counters over some plans with the sum of their budgets
and says what is over; tests/test_decode_guard.py fails on any excess, and shows that a
decoder that starts from the file's first frame, or decodes the frames nothing needs,
fails it.
"""
from __future__ import annotations

from typing import Dict, Iterable, List, Optional, Sequence

import numpy as np

H264_SLICES = (1, 5)  # NAL unit types of coded slices (non-IDR, IDR)


def h264_is_reference(data: bytes, length_size: int = 4) -> Optional[bool]:
    """Whether an H.264 packet (length-prefixed NAL units, as MP4 and Matroska store them)
    is a reference picture: its first slice NAL's ``nal_ref_idc`` is not 0. None where no
    slice NAL is found (not length-prefixed, or no slice)."""
    i = 0
    while i + length_size < len(data):
        size = int.from_bytes(data[i:i + length_size], "big")
        header = data[i + length_size]
        if (header & 0x1F) in H264_SLICES:
            return bool((header >> 5) & 3)
        if size <= 0:
            return None
        i += length_size + size
    return None


def _stream_packets(path: str, stream_index: Optional[int]):
    import av

    from tsn_dali.data.media.decoding import video_stream

    with av.open(path) as container:
        stream = video_stream(container, stream_index)
        codec = stream.codec_context.name
        return codec, [(int(p.pts), bytes(p)) for p in container.demux(stream) if p.size and p.pts is not None]


def decode_budget(path: str, frame_indices: Sequence[int], keyframes: Sequence[int],
                  stream_index: Optional[int] = None) -> Dict[str, int]:
    """``{"fed": packets, "decoded": frames}`` at most needed for ``frame_indices`` (module
    docstring), from a demux of ``path``'s stream; ``keyframes``: the index's closed-GOP
    starts (frame numbers)."""
    codec, packets = _stream_packets(path, stream_index)
    rank = {pts: r for r, pts in enumerate(sorted(p for p, _ in packets))}
    frame_of = [rank[pts] for pts, _ in packets]  # decode order -> frame number
    starts = [int(k) for k in keyframes]
    wanted = sorted({int(f) for f in frame_indices})
    fed = decoded = 0
    for g, start in enumerate(starts):
        end = starts[g + 1] if g + 1 < len(starts) else len(packets)
        mine = [f for f in wanted if start <= f < end]
        if not mine:
            continue
        gop = [(i, f) for i, f in enumerate(frame_of) if start <= f < end]  # this GOP, decode order
        last = max(n for n, (_, f) in enumerate(gop) if f <= mine[-1]) + 1
        for i, f in gop[:last]:
            fed += 1
            is_ref = h264_is_reference(packets[i][1]) if codec == "h264" else None
            decoded += int(is_ref is not False or f in mine)
    return {"fed": fed, "decoded": decoded}


def plans_budget(plans: Iterable) -> Dict[str, int]:
    """The sum of ``decode_budget`` over plans (their videos' index facts)."""
    out = {"fed": 0, "decoded": 0, "clips": 0}
    for plan in plans:
        s = plan.stream
        b = decode_budget(plan.path, plan.frame_indices, s.keyframes, int(s.stream_index))
        out["fed"] += b["fed"]
        out["decoded"] += b["decoded"]
        out["clips"] += 1
    return out


def check(counted: Dict[str, int], budget: Dict[str, int], max_copies_per_clip: float = 0.0) -> List[str]:
    """What an executor's counters (over the budget's plans) exceed: packets fed, frames
    decoded, copies of rendered clips per clip; and clips decoded by a path that does not
    count (it would pass unseen). Empty where nothing is wrong."""
    problems = []
    clips = max(int(budget.get("clips", 0)), 1)
    uncounted = int(budget.get("clips", 0)) - int(counted.get("gop_clips", 0))
    if uncounted > 0:
        problems.append(f"gop_clips: {uncounted} of {clips} clip(s) decoded without counts (not by the GOP decoder)")
    for key, limit in (("packets_fed", budget["fed"]), ("frames_decoded", budget["decoded"])):
        got = int(counted.get(key, 0))
        if got > limit:
            problems.append(f"{key}: {got} for {clips} clip(s), the plans need at most {limit} "
                            f"({got / clips:.1f} a clip against {limit / clips:.1f})")
    copies = float(counted.get("clip_copies", 0)) / clips
    if copies > max_copies_per_clip:
        problems.append(f"clip_copies: {copies:.2f} a clip, at most {max_copies_per_clip:g} expected")
    return problems


def frames_decoded_counted(stats: Dict[str, int]) -> Optional[float]:
    """Frames the GOP decoder decoded per clip it decoded (None where it decoded none)."""
    clips = int(stats.get("gop_clips", 0))
    return float(np.divide(stats.get("frames_decoded", 0), clips)) if clips else None


__all__ = ["check", "decode_budget", "frames_decoded_counted", "h264_is_reference", "plans_budget"]

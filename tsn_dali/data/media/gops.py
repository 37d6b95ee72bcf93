"""Decoding only what a clip needs: the GOPs its frames lie in, without the frames nothing uses.

``decode_gops(path, frame_indices, keyframes, keyframe_pts)`` gives the same RGB frames as
decoding the whole stream from its start (PyAV, as ``decoding.decode_pyav``; the frames
decord gives, measured equal), doing less:

1. Frames are grouped by the closed GOP they lie in (``keyframes``: the index's frame
   numbers where a decoder can start, ``keyframe_pts`` their pts). For each group the
   demuxer seeks to the GOP's keyframe and the decoder starts afresh there; GOPs no
   wanted frame lies in are never read. A frame's number is the rank of its pts in
   presentation order (the index's rule), counted from the GOP's keyframe.
2. Only the GOP's packets up to the last one shown no later than its last wanted frame
   are fed (``decode_prefix``: references are decoded before the frames that use them).
3. Packets of frames nobody wants are fed with FFmpeg's ``skip_frame = NONREF``
   (``AVDISCARD_NONREF``): a non-reference frame (H.264/HEVC ``nal_ref_idc`` 0, a B-frame
   no other frame predicts from) is not decoded at all, and no frame that is decoded
   depends on it, so the wanted frames are bit for bit those of a full decode
   (tests/test_gop_decode.py checks them against one). Wanted frames and every reference
   frame are decoded as usual. VP9 and other codecs whose decoder has no such frames
   simply decode everything fed.
4. Only the wanted frames are converted to RGB (``decoding.rgb24``: swscale, as PyAV's
   ``to_ndarray``, one context kept per thread).

``counts`` (a dict, optional) is added to: ``packets_fed`` (packets sent to the decoder),
``frames_decoded`` (frames the decoder gave back: wanted and reference frames; a skipped
frame gives none) and ``gops`` (GOP groups decoded). The bench's regression guard checks
them against what the plan needs (tsn_dali.bench.guard).
"""
from __future__ import annotations

import bisect
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from tsn_dali.data.errors import VideoDecodeError
from tsn_dali.data.media.decoding import decoded_stream, display_rotation, rgb24, upright
from tsn_dali.errors import one_line

SKIP_UNWANTED = "NONREF"  # FFmpeg's AVDISCARD_NONREF for packets of frames nobody wants
# libavformat: no decoder while the streams are probed (the index knows what probing would
# decode a frame to learn; 0.93 ms an open against 0.18, measured); our own decoder still opens
NO_PROBE_DECODE = {"codec_whitelist": "none"}
def unique_frames(frame_indices: Sequence[int]) -> Tuple[np.ndarray, np.ndarray]:
    """``(frames, order)``: sorted unique frame numbers and, per plan index, its place in them."""
    frames, order = np.unique(np.asarray(frame_indices, dtype=np.int64), return_inverse=True)
    return frames, order.astype(np.int32).reshape(-1)


def gop_groups(frames: Sequence[int], keyframes: Sequence[int]) -> List[Tuple[int, List[int]]]:
    """Sorted ``frames`` grouped by the GOP they lie in: ``[(gop index, [frames]), ...]``.

    GOP ``g`` holds frames ``keyframes[g] <= f < keyframes[g + 1]``; ``keyframes[0]`` is 0.
    """
    groups: List[Tuple[int, List[int]]] = []
    for f in frames:
        g = bisect.bisect_right(keyframes, int(f)) - 1
        if g < 0:
            raise ValueError(f"frame {f} lies before the first keyframe {keyframes[0]}")
        if groups and groups[-1][0] == g:
            groups[-1][1].append(int(f))
        else:
            groups.append((g, [int(f)]))
    return groups


def decode_prefix(pts_in_decode_order: Sequence[int], frames_needed: int) -> int:
    """How many packets of a GOP (in decode order) to feed so that its first
    ``frames_needed`` frames in presentation order can be decoded: up to the last packet
    shown among them (references are decoded before the frames that use them)."""
    if not 1 <= frames_needed <= len(pts_in_decode_order):
        raise ValueError(f"frames_needed {frames_needed}; the GOP has {len(pts_in_decode_order)} packets")
    cutoff = sorted(pts_in_decode_order)[frames_needed - 1]
    return max(i for i, p in enumerate(pts_in_decode_order) if p <= cutoff) + 1


def _gop_packets(container, stream, start_pts: int, end_pts: Optional[int], needed: int, reordered: bool):
    """The GOP's packets from its keyframe (pts ``start_pts``) in decode order: to the next
    keyframe (``end_pts``) or the end where B-frames reorder (a pts's rank needs them all),
    else the first ``needed``."""
    container.seek(int(start_pts), stream=stream, backward=True, any_frame=False)
    packets = []
    for packet in container.demux(stream):
        if packet.size == 0 or packet.pts is None:
            continue
        if not packets and packet.pts != start_pts:
            continue  # the seek landed before the keyframe
        if end_pts is not None and packet.pts == end_pts:
            break
        packets.append(packet)
        if not reordered and len(packets) >= needed:
            break
    return packets


def _add(counts: Optional[Dict[str, int]], key: str, n: int) -> None:
    if counts is not None:
        counts[key] = counts.get(key, 0) + int(n)


def decode_gops(path: str, frame_indices: Sequence[int], keyframes: Sequence[int], keyframe_pts: Sequence[int],
                *, reordered: bool = True, stream_index: Optional[int] = None, threads: int = 1,
                skip_unwanted: bool = True, counts: Optional[Dict[str, int]] = None) -> np.ndarray:
    """RGB frames ``[T, H, W, 3]`` uint8 at ``frame_indices`` (in that order), upright as
    ``decoding.decode_pyav`` turns them (the frames' display matrix), decoding only what
    they need (module docstring).
    ``stream_index``: the container's video stream (None: FFmpeg's best); ``threads``: the
    decoder's threads (1 in a worker process of a pool); ``skip_unwanted`` False decodes
    every packet fed (for comparison)."""
    import av

    frames, order = unique_frames(frame_indices)
    keyframes, keyframe_pts = [int(k) for k in keyframes], [int(p) for p in keyframe_pts]
    if not keyframes or keyframes[0] != 0 or len(keyframes) != len(keyframe_pts):
        raise ValueError(f"{path}: keyframes {keyframes[:3]}...: expected closed-GOP starts from frame 0 with their pts")
    if frames.size and frames[0] < 0:
        raise VideoDecodeError(path, f"frame {int(frames[0])} requested")
    out: Dict[int, np.ndarray] = {}
    turn = [0]  # the display rotation, read from the first wanted frame
    try:
        with av.open(path, container_options=NO_PROBE_DECODE) as container:
            stream = decoded_stream(container, path, stream_index)
            ctx = stream.codec_context
            ctx.thread_count = max(1, int(threads))
            if threads > 1:
                ctx.thread_type = "AUTO"
            for g, wanted in gop_groups(frames, keyframes):
                end_pts = keyframe_pts[g + 1] if g + 1 < len(keyframe_pts) else None
                needed = wanted[-1] - keyframes[g] + 1
                packets = _gop_packets(container, stream, keyframe_pts[g], end_pts, needed, reordered)
                if len(packets) < needed:
                    raise VideoDecodeError(path, f"frame {wanted[-1]} requested, the GOP from frame "
                                                 f"{keyframes[g]} has {len(packets)} packets")
                ranked = sorted(p.pts for p in packets)
                want = {ranked[f - keyframes[g]]: f for f in wanted}
                fed = packets[:decode_prefix([p.pts for p in packets], needed)]
                _decode_group(ctx, fed, want, out, skip_unwanted, counts, turn)
                _add(counts, "gops", 1)
    except VideoDecodeError:
        raise
    except Exception as exc:  # av.error.*, OSError
        raise VideoDecodeError(path, f"PyAV: {one_line(exc)}") from None
    missing = [int(f) for f in frames if int(f) not in out]
    if missing:
        raise VideoDecodeError(path, f"frame {missing[0]} requested, not decoded from its GOP")
    stacked = np.stack([out[int(frames[i])] for i in order])  # one copy, in the order asked
    return np.ascontiguousarray(upright(stacked, turn[0])) if turn[0] else stacked


def _decode_group(ctx, packets, want: Dict[int, int], out: Dict[int, np.ndarray], skip_unwanted: bool,
                  counts: Optional[Dict[str, int]], turn: List[int]) -> None:
    """Feed one GOP's packets (unwanted ones skipped where they are non-reference frames),
    drain the decoder, convert the wanted frames, and reset the decoder for the next GOP."""
    decoded = 0

    def take(frames):
        nonlocal decoded
        for frame in frames:
            decoded += 1
            f = want.get(frame.pts)
            if f is not None:
                if not out:
                    turn[0] = display_rotation(getattr(frame, "rotation", 0))
                out[f] = rgb24(frame)

    try:
        for packet in packets:
            if skip_unwanted:
                ctx.skip_frame = "DEFAULT" if packet.pts in want else SKIP_UNWANTED
            take(ctx.decode(packet))
        ctx.skip_frame = "DEFAULT"
        take(ctx.decode(None))
    finally:
        ctx.skip_frame = "DEFAULT"
        ctx.flush_buffers()  # the next GOP starts afresh at its keyframe
    _add(counts, "packets_fed", len(packets))
    _add(counts, "frames_decoded", decoded)


__all__ = ["SKIP_UNWANTED", "decode_gops", "decode_prefix", "gop_groups", "unique_frames"]

"""Keyframe-aware decoder input: only the packets a clip's frames need.

What was measured (DALI 2.4, CPU backend, VP9 with a keyframe every 16 frames):
``fn.decoders.video(encoded, frames=[5])`` took 55 ms and ``frames=[290]`` 1,900 ms, so
in this use the CPU decoder does not seek: it decodes each sample from its first frame up
to the largest wanted index, and a clip of 8 frames spread over a 300-frame video costs
about 280 decoded frames, whatever the keyframe interval. DALI's GPU decoder has a frame
index and a seek path in its source; whether it seeks on in-memory input is not known until
measured (benchmarks/gpu_run.sh times GOP slices against whole files on NVDEC). Either
way, this module cuts, for each clip, a small in-memory video holding only what its frames
need (the same frames, bit for bit), and tells the decoder where the frames are in it:

1. The plan's frame indices become sorted unique ``frames`` plus ``order`` (view ``t``
   is ``frames[order[t]]``); the order and the repeats are restored after decoding
   (``fn.sequence_rearrange`` in the graph), so the decoder runs forward once.
2. Each wanted frame lies in a GOP that starts at a keyframe of the index
   (``VideoInfo.keyframes``: closed-GOP starts, so decoding from one needs nothing
   before it). For every GOP some wanted frame lies in, the packets from its keyframe
   up to the last wanted frame are copied (not re-encoded): in decode order, up to the
   last packet shown no later than that frame. Where B-frames reorder packets the whole
   GOP's packets are read to tell which those are. GOPs no wanted frame lies in are
   left out.
3. The packets go, with timestamps moved so that the pieces follow each other, into a
   container of the source's own kind (MP4, Matroska/WebM or AVI, the ones DALI reads
   H.264/HEVC/MPEG-4 from with its bit-stream filters) in memory.
4. Frame ``f`` of GOP ``g`` is then at position ``offset(g) + f - keyframes[g]`` of the
   slice, ``offset(g)`` being the packets of the pieces before it.

A clip is sliced only where that feeds the decoder fewer frames than the whole file
(up to its last wanted frame) would, and only for videos the index found
``sliceable``; else the decoder gets the whole file. ``ClipSlice.frames_fed`` counts what
the decoder decodes either way.

Several video streams: DALI's decoder reads a whole file's first video stream, whatever
the index chose (measured on DALI 2.4's CPU decoder), so such a file is always cut, the
index's stream alone (``VideoInfo.stream_index``), whether or not slicing pays or is
asked for; one that cannot be cut (``stream_problem``) is decoded outside DALI.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np

from tsn_dali.data.errors import VideoDecodeError
from tsn_dali.data.media.decoding import video_stream
from tsn_dali.data.media.gops import decode_prefix, gop_groups, unique_frames  # shared with the CPU decode
from tsn_dali.errors import one_line

# demuxer names (VideoInfo.container) -> the muxer that writes the same kind of container
MUXERS = {"mov,mp4,m4a,3gp,3g2,mj2": "mp4", "matroska,webm": "matroska", "avi": "avi"}
# libavformat option: decoders allowed while the streams are probed (none: demux only)
NO_DECODER = {"codec_whitelist": "none"}


@dataclass(frozen=True)
class ClipSlice:
    """What the decoder gets for one clip.

    ``data``: the encoded bytes (a slice, or the whole file); ``positions``: int32 sorted
    unique frame positions to decode in ``data``; ``order``: int32 ``[T]``, view ``t`` of
    the plan is decoded frame ``order[t]``; ``frames_fed``: frames the decoder decodes to
    reach them (packets of the slice, or the last wanted frame + 1 for a whole file);
    ``sliced``: whether ``data`` is a slice.
    """

    data: np.ndarray
    positions: np.ndarray
    order: np.ndarray
    frames_fed: int
    sliced: bool


def sliced_frame_count(frames: Sequence[int], keyframes: Sequence[int]) -> int:
    """Frames a slice feeds the decoder without B-frame reordering: per touched GOP, its
    keyframe up to its last wanted frame (with reordering a few more may be needed)."""
    return sum(fs[-1] - keyframes[g] + 1 for g, fs in gop_groups(frames, keyframes))


def cuttable(info) -> bool:
    """Whether clips can be cut out of the video by packets (index facts, container kind)."""
    return bool(getattr(info, "sliceable", False)) and getattr(info, "container", "") in MUXERS \
        and bool(getattr(info, "keyframes", None)) and int(info.keyframes[0]) == 0


def several_streams(info) -> bool:
    """The file holds more than one video stream (the decoder must get the index's alone)."""
    return int(getattr(info, "video_streams", 1) or 1) > 1


def stream_problem(info) -> Optional[str]:
    """Why DALI's decoder cannot be given the video's indexed stream (None where it can):
    a file of several video streams that cannot be cut by packets."""
    if info is None or not several_streams(info) or cuttable(info):
        return None
    return (f"{info.video_streams} video streams and not cut by packets: DALI's decoder would read "
            f"the first, not stream {info.stream_index}")


def worth_slicing(info, frames: Sequence[int]) -> bool:
    """Slice where the index allows it and a slice feeds fewer frames than the whole file."""
    if not cuttable(info) or int(frames[-1]) >= int(info.num_frames):
        return False
    return sliced_frame_count(frames, list(info.keyframes)) < int(frames[-1]) + 1


def whole_file(path: str) -> np.ndarray:
    """The file's bytes (VideoDecodeError where it cannot be read or is empty)."""
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise VideoDecodeError(path, f"cannot read file: {exc.strerror or exc}") from None
    if data.size == 0:
        raise VideoDecodeError(path, "empty file")
    return data


def clip_input(path: str, frame_indices: Sequence[int], info=None, *, slice_gops: bool = True) -> ClipSlice:
    """The decoder input for one clip (module docstring): a slice where that pays (or the
    file holds several video streams), else the whole file. ``info`` is the video's
    VideoInfo (keyframes, container, frame count, stream)."""
    frames, order = unique_frames(frame_indices)
    if info is not None and several_streams(info):
        why = stream_problem(info)
        if why:
            raise VideoDecodeError(path, why)
        data, positions, fed = _remux(path, info, frames)
        return ClipSlice(data, positions, order, fed, True)
    if slice_gops and info is not None and worth_slicing(info, frames):
        data, positions, fed = _remux(path, info, frames)
        return ClipSlice(data, positions, order, fed, True)
    return ClipSlice(whole_file(path), frames.astype(np.int32), order, int(frames[-1]) + 1, False)


def first_frame_clip(path: str, info) -> ClipSlice:
    """A tiny clip of the video's first frame (its first GOP's first packets) where the
    index allows slicing, else the whole file; for one test decode of a stream format."""
    frames = np.zeros(1, np.int64)
    if getattr(info, "sliceable", False) and getattr(info, "container", "") in MUXERS:
        data, positions, fed = _remux(path, info, frames)
        return ClipSlice(data, positions, np.zeros(1, np.int32), fed, True)
    return ClipSlice(whole_file(path), frames.astype(np.int32), np.zeros(1, np.int32), 1, False)


# --------------------------------------------------------------------------- remuxing


def _gop_packets(container, stream, path, start_pts: int, size: int, needed: int, reordered: bool):
    """Packets of the GOP that starts at ``start_pts`` (``size`` frames): all of them
    where B-frames reorder, else the first ``needed``."""
    container.seek(int(start_pts), stream=stream, backward=True, any_frame=False)
    packets = []
    want = size if reordered else needed
    for packet in container.demux(stream):
        if packet.size == 0 or packet.pts is None:
            continue
        if not packets:
            if packet.pts != start_pts:
                continue  # the seek landed before the keyframe
            if not packet.is_keyframe:
                raise VideoDecodeError(path, f"slice: the packet at pts {start_pts} is not a keyframe")
        packets.append(packet)
        if len(packets) >= want:
            break
    if len(packets) < needed:
        raise VideoDecodeError(path, f"slice: {len(packets)} packets from the keyframe at pts "
                                     f"{start_pts}, expected at least {needed}")
    return packets


def _remux(path: str, info, frames: np.ndarray):
    """Copy the GOP pieces the ``frames`` need into an in-memory container (module docstring)."""
    import av

    keyframes, kf_pts = list(info.keyframes), list(info.keyframe_pts)
    buf = io.BytesIO()
    positions: List[int] = []
    fed, cursor = 0, 0
    try:
        # No decoder is opened: probing the streams would decode a frame (about 2 ms a
        # VP9 clip, measured) to learn what the index already holds; packets are copied.
        with av.open(path, container_options=NO_DECODER) as src:
            stream = video_stream(src, getattr(info, "stream_index", None)) if several_streams(info) \
                else src.streams.video[0]
            with av.open(buf, "w", format=MUXERS[info.container]) as out:
                out_stream = out.add_stream_from_template(stream)
                if not out_stream.codec_context.pix_fmt and getattr(info, "pix_fmt", ""):
                    # unopened, the demuxer leaves VP9's pixel format unknown, and MP4's
                    # vpcC box written without it makes a file no reader opens
                    out_stream.codec_context.pix_fmt = info.pix_fmt
                for g, wanted in gop_groups(frames, keyframes):
                    end = keyframes[g + 1] if g + 1 < len(keyframes) else int(info.num_frames)
                    needed = wanted[-1] - keyframes[g] + 1
                    packets = _gop_packets(src, stream, path, kf_pts[g], end - keyframes[g], needed,
                                           bool(info.reordered))
                    packets = packets[:decode_prefix([p.pts for p in packets], needed)]
                    cursor = _mux_piece(out, out_stream, packets, cursor)
                    positions += [fed + f - keyframes[g] for f in wanted]
                    fed += len(packets)
    except VideoDecodeError:
        raise
    except FileNotFoundError:
        raise VideoDecodeError(path, "file not found") from None
    except Exception as exc:  # av.error.*, ValueError: a damaged stream
        raise VideoDecodeError(path, f"damaged video data: its packets cannot be cut out ({one_line(exc)})") from None
    return np.frombuffer(buf.getvalue(), dtype=np.uint8), np.asarray(positions, np.int32), fed


def _mux_piece(out, out_stream, packets, cursor: int) -> int:
    """Mux one GOP piece with timestamps moved to start at ``cursor`` (decode time) and
    keep their spacing; returns where the next piece starts (one frame after this one)."""
    dts = [p.dts if p.dts is not None else p.pts for p in packets]
    shift = cursor - min(dts)
    pts_sorted = sorted(p.pts for p in packets)
    steps = np.diff(pts_sorted)
    step = int(np.median(steps)) if len(steps) else int(packets[0].duration or 1)
    last = cursor
    for packet, d in zip(packets, dts):
        packet.pts, packet.dts = packet.pts + shift, d + shift
        last = max(last, packet.pts, packet.dts)
        packet.stream = out_stream
        out.mux(packet)
    return last + max(step, 1)


__all__ = ["ClipSlice", "MUXERS", "clip_input", "cuttable", "decode_prefix", "first_frame_clip", "gop_groups",
           "several_streams", "sliced_frame_count", "stream_problem",
           "unique_frames", "whole_file", "worth_slicing"]

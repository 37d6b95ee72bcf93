"""The video index: every video probed once (frames, size, fps, codec, GOP), cached.

Frame count rule (what the planner samples from):

1. MMAction2 reads videos with decord, so ``total_frames = len(decord.VideoReader)``.
2. PyAV demuxes the stream (no decoding): packet count, keyframe flags (the mean
   keyframe interval), the frame count the container declares, codec, size and fps.
3. decord's count is kept when its last frame decodes (``vr[n - 1]``: at most one GOP
   of decoding) and the stream holds at least that many packets. Otherwise (no decord,
   decord cannot open the file, the last frame fails) the count is the frames PyAV
   actually decodes, start to end.
4. A stream with fewer packets than its container declares (or whose last decord frame
   fails) is truncated: ``error`` says so, with the decodable count in ``num_frames``.
   Where the container declares no count (WebM) but a duration, ``duration_frames`` keeps
   what it implies, and ``short`` says when far fewer decode (the loader reports those).

Keyframes and stream facts (what the DALI executors need, tsn_dali/data/render/slicing.py and
executors/nvdec.py): the demux also records every packet's pts, so frame numbers are the
packets' ranks in presentation order. ``keyframes`` lists the frame numbers where a
decoder can start: keyframe packets after which no packet (in decode order) shows an
earlier frame, i.e. the starts of closed GOPs; for H.264 and HEVC only IDR pictures
count (tsn_dali/data/index/bitstream.py: open-GOP I-frames do not reset the decoder's output
order). ``sliceable`` is true when the packets are exactly the indexed frames (one
packet a frame, distinct pts) and frame 0 is such a keyframe: only then can a clip's
frames be cut out of the file by packets. ``pix_fmt``, ``bit_depth``, ``profile`` and
``coded_width``/``coded_height`` (the codec's declared size; the display size where the
demuxer knows no other) are what NVDEC's capability rules look at.

Which stream, which way up (the same for every executor, tsn_dali.data.media.decoding):

- A file may hold several video streams. The index chooses one, the stream decord (so
  MMAction2) decodes: FFmpeg's best-stream rule (``av_find_best_stream``) as decord's own
  FFmpeg 4.1 applies it. Later FFmpeg (PyAV's) prefers a stream flagged default first, so
  the two can differ; decord's pick is found by its frame size (either way up) and count,
  and PyAV's ``streams.best`` decides where decord is absent or matches no stream.
  ``stream_index`` (the container's stream index) and ``video_streams`` record it; every
  number here is that stream's.
- ``rotation``: the clockwise degrees (0, 90, 180, 270) the stream's display matrix
  turns its stored frames to show them, read from the first decoded frame as decord
  rounds it. ``width``/``height`` stay the stored size (what decoders output and NVDEC's
  rules look at); ``display_size`` is the upright size every executor gives and the
  planner plans on.
- ``duration_frames`` needs a frame rate the stream states (``average_rate``): a rate
  guessed from the time base (a one-frame WebM: 1000 fps) implies nothing. The duration
  is the stream's own, else the container's where the file has one video stream (a
  container's is its longest stream's).

Missing, empty, non-video, audio-only and zero-frame files get ``VideoInfo.error``;
``probe_video`` and ``build_index`` never raise for a bad video. The cache is one JSON
file, ``<cache_dir>/video_index.json``, keyed by absolute path and checked against the
file's size and mtime, so a changed file is probed again.
"""
from __future__ import annotations

import itertools
import os
from dataclasses import asdict, dataclass, field
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from tsn_dali.data.index.bitstream import CUT_CODECS, is_idr, nal_length_size
from tsn_dali.data.media.decoding import display_rotation, import_decord, video_stream
from tsn_dali.errors import one_line

CACHE_NAME = "video_index.json"  # the format: tsn_dali.data.index.cache


@dataclass
class VideoInfo:
    path: str
    num_frames: int = 0
    width: int = 0
    height: int = 0
    fps: float = 0.0
    codec: str = ""
    keyframe_interval: Optional[float] = None  # mean frames between keyframes
    size: int = 0  # bytes
    mtime: float = 0.0
    error: Optional[str] = None
    container: str = ""  # demuxer names, e.g. "mov,mp4,m4a,3gp,3g2,mj2", "matroska,webm"
    keyframes: List[int] = field(default_factory=list)  # frame numbers starting closed GOPs
    keyframe_pts: List[int] = field(default_factory=list)  # their pts (stream time base)
    sliceable: bool = False  # clips can be cut out by packets (module docstring)
    reordered: bool = False  # decode order differs from presentation order (B-frames)
    pix_fmt: str = ""
    bit_depth: int = 0
    profile: str = ""
    coded_width: int = 0
    coded_height: int = 0
    duration_frames: int = 0  # frames the container's duration implies at fps (0: unknown)
    rotation: int = 0  # clockwise degrees that turn the stored frames upright: 0, 90, 180, 270
    stream_index: int = 0  # the container's index of the video stream decoded
    video_streams: int = 1  # video streams in the file

    @property
    def ok(self) -> bool:
        return self.error is None and self.num_frames > 0

    @property
    def display_size(self) -> Tuple[int, int]:
        """``(w, h)`` of the frames upright, as shown: what every executor gives."""
        if self.rotation in (90, 270):
            return int(self.height), int(self.width)
        return int(self.width), int(self.height)

    @property
    def short(self) -> Optional[str]:
        """Why the video looks cut short (fewer frames decode than its container's duration
        implies, by more than 5% and 2 frames: a truncated file whose container declares no
        frame count, as WebM's does not), else None. Still usable: its frames are sampled."""
        expected = self.duration_frames
        if self.ok and expected and self.num_frames < expected - max(2, 0.05 * expected):
            return f"{self.num_frames} of the ~{expected} frames its duration implies decode (truncated?)"
        return None

    def to_json(self) -> dict:
        out = asdict(self)
        out["display_width"], out["display_height"] = self.display_size
        return out


def _decord_count(path: str):
    """(count, last_frame_ok, (h, w) of its last frame or None) from decord, or None when
    decord is absent or cannot open."""
    decord = import_decord()
    if decord is None:
        return None
    try:
        reader = decord.VideoReader(path, num_threads=1)
        count = len(reader)
    except Exception:
        return None
    if count <= 0:
        return 0, False, None
    try:
        shape = tuple(int(v) for v in reader[count - 1].shape[:2])
        last_ok = True
    except Exception:
        last_ok, shape = False, None
    del reader
    return count, last_ok, shape


def _pyav_decode_count(path: str, stream_index=None) -> int:
    """Frames PyAV decodes from start to end (stops quietly at the first decode error)."""
    import av

    count = 0
    try:
        with av.open(path) as container:
            stream = video_stream(container, stream_index)
            stream.thread_type = "AUTO"
            for _ in container.decode(stream):
                count += 1
    except Exception:
        pass
    return count


def closed_gop_starts(packets: Sequence[Tuple[Optional[int], bool]]):
    """Where a decoder can start, from packets ``(pts, is_keyframe)`` in decode order.

    Returns ``(keyframes, keyframe_pts, reordered, distinct)``: the frame numbers (ranks
    of pts in presentation order) of keyframe packets that no later packet precedes in
    presentation (a closed GOP: decoding from there needs nothing before it), their pts,
    whether decode order differs from presentation order, and whether every packet has a
    pts of its own (else frame numbers cannot be told from packets).
    """
    pts = [p for p, _ in packets]
    if not pts or any(p is None for p in pts) or len(set(pts)) != len(pts):
        return [], [], False, False
    rank = {p: r for r, p in enumerate(sorted(pts))}
    later_min = list(itertools.accumulate(reversed(pts), min))[::-1]  # min pts from i on
    earlier_max = list(itertools.accumulate(pts, max))  # max pts up to i
    reordered = any(pts[i] > pts[i + 1] for i in range(len(pts) - 1))
    starts = [(rank[p], p) for i, (p, key) in enumerate(packets)
              if key and later_min[i] == p and (i == 0 or earlier_max[i - 1] < p)]
    return [r for r, _ in starts], [p for _, p in starts], reordered, True


def _bit_depth(pix_fmt: str) -> int:
    try:
        import av

        return int(av.VideoFormat(pix_fmt).components[0].bits) if pix_fmt else 0
    except Exception:  # an unknown or hardware pixel format
        return 0


def choose_stream(container, decord_facts):
    """The video stream the index describes (module docstring): the only one; else the
    one decord decodes, told by its frame size either way up (``decord_facts()``: see
    ``_decord_count``) and, between streams of one size, its frame count; else PyAV's best."""
    videos = list(container.streams.video)
    if len(videos) == 1:
        return videos[0]
    best = video_stream(container)
    facts = decord_facts()
    if facts and facts[2]:
        size = sorted(facts[2])
        same = [s for s in videos
                if sorted((int(s.codec_context.height or 0), int(s.codec_context.width or 0))) == size]
        counted = [s for s in same if int(s.frames or 0) == facts[0]]
        same = counted or same
        if same:
            return best if best in same else same[0]
    return best


def indexed_stream(container, path: str):
    """The video stream of ``path`` (open as ``container``) that the index describes and
    the loader decodes (``choose_stream``), for tools that read videos themselves."""
    return choose_stream(container, lambda: _decord_count(path))


def _first_frame_rotation(stream, packet) -> Optional[int]:
    """``display_rotation`` of the first frame ``packet`` makes come out of the decoder
    (None: no frame yet; 0 where the decoder fails)."""
    try:
        for frame in stream.decode(packet):
            return display_rotation(getattr(frame, "rotation", 0))
    except Exception:  # a damaged first packet: the frame count rule says the rest
        return 0
    return None


ROTATION_PACKETS = 64  # packets fed to the decoder at most to see a first frame's display matrix


def _demux(path: str, info: VideoInfo, decord_facts=lambda: None) -> Optional[dict]:
    """Fill size/fps/codec/stream facts/keyframes from a PyAV demux; return packet facts."""
    import av

    try:
        container = av.open(path)
    except Exception as exc:  # av.error.InvalidDataError and friends
        info.error = f"not a readable video ({one_line(exc, 120, named=True)})"
        return None
    with container:
        if not container.streams.video:
            info.error = "no video stream (audio-only or data file)"
            return None
        info.container = container.format.name or ""
        stream = choose_stream(container, decord_facts)
        info.stream_index, info.video_streams = int(stream.index), len(container.streams.video)
        ctx = stream.codec_context
        info.codec = ctx.name or ""
        info.width, info.height = int(ctx.width or 0), int(ctx.height or 0)
        info.coded_width = int(getattr(ctx, "coded_width", 0) or 0) or info.width
        info.coded_height = int(getattr(ctx, "coded_height", 0) or 0) or info.height
        info.pix_fmt = ctx.pix_fmt or ""
        info.bit_depth = _bit_depth(info.pix_fmt)
        info.profile = str(ctx.profile or "")
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        info.fps = float(rate) if rate else 0.0
        declared = int(stream.frames or 0)
        seconds = float(stream.duration * stream.time_base) if stream.duration and stream.time_base else \
            (container.duration / 1e6 if container.duration and info.video_streams == 1 else 0.0)
        if seconds and stream.average_rate:  # a stated rate, not the time base's
            info.duration_frames = int(round(seconds * float(stream.average_rate)))
        cut_check = info.codec in CUT_CODECS
        length_size = nal_length_size(info.codec, ctx.extradata) if cut_check else 0
        packets, demux_error, num_keys = [], None, 0  # num_keys: the container's flags
        rotation = None
        try:
            for packet in container.demux(stream):
                if packet.size == 0:
                    continue
                if rotation is None:
                    rotation = _first_frame_rotation(stream, packet)
                    if rotation is None and len(packets) >= ROTATION_PACKETS:
                        rotation = 0
                key = bool(packet.is_keyframe)
                num_keys += key
                if key and cut_check:
                    key = is_idr(bytes(packet), info.codec, length_size)
                packets.append((packet.pts, key))
        except Exception as exc:
            demux_error = one_line(exc, 120)
        if rotation is None:  # fewer packets than the decoder's delay: flush it
            try:
                frame = next(iter(stream.decode(None)), None)
            except Exception:
                frame = None
            rotation = display_rotation(getattr(frame, "rotation", 0)) if frame is not None else 0
    info.rotation = rotation
    if num_keys:
        info.keyframe_interval = float(len(packets)) / num_keys
    info.keyframes, info.keyframe_pts, info.reordered, distinct = closed_gop_starts(packets)
    info.sliceable = distinct and bool(info.keyframes) and info.keyframes[0] == 0
    return {"packets": len(packets), "declared": declared, "demux_error": demux_error}


def probe_video(path) -> VideoInfo:
    """Probe one video (see the module docstring for the frame count rule). Never raises."""
    path = str(path)
    info = VideoInfo(path=path)
    try:
        st = os.stat(path)
    except OSError:
        info.error = "file not found"
        return info
    info.size, info.mtime = int(st.st_size), float(st.st_mtime)
    if info.size == 0:
        info.error = "empty file (0 bytes)"
        return info
    try:
        asked = []

        def decord_facts():  # decord opens the file once, when first asked
            if not asked:
                asked.append(_decord_count(path))
            return asked[0]

        facts = _demux(path, info, decord_facts)
        if facts is None:
            return info
        decord = decord_facts()
        if decord is not None and info.video_streams > 1 and sorted(decord[2] or ()) != sorted(
                (info.height, info.width)):
            decord = None  # decord decodes another stream than the index's: its count is not ours
        if decord is not None and decord[1] and decord[0] <= facts["packets"]:
            info.num_frames = decord[0]
        else:
            info.num_frames = _pyav_decode_count(path, info.stream_index)
        # frame numbers are packet ranks only where every packet is one indexed frame
        info.sliceable = info.sliceable and info.num_frames == facts["packets"]
        if info.num_frames <= 0:
            info.error = "no decodable video frames"
        elif facts["declared"] and facts["packets"] < facts["declared"]:
            info.error = (f"truncated: the container declares {facts['declared']} frames, "
                          f"{facts['packets']} are present, {info.num_frames} decode")
        elif decord is not None and decord[0] > 0 and not decord[1]:
            info.error = (f"truncated: decord counts {decord[0]} frames but its last frame "
                          f"does not decode; {info.num_frames} decode")
        elif facts["demux_error"]:
            info.error = f"stream error after {facts['packets']} packets: {facts['demux_error']}"
        if info.width <= 0 or info.height <= 0:
            info.error = info.error or "no frame size in the stream"
    except Exception as exc:  # a probe must not raise (damaged files surprise decoders)
        info.error = f"probe failed ({one_line(exc, 120, named=True)})"
    return info


class VideoIndex:
    """VideoInfo by path, plus the list of videos that cannot be used."""

    def __init__(self, infos: Iterable[VideoInfo]):
        self.infos: List[VideoInfo] = list(infos)
        self._by_path: Dict[str, VideoInfo] = {}
        for info in self.infos:
            self._by_path[info.path] = info
            key = os.path.abspath(info.path)
            if key != info.path:  # an absolute path is kept once (240,000 of them: ~30 MiB)
                self._by_path[key] = info

    def __getitem__(self, path) -> VideoInfo:
        path = str(path)
        info = self._by_path.get(path) or self._by_path.get(os.path.abspath(path))
        if info is None:
            raise KeyError(f"{path}: not in the video index")
        return info

    def __contains__(self, path) -> bool:
        return str(path) in self._by_path or os.path.abspath(str(path)) in self._by_path

    def __len__(self) -> int:
        return len(self.infos)

    def __iter__(self):
        return iter(self.infos)

    @property
    def bad(self) -> List[VideoInfo]:
        return [info for info in self.infos if not info.ok]

    def report(self) -> str:
        """One line per unusable video (``path: reason``), after a count line."""
        bad = self.bad
        lines = [f"{len(self.infos) - len(bad)} of {len(self.infos)} videos usable, {len(bad)} bad"]
        lines += [f"{info.path}: {info.error or 'no frames'}" for info in bad]
        return "\n".join(lines)

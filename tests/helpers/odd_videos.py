"""Writers for videos as users' own datasets hold them: turned by a display matrix, several
video streams in one file, one frame without a frame rate, damaged VP9 data.

The committed real files (tests/data/videos, README there) show the same properties;
these make them in any codec and size, with frames whose content a test knows.
"""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

REAL = Path(__file__).resolve().parents[1] / "data" / "videos"  # the committed real files

ENCODERS = {"h264": "libx264", "vp9": "libvpx-vp9"}


def scene(num_frames: int, width: int, height: int, seed: int = 0) -> np.ndarray:
    """``[T, H, W, 3]`` uint8 frames with no symmetry (a turn or mirror shows): smooth
    gradients, a bright block in the top-left quarter and a moving bar."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    out = np.empty((num_frames, height, width, 3), np.uint8)
    for t in range(num_frames):
        img = np.stack([255 * x / width, 255 * y / height, np.full_like(x, (40 * t + 30 * seed) % 256)], -1)
        img[: height // 3, : width // 4] = 255
        bar = (t * 7) % max(1, width - 8)
        img[height // 2:, bar:bar + 8] = (0, 0, 255)
        out[t] = img.astype(np.uint8)
    return out


def _add_stream(container, codec: str, width: int, height: int, fps: float = 25):
    stream = container.add_stream(ENCODERS[codec], rate=Fraction(fps).limit_denominator(1001))
    stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
    if codec == "vp9":
        stream.options = {"deadline": "realtime", "cpu-used": "8", "crf": "10", "b": "0"}
    else:
        stream.options = {"crf": "4"}
    return stream


def _encode(container, stream, frames) -> None:
    for img in frames:
        for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)


def write_rotated(path, upright: np.ndarray, rotation: int, codec: str = "h264") -> Path:
    """``upright`` frames stored turned back by ``rotation`` (clockwise degrees: 0, 90, 180,
    270) with a display matrix that shows them upright again, as a phone records."""
    stored = np.rot90(upright, k=rotation // 90, axes=(1, 2))
    with av.open(str(path), "w") as container:
        stream = _add_stream(container, codec, stored.shape[2], stored.shape[1])
        if rotation:
            stream.set_display_rotation(-rotation)  # PyAV's angle is counter-clockwise
        _encode(container, stream, stored)
    return Path(path)


def write_two_streams(path, first: np.ndarray, second: np.ndarray, codec: str = "vp9") -> Path:
    """Two video streams in one file, ``first`` (stream 0) and ``second`` (stream 1), each
    its own size and frame count. In MP4 the muxer flags stream 0 alone as default: newer
    FFmpeg's best stream is then 0, decord's FFmpeg 4.1 (no default rule) takes the bigger
    ``second``, and DALI's decoder reads stream 0 of a whole file."""
    with av.open(str(path), "w") as container:
        streams = [_add_stream(container, codec, f.shape[2], f.shape[1]) for f in (first, second)]
        for stream, frames in zip(streams, (first, second)):
            _encode(container, stream, frames)
    return Path(path)


def write_one_frame_webm(path, size: int = 64) -> Path:
    """A WebM of one VP9 frame whose packet lasts 1 s and which states no frame rate (no
    DefaultDuration): FFmpeg reports no average rate and guesses 1000 fps from the time
    base, so its duration "implies" ~1000 frames."""
    tmp = Path(str(path) + ".src.webm")
    with av.open(str(tmp), "w", format="webm") as container:
        stream = _add_stream(container, "vp9", size, size, fps=1)
        _encode(container, stream, scene(1, size, size))
    with av.open(str(tmp)) as src, av.open(str(path), "w", format="webm") as out:
        stream = src.streams.video[0]
        copy = out.add_stream_from_template(stream)  # no rate: the muxer writes no DefaultDuration
        for packet in src.demux(stream):
            if packet.size:
                packet.stream, packet.duration = copy, 1000
                out.mux(packet)
    tmp.unlink()
    return Path(path)


def write_damaged_vp9(path, num_frames: int = 24, size=(160, 120)) -> Path:
    """A VP9 WebM whose first keyframe's picture data is overwritten with noise (its frame
    header kept): the index reads it (frames counted from later keyframes), decoders fail
    on the damaged frame."""
    from tsn_dali.data.media.videoio import write_numbered_video

    write_numbered_video(str(path), num_frames, size[0], size[1], codec="vp9", gop=8)
    with av.open(str(path)) as container:
        first = next(p for p in container.demux(container.streams.video[0]) if p.size)
        pos, length = int(first.pos), int(first.size)
    data = np.fromfile(str(path), np.uint8)
    data[pos + 5:pos + length] = np.random.default_rng(0).integers(0, 256, length - 5, dtype=np.uint8)
    data.tofile(str(path))
    return Path(path)

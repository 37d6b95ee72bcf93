"""Writing videos (PyAV) and frames whose pixels carry their own frame number.

Used by the demo dataset generator, the benchmarks and the tests: a clip made with
``numbered_frames`` lets any decoder's output be checked frame by frame with
``read_frame_number``, whatever the codec's loss.
"""
from __future__ import annotations

import os
from typing import Iterable, Optional

import av  # before any decord import: see video_index.py
import numpy as np

# codec name -> (PyAV encoder, container extension)
CODECS = {
    "h264": ("libx264", ".mp4"),
    "hevc": ("libx265", ".mp4"),
    "vp9": ("libvpx-vp9", ".webm"),
    "mpeg4": ("mpeg4", ".avi"),
    "mjpeg": ("mjpeg", ".avi"),  # what NVDEC does not decode: the frames path on a GPU
}

NUMBER_BITS = 12  # frame numbers 0..4095


def video_extension(codec: str) -> str:
    return CODECS[codec][1]


def write_video(path: str, frames: Iterable[np.ndarray], fps: float = 30, codec: str = "h264",
                gop: Optional[int] = None, crf: Optional[int] = None) -> str:
    """Encode RGB uint8 frames ``[H, W, 3]`` into ``path`` with PyAV.

    ``gop`` sets the keyframe interval (None: the encoder's default, long GOP as in
    real Kinetics files). Width and height must be even (yuv420p).
    """
    from fractions import Fraction

    if codec not in CODECS:
        raise ValueError(f"unknown codec {codec!r}; expected one of {', '.join(CODECS)}")
    encoder = CODECS[codec][0]
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    container = av.open(path, "w")
    try:
        rate = Fraction(fps).limit_denominator(1001)
        stream = container.add_stream(encoder, rate=rate)
        stream.pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
        options = {}
        if codec == "hevc":
            options["x265-params"] = "log-level=error"
        if crf is not None and codec in ("h264", "hevc", "vp9"):
            options["crf"] = str(crf)
        if codec == "vp9":
            options.setdefault("crf", "32")
            options["b"] = "0"
            options["deadline"] = "realtime"
            options["cpu-used"] = "8"
        if gop is not None:
            stream.gop_size = int(gop)
            if codec in ("h264",):
                options["x264-params"] = f"keyint={gop}:min-keyint={gop}:scenecut=0"
            if codec == "hevc":
                options["x265-params"] += f":keyint={gop}:min-keyint={gop}:scenecut=0"
        stream.options = options
        first = True
        for frame in frames:
            if first:
                stream.height, stream.width = frame.shape[:2]
                first = False
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            for packet in stream.encode(vf):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    finally:
        container.close()
    return path


def _cells(width: int, height: int):
    """Grid of NUMBER_BITS cells in the frame's central band, (x0, y0, x1, y1) each."""
    cols = 4
    rows = NUMBER_BITS // cols
    cw, ch = width // cols, height // rows
    return [(c * cw, r * ch, (c + 1) * cw, (r + 1) * ch) for r in range(rows) for c in range(cols)]


def numbered_frame(number: int, width: int, height: int) -> np.ndarray:
    """An RGB frame whose NUMBER_BITS grid cells spell ``number`` in binary (white = 1).

    The cells are large blocks so that lossy codecs and bilinear resizing keep them
    readable; a crop that keeps the centre of each cell still reads back.
    """
    img = np.zeros((height, width, 3), np.uint8)
    for bit, (x0, y0, x1, y1) in enumerate(_cells(width, height)):
        if (number >> bit) & 1:
            img[y0:y1, x0:x1] = 255
    return img


def numbered_frames(num_frames: int, width: int, height: int):
    return (numbered_frame(i, width, height) for i in range(num_frames))


def read_frame_number(img: np.ndarray) -> int:
    """Inverse of ``numbered_frame`` on a full (uncropped, unflipped) frame of any size."""
    img = np.asarray(img)
    if img.ndim == 3 and img.shape[0] in (1, 3) and img.shape[-1] not in (1, 3):
        img = img.transpose(1, 2, 0)
    gray = img.astype(np.float32).mean(axis=-1) if img.ndim == 3 else img.astype(np.float32)
    h, w = gray.shape
    number = 0
    for bit, (x0, y0, x1, y1) in enumerate(_cells(w, h)):
        cx0, cx1 = x0 + (x1 - x0) // 4, x1 - (x1 - x0) // 4
        cy0, cy1 = y0 + (y1 - y0) // 4, y1 - (y1 - y0) // 4
        if gray[cy0:cy1, cx0:cx1].mean() > 127:
            number |= 1 << bit
    return number


def write_numbered_video(path: str, num_frames: int, width: int = 160, height: int = 120,
                         fps: float = 30, codec: str = "h264", gop: Optional[int] = None) -> str:
    """A clip whose frame ``i`` shows ``i`` (see ``numbered_frame``)."""
    return write_video(path, numbered_frames(num_frames, width, height), fps=fps, codec=codec, gop=gop)

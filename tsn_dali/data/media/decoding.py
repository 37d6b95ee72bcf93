"""Decoding frames on the CPU, outside DALI: decord, PyAV and rawframe folders.

The one place these decoders are called from: the reference executor's workers, the
DALI executors' frames path (codecs DALI's decoder on that device does not read, or
``loader.decode: mmaction``) and the tools. ``decode_frames(path, frame_indices)``
returns RGB ``[T, H, W, 3]`` uint8 in the order asked for, upright.

Upright: a display matrix (phone videos) turns the stored frames by 90, 180 or 270
degrees when shown. decord (MMAction2's reader) applies it (its video_reader.cc:
``-av_display_rotation_get`` of the stream's matrix, used where it is 90, 180 or 270
after rounding down), PyAV does not, so ``decode_pyav`` turns its frames the same way
(``display_rotation``, ``upright``). Mirroring in the matrix is not applied (decord
does not either).

Streams: decord decodes the one video stream FFmpeg's ``av_find_best_stream`` picks and
cannot be told another; where a file holds several video streams, the caller names the
index's choice (``stream``) and PyAV decodes that one.

Import order: PyAV is imported before decord (see ``import_decord``).
"""
from __future__ import annotations

import os
import threading
from typing import Sequence

import numpy as np

from tsn_dali.data.errors import VideoDecodeError
from tsn_dali.errors import one_line

DECODERS = ("auto", "decord", "pyav")
ROTATIONS = (0, 90, 180, 270)
_local = threading.local()


def rgb24(frame) -> np.ndarray:
    """A decoded PyAV frame as RGB ``[H, W, 3]`` uint8: swscale, as ``frame.to_ndarray(format=
    "rgb24")``, with one thread (PyAV's default starts swscale threads, and a process forked
    after they ran hangs in its next conversion: measured) and one context kept per thread
    and process (made afresh a frame, it cost 0.58 ms of a 340x256 frame's 0.67, measured)."""
    pid, reformatter = getattr(_local, "reformatter", (None, None))
    if pid != os.getpid():
        from av.video.reformatter import VideoReformatter

        reformatter = VideoReformatter()
        _local.reformatter = (os.getpid(), reformatter)
    return reformatter.reformat(frame, format="rgb24", threads=1).to_ndarray()


def display_rotation(ccw_degrees) -> int:
    """Clockwise degrees that turn stored frames upright, from a display matrix's angle
    (PyAV's ``VideoFrame.rotation``: counter-clockwise, as ``av_display_rotation_get``):
    90, 180 or 270 as decord rounds it, else 0 (no matrix, or an angle decord leaves)."""
    try:
        theta = int(-float(ccw_degrees or 0.0) % 360.0)
    except (TypeError, ValueError):
        return 0
    return theta if theta in ROTATIONS else 0


def upright(frames: np.ndarray, rotation: int) -> np.ndarray:
    """``[T, H, W, C]`` stored frames turned ``rotation`` degrees clockwise (a view)."""
    if rotation not in ROTATIONS:
        raise ValueError(f"rotation {rotation}; expected one of {ROTATIONS}")
    return np.rot90(frames, k=-(rotation // 90), axes=(1, 2)) if rotation else frames


def video_stream(container, index=None):
    """The container's video stream with stream index ``index``; None: FFmpeg's best
    video stream (``av_find_best_stream``), the first where PyAV cannot say."""
    videos = list(container.streams.video)
    if index is not None:
        for stream in videos:
            if stream.index == int(index):
                return stream
        raise ValueError(f"stream {index} is not a video stream (video streams: "
                         f"{', '.join(str(s.index) for s in videos) or 'none'})")
    try:
        best = container.streams.best("video")
    except Exception:  # an older PyAV, or FFmpeg finds none
        best = None
    return best if best is not None else videos[0]


def decoded_stream(container, path: str, index=None):
    """``video_stream`` for a decoder: VideoDecodeError naming ``path`` where the file has
    no video stream or ``index`` is not one."""
    if not container.streams.video:
        raise VideoDecodeError(path, "no video stream")
    try:
        return video_stream(container, index)
    except ValueError as exc:
        raise VideoDecodeError(path, str(exc)) from None


def import_decord():
    """decord, or None where it is not installed.

    PyAV is imported first: decord ships its own FFmpeg libraries, and when they are
    loaded before PyAV's, PyAV's libvpx-vp9 encoder fails to open in that process.
    """
    import av  # noqa: F401  (load order, see above)

    try:
        import decord
    except ImportError:
        return None
    decord.bridge.set_bridge("native")
    return decord


def decode_decord(path: str, frame_indices: Sequence[int]) -> np.ndarray:
    """RGB frames ``[T, H, W, 3]`` uint8 at ``frame_indices`` (MMAction2 DecordDecode, accurate mode)."""
    decord = import_decord()
    if decord is None:
        raise VideoDecodeError(path, "decord is not installed")
    try:
        reader = decord.VideoReader(path, num_threads=1)
        count = len(reader)
        bad = [int(i) for i in frame_indices if not 0 <= int(i) < count]
        if bad:
            raise VideoDecodeError(path, f"frame {bad[0]} requested, decord sees {count} frames")
        return reader.get_batch([int(i) for i in frame_indices]).asnumpy()
    except VideoDecodeError:
        raise
    except Exception as exc:  # decord raises DECORDError and RuntimeError subclasses
        raise VideoDecodeError(path, f"decord: {one_line(exc)}") from None


def decode_pyav(path: str, frame_indices: Sequence[int], stream=None) -> np.ndarray:
    """RGB frames ``[T, H, W, 3]`` uint8, upright: frame ``i`` is the ``i``-th frame PyAV
    decodes from video stream ``stream`` (the container's stream index; None: the best)."""
    import av

    wanted = sorted({int(i) for i in frame_indices})
    if wanted and wanted[0] < 0:
        raise VideoDecodeError(path, f"frame {wanted[0]} requested")
    frames = {}
    try:
        with av.open(path) as container:
            video = decoded_stream(container, path, stream)
            video.thread_type = "AUTO"
            want = set(wanted)
            last = wanted[-1] if wanted else -1
            count, rotation = 0, 0
            for count, frame in enumerate(container.decode(video), start=1):
                i = count - 1
                if i == 0:
                    rotation = display_rotation(getattr(frame, "rotation", 0))
                if i in want:
                    frames[i] = rgb24(frame)
                if i >= last:
                    break
    except VideoDecodeError:
        raise
    except Exception as exc:  # av.error.* and OSError
        raise VideoDecodeError(path, f"PyAV: {one_line(exc)}") from None
    missing = [i for i in wanted if i not in frames]
    if missing:
        raise VideoDecodeError(path, f"frame {missing[0]} requested, PyAV decoded {count} frames")
    return np.ascontiguousarray(upright(np.stack([frames[int(i)] for i in frame_indices]), rotation))


def decode_rawframes(directory: str, frame_indices: Sequence[int], filename_tmpl: str) -> np.ndarray:
    """RGB frames from JPEG files ``directory/filename_tmpl.format(i)`` (MMAction2 RawFrameDecode)."""
    from PIL import Image

    out = []
    for i in frame_indices:
        file = os.path.join(directory, filename_tmpl.format(int(i)))
        try:
            with Image.open(file) as img:
                out.append(np.asarray(img.convert("RGB")))
        except (OSError, ValueError) as exc:
            raise VideoDecodeError(file, f"cannot read frame: {exc}") from None
    return np.stack(out)


def decode_frames(path: str, frame_indices: Sequence[int], decoder: str = "auto",
                  filename_tmpl: str = "img_{:05}.jpg", stream=None) -> np.ndarray:
    """Decode a plan's frames, upright: a rawframe directory with PIL, a video with decord,
    falling back to PyAV where decord is missing or fails (``decoder="auto"``). ``stream``
    (a file with several video streams: the index's choice) is decoded with PyAV."""
    if os.path.isdir(path):
        return decode_rawframes(path, frame_indices, filename_tmpl)
    if not os.path.isfile(path):
        raise VideoDecodeError(path, "file not found")
    if stream is not None:
        return decode_pyav(path, frame_indices, stream)
    if decoder == "pyav":
        return decode_pyav(path, frame_indices)
    if decoder == "decord":
        return decode_decord(path, frame_indices)
    try:
        return decode_decord(path, frame_indices)
    except VideoDecodeError as first:
        try:
            return decode_pyav(path, frame_indices)
        except VideoDecodeError as second:
            raise VideoDecodeError(path, f"{first.reason}; {second.reason}") from None


__all__ = ["DECODERS", "ROTATIONS", "rgb24", "decode_decord", "decode_frames", "decode_pyav", "decode_rawframes",
           "display_rotation", "import_decord", "upright", "video_stream"]

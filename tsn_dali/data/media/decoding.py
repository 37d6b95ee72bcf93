"""Decoding frames on the CPU, outside DALI: decord, PyAV and rawframe folders.

The one place these decoders are called from: the reference executor's workers, the
DALI executors' frames path (codecs DALI's decoder on that device does not read, or
``loader.decode: mmaction``) and the tools. ``decode_frames(path, frame_indices)``
returns RGB ``[T, H, W, 3]`` uint8 in the order asked for.

Import order: PyAV is imported before decord (see ``import_decord``).
"""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from tsn_dali.data.errors import VideoDecodeError
from tsn_dali.errors import one_line

DECODERS = ("auto", "decord", "pyav")


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


def decode_pyav(path: str, frame_indices: Sequence[int]) -> np.ndarray:
    """RGB frames ``[T, H, W, 3]`` uint8: frame ``i`` is the ``i``-th frame PyAV decodes."""
    import av

    wanted = sorted({int(i) for i in frame_indices})
    if wanted and wanted[0] < 0:
        raise VideoDecodeError(path, f"frame {wanted[0]} requested")
    frames = {}
    try:
        with av.open(path) as container:
            if not container.streams.video:
                raise VideoDecodeError(path, "no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            want = set(wanted)
            last = wanted[-1] if wanted else -1
            count = 0
            for count, frame in enumerate(container.decode(stream), start=1):
                i = count - 1
                if i in want:
                    frames[i] = frame.to_ndarray(format="rgb24")
                if i >= last:
                    break
    except VideoDecodeError:
        raise
    except Exception as exc:  # av.error.* and OSError
        raise VideoDecodeError(path, f"PyAV: {one_line(exc)}") from None
    missing = [i for i in wanted if i not in frames]
    if missing:
        raise VideoDecodeError(path, f"frame {missing[0]} requested, PyAV decoded {count} frames")
    return np.stack([frames[int(i)] for i in frame_indices])


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
                  filename_tmpl: str = "img_{:05}.jpg") -> np.ndarray:
    """Decode a plan's frames: a rawframe directory with PIL, a video with decord,
    falling back to PyAV where decord is missing or fails (``decoder="auto"``)."""
    if os.path.isdir(path):
        return decode_rawframes(path, frame_indices, filename_tmpl)
    if not os.path.isfile(path):
        raise VideoDecodeError(path, "file not found")
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


__all__ = ["DECODERS", "decode_decord", "decode_frames", "decode_pyav", "decode_rawframes", "import_decord"]

"""Where an H.264 or HEVC stream may be cut: IDR access units, read from NAL headers.

A container flags every random-access picture as a keyframe, open-GOP I-frames
included (x264 ``open-gop``, HEVC CRA pictures). Only an IDR picture (H.264 NAL type 5;
HEVC types 16-20, BLA and IDR) empties the decoder's picture buffer and restarts its
output order (ITU-T H.264 8.2.1, H.265 8.3.1). Pieces of a stream joined at any other
I-frame come out of the decoder interleaved with the frames still buffered from the
piece before, so only IDR pictures can start a slice (tsn_dali/data/render/slicing.py).

Packets are length-prefixed NAL units in MP4 and Matroska (the prefix size is in the
``avcC``/``hvcC`` extradata) and start-code delimited (Annex B) elsewhere.
"""
from __future__ import annotations

from typing import Iterator, Optional

CUT_CODECS = ("h264", "hevc")  # codecs whose keyframe flags need the IDR check


def nal_length_size(codec: str, extradata: Optional[bytes]) -> int:
    """Bytes of each NAL length prefix, from ``avcC`` (byte 4) or ``hvcC`` (byte 21);
    0 for Annex B streams (no extradata, or extradata that starts with a start code)."""
    data = bytes(extradata or b"")
    if not data or data[0] != 1:
        return 0
    if codec == "h264" and len(data) > 4:
        return (data[4] & 3) + 1
    if codec == "hevc" and len(data) > 21:
        return (data[21] & 3) + 1
    return 0


def _annexb_headers(data: bytes) -> Iterator[int]:
    """The first header byte of each NAL unit after a 00 00 01 start code."""
    i = data.find(b"\x00\x00\x01")
    while 0 <= i < len(data) - 3:
        yield data[i + 3]
        i = data.find(b"\x00\x00\x01", i + 3)


def _prefixed_headers(data: bytes, size: int) -> Iterator[int]:
    """The first header byte of each length-prefixed NAL unit."""
    i = 0
    while i + size < len(data):
        length = int.from_bytes(data[i:i + size], "big")
        if length <= 0:
            return
        yield data[i + size]
        i += size + length


def is_idr(data: bytes, codec: str, length_size: int) -> bool:
    """True when the access unit ``data`` holds an IDR (H.264) or IDR/BLA (HEVC) slice."""
    headers = _prefixed_headers(data, length_size) if length_size else _annexb_headers(data)
    if codec == "h264":
        return any(h & 0x1F == 5 for h in headers)
    return any(16 <= (h >> 1) & 0x3F <= 20 for h in headers)

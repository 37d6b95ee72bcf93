"""Only IDR pictures start a slice of H.264/HEVC (tsn_dali/data/index/bitstream.py): open-GOP
I-frames, flagged as keyframes by the container, do not reset the decoder's output order."""
from __future__ import annotations

import io
import random
from fractions import Fraction

import av
import pytest

from tsn_dali.data.index.bitstream import is_idr, nal_length_size
from tsn_dali.data.render.slicing import clip_input
from tsn_dali.data.index.video_index import probe_video
from tsn_dali.data.media.videoio import numbered_frame, read_frame_number

W, H = 160, 120


def _prefixed(*nals: bytes, size: int = 4) -> bytes:
    return b"".join(len(n).to_bytes(size, "big") + n for n in nals)


def test_nal_length_size_from_avcc_and_hvcc_and_annexb():
    avcc = bytes([1, 0x64, 0, 0x1F, 0xFF, 0xE1])  # lengthSizeMinusOne = 3
    assert nal_length_size("h264", avcc) == 4
    assert nal_length_size("h264", bytes([1, 0x64, 0, 0x1F, 0xFD])) == 2
    hvcc = bytes([1] + [0] * 20 + [0x0F])  # byte 21: lengthSizeMinusOne = 3
    assert nal_length_size("hevc", hvcc) == 4
    assert nal_length_size("h264", b"\x00\x00\x00\x01\x67") == 0  # Annex B extradata
    assert nal_length_size("h264", None) == 0


def test_idr_found_among_the_access_units_nal_units():
    sps, pps, sei = b"\x67\x64\x00", b"\x68\xee", b"\x06\x05\x10"
    idr, non_idr_i = b"\x65\x88\x84", b"\x41\x9a\x02"  # nal types 5 and 1
    assert is_idr(_prefixed(sei, sps, pps, idr), "h264", 4)
    assert not is_idr(_prefixed(sei, non_idr_i), "h264", 4)
    assert is_idr(_prefixed(sps, idr, size=2), "h264", 2)
    assert is_idr(b"\x00\x00\x00\x01" + sps + b"\x00\x00\x01" + idr, "h264", 0)
    assert not is_idr(b"\x00\x00\x00\x01" + non_idr_i, "h264", 0)
    hevc_idr, hevc_cra = bytes([19 << 1, 1, 0xAF]), bytes([21 << 1, 1, 0xAF])
    assert is_idr(_prefixed(bytes([32 << 1, 1]), hevc_idr), "hevc", 4)  # VPS, IDR_W_RADL
    assert not is_idr(_prefixed(hevc_cra), "hevc", 4)
    assert not is_idr(_prefixed(b"\x65", size=4)[:3], "h264", 4)  # truncated: no NAL read


def _x264(path: str, params: str, n: int = 200) -> str:
    with av.open(path, "w") as c:
        s = c.add_stream("libx264", rate=Fraction(30))
        s.pix_fmt, s.width, s.height = "yuv420p", W, H
        s.options = {"x264-params": params}
        for i in range(n):
            for p in s.encode(av.VideoFrame.from_ndarray(numbered_frame(i, W, H), format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def _sliced_numbers(path, wanted, info):
    clip = clip_input(path, wanted, info)
    with av.open(io.BytesIO(clip.data.tobytes())) as c:
        got = [read_frame_number(f.to_ndarray(format="rgb24")) for f in c.decode(video=0)]
    return clip, [got[clip.positions[o]] for o in clip.order]


@pytest.mark.parametrize("name", ["open.mp4", "open.mkv", "open.avi"])
def test_open_gop_h264_starts_slices_at_idr_pictures_only(tmp_path, name):
    path = _x264(str(tmp_path / name), "keyint=16:min-keyint=16:scenecut=0:bframes=3:open-gop=1")
    info = probe_video(path)
    assert info.ok and info.keyframes == [0]  # the I-frames at 16, 48, ... are not IDR
    assert info.keyframe_interval is not None and info.keyframe_interval < 40  # flags kept
    rng = random.Random(0)
    for _ in range(6):
        wanted = [rng.randrange(info.num_frames) for _ in range(3)]
        assert _sliced_numbers(path, wanted, info)[1] == wanted


@pytest.mark.parametrize("name", ["closed.mp4", "closed.avi"])
def test_closed_gop_h264_keeps_every_idr_as_a_start(tmp_path, name):
    path = _x264(str(tmp_path / name), "keyint=16:min-keyint=16:scenecut=0:bframes=3", n=160)
    info = probe_video(path)
    assert info.keyframes == list(range(0, 160, 16))
    clip, numbers = _sliced_numbers(path, [150, 20, 70], info)
    assert numbers == [150, 20, 70] and clip.sliced and clip.frames_fed <= 3 * 16

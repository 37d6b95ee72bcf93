"""tsn_dali.data.media.gops: only the GOPs a clip needs, non-reference frames skipped, the
same pixels as a full decode; and the uint8 render into the batch (executors/cpu.py)."""
from __future__ import annotations

import numpy as np
import pytest

from tsn_dali.data.index.video_index import probe_video
from tsn_dali.data.media import gops
from tsn_dali.data.media.decoding import decode_decord, decode_pyav
from tsn_dali.data.media.videoio import read_frame_number, video_extension, write_numbered_video

FRAMES = [[17, 0, 39, 5, 5, 22], [3], [16, 17, 31, 47], [47, 1, 46, 30, 33]]


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """Numbered 96x64 clips, 48 frames: H.264 (B-frames, half of them non-reference) and VP9,
    with a keyframe every 16 frames and with the encoder's one keyframe."""
    root = tmp_path_factory.mktemp("gops")
    out = {}
    for codec in ("h264", "vp9"):
        for gop in (16, None):
            path = write_numbered_video(str(root / f"{codec}_{gop}{video_extension(codec)}"), 48, 96, 64,
                                        codec=codec, gop=gop)
            out[(codec, gop)] = (path, probe_video(path))
    return out


def _decode(path, info, frames, **kw):
    return gops.decode_gops(path, frames, info.keyframes, info.keyframe_pts, reordered=info.reordered,
                            stream_index=info.stream_index, **kw)


@pytest.mark.parametrize("codec", ["h264", "vp9"])
@pytest.mark.parametrize("gop", [16, None])
def test_same_pixels_as_a_full_decode(videos, codec, gop):
    path, info = videos[(codec, gop)]
    assert info.sliceable and info.keyframes[0] == 0
    for frames in FRAMES:
        got = _decode(path, info, frames)
        assert np.array_equal(got, decode_pyav(path, frames)), frames  # bit for bit
        assert [read_frame_number(f) for f in got] == frames
        assert np.array_equal(got, decode_decord(path, frames))  # and what MMAction2 reads


def test_counts_show_what_was_skipped(videos):
    path, info = videos[("h264", 16)]
    counts = {}
    _decode(path, info, [20], counts=counts)
    # frame 20 lies in the GOP from 16: 5 frames shown up to it, its packets fed (one more
    # where a later P frame is decoded before it), non-reference B frames not decoded
    assert counts["gops"] == 1 and 5 <= counts["packets_fed"] <= 8
    assert counts["frames_decoded"] < counts["packets_fed"]
    full = {}
    _decode(path, info, [20], counts=full, skip_unwanted=False)
    assert full["frames_decoded"] == full["packets_fed"] == counts["packets_fed"]
    long_path, long_info = videos[("h264", None)]
    one_gop = {}
    _decode(long_path, long_info, [20], counts=one_gop)
    assert one_gop["packets_fed"] >= 21  # one keyframe: everything from frame 0


def test_bad_requests_are_decode_errors(videos, tmp_path):
    from tsn_dali.data.errors import VideoDecodeError

    path, info = videos[("h264", 16)]
    with pytest.raises(VideoDecodeError, match="frame 48"):
        _decode(path, info, [2, 48])
    with pytest.raises(VideoDecodeError):
        _decode(str(tmp_path / "missing.mp4"), info, [1])
    with pytest.raises(ValueError, match="closed-GOP"):
        gops.decode_gops(path, [1], [5], [0])


def test_uint8_render_is_cv2_on_uint8_into_the_batch(videos):
    """resize="uint8": cv2.resize INTER_LINEAR on uint8 (MMAction2's Resize), boxes of the
    output size cut as they are, mirrored boxes mirrored; within 1 level of the float rule."""
    cv2 = pytest.importorskip("cv2")
    from tsn_dali.data.plan.clip_plan import ClipPlan
    from tsn_dali.data.render.executors.cpu import render_uint8
    from tsn_dali.data.render.executors.reference import apply_plan

    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (3, 64, 96, 3), dtype=np.uint8)
    frames[:, :, :48] = cv2.GaussianBlur(frames[:, :, :48].reshape(-1, 48, 3), (9, 9), 3).reshape(3, 64, 48, 3)
    plan = ClipPlan(sample=0, num_frames=3, path="x.mp4", frame_indices=np.array([0, 1, 2]), orig_size=(96, 64), resize_to=(72, 48),
                    crops=np.array([[0, 0, 40, 40], [10, 4, 50, 44], [30, 8, 70, 48]], np.int32),
                    crop_flips=np.array([False, True, True]), out_size=(40, 40), label=0)
    out = np.zeros((9, 40, 40, 3), np.uint8)
    got = render_uint8(frames, plan, out)
    assert got is out
    resized = np.stack([cv2.resize(f, (72, 48), interpolation=cv2.INTER_LINEAR) for f in frames])
    assert np.array_equal(out[0:3], resized[:, 0:40, 0:40])
    assert np.array_equal(out[3:6], resized[:, 4:44, 10:50][:, :, ::-1])
    assert np.array_equal(out[6:9], resized[:, 8:48, 30:70][:, :, ::-1])
    assert np.abs(out.astype(int) - apply_plan(frames, plan)).max() <= 1
    # a box resized to the output size (train view), mirrored in place
    plan2 = ClipPlan(sample=0, num_frames=3, path="x.mp4", frame_indices=np.array([0, 1, 2]), orig_size=(96, 64), resize_to=(96, 64),
                     crops=np.array([[8, 2, 58, 52]], np.int32), crop_flips=np.array([True]), out_size=(40, 40),
                     label=0)
    got = render_uint8(frames, plan2)
    want = np.stack([cv2.resize(f[2:52, 8:58], (40, 40), interpolation=cv2.INTER_LINEAR)[:, ::-1] for f in frames])
    assert np.array_equal(got, want)

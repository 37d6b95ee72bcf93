"""The video index: frame counts as decoded, stream facts, bad videos, the disk cache."""
import os
from pathlib import Path

import av
import pytest

from helpers.bad_videos import write_audio_only, write_zero_frame_video
from tsn_dali.data.index import video_index
from tsn_dali.data.index import build_index, probe_video
from tsn_dali.data.media.videoio import numbered_frame, write_numbered_video

from helpers.real_videos import VIDEOS, needs_videos

# file -> (width, height, codec, fps) from shared/videos/README.md
REAL = {
    "demo.mp4": (340, 256, "h264", 28.0),
    "test.mp4": (340, 256, "h264", 30.0),
    "short_32f.mp4": (340, 256, "h264", 30.0),
    "spatiotemporal_det_6fps.mp4": (340, 256, "h264", 6.0),
    "structuralize_426x240_2997fps.mp4": (426, 240, "h264", 29.97),
    "demo_skeleton_1080p.mp4": (1920, 1080, "h264", 28.05),
    "ntu_1080p.avi": (1920, 1080, "h264", 30.0),
    "test_mpeg4.avi": (320, 240, "mpeg4", 25.0),
}


def decoded_frames(path) -> int:
    """Ground truth: frames PyAV decodes from start to end."""
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


@needs_videos
def test_real_clips_match_full_decode(tmp_path):
    paths = [VIDEOS / name for name in REAL]
    index = build_index(paths, cache_dir=tmp_path, workers=2, progress=False)
    assert index.bad == []
    for path in paths:
        info = index[str(path)]
        w, h, codec, fps = REAL[path.name]
        assert info.num_frames == decoded_frames(path), path.name
        assert (info.width, info.height, info.codec) == (w, h, codec)
        assert info.fps == pytest.approx(fps, abs=0.01)
        assert info.keyframe_interval is not None and 1 <= info.keyframe_interval <= info.num_frames
    assert index[str(VIDEOS / "demo.mp4")].num_frames == 280
    # demo.mp4 has 4 keyframes in 280 frames
    assert index[str(VIDEOS / "demo.mp4")].keyframe_interval == pytest.approx(70.0)


@needs_videos
def test_pyav_fallback_without_decord(monkeypatch):
    monkeypatch.setattr(video_index, "_decord_count", lambda path: None)
    for name in ("short_32f.mp4", "test_mpeg4.avi"):
        assert probe_video(VIDEOS / name).num_frames == decoded_frames(VIDEOS / name)


@pytest.mark.parametrize("codec", ["h264", "vp9"])
def test_keyframe_interval_and_count(tmp_path, codec):
    ext = ".webm" if codec == "vp9" else ".mp4"
    path = write_numbered_video(str(tmp_path / f"clip{ext}"), 40, 64, 48, codec=codec, gop=10)
    info = probe_video(path)
    assert info.ok and info.num_frames == 40 and (info.width, info.height) == (64, 48)
    assert info.codec == codec and info.fps == pytest.approx(30.0)
    assert info.keyframe_interval == pytest.approx(10.0)  # keyframes 0, 10, 20, 30


def _faststart_mp4(path, num_frames=60):
    """An H.264 mp4 with its index first, so a cut file still opens (as a partial download)."""
    container = av.open(str(path), "w", options={"movflags": "faststart"})
    stream = container.add_stream("libx264", rate=30)
    stream.width, stream.height, stream.pix_fmt = 160, 120, "yuv420p"
    stream.options = {"x264-params": "keyint=10:min-keyint=10:scenecut=0"}
    for i in range(num_frames):
        frame = av.VideoFrame.from_ndarray(numbered_frame(i, 160, 120), format="rgb24")
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()
    return path


def _cut(src, dst, fraction):
    data = Path(src).read_bytes()
    Path(dst).write_bytes(data[: int(len(data) * fraction)])
    return dst


def _bad_videos(tmp_path):
    bad = {}
    bad["missing"] = tmp_path / "missing.mp4"
    bad["empty"] = tmp_path / "empty.mp4"
    bad["empty"].write_bytes(b"")
    bad["text"] = tmp_path / "notes.mp4"
    bad["text"].write_text("this is not a video\n")
    full = _faststart_mp4(tmp_path / "full.mp4")
    bad["truncated_mp4"] = _cut(full, tmp_path / "cut.mp4", 0.6)
    avi = write_numbered_video(str(tmp_path / "full.avi"), 60, 160, 120, codec="mpeg4")
    bad["truncated_avi"] = _cut(avi, tmp_path / "cut.avi", 0.7)
    bad["audio"] = write_audio_only(tmp_path / "audio.m4a")
    zero = write_zero_frame_video(tmp_path / "zero_frames.mp4")
    bad["zero_frames"] = zero
    return bad


def test_bad_videos_are_reported_not_raised(tmp_path):
    bad = _bad_videos(tmp_path)
    good = write_numbered_video(str(tmp_path / "good.mp4"), 12, 64, 48)
    index = build_index([good] + [str(p) for p in bad.values()], cache_dir=tmp_path / "cache",
                        workers=2, progress=False)
    assert index[good].ok and index[good].num_frames == 12
    assert sorted(i.path for i in index.bad) == sorted(str(p) for p in bad.values())
    errors = {k: index[str(p)].error for k, p in bad.items()}
    assert errors["missing"] == "file not found"
    assert errors["empty"] == "empty file (0 bytes)"
    assert errors["text"].startswith("not a readable video")
    assert errors["audio"].startswith("no video stream")
    assert index[str(bad["zero_frames"])].num_frames == 0
    for key in ("truncated_mp4", "truncated_avi"):
        assert errors[key].startswith("truncated"), errors[key]
        info = index[str(bad[key])]
        # the count is what actually decodes
        assert 0 < info.num_frames < 60 and info.num_frames == decoded_frames(bad[key])
    report = index.report()
    assert report.splitlines()[0] == f"1 of {1 + len(bad)} videos usable, {len(bad)} bad"
    for p in bad.values():
        assert str(p) in report


def test_truncated_mp4_count_without_decord(tmp_path, monkeypatch):
    cut = _cut(_faststart_mp4(tmp_path / "full.mp4"), tmp_path / "cut.mp4", 0.6)
    monkeypatch.setattr(video_index, "_decord_count", lambda path: None)
    info = probe_video(cut)
    assert info.error.startswith("truncated") and info.num_frames == decoded_frames(cut)


def test_cache_second_build_probes_nothing(tmp_path, monkeypatch):
    a = write_numbered_video(str(tmp_path / "a.mp4"), 10, 64, 48)
    b = write_numbered_video(str(tmp_path / "b.mp4"), 14, 64, 48)
    real_probe = video_index.probe_video
    first = build_index([a, b], cache_dir=tmp_path / "cache", progress=False)
    assert (tmp_path / "cache" / "video_index.json").is_file()

    def no_probe(path):
        raise AssertionError(f"probed {path} again")

    monkeypatch.setattr(video_index, "probe_video", no_probe)
    second = build_index([a, b], cache_dir=tmp_path / "cache", progress=False)
    assert [i.to_json() for i in second] == [i.to_json() for i in first]

    # a changed file (new size and mtime) is probed again, the other is not
    probed = []
    monkeypatch.setattr(video_index, "probe_video",
                        lambda path: probed.append(path) or real_probe(path))
    write_numbered_video(b, 20, 64, 48)
    os.utime(b, (1e9, 1e9))
    third = build_index([a, b], cache_dir=tmp_path / "cache", progress=False)
    assert probed == [b]
    assert third[b].num_frames == 20 and third[a].num_frames == 10


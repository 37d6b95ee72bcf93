"""python -m tsn_dali.prepare: short-GOP re-encoding of a video list, resumable, bad videos reported."""
import os

import av
import pytest

from tsn_dali.data.media.videoio import read_frame_number, write_numbered_video
from tsn_dali.prepare import main, prepare, scaled_size


def _decode(path):
    """(frame numbers, keyframe positions, (w, h)) of a video."""
    numbers, keys = [], []
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        size = (s.codec_context.width, s.codec_context.height)
        for i, frame in enumerate(c.decode(s)):
            numbers.append(read_frame_number(frame.to_ndarray(format="rgb24")))
            if frame.key_frame:
                keys.append(i)
    return numbers, keys, size


@pytest.fixture
def source(tmp_path):
    """Three long-GOP numbered clips (H.264, MPEG-4 in .avi, one in a sub-folder) and a list
    with a missing video on line 3."""
    root = tmp_path / "videos"
    write_numbered_video(str(root / "a.mp4"), 40, 160, 120, codec="h264")
    write_numbered_video(str(root / "b.avi"), 33, 160, 120, codec="mpeg4", gop=100)
    write_numbered_video(str(root / "sub" / "c.mp4"), 25, 120, 160, codec="h264")
    lst = tmp_path / "train_list.txt"
    lst.write_text("a.mp4 0\nb.avi 1\nmissing.mp4 2\n\nsub/c.mp4 2\n")
    return lst, root


def test_every_frame_kept_with_a_keyframe_every_gop(source, tmp_path):
    lst, root = source
    out = tmp_path / "out"
    summary = prepare(str(lst), str(root), str(out), gop=8, progress=False)
    assert summary["written"] == 3 and summary["skipped"] == 0
    assert (out / "train_list.txt").read_text() == "a.mp4 0\nb.mp4 1\nsub/c.mp4 2\n"
    for name, frames, size in (("a.mp4", 40, (160, 120)), ("b.mp4", 33, (160, 120)), ("sub/c.mp4", 25, (120, 160))):
        numbers, keys, got_size = _decode(out / name)
        assert numbers == list(range(frames)), name  # every frame, in order, none repeated
        assert keys == list(range(0, frames, 8)), name
        assert got_size == size
    # the missing video is reported with its list line, and the run still wrote the rest
    assert summary["failed"] == [(3, str(root / "missing.mp4"), "file not found")]
    assert (out / "prepare_failed.txt").read_text().startswith(f"{lst}:3: ")


def test_short_side_resize_keeps_aspect_and_frame_identity(source, tmp_path):
    lst, root = source
    out = tmp_path / "out"
    prepare(str(lst), str(root), str(out), gop=16, short_side=64, progress=False)
    numbers, keys, size = _decode(out / "a.mp4")
    assert size == scaled_size(160, 120, 64) == (84, 64)  # int(160 * 64 / 120 + .5) = 85 -> even 84
    assert numbers == list(range(40)) and keys == [0, 16, 32]
    assert _decode(out / "sub" / "c.mp4")[2] == (64, 84)  # portrait: the width is the short side


def test_scaled_size_rules():
    assert scaled_size(340, 256, 256) == (340, 256)
    assert scaled_size(1920, 1080, 320) == (568, 320)  # 568.9 -> 569 -> even 568
    assert scaled_size(97, 55, None) == (96, 54)  # odd sizes rounded down to even


def test_rerun_skips_finished_videos_and_redoes_interrupted_ones(source, tmp_path):
    lst, root = source
    out = tmp_path / "out"
    prepare(str(lst), str(root), str(out), gop=8, progress=False)
    stamp = os.stat(out / "a.mp4").st_mtime_ns
    os.remove(out / "b.mp4")
    (out / "b.mp4.part.mp4").write_bytes(b"half a video")  # what an interrupted run leaves
    summary = prepare(str(lst), str(root), str(out), gop=8, progress=False)
    assert summary["written"] == 1 and summary["skipped"] == 2
    assert os.stat(out / "a.mp4").st_mtime_ns == stamp
    assert _decode(out / "b.mp4")[0] == list(range(33))
    assert not (out / "b.mp4.part.mp4").exists()


def test_unreadable_video_is_reported_and_the_rest_written(source, tmp_path, capsys):
    lst, root = source
    (root / "bad.mp4").write_text("not a video")
    lst.write_text(lst.read_text() + "bad.mp4 1\n")
    out = tmp_path / "out"
    code = main([str(lst), "--prefix", str(root), "--out", str(out), "--gop", "8", "--no-progress"])
    assert code == 1
    captured = capsys.readouterr()
    assert "3 written, 0 already there, 2 failed" in captured.out
    assert f"{lst}:6: {root / 'bad.mp4'}: " in captured.err
    assert "bad.mp4" not in (out / "train_list.txt").read_text()
    assert not list(out.glob("bad*"))  # no partial file left


def test_malformed_list_line_names_file_and_line_and_writes_nothing(source, tmp_path, capsys):
    lst, root = source
    lst.write_text("a.mp4 0\nb.avi one\n")
    out = tmp_path / "out"
    assert main([str(lst), "--prefix", str(root), "--out", str(out), "--no-progress"]) == 1
    assert capsys.readouterr().err.startswith(f"error: {lst}:2: expected an integer label")
    assert not out.exists()


def test_refuses_to_overwrite_sources_or_two_videos_into_one(source, tmp_path, capsys):
    lst, root = source
    assert main([str(lst), "--prefix", str(root), "--out", str(root), "--no-progress"]) == 1
    assert "would overwrite" in capsys.readouterr().err
    (root / "a.avi").write_bytes((root / "b.avi").read_bytes())
    lst.write_text("a.mp4 0\na.avi 1\n")
    assert main([str(lst), "--prefix", str(root), "--out", str(tmp_path / "o"), "--no-progress"]) == 1
    assert f"{lst}:2: " in capsys.readouterr().err

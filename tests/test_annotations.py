"""MMAction2 annotation lists: video lists, rawframe lists, label maps."""
from pathlib import Path

import pytest

from tsn_dali.data.index.annotations import (AnnotationError, read_label_map, read_rawframe_list,
                                       read_video_list)

from helpers.real_videos import VIDEOS, needs_videos


@pytest.fixture
def video_tree(tmp_path):
    prefix = tmp_path / "videos"
    (prefix / "a").mkdir(parents=True)
    for name in ("a/x.mp4", "a/y.mp4", "z.mp4"):
        (prefix / name).write_bytes(b"not read here")
    return prefix


def write(path, text):
    path.write_text(text)
    return path


def test_video_list(tmp_path, video_tree):
    lst = write(tmp_path / "train.txt", "a/x.mp4 3\n\n  a/y.mp4 0   \nz.mp4 399\n\n")
    records, problems = read_video_list(lst, video_tree, num_classes=400)
    assert problems == []
    assert [(Path(r.path).relative_to(video_tree).as_posix(), r.label, r.line) for r in records] == [
        ("a/x.mp4", 3, 1), ("a/y.mp4", 0, 3), ("z.mp4", 399, 4)]
    assert all(r.source == str(lst) and r.num_frames is None for r in records)


@pytest.mark.parametrize("line, message", [
    ("a/x.mp4", "expected 2 fields"),
    ("a/x.mp4 3 7", "expected 2 fields"),
    ("a/x.mp4 three", "expected an integer label, got 'three'"),
    ("a/x.mp4 400", "expected a label in 0..399, got 400"),
    ("a/x.mp4 -1", "expected a label in 0..399, got -1"),
    ("a/missing.mp4 1", "expected an existing video file"),
])
def test_video_list_bad_line(tmp_path, video_tree, line, message):
    lst = write(tmp_path / "val.txt", f"z.mp4 1\n{line}\nz.mp4 2\n")
    with pytest.raises(AnnotationError) as info:
        read_video_list(lst, video_tree, num_classes=400)
    text = str(info.value)
    assert text.startswith(f"{lst}:2: ") and message in text
    assert "\n" not in text
    # skip_bad: the line is left out and reported, never silently
    records, problems = read_video_list(lst, video_tree, num_classes=400, skip_bad=True)
    assert [r.line for r in records] == [1, 3]
    assert len(problems) == 1 and problems[0].startswith(f"{lst}:2: ")


def test_missing_list_file(tmp_path):
    with pytest.raises(AnnotationError, match="annotation file not found"):
        read_video_list(tmp_path / "nope.txt", tmp_path)


def test_rawframe_list(tmp_path):
    prefix = tmp_path / "rawframes"
    for name in ("v1", "v2"):
        (prefix / name).mkdir(parents=True)
        (prefix / name / "img_00001.jpg").write_bytes(b"")
    lst = write(tmp_path / "raw.txt", "v1 120 5\nv2 33 0  \n")
    records, problems = read_rawframe_list(lst, prefix, num_classes=10,
                                           filename_tmpl="img_{:05}.jpg", start_index=1)
    assert problems == []
    assert [(Path(r.path).name, r.num_frames, r.label, r.line) for r in records] == [
        ("v1", 120, 5, 1), ("v2", 33, 0, 2)]
    # the first frame must exist under the template and start index
    with pytest.raises(AnnotationError, match=r"raw.txt:1: expected the first frame .*img_00000.jpg"):
        read_rawframe_list(lst, prefix, filename_tmpl="img_{:05}.jpg", start_index=0)
    bad = write(tmp_path / "bad.txt", "v1 120 5\nv2 many 0\nv3 10 1\nv1 0 1\n")
    records, problems = read_rawframe_list(bad, prefix, skip_bad=True)
    assert [r.line for r in records] == [1]
    assert problems[0] == f"{bad}:2: expected an integer total_frames, got 'many'"
    assert problems[1].startswith(f"{bad}:3: expected an existing frame folder")
    assert problems[2] == f"{bad}:4: expected a positive total_frames, got 0"
    with pytest.raises(AnnotationError, match="expected 3 fields"):
        read_rawframe_list(write(tmp_path / "two.txt", "v1 5\n"), prefix)


def test_label_map(tmp_path):
    names = read_label_map(write(tmp_path / "labels.txt", "abseiling\nair drumming \n\n"))
    assert names == ["abseiling", "air drumming"]
    with pytest.raises(AnnotationError, match=r"gap.txt:2: expected a class name"):
        read_label_map(write(tmp_path / "gap.txt", "a\n\nb\n"))
    with pytest.raises(AnnotationError, match="empty"):
        read_label_map(write(tmp_path / "empty.txt", ""))


def test_a_label_map_as_users_write_it(tmp_path):
    """The label map is read as the lists are: a byte-order mark read past (before, class 0
    was named '\ufeffabseiling'), another encoding one line naming the line (before, a
    UnicodeDecodeError traceback)."""
    path = tmp_path / "bom.txt"
    path.write_bytes("\ufeffabseiling\nair drumming\n".encode("utf-8"))
    assert read_label_map(path) == ["abseiling", "air drumming"]
    path.write_bytes("abseiling\ncaf\xe9\n".encode("latin-1"))
    with pytest.raises(AnnotationError) as err:
        read_label_map(path)
    assert str(err.value) == (f"{path}:2: expected UTF-8 text, got byte 0xe9 at column 4 (save the label map "
                              "as UTF-8)")
    with pytest.raises(AnnotationError, match="label map file not found"):
        read_label_map(tmp_path / "absent.txt")


@needs_videos
def test_real_label_maps_and_video_list(tmp_path):
    k400 = read_label_map(VIDEOS / "label_map_k400.txt")
    assert len(k400) == 400 and k400[0] == "abseiling" and "arm wrestling" in k400
    assert len(read_label_map(VIDEOS / "label_map_sthv2.txt")) == 174
    lst = write(tmp_path / "list.txt", f"demo.mp4 {k400.index('arm wrestling')}\ntest.mp4 0\n")
    records, _ = read_video_list(lst, VIDEOS, num_classes=len(k400))
    assert records[0].label == 6 and Path(records[0].path) == VIDEOS / "demo.mp4"


def test_a_byte_order_mark_is_read_past(tmp_path):
    (tmp_path / "a.mp4").write_bytes(b"x")
    lst = tmp_path / "list.txt"
    lst.write_bytes("\ufeffa.mp4 1\na.mp4 1\n".encode("utf-8"))
    records, _ = read_video_list(lst, tmp_path)
    assert [(r.line, r.label) for r in records] == [(1, 1), (2, 1)]
    assert records[0].path == str(tmp_path / "a.mp4")  # no invisible \ufeff in the name


@pytest.mark.parametrize("raw, expected", [
    (b"a.mp4 1\ncaf\xe9.mp4 2\n", "list.txt:2: expected UTF-8 text, got byte 0xe9 at column 4"),
    (b"a.mp4 1\x00\x00\n", "list.txt:1: expected text, got a NUL byte"),
])
def test_a_list_that_is_not_utf8_text_is_one_line_naming_the_line(tmp_path, raw, expected):
    (tmp_path / "a.mp4").write_bytes(b"x")
    lst = tmp_path / "list.txt"
    lst.write_bytes(raw)
    with pytest.raises(AnnotationError) as err:
        read_video_list(lst, tmp_path, skip_bad=True)
    assert expected in str(err.value) and "\n" not in str(err.value)


def test_duplicates_are_found_and_told_apart(tmp_path):
    from tsn_dali.data.index.annotations import duplicates

    for name in "abc":
        (tmp_path / f"{name}.mp4").write_bytes(b"x")
    lst = tmp_path / "list.txt"
    lst.write_text("a.mp4 1\nb.mp4 2\na.mp4 1\nb.mp4 0\nc.mp4 0\n")
    records, _ = read_video_list(lst, tmp_path)
    repeated, conflicting = duplicates(records)
    assert repeated == [f"{lst}:3: {tmp_path / 'a.mp4'} repeats line 1"]
    assert conflicting == [f"{lst}:4: {tmp_path / 'b.mp4'}: line 2 says label 2, this one 0"]
    assert duplicates(records[:2] + records[4:]) == ([], [])


def test_duplicates_are_refused_at_test_and_reported_elsewhere(tmp_path, caplog):
    from tsn_dali.data.errors import DatasetError
    from tsn_dali.data.render.loader import check_duplicates

    (tmp_path / "a.mp4").write_bytes(b"x")
    lst = tmp_path / "list.txt"
    lst.write_text("a.mp4 1\na.mp4 1\n")
    records, _ = read_video_list(lst, tmp_path)
    with pytest.raises(DatasetError, match="1 repeated line.*scored more than once.*allow_duplicates"):
        check_duplicates(records, str(lst), "test", allowed=False)
    check_duplicates(records, str(lst), "test", allowed=True)
    with caplog.at_level("WARNING"):
        check_duplicates(records, str(lst), "train", allowed=False)
    assert "1 repeated line(s)" in caplog.text

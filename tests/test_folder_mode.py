"""A folder of videos read as a person means it (tsn_dali.data.render.sources.scan_folder):
hidden and system folders and files are never classes or videos, folders with no video are
no class, and what was left out is said in one line."""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest

from tsn_dali.data.errors import DatasetError
from tsn_dali.data.render.sources import folder_records, folder_summary, hidden, scan_folder


def _touch(path: Path, data: bytes = b"x"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


@pytest.fixture
def clean(tmp_path):
    root = tmp_path / "clean"
    for cls, names in {"archery": ["a1.mp4", "a2.webm"], "bowling": ["b1.mkv"], "cooking": ["sub/c1.MP4"]}.items():
        for n in names:
            _touch(root / cls / n)
    return root


def _junk(root: Path):
    """What notebooks, zips, git and file managers leave in a dataset folder."""
    _touch(root / ".ipynb_checkpoints" / "a1-checkpoint.mp4")
    _touch(root / "__MACOSX" / "archery" / "._a1.mp4")
    _touch(root / ".git" / "objects" / "pack.mp4")
    (root / "empty").mkdir()
    _touch(root / "notes" / "readme.txt")
    _touch(root / "archery" / "._a1.mp4")           # macOS resource fork beside a real video
    _touch(root / "archery" / ".hidden" / "x.mp4")  # a hidden folder inside a class
    _touch(root / "archery" / "labels.json")
    _touch(root / "loose.mp4")                       # a video directly under the root
    _touch(root / ".DS_Store")


def _labels(records, root):
    return [(str(Path(r.path).relative_to(root)), r.label) for r in records]


def test_junk_changes_no_class_and_no_label(clean, tmp_path):
    before, classes = folder_records(clean)
    junky = tmp_path / "junky"
    shutil.copytree(clean, junky)
    _junk(junky)
    after, classes_after = folder_records(junky)
    assert classes == classes_after == ["archery", "bowling", "cooking"]
    assert _labels(before, clean) == _labels(after, junky) == [
        ("archery/a1.mp4", 0), ("archery/a2.webm", 0), ("bowling/b1.mkv", 1), ("cooking/sub/c1.MP4", 2)]


def test_what_was_left_out_is_one_line(clean):
    _junk(clean)
    _, _, left = scan_folder(clean)
    assert left["hidden"] == [".git", ".ipynb_checkpoints", "__MACOSX"]
    assert left["empty"] == ["empty", "notes"] and left["top_videos"] == ["loose.mp4"]
    assert left["other_files"] == {".json": 1, ".txt": 1}
    line = folder_summary(clean, left)
    assert "\n" not in line and line == (
        f"{clean}: left out 3 hidden or system folder(s) (.git, .ipynb_checkpoints, __MACOSX); 2 folder(s) with "
        "no video (empty, notes); 1 video(s) directly under the root, in no class folder (loose.mp4); "
        "2 file(s) of other types (.json 1, .txt 1)")


def test_a_clean_folder_says_nothing(clean):
    assert folder_summary(clean, scan_folder(clean)[2]) == ""


def test_classes_given_keep_their_order_and_an_empty_one_its_label(clean):
    (clean / "zebra").mkdir()
    _junk(clean)
    records, names = folder_records(clean, classes=["zebra", "cooking", "bowling", "archery"])
    assert names == ["zebra", "cooking", "bowling", "archery"]
    assert sorted({r.label for r in records}) == [1, 2, 3]
    with pytest.raises(DatasetError, match="folder 'cooking' is not one of the 2 classes given"):
        folder_records(clean, classes=["archery", "bowling"])


def test_a_folder_of_junk_alone_says_what_it_left_out(tmp_path):
    _touch(tmp_path / "r" / ".ipynb_checkpoints" / "x.mp4")
    _touch(tmp_path / "r" / "clip.mp4")
    with pytest.raises(DatasetError) as err:
        folder_records(tmp_path / "r")
    assert "no video files" in str(err.value) and "1 video(s) directly under the root" in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("name, expected", [(".git", True), ("._clip.mp4", True), ("__MACOSX", True),
                                            ("@eaDir", True), ("class_a", False), ("__init__", False)])
def test_hidden_names(name, expected):
    assert hidden(name) is expected


def test_loader_from_a_junky_folder(tmp_path, caplog):
    pytest.importorskip("nvidia.dali")
    from tsn_dali.data import loader_from
    from tsn_dali.data.media.videoio import write_numbered_video

    root = tmp_path / "videos"
    for i in range(4):
        (root / f"c{i % 2}").mkdir(parents=True, exist_ok=True)
        write_numbered_video(str(root / f"c{i % 2}" / f"v{i}.webm"), 8, 64, 48, codec="vp9")
    shutil.copytree(root / "c0", root / ".ipynb_checkpoints")
    shutil.copytree(root / "c1", root / "__MACOSX")
    with caplog.at_level(logging.WARNING):
        loader = loader_from(str(root), split="val", batch_size=2, num_segments=1, input_size=32, short_side=40,
                             executor="reference", device="cpu", index_cache=str(tmp_path / "idx"))
    try:
        assert loader.classes == ["c0", "c1"] and len(loader.records) == 4
        assert loader.stats["left_out"]["hidden"] == [".ipynb_checkpoints", "__MACOSX"]
        said = [r.getMessage() for r in caplog.records if "left out" in r.getMessage()]
        assert said == [f"{root}: left out 2 hidden or system folder(s) (.ipynb_checkpoints, __MACOSX)"]
        assert next(iter(loader)).labels.tolist() == [0, 0]  # val keeps list order: c0's two videos first
    finally:
        loader.close()

"""The index cache on disk: every VideoInfo field kept, versions and field lists checked,
partial progress kept by an interrupted build, concurrent writers' rows kept."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import pytest

from tsn_dali.data.index import build as index_build, cache as index_cache, video_index
from tsn_dali.data.index.build import build_index
from tsn_dali.data.index.cache import IndexCache, info_fields, read_rows
from tsn_dali.data.index.video_index import VideoInfo


@dataclass
class WiderInfo(VideoInfo):
    """VideoInfo with fields of the kind a later probe adds (lists included)."""

    scene_cuts: list = field(default_factory=list)
    color_space: str = ""
    audio_streams: int = 0


def _files(folder, n):
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"v{i:02d}.mp4"
        path.write_bytes(b"x" * (i + 1))
        paths.append(str(path))
    return paths


def _stub(cls=VideoInfo, probed=None, fail_at=None):
    """A probe that reads nothing: size/mtime from stat, frames = 10 x size."""
    def probe(path):
        if probed is not None:
            probed.append(path)
            if fail_at is not None and len(probed) >= fail_at:
                raise KeyboardInterrupt
        st = os.stat(path)
        extra = {"scene_cuts": [0, 16, 32], "color_space": "bt709", "audio_streams": 2} \
            if cls is WiderInfo else {}
        return cls(path=str(path), num_frames=10 * st.st_size, width=64, height=48, fps=30.0,
                   codec="h264", size=st.st_size, mtime=float(st.st_mtime), **extra)
    return probe


def test_every_field_round_trips_and_another_field_list_is_a_miss(tmp_path, monkeypatch):
    paths = _files(tmp_path / "v", 3)
    cache = tmp_path / "cache"
    monkeypatch.setattr(index_cache, "VideoInfo", WiderInfo)
    monkeypatch.setattr(video_index, "probe_video", _stub(WiderInfo))
    first = build_index(paths, cache_dir=cache, workers=2, progress=False)
    assert first.stats["probed"] == 3
    data = json.loads((cache / "video_index.json").read_text())
    assert data["format"] == "tsn_dali.video_index" and data["version"] == index_cache.FORMAT_VERSION
    assert data["fields"][-3:] == ["scene_cuts", "color_space", "audio_streams"]

    probed = []
    monkeypatch.setattr(video_index, "probe_video", _stub(WiderInfo, probed))
    second = build_index(paths, cache_dir=cache, workers=2, progress=False)
    assert probed == [] and second.stats == {**second.stats, "probed": 0, "cached": 3}
    info = second[paths[1]]
    assert type(info) is WiderInfo and info.scene_cuts == [0, 16, 32]
    assert (info.color_space, info.audio_streams, info.num_frames) == ("bt709", 2, 20)
    assert [vars(i) for i in second] == [vars(i) for i in first]

    # the cache written with other fields is a miss for today's VideoInfo
    monkeypatch.setattr(index_cache, "VideoInfo", VideoInfo)
    monkeypatch.setattr(video_index, "probe_video", _stub(VideoInfo, probed))
    third = build_index(paths, cache_dir=cache, workers=1, progress=False)
    assert sorted(probed) == paths and third.stats["probed"] == 3
    assert json.loads((cache / "video_index.json").read_text())["fields"] == info_fields()


def test_an_older_cache_version_is_a_miss(tmp_path, monkeypatch):
    paths = _files(tmp_path / "v", 2)
    cache = tmp_path / "cache"
    cache.mkdir()
    old = {os.path.abspath(p): {**vars(_stub()(p)), "num_frames": 999} for p in paths}
    (cache / "video_index.json").write_text(json.dumps({"version": 2, "videos": old}))
    probed = []
    monkeypatch.setattr(video_index, "probe_video", _stub(probed=probed))
    index = build_index(paths, cache_dir=cache, workers=1, progress=False)
    assert probed == paths and [i.num_frames for i in index] == [10, 20]
    assert json.loads((cache / "video_index.json").read_text())["version"] == index_cache.FORMAT_VERSION == 5


def test_an_interrupted_build_keeps_what_it_probed(tmp_path, monkeypatch):
    paths = _files(tmp_path / "v", 10)
    cache = tmp_path / "cache"
    probed = []
    monkeypatch.setattr(video_index, "probe_video", _stub(probed=probed, fail_at=5))
    with pytest.raises(KeyboardInterrupt):
        build_index(paths, cache_dir=cache, workers=1, progress=False, save_every=0)
    assert not (cache / "video_index.json").exists() and len(os.listdir(cache / "partial")) == 4

    probed.clear()
    monkeypatch.setattr(video_index, "probe_video", _stub(probed=probed))
    index = build_index(paths, cache_dir=cache, workers=1, progress=False)
    assert probed == paths[4:] and index.stats["cached"] == 4
    assert [i.num_frames for i in index] == [10 * (i + 1) for i in range(10)]
    # the final save folded the partial files into the one cache file
    assert os.listdir(cache / "partial") == []
    assert len(read_rows(str(cache / "video_index.json"), info_fields())[1]) == 10


def test_missing_files_are_reported_never_cached(tmp_path, monkeypatch):
    paths = _files(tmp_path / "v", 2) + [str(tmp_path / "v" / "gone.mp4")]
    index = build_index(paths, cache_dir=tmp_path / "cache", workers=1, progress=False)
    assert index[paths[2]].error == "file not found" and len(index.bad) == 3  # 2 not videos
    rows = read_rows(str(tmp_path / "cache" / "video_index.json"), info_fields())[1]
    assert sorted(r[0] for r in rows) == sorted(os.path.abspath(p) for p in paths[:2])


def test_a_save_keeps_rows_another_process_wrote_meanwhile(tmp_path):
    paths = _files(tmp_path / "v", 2)
    probe = _stub()
    ours = IndexCache(tmp_path / "cache").load()
    theirs = IndexCache(tmp_path / "cache").load()
    theirs.save([index_cache.info_row(probe(paths[0]), theirs.fields)])
    ours.save([index_cache.info_row(probe(paths[1]), ours.fields)])
    fresh = IndexCache(tmp_path / "cache").load()
    assert fresh.lookup(paths[0]).num_frames == 10 and fresh.lookup(paths[1]).num_frames == 20


def test_default_workers_are_cores_per_local_rank(monkeypatch):
    cores = len(os.sched_getaffinity(0))
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    assert index_build.default_workers() == cores
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(cores * 4))
    assert index_build.default_workers() == 1


def test_what_killed_runs_leave_is_swept_after_a_day(tmp_path):
    paths = _files(tmp_path / "v", 1)
    cache = tmp_path / "cache"
    (cache / "partial").mkdir(parents=True)
    old_tmp, new_tmp = cache / ".tmp-old.json", cache / "partial" / ".tmp-new.json"
    old_build = cache / "build-20260101-000000-abcdef12"
    old_build.mkdir()
    (old_build / "rank0.progress").write_text("{}")
    for p in (old_tmp, new_tmp):
        p.write_text("half a file")
    day_ago = os.path.getmtime(new_tmp) - 2 * 24 * 3600
    for p in (old_tmp, old_build):
        os.utime(p, (day_ago, day_ago))
    build_index(paths, cache_dir=cache, workers=1, progress=False)  # a save sweeps temp files
    assert not old_tmp.exists() and new_tmp.exists() and old_build.exists()
    index_cache.sweep(str(cache), index_build.BUILD_PREFIX)  # rank 0 does this when a build starts
    assert not old_build.exists() and (cache / "video_index.json").exists()

"""The index built across two gloo ranks: disjoint shares, one merged cache, and no
collective waiting while a slowed rank probes (process-group timeout of a few seconds)."""
from __future__ import annotations

import json
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
from helpers.gloo_ranks import spawn_two  # noqa: E402
from helpers.index_ranks import run_rank  # noqa: E402
from helpers.tiny_clips import make_dataset, recipe_yaml  # noqa: E402

from tsn_dali.data.index.cache import info_fields, read_rows  # noqa: E402

PG_TIMEOUT = 3.0  # seconds: every collective of the build must finish within it


def _run_ranks(work: Path, mode: str, delays, wait_s: float = 120.0):
    """Start both ranks; return their results ({rank: dict or error string})."""
    out = {}

    def done(procs) -> bool:
        for r in range(2):
            for name, parse in ((f"rank{r}.json", json.loads), (f"rank{r}.error", str)):
                if r not in out and (work / name).is_file() and not procs[r].is_alive():
                    out[r] = parse((work / name).read_text())
        return len(out) == 2 or (mode == "stall" and 0 in out)  # in "stall", rank 1 hangs by design

    spawn_two(run_rank, (2, str(work), mode, PG_TIMEOUT, delays), done, wait_s)
    return out


def _dataset(work: Path) -> Path:
    root = make_dataset(work / "data", 15)
    (root / "videos" / "broken.mp4").write_text("not a video\n")
    for split in ("train", "val", "test"):
        with open(root / f"{split}.txt", "a") as fh:
            fh.write("broken.mp4 1\n")
    recipe = recipe_yaml(root)
    text = recipe.read_text().replace("data:\n", "data:\n  index_workers: 1\n", 1)
    recipe.write_text(text.replace("loader:\n", "loader:\n  decode_workers: 1\n", 1))
    return root


def test_two_ranks_share_the_probing_without_a_collective_timeout(tmp_path):
    root = _dataset(tmp_path)
    paths = sorted(str(p) for p in (root / "videos").iterdir())
    # rank 0 probes at 0.45 s a video, rank 1 at 0.9 s: a build on one rank behind a
    # barrier (16 x 0.45 s) would outlast the 3 s timeout, and so does rank 0's wait for
    # rank 1 (8 x 0.9 - 8 x 0.45 s)
    res = _run_ranks(tmp_path, "loader", delays=[0.45, 0.9])
    assert all(isinstance(res.get(r), dict) for r in range(2)), res
    train = [res[r]["train"] for r in range(2)]
    assert train[1]["seconds"] > 2 * PG_TIMEOUT and train[0]["seconds"] > 2 * PG_TIMEOUT
    # disjoint shares that cover every video once, interleaved by rank
    shares = [set(t["probed"]) for t in train]
    assert not shares[0] & shares[1] and sorted(shares[0] | shares[1]) == paths
    assert [len(s) for s in shares] == [8, 8]
    # both ranks hold the same index, the broken video dropped on both
    assert train[0]["index"] == train[1]["index"] and len(train[0]["index"]) == 16
    broken = str(root / "videos" / "broken.mp4")
    assert train[0]["index"][broken][1].startswith("not a readable video")
    assert all(t["dropped"] == [broken] for t in train) and train[0]["len"] == train[1]["len"]
    assert {n for n, _ in train[0]["index"].values()} == {0, 12}
    # the second build (val, same videos) found everything in the merged cache
    assert res[0]["val"]["probed"] == [] and res[1]["val"]["probed"] == []
    assert res[0]["val"]["index"] == train[0]["index"]
    assert res[0]["all_reduce"] == res[1]["all_reduce"] == 3.0
    cache = root / ".tsn_dali_index"
    header, rows = read_rows(str(cache / "video_index.json"), info_fields())
    assert sorted(r[0] for r in rows) == paths
    # the build folder (shares, heartbeats) is gone: the cache is one file again
    assert [str(p.relative_to(cache)) for p in cache.rglob("*") if p.is_file()] == ["video_index.json"]


def test_ranks_that_read_different_cache_files_exchange_full_shares(tmp_path):
    root = _dataset(tmp_path)
    res = _run_ranks(tmp_path, "loader-full", delays=[0.0, 0.0])
    assert all(isinstance(res.get(r), dict) for r in range(2)), res
    assert res[0]["train"]["index"] == res[1]["train"]["index"] == res[1]["val"]["index"]
    assert len(res[0]["train"]["index"]) == 16 and res[0]["val"]["probed"] == res[1]["val"]["probed"] == []
    assert res[0]["train"]["dropped"] == res[1]["train"]["dropped"] == [str(root / "videos" / "broken.mp4")]


def test_a_stalled_rank_stops_the_build_with_its_name(tmp_path):
    root = make_dataset(tmp_path / "data", 6)
    start = time.monotonic()
    res = _run_ranks(tmp_path, "stall", delays=[0.0, 0.0], wait_s=90)
    assert isinstance(res.get(0), str), res
    message = res[0]
    assert message.startswith("IndexBuildError: ") and "rank 1" in message
    assert "has probed nothing for" in message and "1 of 3 done" in message
    assert f"in flight: {root / 'videos'}" in message  # names the video it is stuck on
    assert time.monotonic() - start < 60

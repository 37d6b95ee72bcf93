"""python -m tsn_dali.index: builds a recipe's cache ahead of training, reports bad videos,
resumes after a kill, one-line errors with exit status 1."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
from helpers.tiny_clips import make_dataset, recipe_yaml  # noqa: E402

from tsn_dali.data.index.cache import info_fields, read_rows  # noqa: E402

ENV = dict(os.environ, PYTHONPATH=str(HERE.parent), OMP_NUM_THREADS="1")


def _index(*args, cwd):
    return subprocess.run([sys.executable, "-m", "tsn_dali.index", *map(str, args)], env=ENV,
                          capture_output=True, text=True, timeout=300, cwd=cwd)


def _dataset(root, n=6):
    root = make_dataset(root, n)
    (root / "videos" / "notes.mp4").write_text("not a video\n")
    with open(root / "train.txt", "a") as fh:
        fh.write("notes.mp4 0\nnot_there.mp4 1\n")
    (root / "val.txt").write_text("v000.mp4 0\nv001.mp4 1\n")
    return root, recipe_yaml(root)


def test_builds_the_cache_and_reports_bad_videos(tmp_path):
    root, recipe = _dataset(tmp_path / "data")
    run = _index(recipe, "--split", "train", "--no-progress", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    cache = root / ".tsn_dali_index"
    assert "8 videos (train)" in run.stdout and "6 usable, 2 bad" in run.stdout
    assert "8 probed here, 0 from the cache" in run.stdout
    bad = (cache / "bad_videos.txt").read_text().splitlines()
    assert bad == [f"{root / 'videos' / 'notes.mp4'}: " + bad[0].split(": ", 1)[1],
                   f"{root / 'videos' / 'not_there.mp4'}: file not found"]
    assert bad[0].split(": ", 1)[1].startswith("not a readable video")
    assert f"  {root / 'videos' / 'not_there.mp4'}: file not found" in run.stderr
    rows = read_rows(str(cache / "video_index.json"), info_fields())[1]
    assert len(rows) == 7  # the missing file is not cached

    again = _index(recipe, "--no-progress", cwd=tmp_path)  # all: train, val and test lists
    # only the missing file is looked at again (missing files are never cached)
    assert again.returncode == 0 and "1 probed here, 7 from the cache" in again.stdout, again.stdout


def test_recipe_errors_exit_1_and_usage_errors_2_with_one_line(tmp_path):
    root, recipe = _dataset(tmp_path / "data")
    run = _index(recipe, "--set", "data.index_workers=0", cwd=tmp_path)
    assert run.returncode == 1 and run.stderr.strip().count("\n") == 0
    assert "data.index_workers" in run.stderr and "Traceback" not in run.stderr
    run = _index(recipe, "--split", "everything", cwd=tmp_path)
    assert run.returncode == 2 and "invalid choice" in run.stderr  # usage: argparse's status
    (root / "val.txt").write_text("v000.mp4 0\nv001.mp4\n")
    run = _index(recipe, "--split", "val", cwd=tmp_path)
    assert run.returncode == 1 and "val.txt:2:" in run.stderr and "Traceback" not in run.stderr


SLOW_INDEX = """
import sys, time
from tsn_dali.data.index import video_index
real = video_index.probe_video
video_index.probe_video = lambda path: (time.sleep(0.4), real(path))[1]
from tsn_dali.index import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_killed_run_resumes_where_it_stopped(tmp_path):
    root, recipe = _dataset(tmp_path / "data", n=16)
    partial = root / ".tsn_dali_index" / "partial"
    proc = subprocess.Popen([sys.executable, "-c", SLOW_INDEX, str(recipe), "--split", "train",
                             "--workers", "1", "--save-every", "0.1", "--no-progress"],
                            env=ENV, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while (not partial.is_dir() or len(os.listdir(partial)) < 4) and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)  # no chance to clean up
    proc.communicate()
    kept = sum(len(read_rows(str(f), info_fields())[1]) for f in partial.glob("*.json"))
    assert 4 <= kept < 17
    run = _index(recipe, "--split", "train", "--no-progress", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert f"{18 - kept} probed here, {kept} from the cache" in run.stdout, run.stdout
    assert os.listdir(partial) == []


def test_under_torchrun_two_ranks_build_one_cache(tmp_path):
    root, recipe = _dataset(tmp_path / "data", n=8)
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          "-m", "tsn_dali.index", str(recipe), "--split", "train", "--no-progress"],
                         env=ENV, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count("tsn_dali.index: 10 videos (train)") == 1  # rank 0 reports
    assert "8 usable, 2 bad" in run.stdout and "5 probed here" in run.stdout  # its half
    cache = root / ".tsn_dali_index"
    assert sorted(p.name for p in cache.iterdir() if not p.name == "partial") == ["bad_videos.txt", "video_index.json"]
    assert len(read_rows(str(cache / "video_index.json"), info_fields())[1]) == 9  # all but the missing one

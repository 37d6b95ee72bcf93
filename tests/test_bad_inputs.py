"""Bad input and faults, end to end: every case is generated here and goes through the
real entry points (tsn_dali.train / tsn_dali.test) or the loader they use.

What each bad input gets is tabled in docs/reliability.md. Unit-level
checks live beside each module (test_video_index, test_annotations, test_config,
test_planner, test_test, test_train, test_resume, test_dali_executor).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from helpers.bad_videos import write_audio_only, write_zero_frame_video  # noqa: E402
from helpers.tiny_train import PROJECT, make_videos, train_recipe  # noqa: E402

from tsn_dali.config import load_recipe  # noqa: E402
from tsn_dali.data.render.loader import build_loader  # noqa: E402


# --------------------------------------------------------------------------- generated cases


def _encode(path, frames, pix_fmt="yuv420p", pts_ms=None):
    container = av.open(str(path), "w")
    stream = container.add_stream("libx264", rate=30)
    stream.height, stream.width = frames[0].shape[:2]
    stream.pix_fmt = pix_fmt
    if pts_ms is not None:
        stream.codec_context.time_base = stream.time_base = Fraction(1, 1000)
    for i, img in enumerate(frames):
        frame = av.VideoFrame.from_ndarray(img, format="rgb24")
        if pts_ms is not None:
            frame.pts, frame.time_base = pts_ms[i], Fraction(1, 1000)
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()
    return path


def _gray_frames(n, w, h):
    return [np.full((h, w, 3), (i * 37) % 256, np.uint8) for i in range(n)]


def make_bad_videos(videos: Path) -> dict:
    """Unusable videos: each must be left out (train) or reported (test), never crash."""
    bad = {}
    bad["missing"] = "missing.mp4"  # listed, not on disk
    (videos / "empty.mp4").write_bytes(b"")
    bad["zero_bytes"] = "empty.mp4"
    (videos / "notes.mp4").write_text("this is a text file renamed .mp4\n")
    bad["not_a_video"] = "notes.mp4"
    full = _encode(videos / "full_for_cut.mp4", _gray_frames(40, 64, 48))
    data = full.read_bytes()
    (videos / "truncated.mp4").write_bytes(data[: len(data) // 2])
    full.unlink()
    bad["truncated"] = "truncated.mp4"
    write_audio_only(videos / "audio_only.m4a")
    bad["audio_only"] = "audio_only.m4a"
    write_zero_frame_video(videos / "zero_frames.mp4")
    bad["zero_frames"] = "zero_frames.mp4"
    return bad


def make_odd_but_valid_videos(videos: Path) -> dict:
    """Videos real datasets contain that must train normally."""
    odd = {}
    odd["one_frame"] = _encode(videos / "one_frame.mp4", _gray_frames(1, 64, 48)).name  # < segments
    odd["odd_size"] = _encode(videos / "odd_97x55.mp4", _gray_frames(8, 97, 55), "yuv444p").name
    pts = np.cumsum([0] + [20 if i % 2 else 50 for i in range(11)]).tolist()
    odd["variable_fps"] = _encode(videos / "vfr.mp4", _gray_frames(12, 64, 48), pts_ms=pts).name
    return odd


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = make_videos(tmp_path_factory.mktemp("bad_inputs"), num_videos=4)
    videos = root / "videos"
    bad, odd = make_bad_videos(videos), make_odd_but_valid_videos(videos)
    good_lines = (root / "train.txt").read_text()
    extra = "".join(f"{name} {i % 3}\n" for i, name in enumerate(list(bad.values()) + list(odd.values())))
    for split in ("train", "val", "test"):
        (root / f"{split}.txt").write_text(good_lines + extra)
    return root, bad, odd


def _recipe(root, **kw):
    return train_recipe(root, epochs=1, **kw)


# --------------------------------------------------------------------------- index / loader


def test_bad_videos_are_left_out_with_reasons_and_odd_ones_kept(dataset):
    root, bad, odd = dataset
    recipe = load_recipe(_recipe(root))
    loader = build_loader(recipe, "train", progress=False)
    try:
        dropped = {_name(d): d["reason"] for d in loader.stats["dropped"]}
        assert set(dropped) == set(bad.values())
        # a listed file that does not exist is an annotation problem: file and line named
        assert dropped["missing.mp4"].startswith(f"{root / 'train.txt'}:5: ")
        assert "not found" in dropped["missing.mp4"]
        assert dropped["empty.mp4"].startswith("empty file")
        # cut in half: the mp4 index (written last) is gone, so nothing can be read
        assert dropped["truncated.mp4"].startswith(("truncated", "not a readable video"))
        assert dropped["notes.mp4"].startswith("not a readable video")
        assert dropped["audio_only.m4a"].startswith("no video stream")
        kept = {Path(r.path).name for r in loader.records}
        assert set(odd.values()) <= kept and len(kept) == 4 + len(odd)
        # every kept video, the one-frame, odd-sized and variable-fps ones included, renders
        for batch in loader:
            assert batch.clips.shape[1:] == (2, 3, 32, 32)
            assert bool(torch_isfinite(batch.clips))
    finally:
        loader.close()


def _name(entry):
    """The video file an entry of loader.stats['dropped'] / test 'skipped' is about."""
    if entry.get("path"):
        return Path(entry["path"]).name
    return Path(entry["reason"].rsplit(": ", 1)[-1]).name  # annotation problem: path last


def torch_isfinite(x):
    import torch
    return torch.isfinite(x.float()).all()


def _train_cli(recipe_path, work_dir, *extra):
    return subprocess.run([sys.executable, "-m", "tsn_dali.train", str(recipe_path), "--device", "cpu",
                           "--work-dir", str(work_dir), *extra],
                          capture_output=True, text=True, cwd=PROJECT, timeout=300)


def _one_error_line(out):
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
    # progress bars (probing videos) and logged warnings may come first; the error is one line
    lines = [l for l in out.stderr.splitlines() if l.strip() and "%|" not in l
             and "warn" not in l.lower()]
    assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr
    return lines[0]


def test_on_bad_video_error_is_one_line_naming_the_videos(dataset, tmp_path):
    root, bad, _ = dataset
    # the list names a file that does not exist: the list's file and line
    line = _one_error_line(_train_cli(_recipe(root), tmp_path / "wd1", "--set", "data.on_bad_video=error"))
    assert f"{root / 'train.txt'}:5: " in line and "missing.mp4" in line
    # every listed file exists but some are not usable videos: all of them, in one line
    copy = tmp_path / "data"
    shutil.copytree(root, copy, ignore=shutil.ignore_patterns("index", "wd_*"))
    for split in ("train", "val"):  # val too: under 'error' its list is checked at start as well
        text = (copy / f"{split}.txt").read_text().replace("missing.mp4 0\n", "")
        (copy / f"{split}.txt").write_text(text)
    line = _one_error_line(_train_cli(_recipe(copy), tmp_path / "wd2", "--set", "data.on_bad_video=error"))
    assert "data.on_bad_video" in line
    for name in set(bad.values()) - {"missing.mp4"}:
        assert name in line


def test_malformed_list_line_names_file_and_line(dataset, tmp_path):
    root, _, _ = dataset
    copy = tmp_path / "data"
    shutil.copytree(root, copy, ignore=shutil.ignore_patterns("index", "wd_*"))
    lines = (copy / "train.txt").read_text().splitlines()
    lines.insert(2, "v001.mp4")  # label missing on line 3
    (copy / "train.txt").write_text("\n".join(lines) + "\n")
    line = _one_error_line(_train_cli(_recipe(copy), tmp_path / "wd", "--set", "data.on_bad_video=error"))
    assert line.startswith(f"error: {copy / 'train.txt'}:3: "), line
    # under the default policy (skip) the line is left out and reported, never silently
    out = _train_cli(_recipe(copy), tmp_path / "wd_skip")
    assert out.returncode == 0, out.stderr
    assert f"{copy / 'train.txt'}:3: " in out.stderr


# --------------------------------------------------------------------------- train / test runs


def test_training_survives_bad_videos_and_logs_them(dataset, tmp_path):
    root, bad, _ = dataset
    from tsn_dali import train

    summary = train.run([str(_recipe(root)), "--device", "cpu", "--work-dir", str(tmp_path / "wd"),
                          "--seed", "0"])
    assert len(summary["history"]) == 1 and np.isfinite(summary["history"][0]["loss"])
    assert summary["stats"]["dropped"] == len(bad)
    log = [json.loads(l) for l in Path(summary["log"]).read_text().splitlines()]
    logged = [e for e in log if e.get("kind") == "bad_videos"]
    assert {_name(d) for d in logged[0]["dropped"]} == set(bad.values())


def test_video_failing_at_decode_time_is_replaced_and_counted(dataset, tmp_path):
    """A video that indexes fine but no longer decodes (changed behind the index cache's
    back: same size and mtime) is replaced by another sample at train time."""
    root, _, _ = dataset
    copy = tmp_path / "data"
    shutil.copytree(root, copy, ignore=shutil.ignore_patterns("index", "wd_*"))
    recipe_path = _recipe(copy)
    build_loader(load_recipe(recipe_path), "train", progress=False).close()  # index it
    victim = copy / "videos" / "v000.mp4"
    st = victim.stat()
    victim.write_bytes(np.random.default_rng(0).integers(0, 256, st.st_size, dtype=np.uint8).tobytes())
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns))

    from tsn_dali import train

    summary = train.run([str(recipe_path), "--device", "cpu", "--work-dir", str(tmp_path / "wd"),
                          "--seed", "0"])
    assert summary["history"][0]["bad_videos_replaced"] >= 1
    log = [json.loads(l) for l in Path(summary["log"]).read_text().splitlines()]
    replaced = [d for e in log if e.get("kind") == "bad_videos" for d in e.get("replaced", [])]
    assert replaced and all(Path(d["path"]).name == "v000.mp4" for d in replaced)


def test_test_split_errors_on_bad_videos_unless_told_to_skip(dataset, tmp_path, capsys):
    root, bad, odd = dataset
    from tsn_dali import test, train

    recipe_path = _recipe(root)
    summary = train.run([str(recipe_path), "--device", "cpu", "--work-dir", str(tmp_path / "wd"),
                          "--seed", "0"])
    assert test.main([str(recipe_path), summary["checkpoint"], "--device", "cpu"]) == 1
    message = capsys.readouterr().err.strip().splitlines()[-1]
    # the first problem met: the list names a file that does not exist (file and line)
    assert message.startswith(f"error: {root / 'test.txt'}:5: ") and "missing.mp4" in message

    metrics = test.run([str(recipe_path), summary["checkpoint"], "--device", "cpu",
                         "--set", "test.on_bad_video=skip", "--dump", str(tmp_path / "r.pkl")])
    assert metrics["num_videos"] == 4 + len(odd)
    assert {_name(r) for r in metrics["skipped"]} == set(bad.values())
    assert metrics["num_skipped"] == len(bad)


# --------------------------------------------------------------------------- faults


def test_sigterm_mid_epoch_saves_and_resume_finishes(tmp_path):
    root = make_videos(tmp_path / "data", num_videos=8)
    recipe_path = train_recipe(root, epochs=2, batch_size=1)
    work = tmp_path / "wd"
    cmd = [sys.executable, "-m", "tsn_dali.train", str(recipe_path), "--device", "cpu",
           "--work-dir", str(work), "--seed", "0"]
    proc = subprocess.Popen(cmd, cwd=PROJECT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while time.time() < deadline:  # wait for the first logged step of epoch 1
        logs = list(work.glob("*.jsonl"))
        if logs and any(json.loads(l).get("kind") == "train"
                        for l in logs[0].read_text().splitlines() if l.strip()):
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, errs = proc.communicate(timeout=240)
    assert proc.returncode == 143, errs
    ckpt_path = work / "latest.pth"
    assert ckpt_path.is_file()
    import torch
    ckpt = torch.load(ckpt_path, weights_only=True)
    assert ckpt["epoch"] == 0 and ckpt["loader"] is not None  # a mid-epoch, resumable checkpoint
    assert "--resume" in out + errs

    done = subprocess.run(cmd + ["--resume"], cwd=PROJECT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    final = torch.load(ckpt_path, weights_only=True)
    assert final["epoch"] == 2 and final["loader"] is None


def test_dali_cpu_loader_keeps_threads_and_memory_steady_over_epochs(tmp_path):
    """DALI pipelines are reused across epochs and torn down on close: no thread leak,
    resident memory flat once warm."""
    pytest.importorskip("nvidia.dali")
    root = make_videos(tmp_path / "data", num_videos=6)
    recipe = load_recipe(train_recipe(root), ["loader.executor=dali-cpu"])

    def rss_mb():
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def threads_now():  # tqdm's process-wide monitor thread is not ours to count
        return sum(1 for t in threading.enumerate() if t.name != "tqdm_monitor")

    def pool_threads():  # the frames path's decode pool: started as work comes, at most its size
        return sum(1 for t in threading.enumerate() if t.name.startswith("tsn_dali-decode"))

    before = threads_now()
    loader = build_loader(recipe, "train", progress=False)
    assert loader.executor_name == "dali-cpu"
    threads, rss = [], []
    for epoch in range(8):
        loader.set_epoch(epoch)
        for _ in loader:
            pass
        threads.append(threads_now() - pool_threads())
        assert pool_threads() <= recipe.loader.decode_workers
        rss.append(rss_mb())
    loader.close()
    assert len(set(threads[1:])) == 1, threads  # steady after the first epoch (the bounded pool aside)
    assert rss[-1] - rss[2] < 40, rss  # MB; a leak of one batch per step would show here
    deadline = time.time() + 5
    while threads_now() > before and time.time() < deadline:
        time.sleep(0.05)
    assert threads_now() <= before


def test_one_line_is_the_first_non_empty_line_cut_short_or_the_class_name():
    """What decode errors, inspect and a failed validation say of an exception they did not make."""
    from tsn_dali.errors import one_line

    assert one_line(RuntimeError("\n  [decoder]  \ncontext\n")) == "[decoder]"
    assert one_line(RuntimeError("")) == one_line(RuntimeError(" \n ")) == "RuntimeError"
    assert one_line(ValueError("x" * 500)) == "x" * 300 and one_line(ValueError("x" * 50), limit=10) == "x" * 10
    assert one_line(OSError("\nno such file\nmore"), named=True) == "OSError: no such file"
    assert one_line(KeyError(), named=True) == "KeyError"  # not "KeyError: " (or an IndexError)

"""A real two-process torchrun (gloo, CPU): train, then test with --dump; every video of the
test split is scored exactly once over both ranks."""
from __future__ import annotations

import os
import pickle
import re
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
from helpers.tiny_train import make_videos, train_recipe  # noqa: E402

import tsn_dali.train as train_mod  # noqa: E402
from tsn_dali.engine.checkpoint import load_checkpoint  # noqa: E402

NUM_VIDEOS = 7  # test: 4 + 3 over two ranks, batches of 2 -> rank 1's last batch padded


def _torchrun(args, cwd, timeout=240):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(HERE.parent))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, cwd=cwd)


def test_two_process_train_then_test(tmp_path):
    root = make_videos(tmp_path / "data", num_videos=NUM_VIDEOS)
    recipe = train_recipe(root, epochs=2)
    work = tmp_path / "work"
    train = ["-m", "tsn_dali.train", str(recipe), "--work-dir", str(work), "--device", "cpu",
             "--seed", "0", "--auto-scale-lr", "--no-progress"]
    run = _torchrun(train + ["--max-steps", "3"], tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    ckpt = load_checkpoint(work / "latest.pth")
    # 7 videos padded to 8, 4 per rank: 2 steps of 2 per rank; step 3 = epoch 2, batch 1
    assert ckpt["world_size"] == 2 and ckpt["step"] == 3 and ckpt["epoch"] == 1
    assert ckpt["loader"]["batches_done"] == 1 and ckpt["loader"]["epoch"] == 1
    assert ckpt["history"][0]["lr"] == pytest.approx(0.01 * 2 * 2 / 256)  # --auto-scale-lr
    assert 0 <= ckpt["history"][0]["top1"] <= 100
    assert len(list(work.glob("train_*.jsonl"))) == 1  # rank 0 alone writes the log

    # Continue on ONE process: 4 samples done = 2 of its 3 batches of 2; lr rescaled to 1 x 2.
    summary = train_mod.run(train[2:] + ["--resume"])
    assert summary["world_size"] == 1 and summary["steps"] == 4
    ckpt = load_checkpoint(work / "latest.pth")
    assert ckpt["world_size"] == 1 and ckpt["epoch"] == 2 and ckpt["step"] == 4
    assert ckpt["history"][1]["lr"] == pytest.approx(0.01 * 2 / 256 * 0.1)  # milestone [1]

    dump = tmp_path / "result.pkl"
    run = _torchrun(["-m", "tsn_dali.test", str(recipe), str(work / "latest.pth"), "--dump",
                     str(dump), "--device", "cpu", "--no-progress"], tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    assert f"{NUM_VIDEOS} videos x 75 views on 2 process(es)" in run.stdout
    with open(dump, "rb") as f:
        records = pickle.load(f)
    assert len(records) == NUM_VIDEOS  # each video once, padding dropped
    assert [int(r["gt_label"][0]) for r in records] == [i % 3 for i in range(NUM_VIDEOS)]
    hits = sum(int(r["pred_label"][0]) == int(r["gt_label"][0]) for r in records)
    printed = re.search(r"^top1\s+([\d.]+)", run.stdout, re.M)
    assert printed and float(printed.group(1)) == pytest.approx(100.0 * hits / NUM_VIDEOS, abs=0.005)

"""Two nodes of one process each on localhost: two torchrun launchers side by side meeting at
a c10d rendezvous on 127.0.0.1 (gloo, CPU), as on two machines. The loader's shards are
disjoint with equal batch counts; train runs and stops mid-epoch; a single process resumes
its checkpoint at the right batch; test scores each video exactly once."""
from __future__ import annotations

import json
import os
import pickle
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).resolve().parent
from helpers.tiny_train import make_videos, train_recipe  # noqa: E402

import tsn_dali.train as train_mod  # noqa: E402
from tsn_dali.engine.checkpoint import load_checkpoint  # noqa: E402

NUM_VIDEOS = 7  # over 2 ranks: train 7 -> padded to 8, 2 batches of 2 each; test 4 + 3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def two_nodes(args, cwd: Path, name: str, timeout=300):
    """``torchrun --nnodes 2 --nproc-per-node 1`` twice, side by side (node 0 and node 1);
    returns [(returncode, output)] per launcher. Outputs go to files: a launcher blocked on a
    full pipe would stall its peer's collectives."""
    port = _free_port()
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(HERE.parent))
    procs = []
    for node in range(2):
        log = open(cwd / f"{name}_node{node}.log", "w")
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
               "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}",
               "--rdzv-id", f"{name}-{port}", *map(str, args)]
        procs.append((subprocess.Popen(cmd, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT), log))
    out = []
    try:
        for proc, log in procs:
            proc.wait(timeout=timeout)
    finally:
        for proc, log in procs:
            if proc.poll() is None:
                proc.kill()
            log.close()
            out.append((proc.returncode, Path(log.name).read_text()))
    return out


@pytest.mark.slow
def test_two_nodes_train_resume_on_one_node_and_test(tmp_path):
    root = make_videos(tmp_path / "data", num_videos=NUM_VIDEOS)
    recipe = train_recipe(root, epochs=2)

    # the loader on 2 nodes: disjoint train shards, equal batch counts, val once each
    shards = tmp_path / "shards"
    shards.mkdir()
    runs = two_nodes([HERE / "helpers" / "torchrun_loader.py", recipe, shards], tmp_path, "loader")
    assert all(code == 0 for code, _ in runs), runs[0][1][-3000:] + runs[1][1][-3000:]
    ranks = [json.loads((shards / f"rank{r}.json").read_text()) for r in range(2)]
    assert {r["world_size"] for r in ranks} == {2}
    assert sorted(r["group_rank"] for r in ranks) == [0, 1] and [r["local_rank"] for r in ranks] == [0, 0]
    train = [r["train"] for r in ranks]
    assert [t["len"] for t in train] == [len(t["batches"]) for t in train] == [2, 2]
    padded = np.resize(np.random.default_rng([0, 0]).permutation(NUM_VIDEOS), 8)
    for r, t in enumerate(train):
        assert sum(t["batches"], []) == padded[r::2].tolist()
    used = sum(train[0]["batches"], []) + sum(train[1]["batches"], [])
    assert len(used) - len(set(used)) == 1 and set(used) == set(range(NUM_VIDEOS))  # one pad repeat
    val = [r["val"] for r in ranks]
    assert [v["len"] for v in val] == [len(v["batches"]) for v in val] == [2, 2]
    assert sorted(s for v in val for b in v["batches"] for s in b if s >= 0) == list(range(NUM_VIDEOS))

    # train on 2 nodes, stopped mid-epoch 2 (step 3 = epoch 2, batch 1 on both ranks)
    work = tmp_path / "work"
    args = ["-m", "tsn_dali.train", recipe, "--work-dir", work, "--device", "cpu", "--seed", "0",
            "--no-progress"]
    runs = two_nodes(args + ["--max-steps", "3"], tmp_path, "train")
    assert all(code == 0 for code, _ in runs), runs[0][1][-3000:] + runs[1][1][-3000:]
    assert sum("on 2 x cpu, 2 steps/epoch of 4 clips" in text for _, text in runs) == 1  # rank 0
    ckpt = load_checkpoint(work / "latest.pth")
    assert ckpt["world_size"] == 2 and ckpt["step"] == 3 and ckpt["epoch"] == 1
    assert ckpt["loader"] == dict(ckpt["loader"], epoch=1, batches_done=1, world_size=2)
    assert len(ckpt["history"]) == 1 and 0 <= ckpt["history"][0]["top1"] <= 100

    # resume on ONE node, one process: 4 samples done = 2 of its 3 batches; 1 step left
    summary = train_mod.run([str(a) for a in args[2:]] + ["--resume"])
    assert summary["world_size"] == 1 and summary["steps"] == 4 and summary["stopped"] is None
    ckpt = load_checkpoint(work / "latest.pth")
    assert ckpt["world_size"] == 1 and ckpt["epoch"] == 2 and [h["epoch"] for h in ckpt["history"]] == [1, 2]

    # test on 2 nodes: every video scored exactly once over both
    dump = tmp_path / "result.pkl"
    runs = two_nodes(["-m", "tsn_dali.test", recipe, work / "latest.pth", "--dump", dump,
                      "--device", "cpu", "--no-progress"], tmp_path, "test")
    assert all(code == 0 for code, _ in runs), runs[0][1][-3000:] + runs[1][1][-3000:]
    assert sum(f"{NUM_VIDEOS} videos x 75 views on 2 process(es)" in text for _, text in runs) == 1
    with open(dump, "rb") as f:
        records = pickle.load(f)
    assert [int(r["gt_label"][0]) for r in records] == [i % 3 for i in range(NUM_VIDEOS)]

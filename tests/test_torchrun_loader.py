"""A real two-process torchrun (gloo, CPU) over the loader: disjoint shards, equal batch counts."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
from helpers.tiny_clips import make_dataset, recipe_yaml  # noqa: E402


def test_two_ranks_under_torchrun(tmp_path):
    root = make_dataset(tmp_path / "data", 9)  # 9 videos: uneven over 2 ranks
    recipe = recipe_yaml(root, batch_size=2)
    out = tmp_path / "out"
    out.mkdir()
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(HERE.parent))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(HERE / "helpers" / "torchrun_loader.py"), str(recipe), str(out)]
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]
    assert [r["rank"] for r in ranks] == [0, 1] and {r["world_size"] for r in ranks} == {2}

    # train: 9 videos -> padded to 10, 5 per rank, 2 full batches of 2 each
    train = [r["train"] for r in ranks]
    assert [t["len"] for t in train] == [2, 2] and [len(t["batches"]) for t in train] == [2, 2]
    perm = np.random.default_rng([0, 0]).permutation(9)
    padded = np.resize(perm, 10)
    for r, t in enumerate(train):
        assert sum(t["batches"], []) == padded[r::2][:4].tolist()
    used = sum(train[0]["batches"], []) + sum(train[1]["batches"], [])
    assert len(used) - len(set(used)) <= 1  # only the one padding entry may repeat

    # val: every video exactly once over both ranks, equal batch counts
    val = [r["val"] for r in ranks]
    assert val[0]["len"] == val[1]["len"] == 3 and [len(v["batches"]) for v in val] == [3, 3]
    seen = [s for v in val for b in v["batches"] for s in b if s >= 0]
    assert sorted(seen) == list(range(9))
    assert set(sum(val[0]["batches"], [])) & set(sum(val[1]["batches"], [])) <= {-1}

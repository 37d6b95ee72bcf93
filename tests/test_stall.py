"""No silent stall: a render that gives no batch for ``loader.stall_timeout`` seconds raises
LoaderStalled naming the batch's videos; train saves a resumable latest.pth and exits 75,
test exits 75; nothing waits on the hung render (a blocking fake executor)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
from helpers.stall import BlockingExecutor  # noqa: E402
from helpers.tiny_clips import make_dataset, recipe_yaml  # noqa: E402
from helpers.tiny_train import make_videos, train_recipe  # noqa: E402

from tsn_dali.config import RecipeError, load_recipe  # noqa: E402
from tsn_dali.data import LoaderStalled, build_loader, train_order  # noqa: E402
from tsn_dali.data.render.executors import ReferenceExecutor  # noqa: E402
from tsn_dali.data.render.loader import ClipLoader  # noqa: E402
from tsn_dali.engine.checkpoint import load_checkpoint  # noqa: E402
from tsn_dali.engine.signals import EXIT_STALLED  # noqa: E402

import tsn_dali.train as train_mod  # noqa: E402

# --------------------------------------------------------------------------- the loader


@pytest.fixture(scope="module")
def recipe(tmp_path_factory):
    root = make_dataset(tmp_path_factory.mktemp("stall_clips"), 6)
    return load_recipe(recipe_yaml(root, batch_size=2, extra="  stall_timeout: 0.5\n"))


def _loader(recipe, executor, split="train"):
    """A ClipLoader of ``split`` that owns ``executor`` (so that close() closes it)."""
    ref = build_loader(recipe, split, executor=executor, progress=False)
    return ClipLoader(ref.records, ref.index, ref.planner, executor, batch_size=2,
                      train=split == "train", prefetch=1, stall_timeout=recipe.loader.stall_timeout,
                      owns_executor=True, eval_videos_per_run=2)  # one batch per executor run


def test_stall_names_the_batch_and_close_does_not_wait(recipe):
    executor = BlockingExecutor(ReferenceExecutor(workers=0), block_at=2)
    loader = _loader(recipe, executor)
    loader.stall_timeout = 120.0  # the first batch: however slow a loaded machine is
    it = iter(loader)
    first = next(it)
    loader.stall_timeout = 0.5  # read at each wait
    t0 = time.monotonic()
    with pytest.raises(LoaderStalled) as err:
        next(it)
    waited = time.monotonic() - t0
    assert 0.5 <= waited < 30  # at the timeout, not at the render's end (it never ends)
    # the second batch of epoch 0's order: named in one line, as the render thread saw it
    second = train_order(len(loader.records), 2, 0, 0)[2:4]
    paths = [loader.records[s].path for s in second]
    assert executor.paths == paths and err.value.paths == paths
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("loader stalled: no batch for 0.5 s (loader.stall_timeout)")
    assert "train epoch 1, batch 2/3" in msg and msg.endswith(", ".join(paths))
    assert loader.state_dict()["batches_done"] == 1 and first.samples.tolist() == \
        train_order(len(loader.records), 2, 0, 0)[:2].tolist()

    # close(): the executor's lock is held by the hung render; close is time-boxed, not stuck
    t0 = time.monotonic()
    loader.close()
    assert time.monotonic() - t0 < 30
    hung = [t for t in threading.enumerate() if t.name == "tsn_dali-prefetch" and t.is_alive()]
    assert hung and all(t.daemon for t in hung)
    executor.release.set()  # the render returns; its thread then stops (the loader was stopped)
    for t in hung:
        t.join(10)
        assert not t.is_alive()


def test_slow_renders_within_the_timeout_are_not_a_stall(recipe):
    """The timeout is per batch: 3 renders of 2+ s each pass a 5 s timeout."""
    class Slow(ReferenceExecutor):
        def run(self, prepared):
            time.sleep(2.0)
            return super().run(prepared)

    loader = _loader(recipe, Slow(workers=0), "val")
    loader.stall_timeout = 5.0
    t0 = time.monotonic()
    assert sum(1 for _ in loader) == len(loader) == 3
    assert time.monotonic() - t0 > loader.stall_timeout
    loader.close()


def test_stall_timeout_field():
    from tsn_dali.config import PROJECT_ROOT

    k400 = PROJECT_ROOT / "recipes" / "k400_r50.yaml"
    assert load_recipe(k400).loader.stall_timeout == 600.0
    assert load_recipe(k400, ["loader.stall_timeout=null"]).loader.stall_timeout is None
    with pytest.raises(RecipeError, match=r"loader.stall_timeout: expected seconds >= 0"):
        load_recipe(k400, ["loader.stall_timeout=-1"])


# --------------------------------------------------------------------------- train and test

STALL = 5  # seconds: long enough for the renders that do not block, on a loaded machine


def _run(args, cwd, timeout=240):
    """``tests/helpers/stall.py`` in a subprocess: the entry point with a blocking executor.
    A run that did not end by itself fails here on the timeout instead of hanging the suite."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(HERE.parent))
    cmd = [sys.executable, str(HERE / "helpers" / "stall.py"), *map(str, args)]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, cwd=cwd)


def _args(recipe, work, *extra):
    return [str(recipe), "--work-dir", str(work), "--device", "cpu", "--seed", "0",
            "--deterministic", "--no-progress", "--set", f"loader.stall_timeout={STALL}", *extra]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, one_thread):
    """4 videos, batch 2, 2 epochs (2 steps each) and the uninterrupted run's checkpoint. One
    intra-op thread here as in the subprocesses (OMP_NUM_THREADS=1): bitwise comparable."""
    root = make_videos(tmp_path_factory.mktemp("stall_train"), num_videos=4)
    recipe = train_recipe(root, epochs=2)
    summary = train_mod.run(_args(recipe, root / "uninterrupted"))
    return root, recipe, load_checkpoint(root / "uninterrupted" / "latest.pth"), summary


# render calls in order: train epoch 1 batches 1-2, val batches 1-2, train epoch 2 ...
@pytest.mark.parametrize("block_at, split, batch, done, step", [(2, "train", 2, 1, 1),
                                                                (3, "val", 1, 2, 2)])
def test_train_stall_saves_exits_75_and_resumes(tiny, tmp_path, block_at, split, batch, done, step):
    root, recipe, reference, _ = tiny
    work = tmp_path / "w"
    run = _run([block_at, "train", *_args(recipe, work)], tmp_path)
    assert run.returncode == EXIT_STALLED, run.stderr[-3000:]
    line = run.stderr.strip().splitlines()[-1]
    where = "train epoch 1, batch 2/2" if split == "train" else "val batch 1/2"
    if split == "train":
        named = [root / "videos" / f"v{s:03d}.mp4" for s in train_order(4, 2, 0, 0)[2:4]]
    else:  # val renders its 4 videos (2 batches) in one executor run (loader.eval_videos_per_run)
        named = [root / "videos" / f"v{s:03d}.mp4" for s in range(4)]
    assert line.startswith(f"error: loader stalled: no batch for {STALL} s (loader.stall_timeout) at {where}, "
                           f"rendering {len(named)} video(s): "), line
    assert f"video(s): {', '.join(map(str, named))}; saved {work / 'latest.pth'}; " in line
    assert line.endswith(f"--work-dir {work} --resume")

    mid = load_checkpoint(work / "latest.pth")
    # at the last finished batch of epoch 1 (a val stall: all of its batches, before validation)
    assert mid["epoch"] == 0 and mid["step"] == step and mid["history"] == []
    assert mid["loader"] == dict(mid["loader"], epoch=0, batches_done=done)
    logged = [json.loads(x) for p in work.glob("train_*.jsonl") for x in p.read_text().splitlines()]
    assert [(r["split"], r["batch"]) for r in logged if r["kind"] == "stalled"] == [(split, batch)]

    # resumed with a working executor: the run ends as the uninterrupted one, bitwise
    summary = train_mod.run(_args(recipe, work, "--resume"))
    assert summary["stopped"] is None and [h["epoch"] for h in summary["history"]] == [1, 2]
    ckpt = load_checkpoint(work / "latest.pth")
    assert ckpt["step"] == reference["step"] == 4
    for k, v in reference["model"].items():
        assert (ckpt["model"][k] == v).all(), k
    assert [h["loss"] for h in ckpt["history"]] == [h["loss"] for h in reference["history"]]
    assert [h["top1"] for h in ckpt["history"]] == [h["top1"] for h in reference["history"]]


def test_test_stall_exits_75_with_one_line(tiny, tmp_path):
    root, recipe, _, _ = tiny
    run = _run([1, "test", recipe, root / "uninterrupted" / "latest.pth", "--device", "cpu",
                "--no-progress", "--set", f"loader.stall_timeout={STALL}"], tmp_path)
    assert run.returncode == EXIT_STALLED, run.stderr[-3000:]
    lines = run.stderr.strip().splitlines()
    named = ", ".join(str(root / "videos" / f"v{s:03d}.mp4") for s in range(4))  # one run: 2 batches
    assert lines[-1] == (f"error: loader stalled: no batch for {STALL} s (loader.stall_timeout) at test "
                         f"batch 1/2, rendering 4 video(s): {named}")
    assert "Traceback" not in run.stderr


@pytest.mark.slow
def test_one_rank_stalls_under_torchrun_and_one_process_resumes(tmp_path, one_thread):
    """Rank 1's second train batch hangs while rank 0 waits in DDP's all-reduce: rank 1 saves
    latest.pth itself (no collective), exits 75, torchrun stops rank 0; one process resumes."""
    root = make_videos(tmp_path / "data", num_videos=8)  # 4 per rank: 2 steps per epoch
    recipe = train_recipe(root, epochs=2)
    work = tmp_path / "w"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(HERE.parent), STALL_RANK="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(HERE / "helpers" / "stall.py"), "2", "train", *_args(recipe, work)]
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert run.returncode != 0
    assert "exitcode  : 75" in run.stderr, run.stderr[-3000:]
    line = next(x for x in run.stderr.splitlines() if x.startswith("error: loader stalled"))
    assert "at train epoch 1, batch 2/2, rendering 2 video(s): " in line
    assert f"; saved {work / 'latest.pth'}; " in line
    mid = load_checkpoint(work / "latest.pth")
    assert mid["world_size"] == 2 and mid["step"] == 1 and mid["epoch"] == 0
    assert mid["loader"] == dict(mid["loader"], epoch=0, batches_done=1, world_size=2)

    # one process: 1 batch x 2 clips x 2 ranks = 4 samples done = 2 of its 4 batches
    summary = train_mod.run(_args(recipe, work, "--resume"))
    assert summary["world_size"] == 1 and summary["steps"] == 1 + 2 + 4
    assert [h["epoch"] for h in summary["history"]] == [1, 2]

"""Two-stage background rendering (tsn_dali.data.render.prefetch) and the loader built on it:
order, overlap of host work with decoding, errors, and the same batches as rendering in
the caller, bad videos included."""
from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest
import torch

from helpers.tiny_clips import make_dataset, recipe_yaml
from tsn_dali.config import load_recipe
from tsn_dali.data import VideoDecodeError, build_loader
from tsn_dali.data.render.executors import ReferenceExecutor
from tsn_dali.data.render.prefetch import Prefetcher


def test_results_come_in_order_and_prepare_runs_ahead_of_finish():
    events = []
    lock = threading.Lock()

    def prepare(i):
        with lock:
            events.append(("prepare", i, time.perf_counter()))
        time.sleep(0.02 * (3 - i % 3))  # uneven host work
        return i * 10

    def finish(i, prepared, error):
        assert error is None and prepared == i * 10
        with lock:
            events.append(("finish start", i, time.perf_counter()))
        time.sleep(0.03)  # the "decode"
        return -i

    pf = Prefetcher(range(8), prepare, finish, depth=2)
    got = []
    while True:
        try:
            got.append(pf.get(timeout=5))
        except StopIteration:
            break
    pf.close()
    assert got == [-i for i in range(8)]
    started = {i: t for kind, i, t in events if kind == "prepare"}
    finishing = {i: t for kind, i, t in events if kind == "finish start"}
    # while item i is being finished, the host work of i + 1 (and i + 2) already started
    assert all(started[i + 1] < finishing[i] + 0.03 for i in range(7))


def test_errors_reach_finish_and_the_consumer():
    def prepare(i):
        if i == 1:
            raise VideoDecodeError("v1.mp4", "broken")
        return i

    seen = []

    def finish(i, prepared, error):
        seen.append((i, prepared, type(error).__name__ if error else None))
        if i == 2:
            raise ValueError("finish failed")
        return i

    pf = Prefetcher(range(4), prepare, finish, depth=2)
    assert pf.get(timeout=5) == 0 and pf.get(timeout=5) == 1
    with pytest.raises(ValueError, match="finish failed"):
        pf.get(timeout=5)
    pf.close()
    assert seen[:3] == [(0, 0, None), (1, None, "VideoDecodeError"), (2, 2, None)]


def test_close_does_not_wait_for_a_finish_that_never_returns():
    release = threading.Event()
    pf = Prefetcher(range(3), lambda i: i, lambda i, p, e: release.wait() and i, depth=1)
    t0 = time.perf_counter()
    pf.close(timeout=0.3)
    assert time.perf_counter() - t0 < 2
    release.set()


# --------------------------------------------------------------------------- the loader


def _batches(loader):
    return [(b.samples.tolist(), b.labels.tolist(), b.clips.clone()) for b in loader]


def _same(a, b):
    assert [x[:2] for x in a] == [x[:2] for x in b]
    assert all(torch.equal(x[2], y[2]) for x, y in zip(a, b))


@pytest.mark.parametrize("split,policy", [("train", "data.on_bad_video=skip"), ("test", "test.on_bad_video=skip")])
def test_background_rendering_gives_the_batches_of_rendering_in_the_caller(tmp_path, split, policy):
    """Same batches, same replacements/skips, with a video that fails mid-epoch; val/test
    render several batches per executor run."""
    root = make_dataset(tmp_path, 9)
    path = recipe_yaml(root, batch_size=2, test_batch_size=2)
    runs = {}
    for prefetch in (0, 2):
        recipe = load_recipe(path, overrides=[policy, f"loader.prefetch={prefetch}",
                                              "loader.eval_videos_per_run=4"])
        loader = build_loader(recipe, split, progress=False, executor=ReferenceExecutor())
        if split == "test":
            assert loader.batches_per_run == 2
        victim = loader.records[int(loader.batch_samples(0)[1][0])].path
        moved = victim + ".away"
        os.rename(victim, moved)  # fails only when decoded, in the second batch
        try:
            runs[prefetch] = (_batches(loader), loader.stats["replaced"], loader.stats["skipped"])
        finally:
            os.rename(moved, victim)
    _same(runs[0][0], runs[2][0])
    assert runs[0][1:] == runs[2][1:] and (runs[0][1] or runs[0][2])


def test_eval_groups_are_handed_out_batch_by_batch(tmp_path):
    root = make_dataset(tmp_path, 5)
    recipe = load_recipe(recipe_yaml(root, test_batch_size=2), overrides=["loader.eval_videos_per_run=8"])
    loader = build_loader(recipe, "test", progress=False)
    assert loader.batches_per_run == 4 and len(loader) == 3
    batches = list(loader)
    assert [b.samples.tolist() for b in batches] == [[0, 1], [2, 3], [4, -1]]
    assert loader.state_dict()["batches_done"] == 3
    it = iter(loader)
    next(it)
    assert loader.state_dict()["batches_done"] == 1  # counted per batch, not per run
    it.close()
    loader.close()


def test_dali_executor_fast_path_prepares_ahead(tmp_path):
    """dali-cpu through the loader: prepare (reading, slicing) runs for later batches while
    the current one decodes; the batches equal rendering in the caller."""
    pytest.importorskip("nvidia.dali")
    from tsn_dali.data.render.executors.dali import DaliExecutor

    root = make_dataset(tmp_path, 6, codec="vp9")
    path = recipe_yaml(root, batch_size=2)
    out = {}
    for prefetch in (0, 2):
        ex = DaliExecutor("cpu", num_threads=1, decode_workers=2)
        loader = build_loader(load_recipe(path, overrides=[f"loader.prefetch={prefetch}"]), "train",
                              progress=False, executor=ex)
        out[prefetch] = _batches(loader)
        assert ex.stats["decoder_clips"] == 6 and ex.stats["frames_path_clips"] == 0
        loader.close()
        ex.close()
    _same(out[0], out[2])
    assert np.isfinite([x[2].float().mean().item() for x in out[2]]).all()

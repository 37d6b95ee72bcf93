"""ClipLoader: shards, padding, epochs, resume, bad videos, dtype/layout, import isolation."""
from __future__ import annotations

import math
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers.tiny_clips import make_dataset, recipe_yaml  # noqa: E402

from tsn_dali.config import load_recipe  # noqa: E402
from tsn_dali.data import VideoDecodeError, build_loader, eval_order, train_order  # noqa: E402
from tsn_dali.data.errors import DatasetError  # noqa: E402
from tsn_dali.data.render.executors import ReferenceExecutor  # noqa: E402

PROJECT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("clips"), 7)


@pytest.fixture(scope="module")
def recipe(dataset):
    return load_recipe(recipe_yaml(dataset, batch_size=2, test_batch_size=2))


class CountingExecutor(ReferenceExecutor):
    """The reference executor, counting the plans it prepares (render prepares too)."""

    def __init__(self):
        super().__init__()
        self.rendered = []

    def prepare(self, plans, **kw):
        self.rendered += [p.sample for p in plans]
        return super().prepare(plans, **kw)


def collect(loader):
    return [b.samples.tolist() for b in loader]


# --------------------------------------------------------------------------- order rules


@pytest.mark.parametrize("n", [7, 10, 11, 12])
@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_train_order_shards(n, world_size):
    bs = 2
    shards = [train_order(n, bs, epoch=0, seed=0, rank=r, world_size=world_size) for r in range(world_size)]
    per_rank = math.ceil(n / world_size)
    assert {len(s) for s in shards} == {(per_rank // bs) * bs}
    # Rank r holds positions r::world_size of the padded permutation: disjoint positions, so
    # a sample repeats across ranks only through the padding (at most world_size - 1 entries).
    perm = np.random.default_rng([0, 0]).permutation(n)
    padded = np.resize(perm, per_rank * world_size)
    for r, s in enumerate(shards):
        assert s.tolist() == padded[r::world_size][: len(s)].tolist()
    used = np.concatenate(shards)
    assert len(used) - len(set(used.tolist())) <= per_rank * world_size - n
    if n % world_size == 0:
        assert len(set(used.tolist())) == len(used)


@pytest.mark.parametrize("n", [7, 10, 11])
@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_eval_order_counts_each_video_once(n, world_size):
    bs = 2
    shards = [eval_order(n, bs, r, world_size) for r in range(world_size)]
    assert len({len(s) for s in shards}) == 1 and len(shards[0]) % bs == 0
    real = sorted(int(i) for s in shards for i in s if i >= 0)
    assert real == list(range(n))
    for s in shards:  # padding only at the end
        pad = np.flatnonzero(s < 0)
        assert pad.size == 0 or pad[0] == len(s) - pad.size


# --------------------------------------------------------------------------- real loaders


@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_loaders_equal_batches_disjoint_val_once(recipe, world_size):
    train, val = [], []
    for rank in range(world_size):
        tl = build_loader(recipe, "train", rank=rank, world_size=world_size, progress=False)
        vl = build_loader(recipe, "val", rank=rank, world_size=world_size, progress=False)
        train.append(collect(tl))
        val.append(collect(vl))
        assert len(train[-1]) == len(tl) and len(val[-1]) == len(vl)
        for b in tl:
            assert b.clips.shape == (2, 3, 3, 56, 56)
            break
    assert len({len(t) for t in train}) == 1 and len({len(v) for v in val}) == 1
    assert len(train[0]) == math.ceil(7 / world_size) // 2
    flat_train = [s for t in train for batch in t for s in batch]
    assert len(flat_train) - len(set(flat_train)) <= math.ceil(7 / world_size) * world_size - 7
    flat_val = [s for v in val for batch in v for s in batch if s >= 0]
    assert sorted(flat_val) == list(range(7))


def test_val_padding_slots(recipe):
    vl = build_loader(recipe, "val", rank=1, world_size=3, progress=False)  # samples 1, 4 then padding
    batches = list(vl)
    assert [b.samples.tolist() for b in batches] == [[1, 4], [-1, -1]]
    assert batches[1].labels.tolist() == [-1, -1]
    assert batches[1].clips.shape == batches[0].clips.shape and not batches[1].clips.any()
    assert batches[0].labels.tolist() == [1, 4]  # label = i % 5


def test_set_epoch_changes_train_order(recipe):
    tl = build_loader(recipe, "train", progress=False, seed=3)
    first = tl.batch_samples()
    tl.set_epoch(1)
    second = tl.batch_samples()
    assert [b.tolist() for b in first] != [b.tolist() for b in second]
    tl.set_epoch(0)
    assert [b.tolist() for b in tl.batch_samples()] == [b.tolist() for b in first]
    assert collect(tl) == [b.tolist() for b in first]


def test_resume_continues_at_the_same_batch(recipe):
    full = build_loader(recipe, "train", progress=False, seed=1)
    full.set_epoch(2)
    expected = list(full)
    assert len(expected) == 3

    part = build_loader(recipe, "train", progress=False, seed=1)
    part.set_epoch(2)
    it = iter(part)
    next(it)
    state = part.state_dict()
    assert state["epoch"] == 2 and state["batches_done"] == 1
    it.close()
    part.close()

    counting = CountingExecutor()
    resumed = build_loader(recipe, "train", progress=False, seed=1, executor=counting)
    resumed.load_state_dict(state)
    resumed.set_epoch(2)  # a trainer's loop calls this again; the resume point stays
    rest = list(resumed)
    assert len(rest) == 2
    for got, want in zip(rest, expected[1:]):
        assert torch.equal(got.samples, want.samples) and torch.equal(got.clips, want.clips)
        assert torch.equal(got.labels, want.labels)
    done = set(expected[0].samples.tolist()) - set(s for b in expected[1:] for s in b.samples.tolist())
    assert counting.rendered and not done & set(counting.rendered)  # the finished batch was not rendered again
    assert resumed.state_dict()["batches_done"] == 3
    assert len(list(resumed)) == 3  # a later pass over the same epoch starts at batch 0


def test_bad_video_replaced_at_train_time(tmp_path):
    root = make_dataset(tmp_path, 6)
    recipe = load_recipe(recipe_yaml(root, batch_size=2))
    tl = build_loader(recipe, "train", progress=False)
    strict = build_loader(load_recipe(recipe_yaml(root, batch_size=2), overrides=["data.on_bad_video=error"]),
                          "train", progress=False)
    order = tl.batch_samples(0)
    victim = int(order[0][0])
    perm = np.random.default_rng([0, 0]).permutation(6)
    after = [int(perm[(int(np.flatnonzero(perm == victim)[0]) + k) % 6]) for k in (1, 2)]
    assert after[0] == int(order[0][1])  # the next in the epoch is in this batch already:
    replacement = after[1]  # the one after it replaces the victim (no video twice in a batch)
    os.unlink(tl.records[victim].path)  # after indexing: fails only when decoded
    batches = list(tl)
    assert batches[0].samples.tolist() == [replacement, int(order[0][1])]
    assert batches[0].labels.tolist() == [replacement % 5, int(order[0][1]) % 5]
    assert [r["path"] for r in tl.stats["replaced"]] == [tl.records[victim].path]
    assert tl.stats["replaced"][0]["replacement"] == replacement
    assert "file not found" in tl.stats["replaced"][0]["reason"]
    with pytest.raises(VideoDecodeError, match="file not found"):
        list(strict)
    # Listed in the annotation file but missing at start-up: left out (and reported) up front.
    again = build_loader(recipe, "train", progress=False)
    assert len(again.records) == 5 and "not found" in again.stats["dropped"][0]["reason"]


def test_a_replacement_repeats_a_video_in_a_batch_only_when_nothing_else_is_left(tmp_path):
    root = make_dataset(tmp_path, 2)
    tl = build_loader(load_recipe(recipe_yaml(root, batch_size=2)), "train", progress=False)
    (batch,) = tl.batch_samples(0)
    victim, other = int(batch[0]), int(batch[1])
    os.unlink(tl.records[victim].path)  # the other video is the only usable one left
    (got,) = list(tl)
    assert got.samples.tolist() == [other, other] and tl.stats["replaced"][0]["replacement"] == other


def test_bad_video_at_test_time(tmp_path):
    root = make_dataset(tmp_path, 5)
    path = recipe_yaml(root, test_batch_size=2)
    strict = build_loader(load_recipe(path), "test", progress=False)  # test.on_bad_video: error
    lenient = build_loader(load_recipe(path, overrides=["test.on_bad_video=skip"]), "test", progress=False)
    os.unlink(strict.records[2].path)
    with pytest.raises(VideoDecodeError, match="v002.mp4: file not found"):
        list(strict)
    batches = list(lenient)
    assert [b.samples.tolist() for b in batches] == [[0, 1], [-1, 3], [4, -1]]
    assert batches[1].labels.tolist() == [-1, 3] and not batches[1].clips[0].any()
    assert batches[1].clips[1].any()
    assert [s["path"] for s in lenient.stats["skipped"]] == [lenient.records[2].path]


def test_bad_videos_in_the_index_are_dropped_or_raise(tmp_path):
    root = make_dataset(tmp_path, 5)
    (root / "videos" / "v001.mp4").write_bytes(b"\x00" * 2000)  # not a video
    path = recipe_yaml(root, batch_size=2)
    tl = build_loader(load_recipe(path), "train", progress=False)
    assert len(tl.records) == 4 and all("v001" not in r.path for r in tl.records)
    assert [d["path"] for d in tl.stats["dropped"]] == [str(root / "videos" / "v001.mp4")]
    with pytest.raises(DatasetError, match=r"train.txt: 1 bad video.*v001.mp4"):
        build_loader(load_recipe(path, overrides=["data.on_bad_video=error"]), "train", progress=False)


def test_dtype_labels_and_layout(recipe):
    raw = next(iter(build_loader(recipe, "val", progress=False)))
    half = next(iter(build_loader(recipe, "val", progress=False, dtype="float16")))
    assert raw.clips.dtype == torch.uint8 and half.clips.dtype == torch.float16
    assert raw.labels.dtype == torch.int64 and raw.samples.dtype == torch.int64
    mean = torch.tensor(recipe.data.mean).view(3, 1, 1)
    std = torch.tensor(recipe.data.std).view(3, 1, 1)
    assert torch.allclose(half.clips.float(), (raw.clips.float() - mean) / std, atol=0.01)
    assert half.clips.flatten(0, 1).is_contiguous(memory_format=torch.channels_last)


def test_prefetch_thread_stops(recipe):
    tl = build_loader(recipe, "train", progress=False)
    before = {t.ident for t in threading.enumerate()}
    it = iter(tl)
    next(it)
    assert any(t.name == "tsn_dali-prefetch" for t in threading.enumerate())
    tl.close()
    assert not any(t.name == "tsn_dali-prefetch" and t.ident not in before for t in threading.enumerate()
                   if t.is_alive())


def test_importing_tsn_dali_data_pulls_no_model_or_trainer():
    code = ("import sys, tsn_dali.data as d; d.build_loader; "
            "bad = [m for m in sys.modules if m.startswith(('tsn_dali.models', 'tsn_dali.train', "
            "'tsn_dali.test', 'tsn_dali.demo', 'timm'))]; print(bad)")
    out = subprocess.run([sys.executable, "-c", code], cwd=PROJECT, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_rawframe_folders(tmp_path):
    """data.format rawframes: ``dir total_frames label`` lists, JPEGs named by filename_tmpl,
    start_index 1 (MMAction2 RawframeDataset). Frame i is flat grey 20 * i."""
    from PIL import Image

    lines = []
    for v in range(3):
        folder = tmp_path / "frames" / f"vid{v}"
        folder.mkdir(parents=True)
        for i in range(1, 11):
            Image.fromarray(np.full((48, 64, 3), 20 * i, np.uint8)).save(folder / f"img_{i:05}.jpg")
        lines.append(f"vid{v} 10 {v}\n")
    for split in ("train", "val", "test"):
        (tmp_path / f"{split}.txt").write_text("".join(lines))
    text = recipe_yaml(tmp_path, batch_size=2).read_text().replace("prefix: videos", "prefix: frames")
    (tmp_path / "recipe.yaml").write_text(text)
    recipe = load_recipe(tmp_path / "recipe.yaml", overrides=["data.format=rawframes", "data.start_index=1"])
    loader = build_loader(recipe, "val", progress=False)
    batches = list(loader)
    assert [b.samples.tolist() for b in batches] == [[0, 1], [2, -1]]
    # SampleFrames test mode, 10 frames, 3 segments: offsets 1.67 + [0, 3.33, 6.67] -> 1, 5, 8; + start_index 1
    means = batches[0].clips[0].float().mean(dim=(1, 2, 3))
    assert torch.allclose(means, torch.tensor([40.0, 120.0, 180.0]), atol=2)
    assert batches[0].labels.tolist() == [0, 1]

"""The loader as a library (tsn_dali.data.loader_from, ClipLoader): iteration as a torch user
expects, construction from in-memory lists, folders and list files, no silent defaults,
metadata, and the guide's own example run as written."""
from __future__ import annotations

import logging
import re
import sys
import threading
from pathlib import Path

import pytest
import torch

pytest.importorskip("nvidia.dali")

from tsn_dali.data import ClipLoader, MetaBatch, SampleFrames, Resize, CenterCrop, loader_from  # noqa: E402
from tsn_dali.data.errors import DatasetError, PipelineError  # noqa: E402
from tsn_dali.data.index.annotations import VideoRecord  # noqa: E402
from tsn_dali.data.media.videoio import write_numbered_video  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MEAN, STD = [123.675, 116.28, 103.53], [58.395, 57.12, 57.375]
SMALL = dict(num_segments=2, input_size=32, short_side=40, executor="dali-cpu", device="cpu")
NO_SIZES = dict(num_segments=None, input_size=None, short_side=None)  # None: not given (the view's own)


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """root/<class>/<video>: 6 VP9 clips in 2 classes, and one file that is not a video."""
    root = tmp_path_factory.mktemp("tree")
    for i in range(6):
        folder = root / f"class{i % 2}"
        folder.mkdir(exist_ok=True)
        write_numbered_video(str(folder / f"v{i}.webm"), 16, 64, 48, codec="vp9")
    (root / "class1" / "broken.mp4").write_bytes(b"not a video")
    return root


def make(tree, tmp_path, **kw):
    args = dict(SMALL, batch_size=2, index_cache=str(tmp_path / "idx"))
    args.update(kw)
    return loader_from(str(tree), **args)


def test_folder_tree_with_a_bad_video_dropped(tree, tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        loader = make(tree, tmp_path)
    try:
        assert loader.classes == ["class0", "class1"] and len(loader.records) == 6
        assert [d["path"].endswith("broken.mp4") for d in loader.stats["dropped"]] == [True]
        lines = [r.getMessage() for r in caplog.records if "broken.mp4" in r.getMessage()]
        assert len(lines) == 1 and "\n" not in lines[0]
        assert sorted({r.label for r in loader.records}) == [0, 1]
        assert all(Path(r.path).parent.name == f"class{r.label}" for r in loader.records)
    finally:
        loader.close()


def test_in_memory_pairs_and_list_file(tree, tmp_path):
    pairs = [(str(p), int(p.parent.name[-1])) for p in sorted(tree.rglob("*.webm"))]
    loader = loader_from(pairs, split="val", batch_size=4, index_cache=str(tmp_path / "idx"), **SMALL)
    try:
        assert [r.label for r in loader.records] == [l for _, l in pairs] and loader.split == "val"
        batch = next(iter(loader))
        assert batch.clips.dtype == torch.uint8  # no mean/std given: raw pixels
    finally:
        loader.close()
    lst = tmp_path / "list.txt"
    lst.write_text("".join(f"{Path(p).relative_to(tree)} {l}\n" for p, l in pairs))
    listed = loader_from(str(lst), prefix=str(tree), split="test", batch_size=2, index_cache=str(tmp_path / "idx"),
                         pipeline="tsn_test_threecrop", short_side=40, executor="dali-cpu", device="cpu")
    try:
        assert [r.path for r in listed.records] == [p for p, _ in pairs]
    finally:
        listed.close()
    rec = VideoRecord(path=pairs[0][0], label=1)  # no line= or source= needed
    assert rec.line == 0 and rec.source == ""
    with pytest.raises(DatasetError, match="item 1: expected a \\(path, label\\) pair"):
        loader_from([pairs[0], "just-a-path.mp4"], **SMALL)


def test_a_new_for_is_the_next_epoch_and_set_epoch_is_exact(tree, tmp_path):
    loader = make(tree, tmp_path)
    try:
        first = [b.samples.tolist() for b in loader]
        second = [b.samples.tolist() for b in loader]
        assert loader.epoch == 1 and first != second  # no set_epoch: a new shuffle
        loader.set_epoch(0)
        assert [b.samples.tolist() for b in loader] == first  # exactly epoch 0 again
        loader.set_epoch(0)
        it = iter(loader)
        next(it)
        del it  # a pass that did not run to its end does not advance the epoch
        assert [b.samples.tolist() for b in loader] == first
        loader.sampler.set_epoch(7)  # what Lightning's fit loop calls
        assert loader.epoch == 7
    finally:
        loader.close()


def test_two_live_iterators_end_the_older_one_and_never_hang(tree, tmp_path):
    loader = make(tree, tmp_path)
    done = {}

    def body():
        a, b = iter(loader), iter(loader)
        first_b = next(b)
        try:
            next(a)
            done["a"] = "gave a batch"
        except StopIteration:
            done["a"] = "ended"
        done["b"] = [first_b] + list(b)

    try:
        thread = threading.Thread(target=body, daemon=True)
        thread.start()
        thread.join(60)
        assert not thread.is_alive(), "two iterators hung"
        assert done["a"] == "ended" and len(done["b"]) == len(loader)
    finally:
        loader.close()


def test_stall_timeout_is_finite_on_every_construction_path(tree, tmp_path):
    import inspect

    assert inspect.signature(ClipLoader).parameters["stall_timeout"].default == 600.0
    loader = make(tree, tmp_path)
    try:
        assert loader.stall_timeout == 600.0
    finally:
        loader.close()
    from tsn_dali.config import LoaderConfig

    assert LoaderConfig().stall_timeout == 600.0


def test_mean_std_and_dtype_rules(tree, tmp_path):
    loader = make(tree, tmp_path, mean=MEAN, std=STD)
    try:
        assert loader.dtype == "float32" and next(iter(loader)).clips.dtype == torch.float32
    finally:
        loader.close()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = make(tree, tmp_path, mean=MEAN, std=STD)
    assert inside.dtype == "bfloat16"
    inside.close()
    for kw, says in ((dict(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]), "look scaled to 0-1"),
                     (dict(mean=MEAN, std=STD, dtype="uint8"), "uint8 gives raw pixels"),
                     (dict(dtype="float16"), "give mean and std"),
                     (dict(mean=MEAN), "give both mean and std"),
                     (dict(mean=MEAN, std=[0, 1, 1]), "expected values > 0")):
        with pytest.raises(PipelineError, match=says) as err:
            make(tree, tmp_path, **kw)
        assert "\n" not in str(err.value)


def test_metadata_and_clip_axes(tree, tmp_path):
    view = [SampleFrames(clip_len=1, num_clips=3, test_mode=True), Resize(scale=(-1, 40)), CenterCrop(crop_size=32)]
    loader = make(tree, tmp_path, split="val", pipeline=view, metadata=True, batch_size=4, **NO_SIZES)
    try:
        batch = next(iter(loader))
        assert isinstance(batch, MetaBatch) and len(batch.meta) == 4
        meta = batch.meta[0]
        plan = loader.plan(int(batch.samples[0]), loader.epoch)
        assert meta["frame_indices"] == plan.frame_indices.tolist() and meta["crops"] == plan.crops.tolist()
        assert meta["path"] == loader.records[int(batch.samples[0])].path and meta["crop_flips"] == [False]
        axes = loader.clip_axes(batch.clips)
        assert axes.shape == (4, 3, 1, 1, 3, 32, 32) and axes.data_ptr() == batch.clips.data_ptr()
        assert torch.equal(axes[:, 1, 0, 0], batch.clips[:, 1])
    finally:
        loader.close()
    tencrop = make(tree, tmp_path, split="test", pipeline="tsn_test_tencrop", batch_size=2, num_segments=None)
    try:
        clips = next(iter(tencrop)).clips
        assert tencrop.clip_axes(clips).shape[1:4] == (25, 10, 1)
        # crop-major: view k*25 + t is crop k of frame t
        assert torch.equal(tencrop.clip_axes(clips)[:, 4, 7, 0], clips[:, 7 * 25 + 4])
    finally:
        tencrop.close()


def test_a_truncated_webm_is_reported_once(tmp_path, caplog):
    full = write_numbered_video(str(tmp_path / "full.webm"), 50, 64, 48, codec="vp9")
    data = Path(full).read_bytes()
    (tmp_path / "half.webm").write_bytes(data[: len(data) // 2])
    ok = write_numbered_video(str(tmp_path / "ok.webm"), 50, 64, 48, codec="vp9")
    with caplog.at_level(logging.WARNING):
        loader = loader_from([(str(tmp_path / "half.webm"), 0), (ok, 1)], split="val", batch_size=2,
                             index_cache=str(tmp_path / "idx"), **SMALL)
    try:
        assert [s["path"] for s in loader.stats["short"]] == [str(tmp_path / "half.webm")]
        assert "of the ~50 frames its duration implies" in loader.stats["short"][0]["reason"]
        assert sum("duration implies" in r.getMessage() for r in caplog.records) == 1
        assert len(loader.records) == 2  # still used: its frames are sampled
    finally:
        loader.close()


def test_the_guides_example_runs_as_written(tree, tmp_path):
    """docs/loader.md's first block, on the tiny tree (sizes shrunk, nothing else changed)."""
    text = (ROOT / "docs" / "loader.md").read_text()
    code = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    assert len(code.strip().splitlines()) <= 25
    small = (code.replace('"data/my_videos"', repr(str(tree))).replace("batch_size=8", "batch_size=2")
             .replace("num_segments=8", "num_segments=2").replace("input_size=224", "input_size=32")
             .replace("short_side=256", "short_side=40").replace("range(3)", "range(2)")
             .replace("mean=MEAN, std=STD)", f"mean=MEAN, std=STD, executor='dali-cpu', device='cpu', "
                      f"index_cache={str(tmp_path / 'idx')!r})"))
    assert small.count("executor='dali-cpu'") == 1
    namespace = {}
    exec(compile(small, "docs/loader.md", "exec"), namespace)
    assert namespace["train"].epoch == 1 and torch.isfinite(namespace["loss"])


def test_the_lightning_example_advances_the_epoch(tree, tmp_path, monkeypatch):
    pytest.importorskip("lightning")
    sys.path.insert(0, str(ROOT / "examples"))
    try:
        import lightning_datamodule as example
    finally:
        sys.path.pop(0)
    calls = []
    original = example.VideoData.train_dataloader

    def spied(self):
        loader = original(self)
        inner = loader.sampler.set_epoch
        loader.sampler.set_epoch = lambda e: (calls.append(e), inner(e))[1]
        return loader

    example.VideoData.train_dataloader = spied
    try:
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # the default index cache
        model = example.main([str(tree), "--epochs", "2", "--batch-size", "2", "--num-segments", "2",
                              "--input-size", "32", "--short-side", "40", "--executor", "dali-cpu"])
    finally:
        example.VideoData.train_dataloader = original
    assert sorted(set(model.epochs_seen)) == [(0, 0), (1, 1)]  # the loader's epoch follows the trainer's
    assert calls[:2] == [0, 1]  # through sampler.set_epoch, no user hook


def test_ddp_warns_about_grad_strides_only_for_a_contiguous_model(tmp_path):
    """docs/loader.md's DDP advice: over the loader's channels_last views, a channels_last
    model gives gradients with its parameters' strides (no warning); a contiguous one gets
    'Grad strides do not match bucket view strides' (2 gloo ranks, oneDNN's convolution)."""
    from helpers.gloo_ranks import run_ranks

    res = run_ranks(tmp_path, "ddp_layout")
    for rank in (0, 1):
        assert res[rank]["channels_last"] == [] and res[rank]["channels_last_mismatched"] == []
        if res[rank]["contiguous_mismatched"]:  # the path that gives channels_last gradients
            assert any("Grad strides do not match" in w for w in res[rank]["contiguous"])


def test_every_size_given_is_used_or_refused(tree, tmp_path):
    """loader_from's sizes fill the view's $sizes; one the view does not take is refused in
    one line naming the pipeline file, never ignored (test: MMAction2's 25-clip protocol)."""
    common = dict(batch_size=1, index_cache=str(tmp_path / "idx"), executor="dali-cpu", device="cpu")
    for split, sizes, shape in [("train", dict(num_segments=3, input_size=32, short_side=40), (3, 3, 32, 32)),
                                ("val", dict(num_segments=5, input_size=24, short_side=30), (5, 3, 24, 24)),
                                ("test", dict(short_side=36), (25 * 3, 3, 36, 36))]:
        loader = loader_from(str(tree), split=split, pipeline="tsn_test_threecrop" if split == "test" else None,
                             **sizes, **common)
        try:
            assert tuple(next(iter(loader)).clips.shape[1:]) == shape, split
        finally:
            loader.close()
    with pytest.raises(PipelineError) as err:
        loader_from(str(tree), split="test", num_segments=3, **common)
    assert str(err.value) == (
        "loader_from: num_segments=3 is not taken by split='test''s pipeline 'tsn_test_tencrop', which fixes its "
        f"clip count (MMAction2's test protocol): no $num_segments in {ROOT / 'pipelines' / 'tsn_test_tencrop.yaml'}; "
        "leave it out, or give pipeline= a view that takes it, e.g. [SampleFrames(clip_len=1, num_clips=3, "
        "test_mode=True), Resize(scale=(-1, 256)), TenCrop(crop_size=224)]")
    with pytest.raises(PipelineError, match=r"input_size=112 is not taken by split='test''s pipeline "
                                            r"'tsn_test_threecrop', which fixes its crop size"):
        loader_from(str(tree), split="test", pipeline="tsn_test_threecrop", input_size=112, **common)
    view = [SampleFrames(clip_len=1, num_clips=3, test_mode=True), Resize(scale=(-1, 40)), CenterCrop(crop_size=32)]
    with pytest.raises(PipelineError, match=r"^loader_from: short_side=40 is not used: pipeline= is a list of ops"):
        loader_from(str(tree), split="val", pipeline=view, short_side=40, **common)

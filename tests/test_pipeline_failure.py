"""Errors blamed on the right thing: a failure of the whole pipeline (out of memory, a CUDA
or driver error, DLPack, a decoder that no longer decodes anything) is one line naming what
failed and stops the loader, never a video charged and replaced one after another; a truly
bad video is still replaced. Simulated on dali-cpu (the GPU's failures cannot be caused
here; the rules are the same code)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("nvidia.dali")

from helpers.tiny_clips import make_dataset, recipe_yaml  # noqa: E402
from tsn_dali.config import load_recipe  # noqa: E402
from tsn_dali.data import build_loader  # noqa: E402
from tsn_dali.data.errors import PipelineFailure, VideoDecodeError  # noqa: E402
from tsn_dali.data.plan.clip_plan import ClipPlan  # noqa: E402
from tsn_dali.data.render.executors.dali import DaliExecutor, whole_pipeline_error  # noqa: E402
from tsn_dali.data.media.videoio import write_numbered_video  # noqa: E402


@pytest.mark.parametrize("error, what", [
    (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), "out of memory"),
    (RuntimeError("[/opt/dali/dali/core/mm/default_resources.cc:12] CUDA allocation failed: out of memory"),
     "out of memory"),
    (RuntimeError("CUDA error: an illegal memory access was encountered"), "a CUDA error"),
    (RuntimeError("cudaErrorLaunchFailure: unspecified launch failure"), "a CUDA error"),
    (BufferError("cannot export: DLPack capsule already consumed"), "the DLPack hand-over"),
    (RuntimeError("Assert on \"frame_idx < num_frames\" failed: frame 40 of 12"), None),
    (RuntimeError("Failed to decode frame: invalid data found when processing input"), None),
])
def test_what_is_plainly_the_devices(error, what):
    assert whole_pipeline_error(error) == what


@pytest.fixture(scope="module")
def vp9(tmp_path_factory):
    root = tmp_path_factory.mktemp("pf")
    return [write_numbered_video(str(root / f"v{i}.webm"), 8, 64, 48, codec="vp9") for i in range(3)]


def plan(path, sample=0):
    return ClipPlan(sample=sample, path=str(path), label=0, num_frames=8, orig_size=(64, 48),
                    frame_indices=np.asarray([1, 3], np.int32), resize_to=(64, 48),
                    crops=np.asarray([[0, 0, 64, 48]], np.int32), crop_flips=np.asarray([False]),
                    out_size=(64, 48))


def always_failing(ex, message="Failed to decode frame: decoder error -11", calls=None):
    def run_samples(key, samples):
        if calls is not None:
            calls.append(len(samples))
        raise RuntimeError(message)

    ex._run_samples = run_samples


def test_a_pipeline_that_broke_after_working_is_not_a_videos_fault(vp9):
    with DaliExecutor("cpu", num_threads=1, decode_workers=1) as ex:
        ex.render([plan(vp9[0]), plan(vp9[1])])  # works: a known-good sample
        always_failing(ex)
        for batch in ([plan(vp9[2])], [plan(vp9[0]), plan(vp9[2])]):
            with pytest.raises(PipelineFailure) as err:
                ex.render(batch)
            assert "failed as a whole" in str(err.value) and "\n" not in str(err.value)


def test_nothing_ever_decoded_and_two_videos_fail_is_the_pipeline(vp9):
    with DaliExecutor("cpu", num_threads=1, decode_workers=1) as ex:
        always_failing(ex)
        with pytest.raises(PipelineFailure, match="every one of 2 videos failed"):
            ex.render([plan(vp9[0]), plan(vp9[1])])
    with DaliExecutor("cpu", num_threads=1, decode_workers=1) as ex:
        always_failing(ex)
        with pytest.raises(VideoDecodeError):  # one video, nothing known: it may be the video
            ex.render([plan(vp9[0])])
        with pytest.raises(PipelineFailure, match="2 videos in a row failed and none ever decoded"):
            ex.render([plan(vp9[1])])


def test_out_of_memory_is_said_at_once_without_trying_each_video(vp9):
    calls = []
    with DaliExecutor("cpu", num_threads=1, decode_workers=1) as ex:
        always_failing(ex, "CUDA out of memory. Tried to allocate 20.00 GiB", calls)
        with pytest.raises(PipelineFailure, match=r"\(out of memory\)"):
            ex.render([plan(vp9[0]), plan(vp9[1]), plan(vp9[2])])
    assert calls == [3]


def test_a_bad_video_among_good_ones_is_still_the_videos(vp9, tmp_path):
    broken = tmp_path / "broken.webm"
    data = Path(vp9[0]).read_bytes()
    broken.write_bytes(data[:200] + bytes(len(data) - 200))
    with DaliExecutor("cpu", num_threads=1, decode_workers=1) as ex:
        from tsn_dali.data.plan.clip_plan import StreamFacts

        bad = plan(broken)
        bad = ClipPlan(**{**bad.__dict__, "stream": StreamFacts(codec="vp9")})
        with pytest.raises(VideoDecodeError) as err:
            ex.render([plan(vp9[1]), bad])
        assert err.value.path == str(broken)
        ex.render([plan(vp9[2])])  # and the executor goes on


def test_the_loader_replaces_a_bad_video_but_stops_on_a_broken_pipeline(tmp_path):
    root = make_dataset(tmp_path, 6, num_frames=12, codec="vp9")
    recipe = load_recipe(recipe_yaml(root, batch_size=2), overrides=["loader.executor=dali-cpu", "loader.prefetch=1"])
    loader = build_loader(recipe, "train", progress=False)
    try:
        victim = loader.records[int(loader.batch_samples(0)[0][0])].path
        data = Path(victim).read_bytes()
        Path(victim).write_bytes(data[:200] + bytes(len(data) - 200))  # same size: the index keeps it
        batches = list(loader)
        assert len(batches) == 3 and [r["path"] for r in loader.stats["replaced"]] == [victim]

        always_failing(loader.executor)
        loader.set_epoch(1)
        with pytest.raises(PipelineFailure):
            list(loader)
        assert len(loader.stats["replaced"]) == 1  # no cascade of blamed videos
    finally:
        loader.close()


def test_the_loader_stops_any_executor_that_broke_instead_of_replacing_videos(tmp_path):
    """The same rule in the loader, for every executor (here the reference executor, whose
    decoder starts failing on every video after the first batch)."""
    from tsn_dali.data.render.executors import reference as ref_mod

    root = make_dataset(tmp_path, 8, num_frames=12)
    loader = build_loader(load_recipe(recipe_yaml(root, batch_size=2), overrides=["loader.reference_workers=0"]),
                          "train", progress=False)
    try:
        it = iter(loader)
        next(it)
        real = ref_mod.decode_plan
        ref_mod.decode_plan = lambda plan, *a, **k: (_ for _ in ()).throw(VideoDecodeError(plan.path, "decoder gone"))
        try:
            with pytest.raises(PipelineFailure, match="a video that rendered before fails now"):
                list(it)
        finally:
            ref_mod.decode_plan = real
        assert len(loader.stats["replaced"]) <= 1
    finally:
        loader.close()

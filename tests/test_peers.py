"""The bench's peers: MMAction2's own config pipeline (its frames and boxes checked against
our plans on the test view, a check that fails on a wrong plan), the decord + OpenCV
loader and the config adaptation to a recipe's values."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from tsn_dali import bench
from tsn_dali.config import load_recipe

TINY = ["data.num_segments=3", "data.input_size=64", "data.short_side=72", "model.num_classes=5"]


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """Two K400-like generated H.264 clips, 96x72, 48 frames, and their index."""
    from tsn_dali.data.index import build_index

    root = tmp_path_factory.mktemp("peer_videos")
    paths = bench.generate_videos(str(root / "gen"), 2, num_frames=48, size=(96, 72))
    return paths, build_index(paths, cache_dir=str(root / "index"), workers=1, progress=False)


def _planning(recipe, split, clips):
    from tsn_dali.bench.measure import make_loader

    paths, index = clips
    return make_loader(recipe, split, paths, index, None, 2, 1, torch.device("cpu"))


def test_config_pipeline_is_the_recipes_mmaction_config_adapted_to_its_values():
    pytest.importorskip("mmaction", reason="mmaction2 (the bench extra) is not installed")
    from tsn_dali.bench import mmaction_peer as mm
    try:
        pipeline, facts = mm.config_pipeline(load_recipe("recipes/k400_r50.yaml", []), "train")
    except mm.MmactionMissing as why:
        pytest.skip(str(why))
    assert facts["config"] == "tsn_imagenet-pretrained-r50_8xb32-1x1x8-100e_kinetics400-rgb.py"
    assert facts["adapted"] == {}  # the recipe is the config's row: nothing changed
    assert facts["transforms"] == ["DecordInit", "SampleFrames", "DecordDecode", "Resize", "MultiScaleCrop",
                                   "Resize", "Flip", "FormatShape", "PackActionInputs"]
    assert pipeline[1]["num_clips"] == 8
    _, tiny = mm.config_pipeline(load_recipe("recipes/k400_r50.yaml", TINY), "train")
    assert tiny["adapted"] == {"1:SampleFrames.num_clips": "8 -> 3", "3:Resize.scale": "(-1, 256) -> (-1, 72)",
                               "4:MultiScaleCrop.input_size": "224 -> 64", "5:Resize.scale": "(224, 224) -> (64, 64)"}
    _, test = mm.config_pipeline(load_recipe("recipes/k400_r50.yaml", TINY), "test")
    assert "1:SampleFrames.num_clips" not in test["adapted"]  # the test protocol's 25 clips stay


def test_mmaction_test_view_has_our_plans_frames_and_boxes_and_the_check_can_fail(clips):
    pytest.importorskip("mmaction", reason="mmaction2 (the bench extra) is not installed")
    from tsn_dali.bench import mmaction_peer as mm
    from tsn_dali.data.render.executors.reference import ReferenceExecutor

    recipe = load_recipe("recipes/k400_r50.yaml", TINY)
    try:
        pipeline, _ = mm.config_pipeline(recipe, "test")
    except mm.MmactionMissing as why:
        pytest.skip(str(why))
    plan = _planning(recipe, "test", clips).plan(0, 0)
    ours = ReferenceExecutor(workers=0).render([plan])[0].permute(0, 2, 3, 1)
    check = mm.view_check(pipeline, "test", plan, ours)
    assert check["same_frames"] and check["same_boxes"] and check["same_shape"], check
    assert check["max_abs_diff"] <= 2
    # a plan one frame off, or with a box moved by one pixel, is caught
    shifted = dataclasses.replace(plan, frame_indices=np.asarray(plan.frame_indices) + 1)
    assert not mm.view_check(pipeline, "test", shifted, ours)["same_frames"]
    crops = np.asarray(plan.crops).copy()
    crops[0] += [1, 0, 1, 0]
    assert not mm.view_check(pipeline, "test", dataclasses.replace(plan, crops=crops), ours)["same_boxes"]


def test_mmaction_peer_runs_its_own_pipeline_in_a_dataloader(clips):
    from tsn_dali.bench.peers import PeerUnavailable, peer_system

    recipe = load_recipe("recipes/k400_r50.yaml", TINY + ["loader.dtype=uint8"])
    paths, index = clips
    try:
        system, check = peer_system("mmaction2", recipe, "train", paths, index, 2, 1, torch.device("cpu"), 0, {})
    except PeerUnavailable as why:
        pytest.skip(str(why))
    assert check["compared"] == "shape only (random draws)" and check["same_shape"]
    data = system.dataset(100)
    assert len(data) == 4 and data.records[0][0] in paths  # the videos our loader takes that round
    batch = system._next(iter(torch.utils.data.DataLoader(data, batch_size=2, collate_fn=system.collate)))
    assert batch.shape == (2, 3, 3, 64, 64) and batch.dtype == torch.uint8  # [N, V, C, H, W]
    assert system(0) > 0


def test_decord_opencv_peer_renders_our_plans_within_a_grey_level(clips):
    from tsn_dali.bench.peers import DecordOpencvClip, PeerUnavailable, pixel_check
    from tsn_dali.data.render.executors.reference import ReferenceExecutor

    try:
        make = DecordOpencvClip()
    except PeerUnavailable as why:
        pytest.skip(str(why))
    recipe = load_recipe("recipes/k400_r50.yaml", TINY)
    reference = ReferenceExecutor(workers=0)
    for split in ("train", "test"):
        plan = _planning(recipe, split, clips).plan(1, 0)
        check = pixel_check(make, reference, plan)
        assert check["same_shape"] and check["max_abs_diff"] <= 1, check
    # the same check against another plan's frames is far off
    other = dataclasses.replace(plan, frame_indices=np.asarray(plan.frame_indices)[::-1].copy())
    assert pixel_check(lambda p: make(other), reference, plan)["max_abs_diff"] > 20


def test_peer_checks_compare_every_executor_measured(clips):
    """The parity entries carry each measured executor's difference from the peer's output:
    auto (GOP decoder, cv2 uint8) within 2 grey levels of MMAction2's own test view."""
    from tsn_dali.bench.peers import PeerUnavailable, peer_system
    from tsn_dali.data.render.executors import build_executor

    recipe = load_recipe("recipes/k400_r50.yaml", TINY + ["loader.dtype=uint8"])
    paths, index = clips
    executors = {"reference": build_executor("reference", reference_workers=0),
                 "auto": build_executor("auto", reference_workers=0)}
    try:
        for name in ("mmaction2", "decord-opencv"):
            try:
                _, check = peer_system(name, recipe, "test", paths, index, 1, 1, torch.device("cpu"), 0, executors)
            except PeerUnavailable as why:
                pytest.skip(str(why))
            assert set(check["executors"]) == {"reference", "auto"}
            assert check["executors"]["auto"]["max"] <= 2 and check["executors"]["reference"]["max"] <= 2, check
    finally:
        for ex in executors.values():
            ex.close()

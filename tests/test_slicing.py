"""Keyframe-aware decoder input (tsn_dali.data.render.slicing): the rules, and frame identity.

DALI's CPU decoder reads VP9, so VP9 slices go through dali-cpu end to end and must give
exactly the frames a whole-file decode gives (and the plan's frame numbers). H.264,
HEVC and MPEG-4 slices (what NVDEC gets on a GPU) are decoded here with PyAV and must
equal a full decode of the file, B-frames included.
"""
from __future__ import annotations

import io
from pathlib import Path

import av
import numpy as np
import pytest

from tsn_dali.config import DataConfig
from tsn_dali.data.plan.planner import ClipPlanner, load_pipeline
from tsn_dali.data.render.slicing import (clip_input, decode_prefix, gop_groups, sliced_frame_count,
                                   unique_frames, worth_slicing)
from tsn_dali.data.index.video_index import VideoInfo, probe_video
from tsn_dali.data.media.videoio import read_frame_number, write_numbered_video

from helpers.real_videos import VIDEOS, needs_videos
W, H = 160, 120


# --------------------------------------------------------------------------- rules


def test_unique_frames_keeps_order_and_repeats():
    frames, order = unique_frames([9, 3, 3, 12, 0, 9])
    assert frames.tolist() == [0, 3, 9, 12]
    assert frames[order].tolist() == [9, 3, 3, 12, 0, 9]


def test_gop_groups_and_frames_fed():
    keyframes = [0, 16, 32, 48]
    groups = gop_groups([5, 17, 20, 47, 60], keyframes)
    assert groups == [(0, [5]), (1, [17, 20]), (2, [47]), (3, [60])]
    # 0..5, 16..20, 32..47, 48..60: what each piece feeds
    assert sliced_frame_count([5, 17, 20, 47, 60], keyframes) == 6 + 5 + 16 + 13


def test_decode_prefix_with_reordered_packets():
    # decode order I P B B P B B (pts 0 3 1 2 6 4 5): the first 2 frames shown (pts 0, 1)
    # need the P at pts 3 too, which is decoded before them
    pts = [0, 3, 1, 2, 6, 4, 5]
    assert decode_prefix(pts, 1) == 1
    assert decode_prefix(pts, 2) == 3
    assert decode_prefix(pts, 4) == 4
    assert decode_prefix(pts, 5) == 6
    assert decode_prefix([0, 1, 2, 3], 3) == 3  # no reordering: exactly the frames
    with pytest.raises(ValueError):
        decode_prefix(pts, 8)


def test_slice_only_where_it_pays_and_the_index_allows():
    info = VideoInfo(path="v.webm", num_frames=300, width=W, height=H, codec="vp9",
                     container="matroska,webm", keyframes=list(range(0, 300, 16)),
                     keyframe_pts=list(range(0, 300, 16)), sliceable=True)
    assert worth_slicing(info, np.array([10, 100, 290]))
    assert not worth_slicing(info, np.array([1, 5, 9]))  # all in the first GOP: the whole file is as cheap
    info.sliceable = False
    assert not worth_slicing(info, np.array([10, 100, 290]))
    info.sliceable, info.container = True, "mpegts"  # a container the slicer does not write
    assert not worth_slicing(info, np.array([10, 100, 290]))


# --------------------------------------------------------------------------- frame identity


@pytest.fixture(scope="module")
def vp9_clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("slices")
    return {gop: write_numbered_video(str(root / f"g{gop}.webm"), 300, W, H, codec="vp9", gop=gop)
            for gop in (1, 16, 250)} | {
        "short": write_numbered_video(str(root / "short.webm"), 5, W, H, codec="vp9", gop=2)}


@pytest.fixture(scope="module")
def executors():
    pytest.importorskip("nvidia.dali")
    from tsn_dali.data.render.executors.dali import DaliExecutor
    from tsn_dali.data.render.executors.reference import ReferenceExecutor

    sliced = DaliExecutor("cpu", num_threads=2, decode_workers=2)
    whole = DaliExecutor("cpu", num_threads=2, decode_workers=2, slice_gops=False)
    yield sliced, whole, ReferenceExecutor(workers=0)
    sliced.close()
    whole.close()


def _plans(pipeline, paths, epoch=0, **data):
    cfg = DataConfig(num_segments=8, input_size=96, short_side=120, **data)
    planner = ClipPlanner(load_pipeline(pipeline, cfg), seed=3)
    return [planner.plan(i, p, 0, probe_video(p), epoch) for i, p in enumerate(paths)]


def _numbers(x):
    """Frame numbers read back from full (uncropped, unflipped) uint8 views."""
    return [[read_frame_number(v.permute(1, 2, 0).numpy()) for v in clip] for clip in x]


@pytest.mark.parametrize("gop", [1, 16, 250])
def test_sliced_dali_cpu_equals_whole_file_and_reference(vp9_clips, executors, gop):
    sliced, whole, reference = executors
    path = vp9_clips[gop]
    info = probe_video(path)
    assert info.sliceable and info.keyframes == list(range(0, 300, gop))
    # the frames the plans ask for, with repeats and out of order, whole frames (no crop)
    wanted = [[290, 5, 40, 41, 40, 100, 150, 299], [3, 3, 3, 3, 3, 3, 3, 3], list(range(7, 300, 37))]
    plans = [_plans("tsn_val", [path])[0] for _ in wanted]
    plans = [type(p)(**{**p.__dict__, "frame_indices": np.asarray(w, np.int32), "resize_to": (W, H),
                        "crops": np.array([[0, 0, W, H]], np.int32), "out_size": (W, H)})
             for p, w in zip(plans, wanted)]
    before = dict(sliced.stats)
    a = sliced.render(plans)
    b = whole.render(plans)
    assert _numbers(a) == wanted
    assert (a == b).all()  # frame for frame what the whole-file decode gives
    assert _numbers(reference.render(plans)) == wanted
    fed = sliced.stats["frames_fed"] - before["frames_fed"]
    whole_fed = sum(max(w) + 1 for w in wanted)
    if gop == 16:  # pieces of at most 16 frames per touched GOP
        assert fed == sum(sliced_frame_count(sorted(set(w)), info.keyframes) for w in wanted) < whole_fed / 2
    assert fed <= whole_fed


def test_plans_of_every_kind_through_slices(vp9_clips, executors):
    """Train (TSN, 8 segments), dense train, 25-clip test (ThreeCrop) and a short video
    whose plans repeat frames, as a multi-video batch: sliced == whole file, bit for bit."""
    sliced, whole, _ = executors
    paths = [vp9_clips[16], vp9_clips[250], vp9_clips[1], vp9_clips["short"]]
    for pipeline in ("tsn_train", "dense_train", "tsn_test_threecrop", "dense_test"):
        plans = _plans(pipeline, paths, epoch=2)
        if pipeline == "tsn_train":
            assert len(set(plans[3].frame_indices.tolist())) < len(plans[3].frame_indices)  # repeats
        a = sliced.render(plans, mean=[0, 0, 0], std=[1, 1, 1], dtype="float32")
        b = whole.render(plans, mean=[0, 0, 0], std=[1, 1, 1], dtype="float32")
        assert a.shape == b.shape and (a == b).all(), pipeline


@needs_videos
@pytest.mark.parametrize("name", ["test.mp4", "demo.mp4", "structuralize_426x240_2997fps.mp4",
                                  "spatiotemporal_det_6fps.mp4", "test_mpeg4.avi"])
def test_slices_of_real_clips_decode_to_the_same_frames(name):
    """B-frames (H.264 High), several GOPs, an AVI with MPEG-4: PyAV decodes each slice."""
    path = str(VIDEOS / name)
    info = probe_video(path)
    with av.open(path) as c:
        full = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    n = info.num_frames
    for wanted in ([n - 1, 3, n // 2, n // 2, n - 2], list(range(1, n, max(1, n // 25))), [n - 1]):
        clip = clip_input(path, wanted, info)
        with av.open(io.BytesIO(clip.data.tobytes())) as c:
            got = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
        assert len(got) == clip.frames_fed or not clip.sliced
        for t, f in enumerate(wanted):
            assert np.array_equal(got[clip.positions[clip.order[t]]], full[f]), (name, f)
        if clip.sliced:
            assert clip.frames_fed < max(wanted) + 1


def test_h264_with_short_gop_is_sliced_to_what_the_frames_need(tmp_path):
    path = write_numbered_video(str(tmp_path / "h.mp4"), 300, W, H, codec="h264", gop=16)
    info = probe_video(path)
    assert info.sliceable and info.reordered and info.keyframes == list(range(0, 300, 16))
    wanted = [290, 10, 150, 151]
    clip = clip_input(path, wanted, info)
    assert clip.sliced and clip.frames_fed <= 3 * 16
    with av.open(io.BytesIO(clip.data.tobytes())) as c:
        got = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert [read_frame_number(got[clip.positions[o]]) for o in clip.order] == wanted

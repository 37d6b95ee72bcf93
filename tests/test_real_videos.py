"""Videos as they come (docs/data.md, "Videos as they come"): rotated by a display matrix,
several video streams in one file, one frame without a frame rate, damaged VP9 data.

On the committed real files (tests/data/videos, README there) and on PyAV-made files with
the same properties (tests/helpers/odd_videos.py), through the index, the planner and every
executor that runs here (reference; dali-cpu's decoder and frames paths; dali-gpu's graph
is the same clip_graph on the GPU, its routing is checked with NVDEC's answer stubbed).
"""
from __future__ import annotations

import io
import json
import logging
from contextlib import redirect_stdout
from dataclasses import replace

import av
import numpy as np
import pytest

pytest.importorskip("nvidia.dali")

from helpers.odd_videos import (REAL, scene, write_damaged_vp9, write_one_frame_webm, write_rotated,  # noqa: E402
                                write_two_streams)

from tsn_dali.data import loader_from  # noqa: E402
from tsn_dali.data.errors import DatasetError, VideoDecodeError  # noqa: E402
from tsn_dali.data.index.video_index import VideoInfo, probe_video  # noqa: E402
from tsn_dali.data.media.decoding import decode_frames, display_rotation, upright  # noqa: E402
from tsn_dali.data.media.videoio import numbered_frames, read_frame_number  # noqa: E402
from tsn_dali.data.plan.clip_plan import StreamFacts  # noqa: E402
from tsn_dali.data.plan.ops import CenterCrop, Resize, SampleFrames  # noqa: E402
from tsn_dali.data.plan.planner import ClipPlanner  # noqa: E402
from tsn_dali.data.render.executors.dali import DaliExecutor, damaged_reason  # noqa: E402
from tsn_dali.data.render.executors.nvdec import NvdecSupport  # noqa: E402
from tsn_dali.data.render.executors.reference import ReferenceExecutor, apply_plan  # noqa: E402

CPU_EXECUTORS = ("reference", "dali-cpu")
VAL = [SampleFrames(clip_len=1, frame_interval=1, num_clips=3, test_mode=True), Resize(scale=(-1, 64)),
       CenterCrop(crop_size=56)]


def executor(name: str, **kw):
    return ReferenceExecutor() if name == "reference" else DaliExecutor("cpu", num_threads=1, decode_workers=1, **kw)


def render(name: str, path, ops=VAL, **kw) -> np.ndarray:
    """One clip of ``path`` by executor ``name``: uint8 ``[V, H, W, C]``."""
    plan = ClipPlanner(ops).plan(0, str(path), 0, probe_video(path))
    ex = executor(name, **kw)
    try:
        return ex.render([plan])[0].permute(0, 2, 3, 1).numpy()
    finally:
        ex.close()


def mean_diff(a, b) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.abs(a.astype(np.float32) - b.astype(np.float32)).mean())


def loader_clips(tmp_path, pairs, name: str, ops=VAL) -> np.ndarray:
    """Every clip of a val loader over ``pairs`` (list order), uint8 ``[N, V, H, W, C]``."""
    loader = loader_from(pairs, split="val", pipeline=ops, batch_size=len(pairs), executor=name, device="cpu",
                         index_cache=str(tmp_path / "idx"), reference_workers=0, prefetch=0)
    try:
        (batch,) = list(loader)
        return batch.clips.permute(0, 1, 3, 4, 2).numpy()
    finally:
        loader.close()


# --------------------------------------------------------------------------- rotation


@pytest.mark.parametrize("name,turn", [("video_90.mov", 90), ("video_180.mov", 180), ("video_270.mov", 270)])
def test_decords_rotated_files_index_upright_and_every_executor_gives_them_upright(tmp_path, name, turn):
    """A real rotated H.264 file: the index records the turn and the upright size; the
    loader's clip (reference and dali-cpu) equals, within 2 grey levels on average, the clip
    of the same content stored upright (its frames turned with numpy, encoded again)."""
    path = REAL / name
    with av.open(str(path)) as container:  # stored frames, as PyAV (and DALI) give them
        stored = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    straight = tmp_path / "upright.mp4"
    from tsn_dali.data.media.videoio import write_video

    write_video(str(straight), np.rot90(stored, k=-turn // 90, axes=(1, 2)), crf=0)
    for executor_name in CPU_EXECUTORS:
        clips = loader_clips(tmp_path / executor_name, [(str(path), 0), (str(straight), 1)], executor_name)
        assert clips.shape[1:] == (3, 56, 56, 3)
        assert mean_diff(clips[0], clips[1]) <= 2.0, executor_name
    info = probe_video(path)
    assert (info.width, info.height, info.rotation) == (568, 320, turn)
    assert info.display_size == ((320, 568) if turn != 180 else (568, 320))
    plan = ClipPlanner(VAL).plan(0, str(path), 0, info)
    assert plan.orig_size == info.display_size and plan.to_json()["rotation"] == turn


def test_inspect_reports_the_upright_size(tmp_path):
    from tsn_dali.inspect import main

    out = io.StringIO()
    with redirect_stdout(out):
        assert main(["recipes/k400_r50.yaml", "--video", str(REAL / "video_90.mov"), "--split", "val"]) == 0
    text = out.getvalue()
    assert "3 frames, 320x568 upright (stored 568x320, turned 90 degrees clockwise)" in text
    assert "resize     320x568 -> 256x454" in text
    with redirect_stdout(io.StringIO()) as raw:
        main(["recipes/k400_r50.yaml", "--video", str(REAL / "video_90.mov"), "--json"])
    index = json.loads(raw.getvalue())["index"]
    assert (index["display_width"], index["display_height"], index["rotation"]) == (320, 568, 90)


@pytest.mark.parametrize("codec", ["h264", "vp9"])
@pytest.mark.parametrize("turn", [90, 180, 270])
def test_rotated_like_a_phone_comes_out_as_the_upright_file(tmp_path, codec, turn):
    """PyAV-made: the same frames stored upright and stored turned with a display matrix.
    VP9 takes dali-cpu's decoder path (turned in the DALI graph: fn.rotate), H.264 its frames
    path; VP9 in WebM is a matrix decord's FFmpeg does not read (PyAV turns those)."""
    frames = scene(6, 96, 64)
    ext = ".mp4" if codec == "h264" else ".webm"
    straight = write_rotated(tmp_path / f"upright{ext}", frames, 0, codec)
    turned = write_rotated(tmp_path / f"turned{ext}", frames, turn, codec)
    for name in CPU_EXECUTORS:
        a, b = render(name, straight), render(name, turned)
        assert mean_diff(a, b) <= 2.0, name
        assert mean_diff(a, np.rot90(b, 2, axes=(1, 2))) > 10.0  # the content tells a turn apart
    assert probe_video(turned).display_size == (96, 64) and probe_video(turned).rotation == turn
    assert DaliExecutor("cpu").route(ClipPlanner(VAL).plan(0, str(turned), 0, probe_video(turned)))[0] == \
        ("decoder" if codec == "vp9" else "frames")
    sliced, whole = render("dali-cpu", turned), render("dali-cpu", turned, slice_gops=False)
    assert np.array_equal(sliced, whole)


def test_display_rotation_follows_decords_rounding():
    assert [display_rotation(a) for a in (-90.0, 90.0, -180.0, 180.0, 0.0, None)] == [90, 270, 180, 180, 0, 0]
    assert display_rotation(-45.0) == 0 and display_rotation(-89.99) == 0  # decord turns only 90/180/270
    frames = np.arange(2 * 2 * 3 * 1).reshape(2, 2, 3, 1)
    assert upright(frames, 90).shape == (2, 3, 2, 1)
    assert upright(frames, 90)[0, 0, :, 0].tolist() == [3, 0]  # clockwise: the left column becomes the top row
    with pytest.raises(ValueError, match="rotation 45"):
        upright(frames, 45)


# --------------------------------------------------------------------------- several video streams


def test_a_real_two_stream_file_indexes_and_decodes_the_best_stream(tmp_path):
    """torchcodec's nasa_13013.mp4: stream 0 is 320x180 (325 frames), stream 3 480x270 (390
    frames); decord and FFmpeg's best-stream rule take stream 3. The index's count and size
    are stream 3's, and the loader's pixels match an independent PyAV decode of it."""
    path = REAL / "nasa_13013.mp4"
    info = probe_video(path)
    assert (info.stream_index, info.video_streams) == (3, 2)
    assert (info.num_frames, info.width, info.height) == (390, 480, 270)
    ops = [SampleFrames(clip_len=1, frame_interval=1, num_clips=5, test_mode=True), *VAL[1:]]
    plan = ClipPlanner(ops).plan(0, str(path), 0, info)
    assert max(plan.frame_indices) > 325  # sampling covers the decoded stream's 390 frames
    assert (plan.to_json()["stream_index"], plan.to_json()["video_streams"]) == (3, 2)
    with av.open(str(path)) as container:
        wanted, got = set(int(i) for i in plan.frame_indices), {}
        for i, frame in enumerate(container.decode(container.streams[3])):
            if i in wanted:
                got[i] = frame.to_ndarray(format="rgb24")
    independent = apply_plan(np.stack([got[int(i)] for i in plan.frame_indices]), plan)
    clips = {name: loader_clips(tmp_path / name, [(str(path), 0)], name, ops)[0] for name in CPU_EXECUTORS}
    for name, clip in clips.items():
        assert mean_diff(clip, independent) <= 1.0, name


def test_a_two_stream_vp9_file_goes_to_dalis_decoder_cut_to_the_indexed_stream(tmp_path):
    """Stream 1 (numbered frames, bigger) is decord's pick, not newer FFmpeg's (stream 0 is
    flagged default); DALI's decoder would read stream 0 of the whole file. Every path
    decodes stream 1: the frame numbers read back are the plan's."""
    first = np.full((10, 48, 64, 3), 128, np.uint8)  # other content, size, count; a lower bit rate
    second = np.stack(list(numbered_frames(14, 128, 96)))
    path = write_two_streams(tmp_path / "two.mp4", first, second)
    with av.open(str(path)) as container:
        assert container.streams.best("video").index == 0  # PyAV's FFmpeg: the default-flagged one
    info = probe_video(path)
    whole = [SampleFrames(clip_len=1, frame_interval=1, num_clips=4, test_mode=True)]
    plan = ClipPlanner(whole).plan(0, str(path), 0, info)
    for name, kw in [("reference", {}), ("dali-cpu", {}), ("dali-cpu", {"slice_gops": False})]:
        views = render(name, path, whole, **kw)
        assert [read_frame_number(v) for v in views] == plan.frame_indices.tolist(), (name, kw)
    assert (info.stream_index, info.video_streams, info.num_frames, info.width, info.height) == (1, 2, 14, 128, 96)
    assert decode_frames(str(path), [3], stream=1).shape == (1, 96, 128, 3)


def test_several_streams_that_cannot_be_cut_take_the_frames_path():
    facts = StreamFacts(codec="vp9", container="matroska,webm", video_streams=2, stream_index=1, sliceable=False)
    plan = replace(ClipPlanner(VAL).plan(0, "x.webm", 0, VideoInfo("x.webm", num_frames=8, width=64, height=48)),
                   stream=facts)
    assert DaliExecutor("cpu").route(plan) == ("frames", None)
    gpu = DaliExecutor("cuda:0", nvdec=NvdecSupport(0, probe=lambda s, p: None, compute_capability=(9, 0)))
    route, why = gpu.route(plan)
    assert route == "frames" and "2 video streams" in why and "stream 1" in why
    assert "2 video streams" in DaliExecutor("cpu").check_videos({"x.webm": facts})["x.webm"]
    one = StreamFacts(codec="vp9", container="matroska,webm", sliceable=False)
    assert gpu.route(replace(plan, stream=one)) == ("decoder", None)


# --------------------------------------------------------------------------- every file accounted for


def test_a_one_frame_webm_without_a_frame_rate_is_not_called_truncated(tmp_path):
    path = write_one_frame_webm(tmp_path / "one.webm")
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.average_rate is None and float(stream.guessed_rate) == 1000.0  # the time base's
    info = probe_video(path)
    assert info.ok and info.num_frames == 1 and info.duration_frames == 0 and info.short is None
    for name in CPU_EXECUTORS:
        assert render(name, path).shape == (3, 56, 56, 3)


def test_damaged_vp9_data_is_said_so_with_its_path(tmp_path):
    path = write_damaged_vp9(tmp_path / "damaged.webm")
    assert probe_video(path).ok  # the index can use it: the damage shows when its clip decodes
    plan = ClipPlanner(VAL).plan(0, str(path), 0, probe_video(path))
    ex = executor("dali-cpu")
    try:
        with pytest.raises(VideoDecodeError) as err:
            ex.render([plan])
    finally:
        ex.close()
    assert err.value.path == str(path) and "damaged vp9 data" in err.value.reason
    said = damaged_reason(plan, 'Failed to create video decoder for "memory file"')
    assert f'"{path}"' in said and "memory file" not in said and said.startswith("damaged vp9 data")


def test_loader_from_raises_for_an_unusable_video_under_on_bad_video_error(tmp_path, caplog):
    good = write_rotated(tmp_path / "good.webm", scene(8, 64, 48), 0, "vp9")
    bad = tmp_path / "bad.webm"
    bad.write_bytes(b"not a video")
    pairs = [(str(good), 0), (str(bad), 1)]
    with pytest.raises(DatasetError, match=r"videos: 1 bad video\(s\) \(on_bad_video is error\): .*bad.webm: "):
        loader_from(pairs, split="val", pipeline=VAL, batch_size=2, executor="dali-cpu", device="cpu",
                    index_cache=str(tmp_path / "idx"), on_bad_video="error")
    with caplog.at_level(logging.WARNING):
        loader = loader_from(pairs, split="val", pipeline=VAL, batch_size=2, executor="dali-cpu", device="cpu",
                             index_cache=str(tmp_path / "idx"))
    try:
        assert [d["path"] for d in loader.stats["dropped"]] == [str(bad)] and len(loader.records) == 1
    finally:
        loader.close()


def test_prepare_writes_the_indexed_stream_upright(tmp_path):
    """python -m tsn_dali.prepare re-encodes what the loader would read: a rotated video's
    frames upright (no display matrix left), a two-stream file's indexed stream."""
    from tsn_dali.prepare import reencode_video

    turned = probe_video(reencode_video(str(REAL / "video_90.mov"), str(tmp_path / "v90.mp4"), gop=2, crf=0))
    assert (turned.width, turned.height, turned.rotation, turned.num_frames) == (320, 568, 0, 3)
    assert mean_diff(render("reference", tmp_path / "v90.mp4"), render("reference", REAL / "video_90.mov")) <= 2.0
    nasa = probe_video(reencode_video(str(REAL / "nasa_13013.mp4"), str(tmp_path / "nasa.mp4"), short_side=64))
    assert (nasa.num_frames, nasa.width, nasa.height, nasa.video_streams) == (390, 114, 64, 1)  # stream 3: 480x270


def test_frames_of_another_size_than_the_plan_says_are_an_error_not_a_squashed_clip():
    """A plan made from an index entry that does not describe what the decoder gives (an
    index of before rotation was recorded: stored size, no turn) is refused by name."""
    info = probe_video(REAL / "video_90.mov")
    stale = replace(info, rotation=0)  # 568x320 and no turn, as the index used to say
    plan = ClipPlanner(VAL).plan(0, info.path, 0, stale)
    for name in CPU_EXECUTORS:
        ex = executor(name)
        try:
            with pytest.raises(VideoDecodeError, match=r"decoded frames are 320x568, the index says 568x320 upright"):
                ex.render([plan])
        finally:
            ex.close()


def test_a_batch_of_turned_and_upright_videos_turns_only_the_turned_ones(tmp_path):
    """One DALI run takes both (angle 0 for the upright one): each clip as rendered alone."""
    frames = scene(6, 96, 64)
    paths = [write_rotated(tmp_path / f"v{turn}.webm", frames, turn, "vp9") for turn in (0, 90, 270)]
    plans = [ClipPlanner(VAL).plan(i, str(p), 0, probe_video(p)) for i, p in enumerate(paths)]
    ex = executor("dali-cpu")
    try:
        together = ex.render(plans).numpy()
        alone = [ex.render([plan]).numpy()[0] for plan in plans]
    finally:
        ex.close()
    for got, want in zip(together, alone):
        assert np.array_equal(got, want)
    assert mean_diff(together[0], together[1]) <= 2.0 and mean_diff(together[0], together[2]) <= 2.0

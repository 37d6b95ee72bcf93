"""The DALI executors on CPU: real decoding (DALI's VP9 decoder, decord/PyAV for H.264),
frame identities, crop boxes, flips, normalisation, layout, errors, teardown, parity.

dali-gpu cannot run here (no GPU): its graph is the same function with device="gpu";
what can be checked without a GPU (argument arrays, codec routing) is checked.
"""
from __future__ import annotations

import dataclasses
import threading
from pathlib import Path

import av
import numpy as np
import pytest
import torch

pytest.importorskip("nvidia.dali")

from tsn_dali.data.errors import VideoDecodeError  # noqa: E402
from tsn_dali.data.render.executors import dali_pipeline  # noqa: E402
from tsn_dali.data.render.executors.dali import DaliExecutor, probe_codec  # noqa: E402
from tsn_dali.data.render.executors.nvdec import NvdecSupport  # noqa: E402
from tsn_dali.data.plan.clip_plan import ClipPlan, StreamFacts  # noqa: E402
from tsn_dali.data.media.videoio import read_frame_number, write_numbered_video, write_video  # noqa: E402

from helpers.real_videos import VIDEOS, needs_videos
MEAN, STD = [123.675, 116.28, 103.53], [58.395, 57.12, 57.375]  # MMAction2 img_norm_cfg
W, H, NUM_FRAMES = 160, 120, 12


def make_plan(path, frames, resize_to=(W, H), crops=((0, 0, W, H),), flips=(False,), out_size=None,
              orig=(W, H), num_frames=NUM_FRAMES, stream=None):
    crops = np.asarray(crops, np.int32).reshape(-1, 4)
    if out_size is None:
        out_size = (int(crops[0, 2] - crops[0, 0]), int(crops[0, 3] - crops[0, 1]))
    return ClipPlan(sample=0, path=str(path), label=1, num_frames=num_frames, orig_size=tuple(orig),
                    frame_indices=np.asarray(frames, np.int32), resize_to=tuple(resize_to), crops=crops,
                    crop_flips=np.asarray(flips, bool), out_size=tuple(out_size), stream=stream)


def np_bilinear(img: np.ndarray, w: int, h: int) -> np.ndarray:
    """cv2 INTER_LINEAR in numpy (half-pixel centres, edge clamp, no antialias), float result."""
    in_h, in_w = img.shape[:2]

    def taps(n_out, n_in):
        src = np.clip((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0, n_in - 1)
        i0 = np.floor(src).astype(int)
        return i0, np.minimum(i0 + 1, n_in - 1), src - i0

    y0, y1, wy = taps(h, in_h)
    x0, x1, wx = taps(w, in_w)
    f = img.astype(np.float64)
    rows = f[y0] * (1 - wy)[:, None, None] + f[y1] * wy[:, None, None]
    return rows[:, x0] * (1 - wx)[None, :, None] + rows[:, x1] * wx[None, :, None]


def pyav_frames(path):
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("dali_clips")
    out = {codec: write_numbered_video(str(root / f"n_{codec}{ext}"), NUM_FRAMES, W, H, codec=codec)
           for codec, ext in (("vp9", ".webm"), ("h264", ".mp4"))}
    # a smooth, asymmetric pattern (so crops, scale and mirroring show) that survives the codec
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    pattern = np.stack([xx * 255 / W, yy * 255 / H, 128 + 100 * np.sin(xx / 9 + yy / 13)], -1)
    frames = [np.clip(pattern + 3 * i, 0, 255).astype(np.uint8) for i in range(4)]
    out["pattern_vp9"] = write_video(str(root / "pattern.webm"), frames, codec="vp9", crf=10)
    out["pattern_frames"] = np.stack(frames)
    out["root"] = root
    return out


@pytest.fixture(scope="module")
def executor():
    ex = DaliExecutor("cpu", num_threads=2, decode_workers=2)
    yield ex
    ex.close()


@pytest.mark.parametrize("codec,source", [("vp9", "decoder"), ("h264", "frames")])
def test_frame_identities_shape_and_layout(clips, executor, codec, source):
    wanted = [[3, 1, 1, 11, 0], [7, 7, 2, 9, 4]]  # repeated and out of order
    plans = [make_plan(clips[codec], idx) for idx in wanted]
    # VP9 through DALI's decoder, H.264 decoded outside
    assert {executor.route(p) for p in plans} == {(source, None)}
    x = executor.render(plans)
    assert x.shape == (2, 5, 3, H, W) and x.dtype == torch.uint8 and x.device.type == "cpu"
    assert x[0].is_contiguous(memory_format=torch.channels_last)
    assert x.permute(0, 1, 3, 4, 2).is_contiguous()  # a view of one [N, V, H, W, C] buffer
    got = [[read_frame_number(v.permute(1, 2, 0).numpy()) for v in clip] for clip in x]
    assert got == wanted


@pytest.mark.parametrize("dtype", ["uint8", "float32"])
def test_crops_resize_and_flips_match_numpy(clips, executor, dtype):
    """resize_to 128x96 -> three 64x64 boxes (one mirrored) -> out_size 48x40, crop-major."""
    path = clips["pattern_vp9"]
    # DALI's own decode of the frames (its YUV->RGB differs from PyAV's by ~1-2 levels, see
    # test_vp9_decode_close_to_pyav), so that this test checks geometry only
    whole = executor.render([make_plan(path, [0, 1, 2, 3], num_frames=4)])
    decoded = whole[0].permute(0, 2, 3, 1).numpy()
    boxes = [(0, 0, 64, 64), (32, 16, 96, 80), (64, 32, 128, 96)]
    flips = [False, True, False]
    plan = make_plan(path, [2, 0], resize_to=(128, 96), crops=boxes, flips=flips, out_size=(48, 40), num_frames=4)
    x = executor.render([plan], dtype=dtype)
    assert x.shape == (1, 6, 3, 40, 48) and x.dtype == getattr(torch, dtype)
    views = x[0].permute(0, 2, 3, 1).float().numpy()
    for k, ((x1, y1, x2, y2), flip) in enumerate(zip(boxes, flips)):
        for t, frame in enumerate([2, 0]):
            resized = np.round(np_bilinear(decoded[frame], 128, 96)).clip(0, 255)
            expected = np.round(np_bilinear(resized[y1:y2, x1:x2], 48, 40)).clip(0, 255)
            if flip:
                expected = expected[:, ::-1]
            diff = np.abs(views[k * 2 + t] - expected)
            assert diff.mean() < 0.5 and diff.max() <= 2, (k, t, diff.mean(), diff.max())
    # the mirrored crop really is mirrored: unflipping it is worse than leaving it
    unflipped = np.round(np_bilinear(np.round(np_bilinear(decoded[2], 128, 96))[16:80, 32:96], 48, 40))
    assert np.abs(views[2] - unflipped).mean() > 5 * np.abs(views[2] - unflipped[:, ::-1]).mean() + 1


def test_vp9_decode_close_to_source_and_pyav(clips, executor):
    """DALI's CPU VP9 decoder vs the encoded pixels and vs PyAV (= decord: same swscale).

    Measured on this clip: DALI-source 0.87 mean abs levels, PyAV-source 2.2, DALI-PyAV 2.0
    (max 13, at colour edges): the two YUV->RGB conversions differ by about 1 level of bias
    plus chroma interpolation, so VP9 through DALI is not bit-equal to the reference."""
    path = clips["pattern_vp9"]
    x = executor.render([make_plan(path, [0, 1, 2, 3], num_frames=4)])[0].permute(0, 2, 3, 1).numpy()
    x = x.astype(np.float64)
    to_source = np.abs(x - clips["pattern_frames"]).mean()
    to_pyav = np.abs(x - pyav_frames(path))
    assert to_source < 1.5 and to_pyav.mean() < 3 and to_pyav.max() <= 20, (to_source, to_pyav.mean())


@pytest.mark.parametrize("dtype,tol", [("float16", 2e-3), ("float32", 1e-5), ("bfloat16", 1.6e-2)])
def test_normalisation(clips, executor, dtype, tol):
    plans = [make_plan(clips["h264"], [1, 5], crops=[(8, 8, 72, 56), (80, 40, 144, 88)], flips=[False, True])]
    raw = executor.render(plans).float()
    x = executor.render(plans, mean=MEAN, std=STD, dtype=dtype)
    assert x.dtype == getattr(torch, dtype) and x[0].is_contiguous(memory_format=torch.channels_last)
    expected = (raw - torch.tensor(MEAN).view(3, 1, 1)) / torch.tensor(STD).view(3, 1, 1)
    err = (x.float() - expected).abs() / expected.abs().clamp(min=1)
    assert err.max().item() <= tol
    with pytest.raises(ValueError, match="float dtype"):
        executor.render(plans, mean=MEAN, std=STD, dtype="uint8")


def test_batch_size_changes_reuse_pipelines(clips):
    ex = DaliExecutor("cpu", num_threads=1, decode_workers=1)
    try:
        a = make_plan(clips["vp9"], [4, 2])
        b = make_plan(clips["vp9"], [8, 6])
        first = ex.render([a, b])
        assert len(ex._pipelines) == 1
        one = ex.render([b])  # a smaller batch runs on the same pipeline
        again = ex.render([a, b])
        assert len(ex._pipelines) == 1
        assert torch.equal(first, again) and torch.equal(one[0], again[1])
        with pytest.raises(ValueError, match="different shapes"):
            ex.render([a, make_plan(clips["vp9"], [1, 2, 3])])
        # frames already in order need no rearrangement: another graph, the same frames
        in_order = ex.render([make_plan(clips["vp9"], [6, 8])])
        assert len(ex._pipelines) == 2 and torch.equal(in_order[0], one[0].flip(0))
    finally:
        ex.close()


@pytest.mark.parametrize("codec,good", [("vp9", "vp9"), ("h264", "h264")])
def test_decode_error_names_the_failing_video(clips, executor, codec, good, tmp_path):
    data = Path(clips[good]).read_bytes()
    bad = tmp_path / ("broken.webm" if codec == "vp9" else "broken.mp4")
    bad.write_bytes(data[:200] + bytes(4000))
    # the index's codec (a probe of the broken file would find none: decode outside DALI)
    plans = [make_plan(clips[good], [0, 1]), make_plan(bad, [0, 1], stream=StreamFacts(codec=codec)),
             make_plan(clips[good], [2, 3])]
    with pytest.raises(VideoDecodeError) as err:
        executor.render(plans)
    assert err.value.path == str(bad)
    # a frame past the end fails (DALI decoder with pad_mode none, decord/PyAV by count)
    with pytest.raises(VideoDecodeError) as err:
        executor.render([make_plan(clips[good], [0, 1]), make_plan(clips[good], [0, 40])])
    assert err.value.path == clips[good] and "40" in err.value.reason
    missing = tmp_path / "missing.mp4"
    with pytest.raises(VideoDecodeError, match="missing.mp4: file not found"):
        executor.render([make_plan(missing, [0, 1])])
    # the executor still works after the failures
    ok = executor.render([make_plan(clips[good], [5, 6])])
    assert [read_frame_number(v.permute(1, 2, 0).numpy()) for v in ok[0]] == [5, 6]


def test_build_and_close_leak_no_threads(clips):
    plans = [make_plan(clips["h264"], [0, 1])]
    before = threading.active_count()
    for _ in range(20):
        ex = DaliExecutor("cpu", num_threads=2, decode_workers=2)
        ex.render(plans + plans)
        ex.close()
    assert threading.active_count() <= before


def test_gpu_graph_arguments_and_routing(clips):
    """What dali-gpu feeds its graph, worked out without a GPU."""
    plan = make_plan(clips["h264"], [9, 3, 3], resize_to=(128, 96), crops=[(0, 0, 64, 64), (64, 32, 128, 96)],
                     flips=[True, False], out_size=(56, 56))
    encoded = np.fromfile(clips["h264"], np.uint8)
    args = dali_pipeline.plan_inputs(plan, order=np.array([1, 0, 0]), encoded=encoded,
                                     positions=np.array([3, 9]), mean=MEAN, std=STD)
    names = dali_pipeline.input_names(2, "decoder", True)
    assert [k for k in args if k in names] == names
    assert set(args) - set(names) == {"crop0_window", "crop1_window", "rotate_angle"}
    assert args["rotate_angle"].item() == 0.0  # an upright video: no fn.rotate in the graph
    assert "rotate_angle" in dali_pipeline.input_names(2, "decoder", True, rotate_frames=True)
    assert "rotate_angle" not in dali_pipeline.input_names(2, "frames", True, rotate_frames=True)
    for turn, angle in [(90, 270.0), (180, 180.0), (270, 90.0)]:  # fn.rotate turns counter-clockwise
        turned = dataclasses.replace(plan, stream=StreamFacts(codec="h264", rotation=turn))
        fed = dali_pipeline.plan_inputs(turned, order=np.array([1, 0, 0]), encoded=encoded,
                                        positions=np.array([3, 9]))
        assert fed["rotate_angle"].item() == angle and dali_pipeline.needs_rotate(fed)
        decoded = dali_pipeline.plan_inputs(turned, order=np.array([1, 0, 0]),
                                            frames=np.zeros((2, 4, 4, 3), np.uint8))
        assert decoded["rotate_angle"].item() == 0.0  # frames decoded outside DALI come upright
    fused = dali_pipeline.input_names(2, "decoder", True, resize_crops=False)
    assert "crop0_window" in fused and "crop0_start" not in fused and set(fused) <= set(args)
    assert args["frame_positions"].dtype == np.int32 and args["frame_positions"].tolist() == [3, 9]
    assert args["frame_order"].dtype == np.int32 and args["frame_order"].tolist() == [1, 0, 0]
    assert args["resize_hw"].tolist() == [96.0, 128.0]  # DALI's size order is (H, W)
    assert args["crop0_start"].tolist() == [0, 0] and args["crop0_shape"].tolist() == [64, 64]
    assert args["crop1_start"].tolist() == [64, 32] and args["crop1_shape"].tolist() == [64, 64]
    assert args["crop0_flip"].item() == 1 and args["crop1_flip"].item() == 0
    assert args["encoded"] is encoded
    with pytest.raises(ValueError, match="not inside the resized frame"):
        dali_pipeline.plan_inputs(make_plan(clips["h264"], [0], resize_to=(100, 80), crops=[(50, 0, 120, 60)]),
                                  order=np.array([0]), encoded=encoded, positions=np.array([0]))
    with pytest.raises(ValueError, match="does not map"):  # an order pointing past the decoded frames
        dali_pipeline.plan_inputs(plan, order=np.array([0, 2, 1]), encoded=encoded, positions=np.array([3, 9]))
    assert probe_codec(clips["h264"]) == "h264" and probe_codec(clips["vp9"]) == "vp9"
    # building pipelines needs a GPU; routing does not (NVDEC's answer stubbed: it decodes)
    gpu = DaliExecutor("cuda:0", nvdec=NvdecSupport(0, probe=lambda s, p: None, compute_capability=(9, 0)))
    assert gpu.name == "dali-gpu" and gpu.route(plan) == ("decoder", None)  # NVDEC reads H.264
    cpu = DaliExecutor("cpu")
    assert cpu.name == "dali-cpu" and cpu.route(plan) == ("frames", None)
    assert cpu.route(make_plan(clips["vp9"], [0])) == ("decoder", None)
    mm = DaliExecutor("cpu", decode="mmaction")  # decoded as MMAction2 does (decord), every codec
    assert mm.route(make_plan(clips["vp9"], [0])) == ("frames", None)


# --------------------------------------------------------------------------- parity


def _parity(dali_ex, plans, bound):
    from tsn_dali.data.render.executors.reference import ReferenceExecutor

    ref = ReferenceExecutor(workers=0)
    a = dali_ex.render(plans, mean=MEAN, std=STD, dtype="float32")
    b = ref.render(plans, mean=MEAN, std=STD, dtype="float32")
    assert a.shape == b.shape
    diff = (a - b).abs()
    assert diff.mean().item() <= bound, diff.mean().item()
    return a, b, (diff * torch.tensor(STD).view(3, 1, 1)).max().item()  # largest, in grey levels


@pytest.mark.parametrize("frame,box", [((61, 23), (40, 16)), ((340, 256), (224, 224))])
def test_fused_crops_land_on_every_offset(frame, box):
    """Boxes of out_size are cut by one crop_mirror_normalize from a normalised position:
    every x offset (and y offsets in turn), mirrored or not, equals numpy slicing, in uint8
    and normalised float32."""
    (fw, fh), (bw, bh) = frame, box
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (2, fh, fw, 3), dtype=np.uint8)
    offsets = [(x, (3 * x) % (fh - bh + 1)) for x in range(fw - bw + 1)] + [(fw - bw, fh - bh), (0, fh - bh)]
    plans = [make_plan("x.mp4", [0, 1], resize_to=frame, orig=frame, crops=[(x, y, x + bw, y + bh)],
                       flips=[i % 2 == 1], out_size=box) for i, (x, y) in enumerate(offsets)]
    assert not any(dali_pipeline.crops_need_resize(p) for p in plans)
    for dtype, normalise in (("uint8", False), ("float32", True)):
        pipe = dali_pipeline.build_pipeline(device="cpu", batch_size=len(plans), num_crops=1, out_size=box,
                                            out_dtype=dtype, source="frames", normalise=normalise, num_threads=1,
                                            resize_frames=False, reorder_frames=False, resize_crops=False)
        mean, std = (MEAN, STD) if normalise else (None, None)
        samples = [dali_pipeline.plan_inputs(p, order=np.array([0, 1]), frames=frames, mean=mean, std=std)
                   for p in plans]
        dali_pipeline.feed(pipe, samples, dali_pipeline.input_names(1, "frames", normalise, False, False, False))
        (out,) = pipe.run()
        got = np.array(out.as_tensor())
        for i, (x, y) in enumerate(offsets):
            want = frames[:, y:y + bh, x:x + bw][:, :, ::-1 if i % 2 else 1].astype(np.float32)
            if normalise:
                want = (want - np.float32(MEAN)) / np.float32(STD)
                assert np.allclose(got[i], want, atol=1e-5), (x, y)
            else:
                assert np.array_equal(got[i], want.astype(np.uint8)), (x, y)
        del pipe


@pytest.mark.parametrize("codec", ["vp9", "h264"])
def test_parity_with_reference_numbered(clips, executor, codec):
    pytest.importorskip("tsn_dali.data.render.executors.reference")
    plans = [make_plan(clips[codec], [11, 0, 6], resize_to=(128, 96), crops=[(0, 0, 128, 96)], out_size=(128, 96)),
             make_plan(clips[codec], [2, 2, 9], resize_to=(128, 96), crops=[(0, 0, 128, 96)], out_size=(128, 96))]
    # H.264: both decode with decord and resize alike: equal. VP9: DALI's decoder vs decord,
    # ~2 grey levels apart (test_vp9_decode_close_to_source_and_pyav), i.e. ~0.035 after /std
    a, b, _ = _parity(executor, plans, bound=0.06 if codec == "vp9" else 1e-6)
    for x in (a, b):
        pixels = x * torch.tensor(STD).view(3, 1, 1) + torch.tensor(MEAN).view(3, 1, 1)
        got = [[read_frame_number(v.permute(1, 2, 0).numpy()) for v in clip] for clip in pixels]
        assert got == [[11, 0, 6], [2, 2, 9]]


@needs_videos
@pytest.mark.parametrize("name,orig,resize_to", [("demo.mp4", (340, 256), (340, 256)),
                                                 ("demo_skeleton_1080p.mp4", (1920, 1080), (455, 256)),
                                                 ("test_mpeg4.avi", (320, 240), (341, 256))])
def test_parity_with_reference_real_clips(executor, name, orig, resize_to):
    """Real encoders (H.264, MPEG-4 Part 2): ThreeCrop-style 224 boxes, one mirrored."""
    pytest.importorskip("tsn_dali.data.render.executors.reference")
    rw, rh = resize_to
    s = min(rw, rh, 224)
    boxes = [(0, 0, s, s), ((rw - s) // 2, (rh - s) // 2, (rw - s) // 2 + s, (rh - s) // 2 + s), (rw - s, rh - s, rw, rh)]
    plan = make_plan(VIDEOS / name, [0, 31, 5, 31], resize_to=resize_to, crops=boxes, flips=[False, True, False],
                     out_size=(112, 112), orig=orig, num_frames=60)
    # same decoder (decord), same resize rule: DALI's resize and torch's interpolate differ
    # by 1 grey level at a few pixels when shrinking 1080p (rounding), measured mean 1.5e-5
    a, _, max_levels = _parity(executor, [plan], bound=1e-3)
    assert max_levels <= 1.01
    assert a.shape == (1, 12, 3, 112, 112)
    assert torch.equal(a[0, 1], a[0, 3])  # frame 31 twice


@pytest.mark.parametrize("source", ["decoder", "frames"])
def test_gpu_graph_definition_builds_on_gpu_nodes(source):
    """The device="gpu" graph is defined (not built: that needs CUDA) and ends on the GPU."""
    from nvidia.dali import Pipeline

    pipe = Pipeline(batch_size=2, num_threads=1, device_id=0, exec_async=False, exec_pipelined=False)
    with pipe:
        out = dali_pipeline.clip_graph(device="gpu", num_crops=3, out_size=(56, 56), out_dtype="float16",
                                       source=source, normalise=True)
    assert out.device == "gpu"
    with pytest.raises(ValueError, match="float out_dtype"):
        with pipe:
            dali_pipeline.clip_graph(device="gpu", num_crops=1, out_size=(56, 56), out_dtype="uint8",
                                     source=source, normalise=True)


def test_output_is_a_view_of_dali_buffers_that_later_runs_leave_alone(tmp_path, monkeypatch):
    """render() hands out DALI's own output buffer (DLPack, no copy: the copying helper is
    made to fail here) and later runs do not overwrite it (DALI's dynamic executor keeps a
    run's output alive while torch holds it)."""
    if not dali_pipeline.OUTPUTS_OUTLIVE_RUN:
        pytest.skip("this DALI has no dynamic executor: one copy per batch instead")
    import nvidia.dali.plugin.pytorch as dali_torch
    import torch

    def no_copy(*args, **kwargs):
        raise AssertionError("feed_ndarray (a copy) was used")

    monkeypatch.setattr(dali_torch, "feed_ndarray", no_copy)
    path = write_numbered_video(str(tmp_path / "z.webm"), NUM_FRAMES, W, H, codec="vp9")
    ex = DaliExecutor(device="cpu", num_threads=1)
    try:
        first = ex.render([make_plan(path, [1, 2, 3])])
        kept = first.clone()
        for n in range(4):
            ex.render([make_plan(path, [5 + n, 9, 10])])
        assert torch.equal(first, kept)
        assert [read_frame_number(v.permute(1, 2, 0).numpy()) for v in first[0]] == [1, 2, 3]
    finally:
        ex.close()

"""The reference executor: real decoding (decord, PyAV, PNG frames), crops, flips, layout."""
from __future__ import annotations

import multiprocessing
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tsn_dali.data.render import executors
from tsn_dali.data.errors import VideoDecodeError
from tsn_dali.data.render.executors import build_executor, resolve_executor_name
from tsn_dali.data.media.decoding import decode_decord, decode_pyav
from tsn_dali.data.render.executors.reference import ReferenceExecutor
from tsn_dali.data.plan.clip_plan import ClipPlan
from tsn_dali.data.media.videoio import read_frame_number, video_extension, write_numbered_video

from helpers.real_videos import VIDEOS, needs_videos


def make_plan(path, frames, orig, resize_to, crops, flips, out_size, num_frames=100):
    return ClipPlan(sample=0, path=str(path), label=3, num_frames=num_frames, orig_size=tuple(orig),
                    frame_indices=np.asarray(frames, np.int32), resize_to=tuple(resize_to),
                    crops=np.asarray(crops, np.int32).reshape(-1, 4),
                    crop_flips=np.asarray(flips, bool), out_size=tuple(out_size))


def np_resize_linear(img: np.ndarray, w: int, h: int) -> np.ndarray:
    """cv2 INTER_LINEAR written out in numpy: half-pixel centres, edge clamp, no antialias."""
    H, W = img.shape[:2]

    def axis(n_out, n_in):
        src = np.maximum((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0.0)
        i0 = np.minimum(np.floor(src).astype(int), n_in - 1)
        i1 = np.minimum(i0 + 1, n_in - 1)
        return i0, i1, src - i0

    y0, y1, wy = axis(h, H)
    x0, x1, wx = axis(w, W)
    f = img.astype(np.float64)
    top = f[y0][:, x0] * (1 - wx)[None, :, None] + f[y0][:, x1] * wx[None, :, None]
    bot = f[y1][:, x0] * (1 - wx)[None, :, None] + f[y1][:, x1] * wx[None, :, None]
    out = top * (1 - wy)[:, None, None] + bot * wy[:, None, None]
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def expected_views(frames, plan):
    """The ClipPlan rule in plain numpy: resize, crop, resize to out_size, flip; crop-major."""
    views = []
    for (x1, y1, x2, y2), flip in zip(plan.crops.tolist(), plan.crop_flips.tolist()):
        for frame in frames:
            img = np_resize_linear(frame, *plan.resize_to)[y1:y2, x1:x2]
            if (x2 - x1, y2 - y1) != tuple(plan.out_size):
                img = np_resize_linear(img, *plan.out_size)
            views.append(img[:, ::-1] if flip else img)
    return np.stack(views)


@pytest.fixture(scope="module")
def numbered(tmp_path_factory):
    root = tmp_path_factory.mktemp("numbered")
    return {codec: write_numbered_video(str(root / f"n{video_extension(codec)}"), 40, 96, 64,
                                        codec=codec, gop=10)
            for codec in ("h264", "vp9")}


@pytest.mark.parametrize("codec", ["h264", "vp9"])
@pytest.mark.parametrize("decoder", ["decord", "pyav"])
def test_frame_identities(numbered, codec, decoder):
    frames = [17, 0, 39, 5, 5, 22]  # unsorted, repeated, last frame
    plan = make_plan(numbered[codec], frames, (96, 64), (96, 64), [[0, 0, 96, 64]], [False], (96, 64))
    ex = ReferenceExecutor(decoder=decoder)
    out = ex.render([plan, plan])
    assert out.shape == (2, len(frames), 3, 64, 96) and out.dtype == torch.uint8
    for n in range(2):
        assert [read_frame_number(v.numpy()) for v in out[n]] == frames
    # Resized whole frames still read back.
    small = make_plan(numbered[codec], frames, (96, 64), (48, 32), [[0, 0, 48, 32]], [False], (48, 32))
    assert [read_frame_number(v.numpy()) for v in ex.render([small])[0]] == frames


def test_frame_out_of_range_is_a_decode_error(numbered):
    plan = make_plan(numbered["h264"], [3, 40], (96, 64), (96, 64), [[0, 0, 96, 64]], [False], (96, 64))
    with pytest.raises(VideoDecodeError, match="frame 40"):
        ReferenceExecutor().render([plan])


def test_bad_files_raise_video_decode_error(tmp_path):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video at all" * 50)
    for path, reason in [(tmp_path / "missing.mp4", "file not found"), (junk, "decord")]:
        plan = make_plan(path, [0], (96, 64), (96, 64), [[0, 0, 96, 64]], [False], (96, 64))
        with pytest.raises(VideoDecodeError) as info:
            ReferenceExecutor().render([plan])
        assert info.value.path == str(path) and reason in info.value.reason
        assert "\n" not in str(info.value)


def test_crops_flips_and_resizes_match_numpy_on_png_frames(tmp_path):
    rng = np.random.default_rng(0)
    frames = {i: rng.integers(0, 256, (48, 64, 3), dtype=np.uint8) for i in range(1, 6)}
    for i, img in frames.items():
        Image.fromarray(img).save(tmp_path / f"img_{i:05}.png")
    plan = make_plan(tmp_path, [1, 4, 4, 2], (64, 48), (80, 60),
                     [[4, 2, 52, 50], [30, 10, 78, 58], [0, 0, 48, 48]], [False, True, True], (40, 40))
    ex = ReferenceExecutor(filename_tmpl="img_{:05}.png")
    got = ex.render([plan])[0].permute(0, 2, 3, 1).numpy()
    want = expected_views([frames[i] for i in plan.frame_indices], plan)
    assert got.shape == want.shape == (12, 40, 40, 3)
    assert np.abs(got.astype(int) - want.astype(int)).max() <= 1
    # The flip really mirrors: view 4 (crop 1, frame 1) is crop 1 of frame 1 read right to left.
    unflipped = np_resize_linear(np_resize_linear(frames[1], 80, 60)[10:58, 30:78], 40, 40)
    assert np.abs(got[4].astype(int) - unflipped[:, ::-1].astype(int)).max() <= 1
    assert np.abs(got[4].astype(int) - unflipped.astype(int)).max() > 50


def test_crops_on_video_match_numpy_on_pyav_frames(numbered):
    path = numbered["h264"]
    import av

    with av.open(path) as container:
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    plan = make_plan(path, [3, 30], (96, 64), (120, 80), [[10, 5, 74, 69], [56, 16, 120, 80]],
                     [True, False], (56, 56))
    got = ReferenceExecutor(decoder="pyav").render([plan])[0].permute(0, 2, 3, 1).numpy()
    want = expected_views([decoded[i] for i in plan.frame_indices], plan)
    assert np.abs(got.astype(int) - want.astype(int)).max() <= 1


def test_channels_last_view_and_normalisation(numbered):
    plan = make_plan(numbered["vp9"], [1, 2, 3], (96, 64), (96, 64), [[0, 0, 64, 64], [32, 0, 96, 64]],
                     [False, True], (64, 64))
    ex = ReferenceExecutor()
    raw = ex.render([plan, plan])
    n, v, c, h, w = raw.shape
    assert (n, v, c, h, w) == (2, 6, 3, 64, 64)
    assert raw.stride() == (v * h * w * c, h * w * c, 1, w * c, c)  # permuted NVHWC buffer
    assert raw.flatten(0, 1).is_contiguous(memory_format=torch.channels_last)
    mean, std = [10.0, 20.0, 30.0], [2.0, 4.0, 8.0]
    for dtype, tol in [("float32", 1e-5), ("float16", 0.05), ("bfloat16", 0.3)]:
        x = ex.render([plan, plan], mean=mean, std=std, dtype=dtype)
        assert x.dtype == getattr(torch, dtype) and x.stride() == raw.stride()
        want = (raw.float() - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)
        assert torch.allclose(x.float(), want, atol=tol, rtol=0.01)
    with pytest.raises(ValueError, match="float dtype"):
        ex.render([plan], mean=mean, std=std, dtype="uint8")


def test_dataloader_workers_give_the_same_batch(numbered):
    plans = [make_plan(numbered[c], [i, 2 * i + 1], (96, 64), (72, 48), [[8, 0, 56, 48]], [i % 2 == 1],
                       (48, 48)) for i, c in enumerate(["h264", "vp9", "h264"])]
    single = ReferenceExecutor(workers=0).render(plans)
    ex = ReferenceExecutor(workers=2)
    try:
        assert torch.equal(ex.render(plans), single)
        assert torch.equal(ex.render(plans[::-1]), single.flip(0))  # persistent workers, new plans
        bad = make_plan("/nonexistent/x.mp4", [0, 1], (96, 64), (72, 48), [[8, 0, 56, 48]], [False], (48, 48))
        with pytest.raises(VideoDecodeError, match="file not found"):
            ex.render([plans[0], bad])
        assert torch.equal(ex.render(plans), single)  # still usable after a failure
        assert len(multiprocessing.active_children()) >= 2
    finally:
        ex.close()
    assert not multiprocessing.active_children()  # close() stopped the worker processes


@needs_videos
@pytest.mark.parametrize("name", ["short_32f.mp4", "test_mpeg4.avi"])
def test_decord_and_pyav_agree_on_real_clips(name):
    path = str(VIDEOS / name)
    frames = [0, 7, 31, 31, 12]
    a, b = decode_decord(path, frames), decode_pyav(path, frames)
    assert a.shape == b.shape and a.shape[0] == 5 and a.shape[-1] == 3
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 1
    assert np.abs(a[0].astype(int) - a[1].astype(int)).mean() > 1  # different frames differ


def test_build_executor_names(monkeypatch):
    ex = build_executor("reference", reference_workers=0)
    assert isinstance(ex, ReferenceExecutor) and ex.name == "reference" and ex.device == torch.device("cpu")
    with pytest.raises(ValueError, match="unknown executor 'dali'; expected one of auto, dali-gpu"):
        build_executor("dali")
    assert (ex.decoder, ex.resize) == ("auto", "float")  # by name: the exact oracle (decord, float)
    if not torch.cuda.is_available():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "DALI not usable" where dali.py is absent
            assert resolve_executor_name("auto", "cuda") != "dali-gpu"
    # on a CPU device auto is the fastest CPU loader: the reference executor, GOP decoder, uint8
    assert resolve_executor_name("auto") == "reference"
    fast = build_executor("auto", reference_workers=0)
    assert isinstance(fast, ReferenceExecutor) and (fast.decoder, fast.resize) == ("gops", "uint8")
    monkeypatch.setattr(executors, "_dali_importable", lambda: "ImportError: no DALI")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ex = build_executor("auto", device="cuda", reference_workers=0)
    assert isinstance(ex, ReferenceExecutor)
    assert any("no DALI" in str(w.message) and "reference" in str(w.message) for w in caught)


def test_worker_renders_leave_torch_global_rng_alone(tmp_path):
    """Rendering with DataLoader workers draws no numbers from torch's global generator
    (it would race with dropout in the training thread under --deterministic)."""
    import torch
    from tsn_dali.data.render.executors.reference import ReferenceExecutor
    from tsn_dali.data.plan.clip_plan import ClipPlan
    from tsn_dali.data.media.videoio import write_numbered_video
    import numpy as np

    path = write_numbered_video(str(tmp_path / "a.mp4"), 8, 64, 48)
    plan = ClipPlan(sample=0, path=path, label=0, num_frames=8, orig_size=(64, 48),
                    frame_indices=np.array([1, 5], np.int32), resize_to=(64, 48),
                    crops=np.array([[0, 0, 64, 48]], np.int32), crop_flips=np.array([False]),
                    out_size=(64, 48))
    ex = ReferenceExecutor(workers=1)
    try:
        torch.manual_seed(123)
        expected = torch.rand(3)
        torch.manual_seed(123)
        ex.render([plan])
        ex.render([plan])
        assert torch.equal(torch.rand(3), expected)
    finally:
        ex.close()


def _signals(pid: int) -> dict:
    """A process's caught and ignored signal masks (/proc/<pid>/status)."""
    fields = dict(line.split(":\t", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                  if ":\t" in line)
    return {k: int(fields[k].strip(), 16) for k in ("SigCgt", "SigIgn")}


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux's /proc")
def test_workers_die_on_sigterm_under_the_trainers_handler():
    """The trainer records SIGTERM in a Python handler (engine/signals.py) and a forked worker
    inherits it: a worker must restore SIGTERM's default, or Pool.terminate (close) waits
    forever on one blocked on the task-queue lock; SIGINT is ignored (the parent's to handle)."""
    import signal
    import time

    from tsn_dali.engine.signals import StopRequest

    stop = StopRequest().install()
    ex = ReferenceExecutor(workers=2)
    try:
        pool = ex._workers()
        assert _signals(multiprocessing.current_process().pid)["SigCgt"] & (1 << (signal.SIGTERM - 1))
        deadline = time.monotonic() + 30
        masks = []
        while time.monotonic() < deadline:
            masks = [_signals(p.pid) for p in pool._pool]
            if all(not m["SigCgt"] & (1 << (signal.SIGTERM - 1)) and m["SigIgn"] & (1 << (signal.SIGINT - 1))
                   for m in masks):
                break
            time.sleep(0.05)
        else:
            raise AssertionError(f"a worker still catches SIGTERM or takes SIGINT: {masks}")
    finally:
        ex.close()
        stop.uninstall()

"""benchmarks/gpu_check.py and gpu_report.py: every check fails when fed a wrong answer that
models a real GPU failure (swapped crops, a colour-range error, a half-pixel shift, a crop
placed in the coded width, a stale buffer reused while the consumer still reads it), and
the script exits 1 then. No GPU here: the race is reproduced with stand-ins for DALI's
memory pool and the consumer's CUDA stream (as tests/test_streams.py stands in for
streams), on the real loader and hand-off guard."""
from __future__ import annotations

import contextlib
import importlib.util
import json
import subprocess
import sys
import tempfile
import weakref
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers.tiny_clips import make_dataset, recipe_yaml
from tsn_dali.data.plan.clip_plan import StreamFacts

ROOT = Path(__file__).resolve().parents[1]


def load(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gc = load("gpu_check")
report = load("gpu_report")


def views(n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 255, (n, 3, 8, 8), generator=g, dtype=torch.uint8)


def scene(size=(96, 128), seed=0):
    """A smooth random picture with edges (what a camera gives), uint8 [3, H, W]."""
    g = torch.Generator().manual_seed(seed)
    small = torch.rand((1, 3, size[0] // 8, size[1] // 8), generator=g) * 255
    return torch.nn.functional.interpolate(small, size=size, mode="bilinear", align_corners=False)[0].round().to(
        torch.uint8)


def three_crop_plan(width=340, height=256, frames=(4, 12), crop=64):
    """A ClipPlan of ``frames`` x three crops (the middle one mirrored), no resize."""
    return gc.ClipPlan(sample=0, path="x.mp4", label=0, num_frames=64, orig_size=(width, height),
                       frame_indices=np.asarray(frames, np.int32), resize_to=(width, height),
                       crops=np.asarray([(0, 0, crop, crop), ((width - crop) // 2, 0, (width + crop) // 2, crop),
                                         (width - crop, 0, width, crop)], np.int32),
                       crop_flips=np.array([False, True, False]), out_size=(crop, crop), stream=StreamFacts("h264"))


def render(plan, frames):
    """``plan``'s views of ``frames`` ([3, H, W] each) with torch: crop-major, mirrored where asked."""
    out = []
    for (x1, y1, x2, y2), flip in zip(plan.crops.tolist(), plan.crop_flips):
        for f in frames:
            v = f[:, y1:y2, x1:x2]
            out.append(v.flip(-1) if flip else v)
    return torch.stack(out)


def test_frames_match_fails_on_a_swap_or_a_wrong_number():
    assert gc.frames_match([4, 12, 20], [4, 12, 20]) is None
    assert "read [12, 4, 20]" in gc.frames_match([12, 4, 20], [4, 12, 20])
    assert gc.frames_match([5, 12, 20], [4, 12, 20]) is not None


def test_identical_fails_on_one_byte():
    a = views()
    assert gc.identical(a, a.clone()) is None
    b = a.clone()
    b[2, 1, 3, 4] += 1
    assert gc.identical(a, b) == "1 value(s) differ, first at [2, 1, 3, 4]"
    assert gc.identical(a, gc.corrupt(a, "swap-frame")) is not None
    assert "shape" in gc.identical(a, a[:3])


@pytest.fixture(scope="module")
def frames():
    return [scene((256, 340), seed) for seed in (1, 2)]


def test_views_match_passes_colour_noise_and_fails_each_gpu_fault(frames):
    plan = three_crop_plan()
    ref = render(plan, frames)
    noise = torch.randint(-2, 3, ref.shape, generator=torch.Generator().manual_seed(3))
    noisy = (ref.int() + noise).clamp(0, 255).to(torch.uint8)  # a colour conversion's rounding
    problem, figures = gc.views_match(noisy, ref, plan)
    assert problem is None and figures["mean_abs_diff"] < 1.5 and figures["max_shift_px"] < gc.SHIFT_BOUND
    for fault, says in (("swap-crop", "than to its twin"), ("colour-range", "that colour conversion explains"),
                        ("shift", "shifted by"), ("coded-size", "")):
        problem, _ = gc.views_match(gc.gpu_fault(noisy, fault, plan), ref, plan)
        assert problem is not None and says in problem, (fault, problem)
    swapped = gc.gpu_fault(noisy, "swap-crop", plan)
    assert "view 0 (crop 0, frame 4) is nearer to view 4 (crop 2, frame 4)" in gc.views_match(swapped, ref, plan)[0]
    assert "shape" in gc.views_match(noisy[:, :, :, :-1], ref, plan)[0]


def test_a_repeated_frame_is_a_tie_not_a_mismatch(frames):
    plan = three_crop_plan(frames=(4, 4))
    ref = render(plan, [frames[0], frames[0]])
    assert gc.views_match(ref.clone(), ref, plan)[0] is None
    swapped = ref.clone()
    swapped[[0, 1]] = swapped[[1, 0]]  # the two views of frame 4 in crop 0 look the same
    assert gc.views_match(swapped, ref, plan)[0] is None


def test_coded_size_moves_crops_only_where_the_width_is_not_a_multiple_of_16(frames):
    plan = three_crop_plan()
    ref = render(plan, frames)
    moved = gc.gpu_fault(ref, "coded-size", plan)
    assert torch.equal(moved[:2], ref[:2])  # crop 0 starts at 0: in place under either width
    assert not torch.equal(moved[2:], ref[2:])
    even = three_crop_plan(width=320)
    assert torch.equal(gc.gpu_fault(render(even, frames), "coded-size", even), render(even, frames))
    # the middle crop (mirrored) shows what lies dx px further right in the frame
    x1 = (340 - 64) // 2
    dx = round(x1 * 12 / (340 - 64))
    assert dx == 6 and torch.equal(moved[2].flip(-1)[..., :64 - dx], frames[0][:, :64, x1 + dx:x1 + 64])


def test_the_colour_bound_holds_what_dalis_colour_conversion_explains():
    """The bound against the thing it bounds, on a real encode: DALI's YUV->RGB (BT.601,
    chroma bilinear at centred sites), written out in numpy on PyAV's YUV planes, against
    PyAV's own RGB (swscale) of a K400-like synthetic clip: far below COLOUR_BOUND, while a
    limited-range picture shown as full range is far above it."""
    av = pytest.importorskip("av")
    from tsn_dali.data.media.synthetic import SyntheticSpec, render_video
    from tsn_dali.data.media.videoio import write_video

    spec = SyntheticSpec(videos=1, classes=1, frames=8, width=340, height=256)
    with tempfile.TemporaryDirectory() as tmp:
        path = write_video(f"{tmp}/k400like.mp4", list(render_video(spec, "train", 0, 0)), codec="h264")
        ours, theirs = [], []
        with av.open(path) as container:
            for frame in container.decode(video=0):
                theirs.append(frame.to_ndarray(format="rgb24"))
                ours.append(bt601_limited(frame.to_ndarray(format="yuv420p"), frame.width, frame.height))
    colour = np.mean([np.abs(a.astype(int) - b.astype(int)).mean() for a, b in zip(ours, theirs)])
    range_error = np.mean([np.abs(np.round(16 + b * 219 / 255) - b).mean() for b in theirs])
    assert 0.3 < colour < gc.COLOUR_BOUND / 1.5, colour  # the two conversions differ, well within the bound
    assert range_error > 2 * gc.COLOUR_BOUND, range_error
    for a, b in zip(ours, theirs):
        dx, dy = gc.shift_estimate(torch.from_numpy(a).permute(2, 0, 1), torch.from_numpy(b).permute(2, 0, 1))
        assert max(abs(dx), abs(dy)) < gc.SHIFT_BOUND / 2


def bt601_limited(yuv: np.ndarray, width: int, height: int) -> np.ndarray:
    """DALI's video colour conversion (facts from DALI 2.4's color_space.cu): luma as is,
    chroma sampled bilinearly at (x + 0.5) / 2 - 0.5 (centred sites), BT.601 limited range."""
    y = yuv[:height].astype(np.float64)
    cw, ch = width // 2, height // 2
    chroma = yuv[height:].reshape(-1)
    u, v = chroma[:cw * ch].reshape(ch, cw), chroma[cw * ch:2 * cw * ch].reshape(ch, cw)

    def up(p):
        xs, ys = (np.arange(width) + 0.5) / 2 - 0.5, (np.arange(height) + 0.5) / 2 - 0.5
        x0, y0 = np.floor(xs).astype(int), np.floor(ys).astype(int)
        fx, fy = (xs - x0)[None, :], (ys - y0)[:, None]
        xa, xb = np.clip(x0, 0, cw - 1), np.clip(x0 + 1, 0, cw - 1)
        ya, yb = np.clip(y0, 0, ch - 1), np.clip(y0 + 1, 0, ch - 1)
        p = p.astype(np.float64)
        top = p[ya][:, xa] * (1 - fx) + p[ya][:, xb] * fx
        bottom = p[yb][:, xa] * (1 - fx) + p[yb][:, xb] * fx
        return top * (1 - fy) + bottom * fy - 128

    cb, cr = up(u), up(v)
    luma = 1.164 * (y - 16)
    rgb = np.stack([luma + 1.596 * cr, luma - 0.392 * cb - 0.813 * cr, luma + 2.017 * cb], -1)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def test_shift_estimate_reads_a_half_pixel_and_nothing_on_a_flat_view(frames):
    a = frames[0][:, :64, :64]
    dx, dy = gc.shift_estimate(gc.gpu_fault(a[None], "shift", three_crop_plan())[0], a)
    assert 0.3 < dx < 0.7 and 0.3 < dy < 0.7
    flat = torch.full((3, 16, 16), 90, dtype=torch.uint8)
    assert gc.shift_estimate(flat, flat) == (0.0, 0.0)


def test_bf16_close_fails_beyond_rounding():
    x = torch.randn(4, 3, 8, 8) * 3
    assert gc.bf16_close(x.to(torch.bfloat16), x) is None
    assert gc.bf16_close(gc.corrupt(x.to(torch.bfloat16), "flip-byte"), x) is not None
    assert gc.bf16_close(gc.corrupt(x.to(torch.bfloat16), "swap-frame"), x) is not None


def test_checksums_agree_fails_on_one_batch():
    assert gc.checksums_agree([1.0, 2.0], [1.0, 2.0]) is None
    assert "batch(es) [1] differ" in gc.checksums_agree([1.0, 2.5], [1.0, 2.0])
    assert "3 view batches" in gc.checksums_agree([1.0, 2.0, 3.0], [1.0, 2.0])


def test_view_integrity_counts_only_where_its_control_failed():
    copy = [1.0, 2.0, 3.0]
    assert gc.integrity_verdict(copy, copy, [1.0, 3.0, 3.0])[0] == "PASS"
    assert gc.integrity_verdict(copy, copy, copy)[0] == "UNPROVEN"  # the control passed: proves nothing
    assert gc.integrity_verdict(copy, copy, None)[0] == "UNPROVEN"
    assert gc.integrity_verdict(gc.stale(copy), copy, [1.0, 3.0, 3.0])[0] == "FAIL"


def test_view_integrity_is_recorded_at_once_and_again_after_its_control(tmp_path):
    """On a GPU the control runs after every other check: view_integrity is first recorded
    UNPROVEN (control pending), then replaced by the verdict once the control ran; a run
    killed in the control keeps the first record and every other check."""
    from types import SimpleNamespace

    integrity = object.__new__(gc.ViewIntegrity)
    integrity.dev, integrity.fault = torch.device("cuda", 0), "none"
    integrity.args = SimpleNamespace(batch=4, lag_ms=50.0)
    integrity.sums = {"view": [1.0, 2.0, 3.0], "copy": [1.0, 2.0, 3.0]}
    checks = gc.Checks(tmp_path)
    integrity.record(checks)
    checks.add("speed_note", "x", None)
    saved = json.loads((tmp_path / "gpu_check.json").read_text())["checks"]
    assert saved[0]["status"] == "UNPROVEN" and "runs after every other check" in saved[0]["detail"]
    integrity.sums["control"] = [1.0, 3.0, 3.0]  # the race, reproduced
    integrity.record(checks)
    saved = json.loads((tmp_path / "gpu_check.json").read_text())["checks"]
    assert [c["check"] for c in saved] == ["speed_note", "view_integrity"] and saved[1]["status"] == "PASS"
    assert "the consumer 50 ms behind a step" in saved[1]["subject"]


def test_corrupt_and_gpu_faults_change_the_tensor(frames):
    a = views()
    for fault in ("swap-frame", "flip-byte"):
        assert not torch.equal(gc.corrupt(a, fault), a)
    assert gc.corrupt(a, "none") is a and gc.corrupt(a, "shift") is a
    plan = three_crop_plan()
    rendered = render(plan, frames)
    for fault in gc.GPU_FAULTS:
        assert not torch.equal(gc.gpu_fault(rendered, fault, plan), rendered), fault
    assert gc.gpu_fault(rendered, "swap-frame", plan) is rendered


# --------------------------------------------------------------------------- the race, stood in for


class Queue:
    """The consumer's CUDA stream, stood in for: work queued on it runs only when an event
    recorded after it is waited for, or at the end: a consumer that fell far behind."""

    def __init__(self, lagging=True):
        self.work, self.done, self.lagging = [], 0, lagging

    def enqueue(self, fn):
        self.work.append(fn)
        if not self.lagging:  # a consumer that keeps up: its work has run when queued
            self.run_to(len(self.work))

    def run_to(self, n):
        while self.done < n:
            self.work[self.done]()
            self.done += 1

    def event(self):
        return QueueEvent(self)


class QueueEvent:
    def __init__(self, queue):
        self.queue, self.at = queue, None

    def record(self, stream=None):
        self.at = len(self.queue.work)

    def query(self):
        return self.at is not None and self.queue.done >= self.at

    def synchronize(self):
        self.queue.run_to(self.at)


class Pool:
    """DALI's memory pool, stood in for: each run's output is written into a free buffer (the
    most recently freed first, as a caching pool gives it) and handed to torch as a tensor
    over it (DLPack); the buffer is free again once torch drops the last view of it."""

    def __init__(self):
        self.buffers, self.free = [], []

    def put(self, out: torch.Tensor) -> torch.Tensor:
        data = out.permute(0, 1, 3, 4, 2).contiguous().numpy()
        if self.free and self.buffers[self.free[-1]].shape == data.shape:
            i = self.free.pop()
        else:
            self.buffers.append(np.empty_like(data))
            i = len(self.buffers) - 1
        self.buffers[i][...] = data
        root = torch.from_numpy(self.buffers[i])
        weakref.finalize(root, self.free.append, i)
        return root.permute(0, 1, 4, 2, 3)

    def buffer_of(self, tensor: torch.Tensor):
        return next((b for b in self.buffers if b.ctypes.data == tensor.data_ptr()), None)


class PooledExecutor:
    def __init__(self, inner, pool):
        self.inner, self.pool = inner, pool

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def run(self, prepared):
        return self.pool.put(self.inner.run(prepared))

    def render(self, plans, **kw):
        return self.pool.put(self.inner.render(plans, **kw))


def stand_in_sums(root, mode, pool, queue, monkeypatch, control=False):
    """gpu_check's integrity_sums over the real loader (dali-cpu, 6 batches), with the pool
    and the queue standing in for DALI's memory and the consumer's stream, and the real
    hand-off guard recording its events on that queue (gpu_check.bypassed_guard: the control)."""
    from tsn_dali.config import load_recipe
    from tsn_dali.data import build_loader
    from tsn_dali.data.render.executors.dali import DaliExecutor
    from tsn_dali.data.render.handoff import HandoffGuard

    class Guard(HandoffGuard):  # the guard a GPU device gets, its events on the stand-in stream
        def __init__(self, device, mode="view", new_event=None, max_held=4):
            super().__init__(device, mode, new_event=queue.event, max_held=max_held)

    monkeypatch.setattr("tsn_dali.data.render.loader.HandoffGuard", Guard)
    recipe = load_recipe(recipe_yaml(root, batch_size=2), overrides=[f"loader.handoff={mode}", "loader.prefetch=2"])

    def consume(batch):  # the checksum as the queued work reads it: the memory, not the tensor
        buffer, cell = pool.buffer_of(batch.clips), {}
        source = buffer if buffer is not None else batch.clips.numpy()  # a torch copy lives on for its stream
        queue.enqueue(lambda: cell.setdefault("sum", float(source.astype(np.float64).sum())))
        return cell

    def read(cells):
        queue.run_to(len(queue.work))
        return [c["sum"] for c in cells]

    with gc.bypassed_guard() if control else contextlib.nullcontext():
        loader = build_loader(recipe, "train", executor=PooledExecutor(DaliExecutor("cpu"), pool), progress=False)
        loader.set_epoch(3)
        sums = gc.integrity_sums(loader, consume, read)
        loader.close()
    return sums


@pytest.fixture(scope="module")
def vp9_clips(tmp_path_factory):
    pytest.importorskip("nvidia.dali")
    return make_dataset(tmp_path_factory.mktemp("race"), 12, num_frames=16, width=96, height=72, codec="vp9")


def test_view_integrity_catches_a_buffer_reused_while_the_consumer_still_reads_it(vp9_clips, monkeypatch):
    """The guard on: views agree with copies. The guard bypassed (the control): DALI's buffer
    goes back to the pool when the consumer drops the batch, the next batch is written into
    it before the lagging consumer's queued checksum runs, and the sums differ. The check
    then passes, and counts; fed the control's sums as its own (a stale buffer), it fails."""
    copy = stand_in_sums(vp9_clips, "copy", Pool(), Queue(), monkeypatch)
    view = stand_in_sums(vp9_clips, "view", Pool(), Queue(), monkeypatch)
    control = stand_in_sums(vp9_clips, "view", Pool(), Queue(), monkeypatch, control=True)
    assert len(copy) == 6 and len(set(copy)) > 1
    assert view == copy
    assert control != copy
    assert gc.integrity_verdict(view, copy, control)[0] == "PASS"
    status, detail = gc.integrity_verdict(control, copy, control)
    assert status == "FAIL" and "differ" in detail


def test_a_consumer_that_keeps_up_cannot_show_the_race(vp9_clips, monkeypatch):
    """Why the consumer must fall behind: where its work runs at once, the control (guard
    bypassed) passes too, and the check is UNPROVEN, not PASS."""
    copy = stand_in_sums(vp9_clips, "copy", Pool(), Queue(lagging=False), monkeypatch)
    control = stand_in_sums(vp9_clips, "view", Pool(), Queue(lagging=False), monkeypatch, control=True)
    assert control == copy
    assert gc.integrity_verdict(copy, copy, control)[0] == "UNPROVEN"


# --------------------------------------------------------------------------- the script


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("gpu_check_videos")


def run_check(folder, out, fault, checks="clips,mixed,bf16,view"):
    return subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), str(folder), "--device", "cpu",
                           "--numbered", "1", "--view-batches", "3", "--view-size", "48", "--batch", "2",
                           "--checks", checks, "--inject-fault", fault, "--out", str(out)],
                          capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("fault, must_fail, checks", [
    ("none", set(), "clips,mixed,bf16,view"),
    ("swap-crop", {"gpu_vs_cpu"}, "clips"),
    ("colour-range", {"gpu_vs_cpu"}, "clips"),
    ("shift", {"gpu_vs_cpu"}, "clips"),
    ("coded-size", {"gpu_vs_cpu"}, "clips"),
    ("stale-buffer", {"view_integrity"}, "view"),
    ("swap-frame", {"sliced_vs_whole", "numbered", "mixed_batch", "bfloat16", "view_integrity"},
     "clips,mixed,bf16,view"),
    ("flip-byte", {"sliced_vs_whole", "numbered", "bfloat16", "view_integrity"}, "clips,mixed,bf16,view"),
])
def test_the_script_exits_1_with_the_named_check_failed(folder, tmp_path, fault, must_fail, checks):
    """A CPU dry run (dali-cpu's decoder against its frames path, a 340x256 VP9 numbered
    clip) with each fault: exactly the checks meant for it fail, and the script exits 1."""
    pytest.importorskip("nvidia.dali")
    out = tmp_path / "out"
    run = run_check(folder, out, fault, checks)
    result = json.loads((out / "gpu_check.json").read_text())
    failed = {c["check"] for c in result["checks"] if c["status"] == "FAIL"}
    assert run.returncode == (1 if must_fail else 0), run.stdout[-2000:] + run.stderr[-2000:]
    assert failed == must_fail, result["checks"]
    assert result["complete"] and {c["check"] for c in result["checks"]} == set(result["planned"]) - {"speed"}
    for name in must_fail:
        assert f"FAIL {name}" in run.stdout
    if fault == "none":
        status = {c["check"]: c["status"] for c in result["checks"]}
        assert status.pop("view_integrity") == "UNPROVEN"  # no queue on the CPU: its control cannot fail
        assert set(status.values()) == {"PASS"}
        subjects = [c["subject"] for c in result["checks"] if c["check"] == "numbered"]
        assert subjects == ["numbered_0.webm (340x256)"]


def _row(system, ratio, verdict):
    return {"system": system, "ratio": ratio, "verdict": verdict, "clips_per_s": {"median": 100 * ratio}}


def _bench(out, name, comparisons, executors=("dali-gpu", "reference"), complete=True):
    (out / name).mkdir()
    (out / name / "results.json").write_text(json.dumps(
        {"config": {"device": "cuda", "executors": list(executors), "peers": []}, "complete": complete,
         "unavailable": {}, "comparisons": comparisons}))


def test_report_says_met_missed_within_spread_and_not_measured(tmp_path):
    _bench(tmp_path, "loader_original", [{"title": "loader, train view", "errors": {},
                                          "rows": [_row("dali-gpu", 6.2, "faster beyond spread"),
                                                   _row("reference", 1.0, "baseline")]}])
    _bench(tmp_path, "loader_gop16", [{"title": "loader, train view", "errors": {},
                                       "rows": [_row("dali-gpu", 3.0, "faster beyond spread"),
                                                _row("reference", 1.0, "baseline")]}])
    _bench(tmp_path, "train", [{"title": report.E2E_TITLE, "errors": {},
                                "rows": [_row("e2e dali-gpu", 0.5, "slower beyond spread"), _row("model", 1, "baseline"),
                                         _row("e2e reference", 0.2, "slower beyond spread")]}])
    (tmp_path / "check").mkdir()
    (tmp_path / "check" / "gpu_check.json").write_text(json.dumps({"checks": [
        {"check": "numbered", "subject": "a", "status": "PASS", "detail": ""},
        {"check": "sliced_vs_whole", "subject": "a", "status": "FAIL", "detail": "1 value(s) differ"}]}))
    res = report.report(tmp_path)
    status = [t["status"] for t in res["targets"].values()]
    assert status == ["met", "not measured", "missed", "not measured", "missed"]
    assert res["failed_checks"] == 1
    assert report.main([str(tmp_path)]) == 1  # a failed check fails the run
    assert "| sliced_vs_whole | a | FAIL |" in (tmp_path / "results.md").read_text()
    assert report.target(_row("x", 4.9, "within spread"), 5.0)["status"] == "within spread"


def test_report_says_what_a_part_cut_short_did_not_measure(tmp_path):
    """loader_original timed out after its train view, loader_gop16's reference loader
    failed (its baseline: no ratios), train never ran, and the check part stopped before
    view_integrity: every such target is "not measured" with the reason, never "missed",
    and each missing comparison, system and check is listed."""
    (tmp_path / "summary.md").write_text(
        "# GPU run (quick)\n\n| part | status | seconds | results |\n| --- | --- | ---: | --- |\n"
        "| check | TIMED OUT after 100 s | 105 | check.log |\n"
        "| loader_original | TIMED OUT after 110 s | 115 | loader_original.log |\n"
        "| loader_gop16 | ok | 80 | loader_gop16.log |\n")
    _bench(tmp_path, "loader_original", [{"title": "loader, train view", "errors": {},
                                          "rows": [_row("dali-gpu", 6.2, "faster beyond spread"),
                                                   _row("reference", 1.0, "baseline")]}], complete=False)
    no_ratio = {"system": "dali-gpu", "clips_per_s": {"median": 300.0}}
    missing = "the baseline reference failed: RuntimeError: worker died"
    _bench(tmp_path, "loader_gop16", [{"title": f"loader, {v} view", "errors": {"reference": "RuntimeError: worker died"},
                                       "baseline_missing": missing, "rows": [no_ratio]} for v in ("train", "test")])
    (tmp_path / "check").mkdir()
    (tmp_path / "check" / "gpu_check.json").write_text(json.dumps({
        "planned": ["numbered", "view_integrity", "speed"], "complete": False,
        "checks": [{"check": "numbered", "subject": "a", "status": "PASS", "detail": ""}]}))
    res = report.report(tmp_path)
    targets = list(res["targets"].values())
    assert [t["status"] for t in targets] == ["met"] + ["not measured"] * 4
    assert targets[1]["reason"] == "loader_original TIMED OUT after 110 s before 'loader, test view'"
    assert targets[2]["reason"] == targets[3]["reason"] == missing
    assert targets[4]["reason"] == "train did not run before writing any result"
    gaps = {(m["part"], m["what"]): m["why"] for m in res["missing"]}
    assert gaps[("check", "view_integrity")] == "check TIMED OUT after 100 s before it" and ("check", "numbered") not in gaps
    assert gaps[("loader_original", "loader, test view")].startswith("loader_original TIMED OUT")
    assert gaps[("loader_gop16", "loader, train view: reference")] == "reference: RuntimeError: worker died"
    assert ("train", report.E2E_TITLE) in gaps
    assert report.main([str(tmp_path)]) == 0  # nothing failed: what is missing is said, not failed
    md = (tmp_path / "results.md").read_text()
    assert "## Not measured" in md and "| loader_original | loader, test view | loader_original TIMED OUT" in md
    assert "| missed |" not in md and ": missed" not in md

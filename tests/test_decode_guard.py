"""The loader's regression guard (tsn_dali.bench.guard): what the CPU executors decode and
copy per clip, counted, against what the plans need; deliberately wasteful variants fail."""
from __future__ import annotations

import numpy as np
import pytest

from tsn_dali.bench import guard
from tsn_dali.data.index.video_index import probe_video
from tsn_dali.data.media import gops
from tsn_dali.data.media.videoio import video_extension, write_numbered_video
from tsn_dali.data.plan.clip_plan import ClipPlan, StreamFacts
from tsn_dali.data.render.executors.reference import ReferenceExecutor

VIEWS = {"train": [3, 9, 14, 20, 25, 31, 37, 42], "test": [1, 4, 7, 10, 13, 16, 19, 22, 25, 28, 31, 34, 37, 40, 43, 46]}


@pytest.fixture(scope="module")
def plans(tmp_path_factory):
    """Train-like (8 frames) and test-like (16 frames) plans on numbered 96x64 clips of 48
    frames: H.264 with B-frames and VP9, a keyframe every 16 frames or only the first."""
    root = tmp_path_factory.mktemp("guard")
    out = []
    for codec in ("h264", "vp9"):
        for gop in (16, None):
            path = write_numbered_video(str(root / f"{codec}_{gop}{video_extension(codec)}"), 48, 96, 64,
                                        codec=codec, gop=gop)
            facts = StreamFacts.from_info(probe_video(path))
            for frames in VIEWS.values():
                out.append(ClipPlan(sample=len(out), path=path, label=0, num_frames=48, orig_size=(96, 64),
                                    frame_indices=np.asarray(frames), resize_to=(96, 64),
                                    crops=np.array([[8, 0, 72, 64], [0, 0, 64, 64]], np.int32),
                                    crop_flips=np.array([False, True]), out_size=(64, 64), stream=facts))
    return out


def _counted(executor, plans):
    try:
        for plan in plans:
            executor.render([plan])
        return dict(executor.stats)
    finally:
        executor.close()


def test_h264_packets_say_which_pictures_are_references(plans):
    import av

    with av.open(plans[0].path) as c:
        flags = [guard.h264_is_reference(bytes(p)) for p in c.demux(c.streams.video[0]) if p.size]
    assert flags[0] is True and False in flags and None not in flags
    assert guard.h264_is_reference(b"\x00\x00\x00\x01\x06") is None  # SEI only: no slice


def test_budget_counts_from_the_keyframe_and_leaves_out_non_reference_pictures(plans):
    by = {(p.codec, len(p.stream.keyframes) > 1, len(p.frame_indices)): p for p in plans}
    gop16 = guard.decode_budget(by[("h264", True, 8)].path, [20], by[("h264", True, 8)].stream.keyframes)
    assert 5 <= gop16["fed"] <= 8 and gop16["decoded"] < gop16["fed"]  # frames 16-20 (+ reordering)
    one = guard.decode_budget(by[("h264", False, 8)].path, [20], by[("h264", False, 8)].stream.keyframes)
    assert one["fed"] >= 21
    vp9 = guard.decode_budget(by[("vp9", True, 8)].path, [20], by[("vp9", True, 8)].stream.keyframes)
    assert vp9 == {"fed": 5, "decoded": 5}  # no B-frames: frames 16..20, every one decoded


def test_cpu_executors_decode_no_more_than_the_plans_need(plans):
    budget = guard.plans_budget(plans)
    counted = _counted(ReferenceExecutor(workers=0, decoder="gops", resize="uint8"), plans)
    assert guard.check(counted, budget) == []
    assert counted["frames_decoded"] < counted["packets_fed"]  # H.264's non-reference frames skipped
    pytest.importorskip("nvidia.dali")
    from tsn_dali.data.render.executors.dali import DaliExecutor

    h264 = [p for p in plans if p.codec == "h264"]  # dali-cpu's frames path
    counted = _counted(DaliExecutor("cpu", num_threads=1, decode_workers=1), h264)
    assert guard.check(counted, guard.plans_budget(h264)) == []


def test_a_decoder_that_starts_from_the_first_frame_fails_the_guard(plans, monkeypatch):
    real = gops.decode_gops

    def from_the_start(path, frames, keyframes, keyframe_pts, **kw):  # same pixels, every GOP decoded
        return real(path, frames, keyframes[:1], keyframe_pts[:1], **kw)

    monkeypatch.setattr(gops, "decode_gops", from_the_start)
    problems = guard.check(_counted(ReferenceExecutor(workers=0, decoder="gops", resize="uint8"), plans),
                           guard.plans_budget(plans))
    assert any(p.startswith("packets_fed") for p in problems), problems


def test_decoding_the_frames_nothing_needs_fails_the_guard(plans, monkeypatch):
    monkeypatch.setattr(gops, "SKIP_UNWANTED", "DEFAULT")
    problems = guard.check(_counted(ReferenceExecutor(workers=0, decoder="gops", resize="uint8"), plans),
                           guard.plans_budget(plans))
    assert any(p.startswith("frames_decoded") for p in problems), problems


def test_a_path_that_does_not_count_or_copies_clips_fails_the_guard(plans):
    budget = guard.plans_budget(plans[:2])
    uncounted = _counted(ReferenceExecutor(workers=0, decoder="decord", resize="uint8"), plans[:2])
    assert any(p.startswith("gop_clips") for p in guard.check(uncounted, budget))

    class Copying(ReferenceExecutor):  # renders into the workers' memory, then copies each clip
        def writes_into_batch(self):
            return False

    pooled = _counted(Copying(workers=1, decoder="gops", resize="uint8"), plans[:2])
    assert guard.check(pooled, budget, max_copies_per_clip=1) == []
    assert any(p.startswith("clip_copies") for p in guard.check(pooled, budget))
    direct = _counted(ReferenceExecutor(workers=1, decoder="gops", resize="uint8"), plans[:2])
    assert direct["clip_copies"] == 0 and guard.check(direct, budget) == []


def test_wait_idle_waits_for_batches_prepared_ahead(plans):
    """A pass closed early leaves prepared batches queued in the pool; wait_idle returns
    once the workers have rendered them (the bench waits there between systems)."""
    ex = ReferenceExecutor(workers=1, decoder="gops", resize="uint8")
    try:
        prepared = [ex.prepare([plan]) for plan in plans[:4]]  # never run
        ex.wait_idle()
        assert all(job.ready() for _, _, jobs, _ in prepared for job in jobs)
    finally:
        ex.close()

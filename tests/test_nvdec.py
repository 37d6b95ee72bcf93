"""What NVDEC decodes (executors/nvdec.py) and where the rest goes, checked without a GPU:
the rules, the one-real-decode-per-format cache, the probe's failure path, the routing of
dali-gpu samples, the loader's report, and ``auto``'s fallback to dali-cpu."""
from __future__ import annotations

import numpy as np
import pytest

from tsn_dali.data.render.executors import nvdec
from tsn_dali.data.render.executors.nvdec import NvdecSupport, chroma, rule_reason
from tsn_dali.data.plan.clip_plan import ClipPlan, StreamFacts

H100, A100, B200 = (9, 0), (8, 0), (10, 0)


def facts(codec="h264", pix_fmt="yuv420p", bit_depth=8, w=340, h=256, profile="High"):
    return StreamFacts(codec=codec, pix_fmt=pix_fmt, bit_depth=bit_depth, width=w, height=h,
                       coded_width=w, coded_height=h, profile=profile)


def test_chroma_from_pixel_format():
    assert [chroma(f) for f in ("yuv420p", "yuv420p10le", "yuvj422p", "yuv444p12le", "gray", "gray10le", "nv12")] \
        == ["420", "420", "422", "444", "gray", "gray", "420"]


@pytest.mark.parametrize("stream,cc,why", [
    (facts(), H100, None),
    (facts("mjpeg", "yuvj420p"), H100, "no decoder"),
    (facts("av1"), H100, None),  # not a rule: the test decode decides (below)
    (facts("av1"), A100, None),
    (facts(pix_fmt="yuv422p"), H100, "Blackwell"),
    (facts(pix_fmt="yuv444p"), A100, "Blackwell"),
    (facts(pix_fmt="yuv420p10le", bit_depth=10), H100, "Blackwell"),
    (facts(pix_fmt="yuv420p10le", bit_depth=10), B200, None),
    (facts("hevc", "yuv420p10le", 10, profile="Main 10"), H100, None),
    (facts("hevc", "yuv422p10le", 10), H100, "Blackwell"),
    (facts(pix_fmt="gray"), B200, "gray"),
    (facts("vp9", w=96, h=96), H100, "minimum 128x128"),
    (facts("h264", w=96, h=96), H100, None),
])
def test_rules(stream, cc, why):
    got = rule_reason(stream, cc)
    assert (got is None) if why is None else (why in got), got


@pytest.fixture
def fresh_cache(monkeypatch):
    monkeypatch.setattr(nvdec, "_PROBED", {})
    monkeypatch.setattr(nvdec, "_FAILED", {})


def test_one_real_decode_per_format_and_its_failure(fresh_cache):
    calls = []

    def probe(stream, path):
        calls.append(path)
        return "test decode failed: cuvidCreateDecoder: not supported" if stream.profile == "High 4:4:4" else None

    support = NvdecSupport(0, probe=probe, compute_capability=B200)
    assert support.reason(facts(), "a.mp4") is None
    assert support.reason(facts(), "b.mp4") is None  # the same format: no second decode
    bad = facts(pix_fmt="yuv420p", profile="High 4:4:4")
    assert "not supported" in support.reason(bad, "c.mp4")
    assert "not supported" in support.reason(bad, "d.mp4")  # a second video confirms it
    assert "not supported" in support.reason(bad, "e.mp4")
    assert calls == ["a.mp4", "c.mp4", "d.mp4"]
    assert support.reason(facts("mjpeg", "yuvj420p"), "e.avi").startswith("codec mjpeg")  # rules: no decode
    assert calls == ["a.mp4", "c.mp4", "d.mp4"]


def test_one_damaged_video_does_not_send_its_format_to_the_cpu(fresh_cache):
    calls = []

    def probe(stream, path):
        calls.append(path)
        return "test decode failed: invalid data" if path == "broken.mp4" else None

    support = NvdecSupport(0, probe=probe, compute_capability=B200)
    assert "invalid data" in support.reason(facts(), "broken.mp4")
    assert "invalid data" in support.reason(facts(), "broken.mp4")  # asked again: remembered
    assert support.reason(facts(), "good.mp4") is None
    assert support.reason(facts(), "other.mp4") is None
    assert calls == ["broken.mp4", "good.mp4"]


def test_probe_decode_reports_a_failed_decode_in_one_line(tmp_path, monkeypatch):
    """The real probe's failure path: the slice cannot be made or DALI raises."""
    from tsn_dali.data.media.videoio import write_numbered_video
    from tsn_dali.data.index.video_index import probe_video

    path = write_numbered_video(str(tmp_path / "v.mp4"), 20, 160, 120, codec="h264", gop=4)
    stream = StreamFacts.from_info(probe_video(path))

    def fail(encoded, positions, device_id):
        assert len(encoded) < 20_000 and list(positions) == [0]  # a tiny clip: the first frame
        raise RuntimeError("Critical error in pipeline:\nError in MIXED operator nvidia.dali.fn.decoders.video "
                           "encountered:\n\nCUDA driver API error CUDA_ERROR_NO_DEVICE\nC++ context: [...]")

    monkeypatch.setattr(nvdec, "decode_once", fail)
    why = nvdec.probe_decode(stream, path, 0)
    assert why.startswith("test decode failed: CUDA driver API error CUDA_ERROR_NO_DEVICE") and "\n" not in why
    assert nvdec.probe_decode(stream, str(tmp_path / "gone.mp4"), 0).endswith("gone.mp4: file not found")


def test_auto_falls_back_to_dali_cpu_when_no_test_clip_decodes(monkeypatch):
    pytest.importorskip("nvidia.dali")
    import torch

    from tsn_dali.data.render import executors

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    executors.nvdec_unusable.cache_clear()
    tried = []

    def no_nvdec(encoded, positions, device_id):
        tried.append(len(encoded))
        return "test decode failed: libnvcuvid.so.1: cannot open shared object file"

    monkeypatch.setattr(nvdec, "decode_once", no_nvdec)
    with pytest.warns(UserWarning, match="NVDEC did not decode a test clip .*libnvcuvid.*; using dali-cpu"):
        assert executors.resolve_executor_name("auto", "cuda:0") == "dali-cpu"
    assert len(tried) == 2  # an H.264 and a VP9 clip were both tried
    executors.nvdec_unusable.cache_clear()
    monkeypatch.setattr(nvdec, "decode_once", lambda encoded, positions, device_id: None)
    assert executors.resolve_executor_name("auto", "cuda:0") == "dali-gpu"
    executors.nvdec_unusable.cache_clear()


def _plan(path, stream):
    return ClipPlan(sample=0, path=path, label=0, num_frames=10, orig_size=(340, 256),
                    frame_indices=np.array([0, 1], np.int32), resize_to=(340, 256),
                    crops=np.array([[0, 0, 224, 224]], np.int32), crop_flips=np.array([False]),
                    out_size=(224, 224), stream=stream)


def test_dali_gpu_routes_what_nvdec_cannot_decode_to_the_frames_path(fresh_cache, tmp_path):
    pytest.importorskip("nvidia.dali")
    from tsn_dali.data.render.executors.dali import DaliExecutor

    support = NvdecSupport(0, probe=lambda s, p: "test decode failed: bad" if s.pix_fmt == "yuv420p12le"
                           or s.codec == "av1" else None, compute_capability=H100)
    ex = DaliExecutor("cuda:0", nvdec=support)
    streams = {"ok.mp4": facts(), "444.mp4": facts(pix_fmt="yuv444p"), "av1.mkv": facts("av1"),
               "12bit.mp4": facts("hevc", "yuv420p12le", 12), "frames": StreamFacts(codec="jpeg")}
    assert ex.route(_plan("ok.mp4", streams["ok.mp4"])) == ("decoder", None)
    source, why = ex.route(_plan("av1.mkv", streams["av1.mkv"]))
    assert source == "frames" and why.startswith("test decode failed: bad (Hopper's NVDEC has no AV1")
    slow = ex.check_videos(streams)
    assert set(slow) == {"444.mp4", "av1.mkv", "12bit.mp4"} and slow["12bit.mp4"] == "test decode failed: bad"
    mm = DaliExecutor("cuda:0", nvdec=support, decode="mmaction")
    assert mm.check_videos(streams) == {} and mm.route(_plan("ok.mp4", streams["ok.mp4"]))[0] == "frames"
    # dali-cpu: what DALI's CPU decoder does not read takes the frames path, and says so
    cpu_slow = DaliExecutor("cpu").check_videos(streams)
    assert set(cpu_slow) == {"ok.mp4", "444.mp4", "av1.mkv", "12bit.mp4"} and "not h264" in cpu_slow["ok.mp4"]


def test_loader_names_the_slow_path_videos_once(fresh_cache, tmp_path, caplog):
    """build_loader asks the executor at start-up and logs the list once; stats keep it."""
    from tsn_dali.data.render.loader import _slow_path_videos
    from tsn_dali.data.index.video_index import VideoInfo

    class Stub:
        name = "dali-gpu"

        def check_videos(self, streams):
            return {p: "AV1: Hopper's NVDEC has no AV1 decoder" for p, s in streams.items() if s.codec == "av1"}

    class Rec:
        def __init__(self, path):
            self.path = path

    index = {p: VideoInfo(path=p, num_frames=10, codec=c) for p, c in [("a.mp4", "h264"), ("b.mkv", "av1")]}
    with caplog.at_level("WARNING"):
        got = _slow_path_videos(Stub(), [Rec("a.mp4"), Rec("b.mkv")], index, log=True)
    assert got == [{"path": "b.mkv", "reason": "AV1: Hopper's NVDEC has no AV1 decoder"}]
    lines = [r.getMessage() for r in caplog.records if "frames path" in r.getMessage()]
    assert len(lines) == 1 and "\n" not in lines[0] and "1 of 2 video(s)" in lines[0] and "Hopper" in lines[0]


def test_cuda_pairing_advice_names_the_wheel_to_install():
    from tsn_dali.data.render.executors import cuda_pairing

    assert cuda_pairing("12.8", 12986) is None
    advice = cuda_pairing("13.0", 12986)
    assert advice.startswith("DALI is built for CUDA 12 and torch for CUDA 13")
    assert "nvidia-dali-cuda130 in place of nvidia-dali-cuda120" in advice and "\n" not in advice
    assert cuda_pairing(None, 12986) is None  # a CPU-only torch: nothing to pair
    assert cuda_pairing("13.0", None) is None  # a DALI that does not say


def test_av1_on_hopper_is_decided_by_the_test_decode(fresh_cache):
    """NVIDIA's table says no AV1 on Hopper; where the real decode works, NVDEC decodes it."""
    calls = []
    support = NvdecSupport(0, probe=lambda s, p: calls.append(p), compute_capability=H100)
    assert support.reason(facts("av1"), "a.mkv") is None and calls == ["a.mkv"]


def _decoder_specs(out):
    """The OpSpec text of every fn.decoders.video in the graph ending at ``out``."""
    found, seen, todo = [], set(), [out]
    while todo:
        op = todo.pop().source
        if op is None or id(op) in seen:
            continue
        seen.add(id(op))
        if str(op.spec).startswith("OpSpec for decoders__Video"):
            found.append(str(op.spec))
        todo += [i for i in op.inputs if hasattr(i, "source")]
    return found


def test_the_nvdec_decoder_does_not_pin_its_threads_through_nvml(monkeypatch):
    """DALI's mixed decoder pins its threads through NVML by default (``affine``); where NVML
    gives no affinity (a VM, a sandbox) every decode would fail, so both the graph's
    decoder and the one-frame test decode ask for ``affine=False``. The graph is only
    defined here (no GPU to build it on)."""
    pytest.importorskip("nvidia.dali")
    from nvidia.dali import Pipeline, fn

    from tsn_dali.data.render.executors import dali_pipeline as graph

    pipe = Pipeline(batch_size=1, num_threads=1, device_id=None)
    with pipe:
        out = graph.clip_graph(device="gpu", num_crops=1, out_size=(8, 8), out_dtype="uint8", source="decoder",
                               normalise=False)
    (spec,) = _decoder_specs(out)
    assert "device: mixed" in spec and "affine: False" in spec
    with Pipeline(batch_size=1, num_threads=1, device_id=None):
        cpu = graph.clip_graph(device="cpu", num_crops=1, out_size=(8, 8), out_dtype="uint8", source="decoder",
                               normalise=False)
    assert "affine" not in _decoder_specs(cpu)[0]  # the CPU decoder has no threads to pin

    asked = []
    real = fn.decoders.video

    def video(*args, **kw):
        asked.append(kw)
        return real(*args, **kw)

    monkeypatch.setattr(fn.decoders, "video", video)
    reason = nvdec.decode_once(np.zeros(16, np.uint8), [0], 0)  # fails without a GPU; the ask is what counts
    assert reason and asked == [dict(frames=[0], device="mixed", affine=False)]

"""tsn_dali.bench: the GOP-aware decode estimate, statistics, and a --quick smoke run on
tiny generated clips (plus a real clip from TSN_DALI_TEST_VIDEOS where set)."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from tsn_dali import bench

from helpers.real_videos import VIDEOS as SHARED_VIDEOS

TINY = ["--set", "model.backbone=resnet18", "--set", "model.num_classes=5",
        "--set", "data.num_segments=3", "--set", "data.input_size=64", "--set", "data.short_side=72"]


def test_frames_decoded_counts_from_the_keyframe_before_each_frame():
    # G = 16: [0..5] + [16..20] + [128..130] = 6 + 5 + 3
    assert bench.frames_decoded([130, 5, 20], 16) == 14
    # same GOP: decoding goes on from frame 5 to 9, nothing decoded twice
    assert bench.frames_decoded([5, 9], 16) == 10
    # long GOP: everything from frame 0 up to the last wanted frame
    assert bench.frames_decoded([5, 20, 130], 250) == 131
    # intra-only or unknown: one frame per distinct wanted frame
    assert bench.frames_decoded([3, 3, 7], None) == 2
    assert bench.frames_decoded([3, 7], 1.0) == 2
    # the mean interval is rounded: 15.6 -> 16
    assert bench.frames_decoded([17], 15.6) == 2


def test_summarize_gives_median_spread_and_quartiles():
    s = bench.summarize([4.0, 1.0, 3.0, 2.0])
    assert (s["median"], s["min"], s["max"]) == (2.5, 1.0, 4.0)
    assert s["q1"] == pytest.approx(1.75) and s["q3"] == pytest.approx(3.25)
    assert s["runs"] == [4.0, 1.0, 3.0, 2.0]
    with pytest.raises(ValueError):
        bench.summarize([])


@pytest.fixture(scope="module")
def tiny_videos(tmp_path_factory):
    """Three generated H.264 clips (the benchmark's own generator), 96x72, 48 frames,
    encoder-default GOP, in a folder of their own."""
    root = tmp_path_factory.mktemp("bench_videos")
    paths = bench.generate_videos(str(root / "gen"), 3, num_frames=48, size=(96, 72))
    assert len(paths) == 3 and all(os.path.isfile(p) for p in paths)
    clips = root / "clips"
    clips.mkdir()
    for i, p in enumerate(paths):
        shutil.copyfile(p, clips / f"clip{i}.mp4")
    return clips


def test_quick_run_writes_every_section(tiny_videos, tmp_path, capsys):
    videos = [str(tiny_videos)]
    real = SHARED_VIDEOS / "short_32f.mp4"
    if real.is_file():  # a real K400-style clip (340x256, 32 frames) beside the generated ones
        videos.append(str(real))
    out = tmp_path / "out"
    rc = bench.main(["recipes/k400_r50.yaml", "--videos", *videos, "--quick",
                     "--executors", "dali-gpu,dali-cpu,dali-cpu+whole,reference", "--reference-workers", "1",
                     "--gop-codec", "vp9", "--gops", "original,16,4", "--peers", "mmaction2,decord-opencv,torchcodec",
                     "--batch-size", "2", "--work-dir", str(tmp_path / "work"), "--out", str(out), *TINY])
    assert rc == 0
    result = json.loads((out / "results.json").read_text())
    for section in ("env", "config", "videos", "unavailable", "comparisons", "parity", "headline"):
        assert section in result
    assert result["env"]["cpu_count"] >= 1 and result["env"]["torch"] and result["env"]["date"]
    assert "--quick" in result["env"]["command"] and result["env"]["load_average_at_end"] is not None
    assert len(result["videos"]) == len(videos) + 2  # 3 generated + the real one (if any)
    assert (result["config"]["iters"], result["config"]["rounds"]) == (1, 2)
    comparisons = {c["title"]: c for c in result["comparisons"]}
    assert list(comparisons) == ["loader, train view", "loader, test view",
                                 "training: the step alone and fed by each loader", "GOP original, train view",
                                 "GOP 16, train view", "GOP 4, train view"]

    # every system asked for is either measured or says why not, in every comparison
    for title, c in comparisons.items():
        assert not c["errors"], c["errors"]
        names = [r["system"] for r in c["rows"]]
        assert c["orders"][1] == c["orders"][0][1:] + c["orders"][0][:1]  # rotated each round
        for r in c["rows"]:
            s = r["clips_per_s"]
            assert len(s["runs"]) == 2 and s["min"] <= s["median"] <= s["max"] and s["median"] > 0
            assert r["verdict"] in ("baseline", "within spread", "faster beyond spread", "slower beyond spread")
        if c["part"] in ("loader", "gop"):
            peers = {n for n in names if n in ("mmaction2", "decord-opencv", "torchcodec")}
            assert set(names) - peers == {"dali-cpu", "dali-cpu+whole", "reference"}
            assert c["baseline"] == "reference"
    unavailable = result["unavailable"]
    if not torch.cuda.is_available():
        assert "CUDA" in unavailable["dali-gpu"]
    for peer in ("mmaction2", "decord-opencv", "torchcodec"):  # measured, or skipped with the reason said
        measured = any(r["system"] == peer for r in comparisons["loader, train view"]["rows"])
        assert measured or f"{peer} (train view)" in unavailable
    for check in result["parity"]:  # a peer measured on other frames or crops would show here
        assert check["same_shape"], check
        if check["peer"] == "mmaction2" and check["view"] == "train":
            assert "max_abs_diff" not in check  # its own random draws: shape only
            continue
        assert check["max_abs_diff"] <= 2, check
        if check["peer"] == "mmaction2":  # the test view: MMAction2's own frames and boxes are our plan's
            assert check["same_frames"] and check["same_boxes"], check

    rows = {r["system"]: r for r in comparisons["loader, train view"]["rows"]}
    test_rows = {r["system"]: r for r in comparisons["loader, test view"]["rows"]}
    # tsn_train: 3 segments x 1 crop; tsn_test_tencrop: 25 clips x 10 crops
    assert (rows["reference"]["views_per_clip"], rows["reference"]["frames_sampled_per_clip"]) == (3, 3.0)
    assert (test_rows["reference"]["views_per_clip"], test_rows["reference"]["frames_sampled_per_clip"]) == (250, 25.0)
    # counted, per path and codec: H.264 is dali-cpu's frames path
    assert set(rows["dali-cpu"]["paths"]) == {"frames h264"} and rows["dali-cpu"]["frames_path_share"] == 1.0
    assert rows["dali-cpu"]["frames_path_frames_per_clip"] == 3.0

    e2e = comparisons["training: the step alone and fed by each loader"]
    assert e2e["baseline"] == "model"
    assert {r["system"] for r in e2e["rows"]} == {"model", "e2e dali-cpu", "e2e dali-cpu+whole", "e2e reference"}
    assert all(0.0 <= r["data_wait_share"]["median"] <= 1.0 for r in e2e["rows"] if r["system"] != "model")
    assert result["headline"]["end_to_end_vs_model"]["reference"]["ratio"] > 0

    # GOP: re-encoded as VP9 (DALI's CPU decoder reads it in its graph) with keyframes every
    # 16 and 4 frames; the originals (encoder default) have one keyframe in 48 frames
    gop = {c["gop"]: c for c in result["comparisons"] if c["part"] == "gop"}
    assert gop["16"]["keyframe_interval"] <= 16 < gop["original"]["keyframe_interval"]
    assert gop["4"]["file_bytes"] > gop["16"]["file_bytes"]
    g16 = {r["system"]: r for r in gop["16"]["rows"]}
    sliced, whole = g16["dali-cpu"], g16["dali-cpu+whole"]
    # counted from what was fed to DALI's decoder: slices feed fewer frames and bytes
    assert set(sliced["paths"]) == {"decoder vp9"} and sliced["sliced_share"] > 0 and whole["sliced_share"] == 0
    assert sliced["frames_fed_per_clip"] < whole["frames_fed_per_clip"]
    assert sliced["bytes_per_clip"] < whole["bytes_per_clip"]
    g4 = {r["system"]: r for r in gop["4"]["rows"]}
    assert g4["dali-cpu"]["frames_fed_per_clip"] < sliced["frames_fed_per_clip"]
    assert "dali-cpu GOP 16" in result["headline"]["sliced_vs_whole"]
    assert not any("train view" in k for k in result["headline"]["sliced_vs_whole"])  # H.264: not DALI-decoded

    md = (out / "results.md").read_text()
    for heading in ("## Loader, train view", "## Loader, test view", "## Training", "## GOP 16, train view",
                    "## Headline"):
        assert heading in md
    png = (out / "throughput.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    assert "## Loader, train view" in capsys.readouterr().out


@pytest.mark.parametrize("parts, sections", [("loader", ["## Side by side", "## Loader, train view",
                                                        "## Loader, test view"]),
                                             ("model", ["## Training"]), ("e2e", ["## Training"]),
                                             ("gop", ["## Side by side", "## GOP original", "## GOP 16"])])
def test_each_part_alone_prints_only_its_sections(tiny_videos, tmp_path, parts, sections):
    out = tmp_path / "out"
    rc = bench.main(["recipes/k400_r50.yaml", "--videos", str(tiny_videos), "--quick", "--parts", parts,
                     "--executors", "dali-cpu,reference", "--reference-workers", "0", "--gop-codec", "vp9",
                     "--batch-size", "2", "--work-dir", str(tmp_path / "work"), "--out", str(out), *TINY])
    assert rc == 0
    md = (out / "results.md").read_text()
    headings = [line for line in md.splitlines() if line.startswith("## ") and not line.startswith("## Headline")]
    assert headings == [h for h in headings if any(h.startswith(s) for s in sections)] and headings


def test_interleaved_rounds_rotate_and_verdicts_can_fail():
    from tsn_dali.bench.interleave import compare, run_rounds, verdict

    calls = []

    def system(name, rate):
        def window(round_no):
            calls.append((name, round_no))
            if name == "broken" and round_no >= 0:
                raise RuntimeError("decoder gone\nmore")
            return rate + round_no
        return window

    rates, errors, orders, spans = run_rounds({"a": system("a", 10), "b": system("b", 20),
                                               "broken": system("broken", 5)}, rounds=3, warmup=1)
    assert calls[:3] == [("a", -1), ("b", -1), ("broken", -1)]  # the untimed round
    assert orders == [["a", "b", "broken"], ["b", "a"], ["a", "b"]]  # rotated; broken dropped
    assert rates == {"a": [10, 11, 12], "b": [20, 21, 22], "broken": []}
    assert errors == {"broken": "RuntimeError: decoder gone"} and len(spans["a"]) == 3
    rows = {r["system"]: r for r in compare(rates, "a")}
    assert rows["b"]["verdict"] == "faster beyond spread" and rows["b"]["ratio"] == pytest.approx(21 / 11)
    assert verdict([10, 12], [11, 13], False) == "within spread"
    assert verdict([5, 6], [11, 13], False) == "slower beyond spread"


def test_bad_arguments_give_one_line_errors(tmp_path, capsys):
    rc = bench.main(["recipes/k400_r50.yaml", "--videos", str(tmp_path / "missing"), "--quick"])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and len(err.splitlines()) == 1
    assert "--videos" in err and "missing" in err
    # bad command lines: 2, whichever flag
    rc = bench.main(["recipes/k400_r50.yaml", "--videos", str(tmp_path), "--executors", "reference,dali"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "unknown executor 'dali'" in err and len(err.splitlines()) == 1
    rc = bench.main(["recipes/k400_r50.yaml", "--videos", str(tmp_path), "--executors", "reference+whole"])
    assert rc == 2 and "takes only gops, decord, uint8, float" in capsys.readouterr().err
    rc = bench.main(["recipes/k400_r50.yaml", "--videos", str(tmp_path), "--parts", "loader,bogus"])
    assert rc == 2 and "--parts: unknown part 'bogus'" in capsys.readouterr().err
    rc = bench.main(["recipes/k400_r50.yaml", "--videos", str(tmp_path), "--iters", "0"])
    assert rc == 2 and "--iters" in capsys.readouterr().err
    rc = bench.main(["recipes/k400_r50.yaml", "--videos", str(tmp_path), "--peers", "pytorchvideo"])
    assert rc == 2 and "--peers: unknown peer 'pytorchvideo'" in capsys.readouterr().err
    assert bench.main(["recipes/k400_r50.yaml", "--bogus-flag"]) == 2  # argparse's, returned
    rc = bench.main(["recipes/no_such.yaml", "--videos", str(tmp_path)])
    assert rc == 1 and "no_such.yaml" in capsys.readouterr().err


def test_gpu_run_quick_dry_runs_on_cpu(tmp_path):
    """``DEVICE=cpu bash benchmarks/gpu_run.sh OUT quick`` at tiny sizes: every part runs
    under its timeout and writes as it goes; dali-cpu stands where dali-gpu would be; the
    report gives every check and target."""
    import subprocess
    import sys

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_run.sh"
    env = dict(os.environ, DEVICE="cpu", CLIPS=str(tmp_path / "clips"), NUM_VIDEOS="2", FRAMES="24", SIZE="96x72",
               TIME_SCALE="4", PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""),
               BENCH_ARGS=" ".join(["--quick", "--batch-size", "2", "--reference-workers", "1"] + TINY),
               CHECK_ARGS="--view-batches 2 --view-size 48 --batch 2 --rounds 1")
    out = tmp_path / "out"
    proc = subprocess.run(["bash", str(script), str(out), "quick"], env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    summary = (out / "summary.md").read_text()
    for name in ("env", "clips", "check", "loader_original", "loader_gop16", "train"):
        assert f"| {name} | ok |" in summary
    assert '"torch_cuda"' in (out / "env.log").read_text() and "pairing" in (out / "env.log").read_text()
    checks = json.loads((out / "check" / "gpu_check.json").read_text())
    assert {c["check"] for c in checks["checks"]} >= {"numbered", "sliced_vs_whole", "gpu_vs_cpu", "mixed_batch",
                                                      "bfloat16", "view_integrity", "pipeline_failure"}
    assert checks["speed"]["rows"] and checks["complete"]
    assert {c["status"] for c in checks["checks"]} <= {"PASS", "SKIP", "UNPROVEN"}
    for name in ("loader_original", "loader_gop16"):
        result = json.loads((out / name / "results.json").read_text())
        systems = {(r["system"], c["view"]) for c in result["comparisons"] for r in c["rows"]}
        assert systems == {(v, view) for v in ("dali-cpu", "dali-cpu+whole", "dali-cpu+copy", "reference")
                           for view in ("train", "test")}
        assert result["complete"]
    gop16 = json.loads((out / "loader_gop16" / "results.json").read_text())
    assert all(v["keyframe_interval"] <= 16 for v in gop16["videos"])
    train = json.loads((out / "train" / "results.json").read_text())
    assert {r["system"] for c in train["comparisons"] for r in c["rows"]} == {"model", "e2e dali-cpu",
                                                                              "e2e reference"}
    res = json.loads((out / "results.json").read_text())
    assert len(res["targets"]) == 5 and all(t["status"] != "not measured" for t in res["targets"].values())
    assert res["missing"] == [] and "## Targets" in (out / "results.md").read_text()


def test_gpu_run_leaves_what_a_killed_part_measured(tmp_path):
    """A part past its timeout is said in the summary; the parts before it keep their results.
    Its limit is cut to 1 s (0.0001 of it, raised to the 1 s floor). Whether gpu_check listed
    its planned checks within that second depends on the machine (CI's did, this one's did
    not): either way every check is reported missing, with the timeout as the reason."""
    import subprocess
    import sys

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_run.sh"
    env = dict(os.environ, DEVICE="cpu", CLIPS=str(tmp_path / "clips"), NUM_VIDEOS="2", FRAMES="24", SIZE="96x72",
               TIME_SCALE="0.0001", PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    out = tmp_path / "out"
    subprocess.run(["bash", str(script), str(out), "clips"], env=dict(env, TIME_SCALE="1"), capture_output=True,
                   timeout=300, check=True)
    proc = subprocess.run(["bash", str(script), str(out), "check"], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 1
    summary = (out / "summary.md").read_text()
    assert "| clips | ok |" in summary and "| check | TIMED OUT after" in summary
    missing = [m for m in json.loads((out / "results.json").read_text())["missing"] if m["part"] == "check"]
    written = out / "check" / "gpu_check.json"
    if written.exists():
        planned = json.loads(written.read_text())["planned"]
        assert planned and sorted(m["what"] for m in missing) == sorted(planned)
        assert all(m["why"] == "check TIMED OUT after 1 s before it" for m in missing)
    else:
        assert missing == [{"part": "check", "what": "every check", "why": "check TIMED OUT after 1 s before writing"}]


def test_gpu_run_works_where_only_python3_is_on_path(tmp_path):
    """An image or venv may have python3 and no python: the script runs its parts with that
    python3, in its environment. Here python3 is a venv's own (a venv made for the test,
    seeing this test's packages, its ``python`` removed): a ``python`` symlinked to it
    would start the base Python outside the venv, which ``sys.prefix`` shows."""
    import shutil
    import site
    import subprocess
    import sys
    import sysconfig

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    purelib = sysconfig.get_path("purelib", vars={"base": str(venv), "platbase": str(venv)})
    seen = [p for p in sys.path if p and os.path.isdir(p)] + site.getsitepackages()
    Path(purelib, "this_tests_packages.pth").write_text("\n".join(seen) + "\n")  # torch and the rest, as here
    real = os.path.realpath(venv / "bin" / "python")
    for link in (venv / "bin").glob("python*"):  # python3 may point at python: each straight at the interpreter
        link.unlink()
    (venv / "bin" / "python3").symlink_to(real)
    tools = tmp_path / "tools"  # the system's tools without any python
    tools.mkdir()
    for folder in ("/usr/bin", "/bin"):
        for tool in Path(folder).iterdir():
            if not tool.name.startswith("python") and not (tools / tool.name).exists():
                (tools / tool.name).symlink_to(tool)
    path = f"{venv / 'bin'}{os.pathsep}{tools}"
    assert shutil.which("python", path=path) is None and shutil.which("python3", path=path)
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_run.sh"
    out = tmp_path / "out"
    proc = subprocess.run(["bash", str(script), str(out), "env"], env=dict(os.environ, DEVICE="cpu", PATH=path),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "| env | ok |" in (out / "summary.md").read_text()
    env_log = (out / "env.log").read_text()
    assert os.path.realpath(json.loads(env_log[env_log.index("{"):])["python_prefix"]) == os.path.realpath(venv)


def test_executor_variants_parse_and_reject_unknown_options():
    from tsn_dali.bench.measure import parse_variant

    v = parse_variant("dali-gpu+whole+copy+sessions4")
    assert (v.executor, v.slice_gops, v.handoff, v.decode_sessions, v.label) == \
        ("dali-gpu", False, "copy", 4, "dali-gpu+whole+copy+sessions4")
    assert parse_variant("dali-cpu+mmaction").decode == "mmaction"
    assert parse_variant("reference") == parse_variant(" reference ")
    r = parse_variant("reference+gops+uint8")
    assert (r.executor, r.cpu_decoder, r.resize) == ("reference", "gops", "uint8")
    assert parse_variant("dali-cpu+decord").cpu_decoder == "decord" and parse_variant("auto").executor == "auto"
    for bad, why in (("dali", "unknown executor"), ("dali-gpu+fast", "unknown option 'fast'"),
                     ("reference+whole", "takes only gops, decord, uint8, float"),
                     ("dali-cpu+uint8", "uint8 and float are the reference executor's"),
                     ("auto+gops", "auto takes no options")):
        with pytest.raises(ValueError, match=why):
            parse_variant(bad)


class FakeNvml:
    """nvidia-ml-py's pynvml, stood in for: a machine of 6 GPUs whose GPU 5 reads the
    decoder utilisations given, one per call."""

    def __init__(self, readings, fail_init=False):
        self.readings, self.fail_init, self.asked, self.shut = list(readings), fail_init, [], False

    def nvmlInit(self):  # noqa: N802 - pynvml's names
        if self.fail_init:
            raise RuntimeError("NVML Shared Library Not Found")

    def nvmlDeviceGetHandleByIndex(self, index):  # noqa: N802
        self.asked.append(index)
        if not 0 <= index < 6:
            raise RuntimeError("Invalid Argument")
        return f"gpu{index}"

    def nvmlDeviceGetHandleByUUID(self, uuid):  # noqa: N802
        self.asked.append(uuid)
        raise RuntimeError("Not Found")

    def nvmlDeviceGetDecoderUtilization(self, handle):  # noqa: N802
        value = self.readings.pop(0) if handle == "gpu5" and self.readings else 0
        return [value, 166666]

    def nvmlShutdown(self):  # noqa: N802
        self.shut = True


def test_nvdec_utilisation_is_read_through_nvml_of_the_visible_device(monkeypatch):
    """torch's cuda:1 under CUDA_VISIBLE_DEVICES=3,5 is NVML's GPU 5, not its GPU 1; each
    sample is timed as read, and a window's summary takes only its own samples."""
    import time

    from tsn_dali.bench.environment import DecoderMonitor, nvml_device

    assert nvml_device(1, "3,5") == 5 and nvml_device(0, "GPU-abc,GPU-def") == "GPU-abc"
    assert nvml_device(2, "3,5") == 2 and nvml_device(0, None) == 0
    assert nvml_device(0, "3", uuid="1234-ab") == "GPU-1234-ab"  # torch's UUID first, where it has one
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    nvml = FakeNvml([0.0, 40.0, 60.0, 80.0] + [90.0] * 1000)
    with DecoderMonitor(torch.device("cuda", 1), interval=0.01, nvml=nvml) as monitor:
        time.sleep(0.2)
        t0 = time.time()
        time.sleep(0.1)
        t1 = time.time()
    assert monitor.unavailable is None and 5 in nvml.asked and 1 not in nvml.asked and nvml.shut
    assert monitor.samples and all(a[0] <= b[0] for a, b in zip(monitor.samples, monitor.samples[1:]))
    inside = monitor.summary([(t0, t1)])
    assert inside["samples"] < len(monitor.samples) and inside["mean"] == 90.0
    assert monitor.summary([(0.0, 1.0)]) is None


def test_nvdec_utilisation_says_why_not_where_nvml_cannot_be_used():
    from tsn_dali.bench.environment import DecoderMonitor

    with DecoderMonitor(torch.device("cuda", 0), nvml=FakeNvml([], fail_init=True)) as monitor:
        pass
    assert monitor.summary() is None and "NVML Shared Library Not Found" in monitor.unavailable
    with DecoderMonitor(torch.device("cpu"), nvml=FakeNvml([])) as monitor:
        pass
    assert monitor.unavailable is None and monitor.summary() is None  # nothing to read on the CPU


def test_a_comparison_whose_baseline_failed_has_no_ratios():
    """A failed baseline is never replaced by another system (whose ratio would then read as
    the one asked for): no row has a ratio, and the comparison says why."""
    from tsn_dali.bench.interleave import comparison

    def rate(value):
        return lambda round_no: value

    def broken(round_no):
        raise RuntimeError("worker died")

    c = comparison("t", {"dali-gpu": rate(10.0), "reference": broken}, "reference", rounds=2, warmup=0)
    assert c["baseline"] == "reference" and "failed: RuntimeError: worker died" in c["baseline_missing"]
    assert [r["system"] for r in c["rows"]] == ["dali-gpu"] and "ratio" not in c["rows"][0]
    c = comparison("t", {"dali-gpu": rate(10.0)}, "reference", rounds=2, warmup=0)
    assert "not measured" in c["baseline_missing"] and "ratio" not in c["rows"][0]
    c = comparison("t", {"dali-gpu": rate(10.0), "reference": rate(2.0)}, "reference", rounds=2, warmup=0)
    assert "baseline_missing" not in c and {r["system"]: r["ratio"] for r in c["rows"]}["dali-gpu"] == 5.0


KILLER = """
import os, signal, sys
from tsn_dali.bench import interleave
real, calls = interleave.run_rounds, []
def run_rounds(*args, **kw):  # the second comparison is where a part's timeout kills the bench
    calls.append(1)
    if len(calls) == 2:
        os.kill(os.getpid(), signal.SIGKILL)
    return real(*args, **kw)
interleave.run_rounds = run_rounds
from tsn_dali.bench.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_bench_killed_part_way_keeps_the_comparisons_it_finished(tiny_videos, tmp_path):
    """Killed (SIGKILL, as a part's timeout does) while its second comparison runs, the bench
    leaves its JSON and markdown results with the first comparison, marked incomplete."""
    import subprocess
    import sys

    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    proc = subprocess.run([sys.executable, "-c", KILLER, "recipes/k400_r50.yaml", "--videos", str(tiny_videos),
                           "--quick", "--parts", "loader", "--executors", "dali-cpu,reference",
                           "--reference-workers", "0", "--batch-size", "2", "--work-dir", str(tmp_path / "work"),
                           "--out", str(out), *TINY], capture_output=True, text=True, timeout=600, env=env,
                          cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == -9, proc.stderr[-2000:]
    result = json.loads((out / "results.json").read_text())
    assert result["complete"] is False
    assert [c["title"] for c in result["comparisons"]] == ["loader, train view"]
    assert {r["system"] for r in result["comparisons"][0]["rows"]} == {"dali-cpu", "reference"}
    md = (out / "results.md").read_text()
    assert "## Loader, train view" in md and "**incomplete**" in md and "## Loader, test view" not in md
    assert not list(out.glob("*.tmp"))


def test_one_command_measures_every_case_and_view_side_by_side(tiny_videos, tmp_path):
    """--gop-codec h264,vp9 --gop-views train,test: one comparison per codec, GOP and view,
    'original' in each codec's own encoder default; the side-by-side table has them all."""
    out = tmp_path / "out"
    rc = bench.main(["recipes/k400_r50.yaml", "--videos", str(tiny_videos), "--quick", "--parts", "gop",
                     "--gop-codec", "h264,vp9", "--gops", "original,16", "--gop-views", "train,test",
                     "--executors", "reference,auto", "--reference-workers", "1", "--peers", "decord-opencv",
                     "--baseline", "reference", "--batch-size", "2", "--test-batch-size", "1",
                     "--set", "loader.eval_videos_per_run=1", "--work-dir", str(tmp_path / "work"),
                     "--out", str(out), *TINY])
    assert rc == 0
    result = json.loads((out / "results.json").read_text())
    titles = [c["title"] for c in result["comparisons"]]
    assert titles == [f"{codec} GOP {gop}, {view} view" for codec in ("H.264", "VP9") for gop in ("original", "16")
                      for view in ("train", "test")]
    codecs = {(c["codec"], c["gop"]): {v["codec"] for v in result["videos"]} for c in result["comparisons"]}
    assert set(codecs) == {("h264", "original"), ("h264", "16"), ("vp9", "original"), ("vp9", "16")}
    for c in result["comparisons"]:
        assert {r["system"] for r in c["rows"]} == {"reference", "auto", "decord-opencv"}, c["errors"]
        auto = next(r for r in c["rows"] if r["system"] == "auto")
        # auto on a CPU: the GOP decoder, counted; written straight into the batch
        assert auto["gop_frames_decoded_per_clip"] <= auto["gop_packets_fed_per_clip"]
        assert auto["clip_copies_per_clip"] == 0
    md = (out / "results.md").read_text()
    table = md[md.index("## Side by side"):].split("\n\n## ")[0]
    assert all(f"| {t} |" in table for t in titles) and "| auto's targets |" in table


def test_auto_targets_say_where_auto_falls_short():
    from tsn_dali.bench.report import auto_targets

    def comparison(**medians):
        return {"rows": [{"system": k.replace("_", "-"), "clips_per_s": {"median": v}} for k, v in medians.items()]}

    assert auto_targets(comparison(auto=13.0, mmaction2=10.0, decord_opencv=13.0, torchcodec=12.0)).startswith("met")
    short = auto_targets(comparison(auto=12.0, mmaction2=10.0, decord_opencv=11.0, torchcodec=12.5))
    assert short.startswith("NOT met") and "1.20x mmaction2 (**below 1.3**)" in short and "below 1" in short
    assert auto_targets(comparison(mmaction2=10.0)) is None


def test_windows_warm_up_past_what_a_loader_keeps_in_flight():
    """A loader rendering its next batches at once hands the first few out nearly free:
    timed after one untimed step it reads high, after as many as it keeps in flight it
    reads its steady rate (loader_warm_steps: 1 + prefetch; a DataLoader peer: one per worker)."""
    import time as clock

    from tsn_dali.bench.measure import loader_warm_steps, timed
    from tsn_dali.bench.peers import PeerWindow

    def pipeline(ready_ahead, cost=0.02):
        calls = []

        def step():
            calls.append(1)
            if len(calls) > ready_ahead:  # the part-made batches came free; the rest cost their time
                clock.sleep(cost)
        return step, calls

    step, calls = pipeline(ready_ahead=3)
    steady = 4 / timed(step, 4, torch.device("cpu"), warm=loader_warm_steps(2))
    assert len(calls) == 3 + 4 and steady == pytest.approx(50, rel=0.25)
    step, _ = pipeline(ready_ahead=3)
    assert 4 / timed(step, 4, torch.device("cpu")) > 1.5 * steady  # one untimed step: reads high
    assert PeerWindow(None, None, 2, 4, torch.device("cpu"), 3, [0.0] * 3, [1.0] * 3, torch.uint8).warm == 3

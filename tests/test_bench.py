"""tsn_dali.bench: the GOP-aware decode estimate, statistics, and a --quick smoke run on
tiny generated clips (plus a real clip from shared/videos where present)."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from tsn_dali import bench

SHARED_VIDEOS = Path(__file__).resolve().parents[2] / "shared" / "videos"

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
                     "--gop-codec", "vp9", "--gops", "original,16,4",
                     "--batch-size", "2", "--work-dir", str(tmp_path / "work"), "--out", str(out), *TINY])
    assert rc == 0
    result = json.loads((out / "results.json").read_text())
    for section in ("env", "config", "videos", "unavailable", "loader", "model", "end_to_end", "gop", "headline"):
        assert section in result
    assert result["env"]["cpu_count"] >= 1 and result["env"]["torch"] and result["env"]["date"]
    assert "--quick" in result["env"]["command"]
    assert len(result["videos"]) == len(videos) + 2  # 3 generated + the real one (if any)
    assert (result["config"]["iters"], result["config"]["repeats"]) == (2, 1)

    # every executor asked for is either measured or says why not
    measured = {e["executor"] for e in result["loader"]}
    assert measured | set(result["unavailable"]) == {"dali-gpu", "dali-cpu", "dali-cpu+whole", "reference"}
    if not torch.cuda.is_available():
        assert "CUDA" in result["unavailable"]["dali-gpu"]

    for e in result["loader"] + result["end_to_end"] + result["gop"]:
        assert "error" not in e, e
    loader = {(e["executor"], e["view"]): e for e in result["loader"]}
    train, test = loader[("reference", "train")], loader[("reference", "test")]
    # tsn_train: 3 segments x 1 crop; tsn_test_tencrop: 25 clips x 10 crops
    assert (train["views_per_clip"], train["frames_sampled_per_clip"]) == (3, 3.0)
    assert (test["views_per_clip"], test["frames_sampled_per_clip"]) == (250, 25.0)
    # a decoder decodes at least the frames sampled
    assert train["frames_decoded_per_clip"] >= train["frames_sampled_per_clip"]
    for e in result["loader"] + result["model"] + result["end_to_end"] + result["gop"]:
        assert e["clips_per_s"]["median"] > 0
        assert e["clips_per_s"]["min"] <= e["clips_per_s"]["median"] <= e["clips_per_s"]["max"]
    assert [e["variant"] for e in result["model"]] == ["eager"]
    e2e = {e["executor"]: e for e in result["end_to_end"]}
    assert 0.0 <= e2e["reference"]["data_wait_share"]["median"] <= 1.0
    assert result["headline"]["end_to_end_vs_model"]["reference"] > 0

    # GOP: re-encoded as VP9 (DALI's CPU decoder reads it in its graph) with keyframes every
    # 16 and 4 frames; the originals (encoder default) have one keyframe in 48 frames
    gop = {(e["gop"], e["executor"]): e for e in result["gop"]}
    assert gop[("16", "reference")]["keyframe_interval"] <= 16 < gop[("original", "reference")]["keyframe_interval"]
    assert gop[("4", "reference")]["file_bytes"] > gop[("16", "reference")]["file_bytes"]
    sliced, whole = gop[("16", "dali-cpu")], gop[("16", "dali-cpu+whole")]
    # counted from what was fed to DALI's decoder: slices feed fewer frames and bytes
    assert sliced["frames_decoded_counted"] and whole["frames_decoded_counted"]
    assert sliced["sliced_share"] > 0 and whole["sliced_share"] == 0
    assert sliced["frames_decoded_per_clip"] < whole["frames_decoded_per_clip"]
    assert sliced["bytes_per_clip"] < whole["bytes_per_clip"]
    assert gop[("4", "dali-cpu")]["frames_decoded_per_clip"] < sliced["frames_decoded_per_clip"]
    assert "dali-cpu GOP 16" in result["headline"]["sliced_vs_whole"]

    md = (out / "results.md").read_text()
    for heading in ("## Loader only", "## Model only", "## End to end", "## Decode cost vs GOP", "## Headline"):
        assert heading in md
    png = (out / "throughput.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    assert "## Loader only" in capsys.readouterr().out


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
    assert rc == 2 and "takes no options" in capsys.readouterr().err
    rc = bench.main(["recipes/k400_r50.yaml", "--videos", str(tmp_path), "--parts", "loader,bogus"])
    assert rc == 2 and "--parts: unknown part 'bogus'" in capsys.readouterr().err
    rc = bench.main(["recipes/k400_r50.yaml", "--videos", str(tmp_path), "--iters", "0"])
    assert rc == 2 and "--iters" in capsys.readouterr().err
    assert bench.main(["recipes/k400_r50.yaml", "--bogus-flag"]) == 2  # argparse's, returned
    rc = bench.main(["recipes/no_such.yaml", "--videos", str(tmp_path)])
    assert rc == 1 and "no_such.yaml" in capsys.readouterr().err


def test_gpu_run_script_dry_runs_on_cpu(tmp_path):
    """benchmarks/gpu_run.sh, every part, with DEVICE=cpu: generates and prepares clips,
    checks frame identities (dali-cpu against itself there), runs the loader and train
    parts with dali-cpu where dali-gpu would be, and a tiny soak."""
    import subprocess
    import sys

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_run.sh"
    env = dict(os.environ, DEVICE="cpu", CLIPS=str(tmp_path / "clips"), COMPILE="",
               PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""),
               BENCH_ARGS=" ".join(["--quick", "--batch-size", "2", "--reference-workers", "1"] + TINY),
               SOAK_ARGS=" ".join(["--executors", "reference", "--epochs", "3", "--warmup", "1",
                                   "--videos", "16", "--frames", "8", "--width", "64", "--height", "48",
                                   "--set", "train.amp='off'", "--set", "data.input_size=32",
                                   "--set", "data.short_side=40", "--set", "loader.reference_workers=1"]))
    out = tmp_path / "out"
    proc = subprocess.run(["bash", str(script), str(out), "all", "2"], env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    check = (out / "gpu_check.txt").read_text()
    assert check.count(" ok ") == 6 and "identity checks: all ok" in check  # 4 numbered + 2 generated
    for name in ("loader_original", "loader_gop16"):
        result = json.loads((out / name / "results.json").read_text())
        assert {(e["executor"], e["view"]) for e in result["loader"]} == {
            (v, view) for v in ("dali-cpu", "dali-cpu+whole", "dali-cpu+sessions4", "dali-cpu+copy", "reference")
            for view in ("train", "test")}
        assert all("clips_per_s" in e for e in result["loader"])
    gop16 = json.loads((out / "loader_gop16" / "results.json").read_text())
    assert all(v["keyframe_interval"] <= 16 for v in gop16["videos"])
    train = json.loads((out / "train" / "results.json").read_text())
    assert [e["variant"] for e in train["model"]] == ["eager"]
    assert {e["executor"] for e in train["end_to_end"]} == {"dali-cpu", "dali-cpu+copy", "reference"}
    soak = json.loads((out / "soak" / "results.json").read_text())
    assert [len(r["samples"]) for r in soak["runs"]] == [4]  # before + 3 epochs


def test_executor_variants_parse_and_reject_unknown_options():
    from tsn_dali.bench.measure import parse_variant

    v = parse_variant("dali-gpu+whole+copy+sessions4")
    assert (v.executor, v.slice_gops, v.handoff, v.decode_sessions, v.label) == \
        ("dali-gpu", False, "copy", 4, "dali-gpu+whole+copy+sessions4")
    assert parse_variant("dali-cpu+mmaction").decode == "mmaction"
    assert parse_variant("reference") == parse_variant(" reference ")
    for bad, why in (("dali", "unknown executor"), ("dali-gpu+fast", "unknown option 'fast'"),
                     ("reference+whole", "takes no options")):
        with pytest.raises(ValueError, match=why):
            parse_variant(bad)


def test_nvdec_utilisation_is_read_from_nvidia_smi_dmon():
    from tsn_dali.bench.environment import parse_dmon

    out = ["# gpu    sm   mem   enc   dec   jpg   ofa", "# Idx     %     %     %     %     %     %",
           "    0    12     3     0    87     0     0", "    0    10     2     0     -     0     0",
           "    0    11     3     0    93     0     0"]
    assert parse_dmon(out) == [87.0, 93.0]
    assert parse_dmon(["no header", "0 1 2"]) == []

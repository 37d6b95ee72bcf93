"""benchmarks/gpu_check.py and gpu_report.py: every pass/fail check fails when fed a wrong
answer (one frame swapped, one byte changed), and the script exits 1 then."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

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
    assert gc.identical(a, gc.inject(a, "swap-frame")) is not None
    assert "shape" in gc.identical(a, a[:3])


def test_nearest_views_fails_on_a_swapped_frame_but_not_on_colour_noise():
    a = views(4)
    ids = [0, 1, 2, 3]
    noisy = (a.int() + torch.randint(-2, 3, a.shape)).clamp(0, 255).to(torch.uint8)
    assert gc.nearest_views_match(noisy, a, ids) is None
    assert "view 0 (frame 0) is nearer to view 1" in gc.nearest_views_match(gc.inject(a, "swap-frame"), a, ids)
    same = torch.stack([a[0], a[0], a[1], a[1]])  # two frames that look the same: a tie passes
    assert gc.nearest_views_match(same, same, [0, 1, 2, 3]) is None


def test_bf16_close_fails_beyond_rounding():
    x = torch.randn(4, 3, 8, 8) * 3
    assert gc.bf16_close(x.to(torch.bfloat16), x) is None
    assert gc.bf16_close(gc.inject(x.to(torch.bfloat16), "flip-byte"), x) is not None
    assert gc.bf16_close(gc.inject(x.to(torch.bfloat16), "swap-frame"), x) is not None


def test_checksums_agree_fails_on_one_batch():
    assert gc.checksums_agree([1.0, 2.0], [1.0, 2.0]) is None
    assert "batch(es) [1] differ" in gc.checksums_agree([1.0, 2.5], [1.0, 2.0])
    assert "3 view batches" in gc.checksums_agree([1.0, 2.0, 3.0], [1.0, 2.0])


def test_inject_changes_the_tensor():
    a = views()
    for fault in ("swap-frame", "flip-byte"):
        assert not torch.equal(gc.inject(a, fault), a)
    assert gc.inject(a, "none") is a


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("gpu_check_videos")


@pytest.mark.parametrize("fault, must_fail", [
    ("none", set()),
    ("swap-frame", {"sliced_vs_whole", "gpu_vs_cpu", "numbered", "mixed_batch", "bfloat16", "view_integrity"}),
    ("flip-byte", {"sliced_vs_whole", "numbered", "bfloat16", "view_integrity"}),
])
def test_the_script_exits_1_when_fed_a_wrong_output(folder, tmp_path, fault, must_fail):
    """A CPU dry run (dali-cpu against itself, VP9 numbered clips) with each fault."""
    pytest.importorskip("nvidia.dali")
    out = tmp_path / "out"
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), str(folder), "--device", "cpu",
                          "--numbered", "1", "--view-batches", "2", "--view-size", "48", "--batch", "2",
                          "--checks", "clips,mixed,bf16,view", "--inject-fault", fault, "--out", str(out)],
                         capture_output=True, text=True, timeout=600)
    checks = json.loads((out / "gpu_check.json").read_text())["checks"]
    failed = {c["check"] for c in checks if c["status"] == "FAIL"}
    assert run.returncode == (1 if must_fail else 0), run.stdout[-2000:] + run.stderr[-2000:]
    assert failed == must_fail, checks
    assert {c["check"] for c in checks} >= {"sliced_vs_whole", "gpu_vs_cpu", "numbered", "mixed_batch", "bfloat16",
                                            "view_integrity"}


def test_report_says_met_missed_within_spread_and_not_measured(tmp_path):
    def row(system, ratio, verdict):
        return {"system": system, "ratio": ratio, "verdict": verdict, "clips_per_s": {"median": 100 * ratio}}

    def write(name, title, rows):
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps(
            {"config": {"device": "cuda"}, "comparisons": [{"title": title, "rows": rows}]}))

    write("loader_original", "loader, train view", [row("dali-gpu", 6.2, "faster beyond spread")])
    write("loader_gop16", "loader, train view", [row("dali-gpu", 3.0, "faster beyond spread")])
    write("train", "training: the step alone and fed by each loader", [row("e2e dali-gpu", 0.5, "slower beyond spread")])
    (tmp_path / "check").mkdir()
    (tmp_path / "check" / "gpu_check.json").write_text(json.dumps({"checks": [
        {"check": "numbered", "subject": "a", "status": "PASS", "detail": ""},
        {"check": "sliced_vs_whole", "subject": "a", "status": "FAIL", "detail": "1 value(s) differ"}]}))
    res = report.report(tmp_path)
    status = {k.split(",")[0] + k.split(",")[1] + k.split(",")[-1] if "," in k else k: v["status"]
              for k, v in res["targets"].items()}
    assert list(status.values()) == ["met", "not measured", "missed", "not measured", "missed"]
    assert res["failed_checks"] == 1
    assert report.main([str(tmp_path)]) == 1  # a failed check fails the run
    assert "| sliced_vs_whole | a | FAIL |" in (tmp_path / "results.md").read_text()
    assert report.target(row("x", 4.9, "within spread"), 5.0)["status"] == "within spread"

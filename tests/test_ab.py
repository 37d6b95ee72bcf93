"""benchmarks/ab.py: before/after timing interleaved in rounds, verdicts that can fail."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import ab  # noqa: E402


def test_rotation_puts_each_checkout_first_in_turn():
    assert [ab.rotated(["a", "b", "c"], r) for r in range(4)] == [
        ["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"], ["a", "b", "c"]]


def test_verdicts():
    rows = {r["checkout"]: r for r in ab.compare(
        {"before": [10.0, 11.0, 12.0], "same": [11.5, 12.5, 13.0], "slow": [15.0, 16.0, 17.0],
         "fast": [5.0, 6.0, 7.0]}, "before")}
    assert rows["before"]["verdict"] == "baseline" and rows["before"]["ratio"] == 1.0
    assert rows["same"]["verdict"] == "within spread"
    assert rows["slow"]["verdict"] == "slower beyond spread" and rows["slow"]["ratio"] == 16.0 / 11.0
    assert rows["fast"]["verdict"] == "faster beyond spread"


def test_script_times_two_checkouts(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for folder, value in ((a, "1"), (b, "2")):
        folder.mkdir()
        (folder / "probe.py").write_text(f"VALUE = {value}\n")
    out = tmp_path / "out"
    # The command sees its checkout on PYTHONPATH and a fresh {work} folder per run.
    code = ("import probe, sys, os; assert os.path.isdir(sys.argv[1]) and not os.listdir(sys.argv[1]);"
            "open(os.path.join(sys.argv[1], 'x'), 'w').write(str(probe.VALUE))")
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "ab.py"), "--checkout", f"before={a}",
                          "--checkout", f"after={b}", "--rounds", "2", "--warmup", "0", "--out", str(out),
                          "--", sys.executable, "-c", code, "{work}"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    result = json.loads((out / "results.json").read_text())
    assert result["orders"] == [["before", "after"], ["after", "before"]]
    assert [len(r["runs_s"]) for r in result["rows"]] == [2, 2]
    assert "| after |" in (out / "results.md").read_text()


def test_a_failing_run_is_no_timing(tmp_path):
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "ab.py"), "--checkout", f"x={tmp_path}",
                          "--rounds", "1", "--warmup", "0", "--", sys.executable, "-c", "raise SystemExit(3)"],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 1
    assert run.stderr.count("\n") == 1 and "exited 3" in run.stderr


FAKE_BENCH = """
import json, os, sys, probe
out = sys.argv[1]
os.makedirs(out)
rows = [{"system": "auto", "clips_per_s": {"median": probe.AUTO}}, {"system": "mmaction2", "clips_per_s": {"median": 10.0}}]
json.dump({"comparisons": [{"title": "loader, train view", "rows": rows}]}, open(os.path.join(out, "results.json"), "w"))
"""


def test_bench_metric_compares_each_systems_clips_per_second(tmp_path):
    """--metric bench reads the bench's results.json of every run: per comparison and system,
    each checkout's median clips/s and the verdict (higher is faster), which can fail."""
    a, b = tmp_path / "a", tmp_path / "b"
    for folder, auto in ((a, "20.0"), (b, "12.0")):
        folder.mkdir()
        (folder / "probe.py").write_text(f"AUTO = {auto}\n")
    out = tmp_path / "out"
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "ab.py"), "--metric", "bench",
                          "--checkout", f"before={a}", "--checkout", f"after={b}", "--rounds", "2", "--warmup", "0",
                          "--out", str(out), "--", sys.executable, "-c", FAKE_BENCH, "{work}/bench"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    rows = {(r["system"], r["checkout"]): r for r in json.loads((out / "results.json").read_text())["rows"]}
    assert rows[("loader, train view / auto", "after")]["verdict"] == "slower beyond spread"
    assert rows[("loader, train view / auto", "after")]["ratio"] == 0.6
    assert rows[("loader, train view / mmaction2", "after")]["verdict"] == "within spread"
    assert "| loader, train view / auto | after | 12 |" in (out / "results.md").read_text()
    missing = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "ab.py"), "--metric", "bench",
                              "--checkout", f"x={a}", "--rounds", "1", "--warmup", "0", "--", sys.executable, "-c", "0"],
                             capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2 and "{work}" in missing.stderr


def test_bench_metric_runs_the_loader_part_before_and_after(tmp_path):
    """The real bench's loader part through ab.py (both checkouts this one, tiny clips)."""
    from tsn_dali.bench import generate_videos

    videos = generate_videos(str(tmp_path / "gen"), 2, num_frames=24, size=(96, 72))
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "tsn_dali.bench", "recipes/k400_r50.yaml", "--videos", *videos, "--quick",
           "--parts", "loader", "--executors", "auto", "--reference-workers", "0", "--batch-size", "2",
           "--work-dir", "{work}/w", "--out", "{work}/bench", "--set", "model.num_classes=5",
           "--set", "data.num_segments=3", "--set", "data.input_size=64", "--set", "data.short_side=72"]
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "ab.py"), "--metric", "bench",
                          "--checkout", f"before={ROOT}", "--checkout", f"after={ROOT}", "--rounds", "1",
                          "--warmup", "0", "--out", str(out), "--", *cmd], capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    systems = {r["system"] for r in json.loads((out / "results.json").read_text())["rows"]}
    assert systems == {"loader, train view / auto", "loader, test view / auto"}

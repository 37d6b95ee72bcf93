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

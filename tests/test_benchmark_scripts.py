"""Every script under benchmarks/ runs here, so that an import error or a renamed helper
fails the suite: each answers --help, and each runs on a tiny input (seconds)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.real_videos import REASON, VIDEOS

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted((ROOT / "benchmarks").glob("*.py"))
TINY = ["--set", "model.backbone=resnet18", "--set", "model.num_classes=5", "--set", "data.num_segments=3",
        "--set", "data.input_size=64", "--set", "data.short_side=72"]


def run(*args, timeout=600):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT, env=env)


def test_every_script_is_listed_here():
    covered = {"ab.py", "cross_executor.py", "flops.py", "gpu_check.py", "gpu_report.py", "index_bench.py",
               "mmaction_parity.py", "mmaction_model_parity.py", "soak.py", "throughput.py"}
    assert {p.name for p in SCRIPTS} == covered, "a new script needs a tiny run in the suite"


@pytest.mark.parametrize("script", SCRIPTS + [ROOT / "benchmarks" / "gpu_run.sh"], ids=lambda p: p.name)
def test_every_script_imports_and_answers_help(script):
    """--help is a question answered, status 0, with the usage on stdout."""
    if script.suffix == ".sh":
        proc = subprocess.run(["bash", str(script), "--help"], capture_output=True, text=True, timeout=60, cwd=ROOT)
        assert f"bash benchmarks/{script.name} OUT_DIR" in proc.stdout
        assert not (ROOT / "--help").exists()  # not taken for an output folder
    else:
        proc = run(script, "--help", timeout=180)
        assert "usage" in proc.stdout.lower(), proc.stderr[-1500:]
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr[-1500:]


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    from tsn_dali import bench

    return bench.generate_videos(str(tmp_path_factory.mktemp("script_clips")), 2, num_frames=24, size=(96, 72))


def test_throughput_runs_a_tiny_bench(clips, tmp_path):
    proc = run(ROOT / "benchmarks" / "throughput.py", "recipes/k400_r50.yaml", "--videos", *clips, "--quick",
               "--parts", "model", "--work-dir", tmp_path / "w", "--out", tmp_path / "out", *TINY)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "out" / "results.md").is_file()


def test_flops_runs_on_one_recipe(tmp_path):
    proc = run(ROOT / "benchmarks" / "flops.py", "recipes/k400_r50.yaml", "--out", tmp_path / "flops.md")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "k400_r50" in (tmp_path / "flops.md").read_text()


def test_index_bench_runs_tiny(tmp_path):
    proc = run(ROOT / "benchmarks" / "index_bench.py", "--generate", "1", "--entries", "20", "--repeats", "1",
               "--no-ranks", "--work", tmp_path / "w", "--out", tmp_path / "out")
    assert proc.returncode == 0, proc.stderr[-2000:]
    text = (tmp_path / "out" / "results.md").read_text()
    assert "ratio to 1 thread" in text and "Warm start" in text


def test_soak_runs_tiny(tmp_path):
    proc = run(ROOT / "benchmarks" / "soak.py", "--executors", "reference", "--epochs", "3", "--warmup", "1",
               "--videos", "16", "--frames", "8", "--width", "64", "--height", "48", "--loader-only",
               "--set", "data.input_size=32", "--set", "data.short_side=40", "--set", "loader.reference_workers=0",
               "--set", "loader.batch_size=4", "--data", tmp_path / "data", "--out", tmp_path / "out", timeout=900)
    assert proc.returncode == 0, proc.stdout[-1500:] + proc.stderr[-2000:]
    assert (tmp_path / "out" / "results.json").is_file()


@pytest.mark.slow
def test_cross_executor_runs_quick(tmp_path):
    pytest.importorskip("nvidia.dali")
    proc = run(ROOT / "benchmarks" / "cross_executor.py", "--quick", "--train", "reference", "--test", "reference",
               "--seeds", "0", "--pixel-videos", "1", "--data-dir", tmp_path / "demo", "--work-dir", tmp_path / "w",
               "--out", tmp_path / "out", "--set", "train.epochs=1", timeout=1200)
    assert proc.returncode == 0, proc.stdout[-1500:] + proc.stderr[-2000:]
    assert (tmp_path / "out" / "results.md").is_file()


def test_mmaction_parity_runs_where_mmaction2_installs(tmp_path):
    shared = VIDEOS / "short_32f.mp4"
    try:
        import mmaction  # noqa: F401
    except Exception:
        proc = run(ROOT / "benchmarks" / "mmaction_parity.py", "--videos", str(shared))
        assert proc.returncode == 1 and "MMAction2" in proc.stderr  # one line saying what is missing
        return
    if not shared.is_file():
        pytest.skip(REASON)
    proc = run(ROOT / "benchmarks" / "mmaction_parity.py", "--videos", shared, "--executors", "reference",
               "--out", tmp_path / "out")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "out" / "results.md").is_file()


def _have_mmaction() -> bool:
    import importlib.util

    return all(importlib.util.find_spec(n) is not None for n in ("mmaction", "mmengine", "mmcv"))


MODEL_PARITY = ROOT / "benchmarks" / "mmaction_model_parity.py"


def test_mmaction_model_parity_runs_one_small_recipe(tmp_path):
    """MMAction2's own TSN-R50 (from its config, saved by a Runner) loaded here, at 32 px: one
    row, scores and FLOPs side by side, exit 0 where they agree."""
    if not _have_mmaction():
        proc = run(MODEL_PARITY, "--recipes", "k400_r50_1x1x3")
        assert proc.returncode == 1 and "MMAction2" in proc.stderr  # one line saying what is missing
        return
    proc = run(MODEL_PARITY, "--recipes", "k400_r50_1x1x3", "--size", "32", "--views", "2", "--clips", "2",
               "--flops-frames", "1", "--flops-size", "32", "--out", tmp_path / "out")
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [line for line in proc.stdout.splitlines() if line.startswith("k400_r50_1x1x3")]
    assert len(rows) == 1 and "argmax equal" in rows[0] and "24,327,632 / 24,327,632" in rows[0], proc.stdout
    assert "| k400_r50_1x1x3 | as saved |" in (tmp_path / "out" / "results.md").read_text()


@pytest.mark.slow
def test_mmaction_model_parity_loads_swin_in_timm06s_layout(tmp_path):
    """Swin-B 1x1x3 saved by MMAction2 as is and in timm 0.6's layout (the released file's):
    both load and score as MMAction2's model does."""
    if not _have_mmaction():
        pytest.skip("mmaction2 (with mmengine) not installed")
    proc = run(MODEL_PARITY, "--recipes", "k400_swin_b_1x1x3", "--views", "1", "--clips", "1", "--no-flops",
               "--out", tmp_path / "out")
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [line for line in proc.stdout.splitlines() if line.startswith("k400_swin_b_1x1x3")]
    assert [("timm 0.6 layout" in r, "argmax equal" in r) for r in rows] == [(False, True), (True, True)], rows


def test_the_model_parity_verdict_refuses_a_difference():
    """The verdict can fail: a score off by more than the tolerance, or another argmax."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("mmaction_model_parity", MODEL_PARITY)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.verdict({"max_diff": 3.5e-6, "argmax_equal": True})
    assert not module.verdict({"max_diff": 2e-4, "argmax_equal": True})
    assert not module.verdict({"max_diff": 0.0, "argmax_equal": False})
    assert not module.verdict({"max_diff": None, "argmax_equal": True})


@pytest.mark.parametrize("script", ["soak.py", "throughput.py", "flops.py"])
def test_wrappers_pass_the_exit_status_through(script, tmp_path):
    """A wrapper that drops main()'s status would report success for a failed run."""
    args = {"soak.py": ["--epochs", "1", "--warmup", "1"], "throughput.py": ["recipes/no_such.yaml"],
            "flops.py": ["recipes/no_such.yaml"]}[script]
    proc = run(ROOT / "benchmarks" / script, *args, timeout=300)
    assert proc.returncode != 0 and proc.stderr.strip(), (proc.returncode, proc.stderr[-500:])

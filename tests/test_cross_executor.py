"""benchmarks/cross_executor.py: executor specs, pixel differences and the results table
(the training runs themselves are the benchmark, not a test)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "cross_executor.py"


def _module():
    spec = importlib.util.spec_from_file_location("cross_executor", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_executor_specs_and_recipe_arguments():
    cx = _module()
    assert cx.parse_executor("dali-cpu") == {"label": "dali-cpu", "executor": "dali-cpu", "decode": "native"}
    mm = cx.parse_executor("dali-cpu:mmaction")
    assert mm == {"label": "dali-cpu (mmaction decode)", "executor": "dali-cpu", "decode": "mmaction"}
    args = cx.recipe_args("/data", mm, "cpu", ["train.epochs=2"])
    assert args[args.index("--executor") + 1] == "dali-cpu"
    assert "loader.decode=mmaction" in args and "data.root=/data" in args and "train.epochs=2" in args


def test_pixel_differences_and_table(tmp_path):
    cx = _module()
    ref = np.full((2, 3, 4, 4, 3), 100, np.uint8)
    near = ref.copy()
    near[0, 0, 0, 0, 0] = 120  # one value 20 levels away
    diffs = cx.pixel_differences({"reference": ref, "dali-cpu": near}, "reference")
    assert diffs["reference"] == {"mean": 0.0, "max": 0, "share_over_8": 0.0}
    assert diffs["dali-cpu"]["max"] == 20 and diffs["dali-cpu"]["share_over_8"] == 1 / ref.size
    tests = [cx.parse_executor("dali-cpu"), cx.parse_executor("reference")]
    runs = [{"train": t["label"], "seed": s, "tests": {u["label"]: {"top1": 90.0 + s} for u in tests}}
            for t in tests for s in (0, 1)]
    result = {"env": {"date": "d", "device": "cpu", "cpu_count": 2, "load_average_at_start": [0.1, 0.2, 0.3],
                      "torch": "t", "dali": "x", "decord": "y", "command": "c"},
              "recipe": "recipes/demo.yaml", "overrides": [], "amp": "off", "num_test_videos": 64,
              "num_views": 15, "seeds": [0, 1], "train_executors": tests, "test_executors": tests,
              "runs": runs, "pixel_videos": 2, "pixel_reference": "reference", "pixels": diffs}
    path = tmp_path / "results.md"
    cx.write_markdown(path, result)
    text = path.read_text()
    assert "| dali-cpu | 90.50 | 90.50 |" in text  # mean over the two seeds
    assert f"| dali-cpu | {20 / ref.size:.3f} | 20 |" in text

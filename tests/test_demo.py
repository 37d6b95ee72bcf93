"""The README's first command, shrunk: ``python -m tsn_dali.demo --quick`` end to end."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tsn_dali.config import load_recipe
from tsn_dali.data.plan.planner import ClipPlanner, load_pipeline
from tsn_dali.data.media.synthetic import SyntheticSpec, class_name, class_specs, list_file, video_dir
from tsn_dali.data.index.video_index import VideoInfo
from tsn_dali import demo, train
from tsn_dali.demo import loader_description, plot_curves

PROJECT = Path(__file__).resolve().parents[1]


def test_demo_recipe_matches_generated_dataset():
    recipe = load_recipe(PROJECT / "recipes" / "demo.yaml")
    spec = SyntheticSpec()
    assert recipe.model.num_classes == spec.classes == len(class_specs(spec.classes))
    assert recipe.model.pretrained is None  # trained from scratch: nothing downloaded
    assert recipe.data.train_list == list_file(spec, "train")
    assert recipe.data.val_list == recipe.data.test_list == list_file(spec, "val")
    assert recipe.data.train_prefix == video_dir("train")
    assert recipe.data.test_prefix == video_dir("val")
    assert class_name(class_specs(1)[0]) == "red_circle"
    # the test protocol is multi-view: 5 segment centres x 3 crops of 96 px (the short side)
    ops = load_pipeline(recipe.data.test_pipeline, recipe.data)
    info = VideoInfo(path="v.webm", num_frames=spec.frames, width=spec.width, height=spec.height,
                     fps=spec.fps, codec="vp9", keyframe_interval=None, size=1, mtime=0.0, error=None)
    plan = ClipPlanner(ops).plan(0, "v.webm", 0, info)
    assert plan.num_views == 15
    assert list(plan.frame_indices) == [4, 14, 24, 33, 43]  # 48 frames / 5 segments, centres
    assert plan.out_size == (96, 96) and plan.resize_to == (spec.width, spec.height)


def test_loader_description_names_the_decoder():
    assert "DALI decodes the VP9" in loader_description("dali-cpu", "vp9")
    assert "PyAV/decord" in loader_description("dali-cpu", "h264")
    assert loader_description("dali-gpu", "h264").startswith("dali-gpu (")


def test_plot_curves_writes_png(tmp_path):
    history = [{"epoch": 1, "loss": 2.0, "top1": 20.0}, {"epoch": 2, "loss": 1.0, "top1": 60.0}]
    path = plot_curves(history, 70.0, tmp_path / "c.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_arguments_give_trains_statuses_before_any_video_is_made(tmp_path, capsys):
    where = ["--work-dir", str(tmp_path / "work"), "--data-dir", str(tmp_path / "data")]
    for bad, status in ((["--set", "train.lr=abc"], 1), (["--executor", "bogus"], 1), (["--device", "tpu"], 2)):
        assert demo.main(bad + where) == status, bad
        said = capsys.readouterr().err
        assert train.main(["recipes/demo.yaml"] + bad) == status
        assert said == capsys.readouterr().err and said.count("\n") == 1, said  # the same one line
    assert demo.main(["--bogus-flag"]) == 2  # argparse's status, returned
    assert not (tmp_path / "data").exists()


@pytest.mark.slow
def test_quick_demo_end_to_end(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(PROJECT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [sys.executable, "-m", "tsn_dali.demo", "--quick", "--device", "cpu", "--no-progress",
           "--work-dir", str(tmp_path / "work"), "--data-dir", str(tmp_path / "data")]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    top1 = float(re.search(r"demo: test top-1 ([\d.]+)%", out).group(1))
    assert top1 > 100.0 / SyntheticSpec().classes  # above chance (8 classes)
    assert re.search(r"data loader: (dali-cpu|dali-gpu|reference) \(", out)
    assert re.search(r"train [\d.]+ clips/s", out)
    work = tmp_path / "work"
    assert (work / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (work / "report.md").read_text()
    assert f"top-1 {top1:.2f}%" in report
    assert "| epoch |" in report and report.count("\n| 10 |") == 1  # one row per epoch (10 in --quick)
    figures = json.loads((work / "results.json").read_text())  # what the docs' figures are taken from
    assert f"{figures['top1']:.2f}" == f"{top1:.2f}" and figures["quick"] is True
    total = float(re.search(r"demo: (\d+) s in all", out).group(1))
    assert abs(figures["seconds"]["total"] - total) <= 0.5 and figures["machine"]["cores"] == os.cpu_count()
    assert (work / "latest.pth").is_file()

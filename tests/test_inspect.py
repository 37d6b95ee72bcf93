"""python -m tsn_dali.inspect: plan of one video, contact sheet, clip dump, errors."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tsn_dali.data.plan.clip_plan import ClipPlan
from tsn_dali.data.media.videoio import read_frame_number, write_numbered_video
from tsn_dali.inspect import render_with_executor

ROOT = Path(__file__).resolve().parents[1]
from helpers.real_videos import VIDEOS, needs_videos
RECIPE = str(ROOT / "recipes" / "k400_r50_1x1x8.yaml")


def run(*args):
    return subprocess.run([sys.executable, "-m", "tsn_dali.inspect", *args], cwd=ROOT,
                          capture_output=True, text=True)


@needs_videos
def test_json_test_split_real_clip():
    out = run(RECIPE, "--video", str(VIDEOS / "demo.mp4"), "--split", "test", "--json")
    assert out.returncode == 0, out.stderr
    plan = json.loads(out.stdout)
    assert plan["num_frames"] == 280 and plan["index"]["codec"] == "h264"
    # 25 segment centres 5.6 + 11.2 i, truncated
    assert plan["frame_indices"] == [int(5.6 + 11.2 * i) for i in range(25)]
    assert len(plan["crops"]) == 10 and plan["crop_flips"] == [False, True] * 5
    assert plan["crops"][8] == [58, 16, 282, 240] and plan["flip"] is False
    assert plan["num_views"] == 250


@needs_videos
def test_train_split_seed_and_epoch():
    args = [RECIPE, "--video", str(VIDEOS / "short_32f.mp4"), "--json", "--seed", "3"]
    a = json.loads(run(*args, "--epoch", "1").stdout)
    b = json.loads(run(*args, "--epoch", "1").stdout)
    c = json.loads(run(*args, "--epoch", "2").stdout)
    assert a == b and len(a["frame_indices"]) == 8
    assert a["frame_indices"] != c["frame_indices"]
    # 32 frames, 8 segments of 4: frame i of the plan lies in [4 i, 4 i + 4)
    assert all(4 * i <= f < 4 * i + 4 for i, f in enumerate(a["frame_indices"]))


def test_not_a_video_is_one_line_exit_1(tmp_path):
    fake = tmp_path / "notes.mp4"
    fake.write_text("just text\n")
    out = run(RECIPE, "--video", str(fake), "--json")
    assert out.returncode == 1 and out.stdout == ""
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and str(fake) in lines[0] and "Traceback" not in out.stderr


def test_bad_recipe_is_one_line_exit_1(tmp_path):
    out = run(str(tmp_path / "nope.yaml"), "--video", "x.mp4")
    assert out.returncode == 1 and len(out.stderr.strip().splitlines()) == 1
    assert "recipe file not found" in out.stderr


def test_dump_clips_and_sheet(tmp_path):
    video = write_numbered_video(str(tmp_path / "n.mp4"), 48, 160, 120)
    dump, sheet = tmp_path / "views.npy", tmp_path / "sheet.png"
    out = run(RECIPE, "--video", video, "--split", "test", "--dump-clips", str(dump),
              "--sheet", str(sheet))
    assert out.returncode == 0, out.stderr
    views = np.load(dump)
    assert views.shape == (250, 224, 224, 3) and views.dtype == np.uint8
    # crop-major, TenCrop: crop 1 (views 25..49) mirrors crop 0 (views 0..24)
    np.testing.assert_array_equal(views[25:50], views[0:25, :, ::-1])
    from PIL import Image
    assert Image.open(sheet).size[0] > Image.open(sheet).size[1] > 0


def test_default_rendering_decodes_the_planned_frames(tmp_path):
    """--sheet / --dump-clips without --executor render with the reference executor."""
    video = write_numbered_video(str(tmp_path / "n.mp4"), 30, 160, 120)
    indices = np.array([0, 7, 7, 29, 13], np.int32)
    plan = ClipPlan(sample=0, path=video, label=0, num_frames=30, orig_size=(160, 120),
                    frame_indices=indices, resize_to=(320, 240),
                    crops=np.array([[0, 0, 320, 240], [0, 0, 320, 240]], np.int32),
                    crop_flips=np.array([False, True]), out_size=(160, 120))
    views = render_with_executor(plan)
    assert views.shape == (10, 120, 160, 3) and views.dtype == np.uint8
    assert [read_frame_number(v) for v in views[:5]] == indices.tolist()
    assert [read_frame_number(v[:, ::-1]) for v in views[5:]] == indices.tolist()



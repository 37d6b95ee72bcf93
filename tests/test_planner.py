"""Pipelines (pipelines/*.yaml) and ClipPlanner plans."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tsn_dali.config import PIPELINES_DIR, DataConfig
from tsn_dali.data.errors import PipelineError
from tsn_dali.data.plan.ops import OPS, Resize, ThreeCrop
from tsn_dali.data.plan.planner import ClipPlanner, load_pipeline
from tsn_dali.data.index.video_index import VideoInfo

ROOT = Path(__file__).resolve().parents[1]


def info(num_frames=300, width=340, height=256):
    return VideoInfo(path="v.mp4", num_frames=num_frames, width=width, height=height, fps=30.0,
                     codec="h264")


@pytest.mark.parametrize("name", sorted(p.stem for p in PIPELINES_DIR.glob("*.yaml")))
def test_every_pipeline_loads_and_plans(name):
    ops = load_pipeline(name, DataConfig(num_segments=5))
    plan = ClipPlanner(ops, seed=1).plan(0, "v.mp4", 3, info(), epoch=0)
    if any(isinstance(op, ThreeCrop) for op in ops):  # ThreeCrop keeps the short side (256)
        assert plan.out_size == (256, 256)
    else:
        assert plan.out_size == (224, 224)
    x1, y1, x2, y2 = plan.crops.T
    w, h = plan.resize_to
    assert (x1 >= 0).all() and (y1 >= 0).all() and (x2 <= w).all() and (y2 <= h).all()
    assert ((plan.frame_indices >= 0) & (plan.frame_indices < 300)).all()


def test_substitution_and_start_index():
    cfg = DataConfig(num_segments=3, input_size=160, short_side=192, start_index=1,
                     flip_label_map={86: 87})
    ops = load_pipeline("tsn_train", cfg)
    assert [type(op).__name__ for op in ops] == ["SampleFrames", "Resize", "MultiScaleCrop", "Resize", "Flip"]
    sample, resize, crop, resize_crops, flip = ops
    assert resize_crops == Resize(scale=(160, 160), keep_ratio=False)
    assert sample.num_clips == 3 and sample.start_index == 1 and sample.clip_len == 1
    assert sample.test_mode is False and sample.out_of_bound_opt == "loop"  # MMAction2's defaults
    assert resize.scale == (-1, 192)
    assert crop.input_size == 160 and crop.scales == (1, 0.875, 0.75, 0.66)
    assert flip.flip_label_map == {86: 87} and flip.flip_ratio == 0.5


def test_ops_are_one_table_of_dataclasses_whose_fields_are_the_parameters():
    assert set(OPS) == {"SampleFrames", "DenseSampleFrames", "Resize", "MultiScaleCrop", "RandomResizedCrop",
                        "CenterCrop", "ThreeCrop", "TenCrop", "Flip"}
    assert list(OPS["CenterCrop"].parameters()) == ["crop_size", "lazy"]
    with pytest.raises(ValueError, match="SampleFrames.num_clips: expected a positive integer"):
        OPS["SampleFrames"](clip_len=1, num_clips=0)
    with pytest.raises(ValueError, match="Flip.direction"):
        OPS["Flip"](direction="vertical")
    with pytest.raises(TypeError, match="expected pipeline ops"):
        ClipPlanner([("SampleFrames", {"clip_len": 1})])


def test_val_plan_is_mmaction_val_view():
    # demo.mp4: 280 frames, 8 segments of 35: centres 17.5 + 35 i -> 17, 52, ...
    ops = load_pipeline("tsn_val", DataConfig(num_segments=8))
    plan = ClipPlanner(ops).plan(4, "demo.mp4", 6, info(280))
    assert plan.frame_indices.tolist() == [17, 52, 87, 122, 157, 192, 227, 262]
    assert plan.resize_to == (340, 256) and plan.out_size == (224, 224)
    assert plan.crops.tolist() == [[58, 16, 282, 240]]
    assert plan.crop_flips.tolist() == [False] and plan.flip is False and plan.label == 6
    # rawframes (start_index 1) shift every index by one
    ops1 = load_pipeline("tsn_val", DataConfig(num_segments=8, start_index=1))
    assert (ClipPlanner(ops1).plan(4, "d", 6, info(280)).frame_indices
            == plan.frame_indices + 1).all()


def test_tencrop_test_plan_1080p():
    ops = load_pipeline("tsn_test_tencrop", DataConfig())
    plan = ClipPlanner(ops).plan(0, "v.mp4", 1, info(72, 1920, 1080))
    assert plan.resize_to == (455, 256)
    assert len(plan.frame_indices) == 25 and plan.num_views == 250
    # avg 72 / 25 = 2.88; centres 1.44 + 2.88 i
    assert plan.frame_indices.tolist() == [int(1.44 + 2.88 * i) for i in range(25)]
    assert plan.crop_flips.tolist() == [False, True] * 5
    assert plan.crops[::2].tolist() == [[0, 0, 224, 224], [228, 0, 452, 224], [0, 32, 224, 256],
                                        [228, 32, 452, 256], [114, 16, 338, 240]]
    assert (plan.crops[1::2] == plan.crops[::2]).all()


def test_threecrop_portrait():
    ops = load_pipeline("tsn_test_threecrop", DataConfig())
    plan = ClipPlanner(ops).plan(0, "v.mp4", 1, info(50, 720, 1280))
    assert plan.resize_to == (256, 455) and plan.out_size == (256, 256)
    assert plan.crops.tolist() == [[0, 0, 256, 256], [0, 198, 256, 454], [0, 99, 256, 355]]


def test_train_plan_seeding():
    ops = load_pipeline("tsn_train", DataConfig(num_segments=8))
    planner = ClipPlanner(ops, seed=7)
    a = planner.plan(3, "v.mp4", 1, info(), epoch=2)
    b = ClipPlanner(ops, seed=7).plan(3, "v.mp4", 1, info(), epoch=2)
    assert a.to_json() == b.to_json()
    others = [planner.plan(3, "v.mp4", 1, info(), epoch=e).to_json() for e in range(3, 8)]
    assert all(o["frame_indices"] != a.to_json()["frame_indices"] for o in others)
    assert planner.plan(4, "v.mp4", 1, info(), epoch=2).to_json() != a.to_json()
    # the crop is one of MultiScaleCrop's sizes at one of its 5 fixed offsets
    for e in range(20):
        p = planner.plan(0, "v.mp4", 1, info(), epoch=e)
        x1, y1, x2, y2 = p.crops[0]
        cw, ch = x2 - x1, y2 - y1
        assert cw in (256, 224, 192, 168) and ch in (256, 224, 192, 168)
        assert x1 in (0, (340 - cw) // 4 * 2, (340 - cw) // 4 * 4)
        assert p.out_size == (224, 224) and p.crop_flips.tolist() == [p.flip]


def test_same_plan_in_another_process():
    ops = load_pipeline("tsn_train_rrc", DataConfig(num_segments=3))
    here = ClipPlanner(ops, seed=11).plan(5, "v.mp4", 0, info(), epoch=9).to_json()
    code = (
        "import json; from tsn_dali.config import DataConfig;"
        "from tsn_dali.data.plan.planner import ClipPlanner, load_pipeline;"
        "from tsn_dali.data.index.video_index import VideoInfo;"
        "ops = load_pipeline('tsn_train_rrc', DataConfig(num_segments=3));"
        "i = VideoInfo(path='v.mp4', num_frames=300, width=340, height=256, fps=30.0, codec='h264');"
        "print(json.dumps(ClipPlanner(ops, seed=11).plan(5, 'v.mp4', 0, i, epoch=9).to_json()))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         check=True)
    assert json.loads(out.stdout) == here


def _pipeline(tmp_path, text):
    path = tmp_path / "custom.yaml"
    path.write_text(text)
    return path


def test_flip_maps_label_and_flips_every_crop(tmp_path):
    path = _pipeline(tmp_path, "- SampleFrames: {clip_len: 1, num_clips: $num_segments}\n"
                               "- Resize: {scale: [-1, $short_side]}\n"
                               "- CenterCrop: {crop_size: $input_size}\n"
                               "- Flip: {flip_ratio: 1.0, flip_label_map: $flip_label_map}\n")
    ops = load_pipeline(path, DataConfig(num_segments=2, flip_label_map={3: 7}))
    plan = ClipPlanner(ops).plan(0, "v.mp4", 3, info())
    assert plan.flip is True and plan.crop_flips.tolist() == [True] and plan.label == 7
    assert ClipPlanner(ops).plan(0, "v.mp4", 4, info()).label == 4


@pytest.mark.parametrize("text, line, expected", [
    ("- SampleFrames: {clip_len: 1}\n- Resise: {scale: [-1, 256]}\n", 2, "did you mean 'Resize'"),
    ("- SampleFrames:\n    clip_len: 1\n    num_clip: 8\n", 3, "did you mean 'num_clips'"),
    ("- SampleFrames: {clip_len: 1, num_clips: $num_segment}\n", 1, "did you mean 'num_segments'"),
    ("- SampleFrames: {num_clips: 3}\n", 1, "missing parameter clip_len"),
    ("- SampleFrames: {clip_len: 1}\n- MultiScaleCrop: {input_size: 224, num_fixed_crops: 7}\n",
     2, "expected 5 or 13"),
    ("- Resize: {scale: [-1, 256]}\n", None, "expected a sampling op"),
    ("- SampleFrames: {clip_len: 1}\n- Flip: {flip_ratio: 0.5}\n- CenterCrop: {crop_size: 224}\n", None,
     "Flip: must come after CenterCrop"),
])
def test_pipeline_errors_name_file_line_and_closest(tmp_path, text, line, expected):
    path = _pipeline(tmp_path, text)
    with pytest.raises(PipelineError) as err:
        load_pipeline(path, DataConfig())
    message = str(err.value)
    assert message.startswith(f"{path}:{line}:" if line else str(path)), message
    assert expected in message and "\n" not in message


def test_unknown_pipeline_name():
    with pytest.raises(PipelineError, match="did you mean 'tsn_train'"):
        load_pipeline("tsn_trian", DataConfig())


def test_bad_video_cannot_be_planned():
    ops = load_pipeline("tsn_val", DataConfig())
    bad = VideoInfo(path="x.mp4", error="file not found")
    with pytest.raises(ValueError, match="x.mp4"):
        ClipPlanner(ops).plan(0, "x.mp4", 0, bad)


def test_one_frame_and_tiny_video():
    ops = load_pipeline("tsn_train", DataConfig(num_segments=8))
    plan = ClipPlanner(ops).plan(0, "v.mp4", 0, info(1, 64, 48))
    assert plan.frame_indices.tolist() == [0] * 8 and plan.resize_to == (341, 256)
    assert np.all(plan.crops[:, 2] <= 341)

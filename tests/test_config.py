"""Recipes: every row of MMAction2's reported figures present, values as MMAction2's configs, strict loading."""
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tsn_dali.config import (RECIPES_DIR, RecipeError, list_recipes, load_recipe, recipe_from_dict,
                             recipe_to_yaml)

import yaml

REPORTED_ROWS = {
    # recipe: (backbone, segments, top1, top5, gflops, params_m)
    "k400_r50_1x1x3": ("resnet50", 3, 72.83, 90.65, 102.7, 24.33),
    "k400_r50_1x1x5": ("resnet50", 5, 73.80, 91.21, 102.7, 24.33),
    "k400_r50_1x1x8": ("resnet50", 8, 74.12, 91.34, 102.7, 24.33),
    "k400_r50_dense_1x1x5": ("resnet50", 5, 71.37, 89.67, 102.7, 24.33),
    "k400_r101_1x1x8": ("resnet101", 8, 75.89, 92.07, 195.8, 43.32),
    "sthv2_r50_1x1x8": ("resnet50", 8, 35.51, 67.09, 102.7, 24.33),
    "sthv2_r50_1x1x16": ("resnet50", 16, 36.91, 68.77, 102.7, 24.33),
    "k400_rn101_32x4d_1x1x3": ("resnext101_32x4d", 3, 72.95, 90.36, 200.3, 42.95),
    "k400_dense161_1x1x3": ("densenet161", 3, 72.07, 90.15, 194.6, 27.36),
    "k400_swin_b_1x1x3": ("swin_base_patch4_window7_224", 3, 77.03, 92.61, 386.7, 87.15),
    "k400_swin_b_1x1x8": ("swin_base_patch4_window7_224", 8, 79.22, 94.20, 386.7, 87.15),
    "k400_mobileone_s4_1x1x8": ("mobileone_s4", 8, 73.65, 91.32, 76, 13.72),
}


@pytest.mark.parametrize("name", sorted(REPORTED_ROWS))
def test_every_reported_row_has_a_recipe(name):
    backbone, segments, top1, top5, gflops, params = REPORTED_ROWS[name]
    r = load_recipe(RECIPES_DIR / f"{name}.yaml")
    assert r.model.backbone == backbone
    assert r.data.num_segments == segments
    assert (r.reported.top1, r.reported.top5, r.reported.gflops, r.reported.params_m) == (
        top1, top5, gflops, params)
    assert r.reported.testing_protocol == "25 clips x 10 crop"
    assert r.train.grad_clip == 40 and r.train.momentum == 0.9 and r.train.weight_decay == 1e-4
    assert "--seed=0 --deterministic" in r.reported.train_command
    assert "--dump result.pkl" in r.reported.test_command


def test_design_card_recipe_is_the_r50_1x1x8_row():
    a, b = load_recipe("recipes/k400_r50.yaml"), load_recipe("recipes/k400_r50_1x1x8.yaml")
    a_d, b_d = a.to_dict(), b.to_dict()
    for d in (a_d, b_d):
        d.pop("name"), d.pop("source")
    assert a_d == b_d


def test_schedules_follow_mmaction2():
    k400 = load_recipe("recipes/k400_r50_1x1x8.yaml")
    assert (k400.train.epochs, k400.train.milestones, k400.train.lr, k400.train.base_batch_size) == (
        100, [40, 80], 0.01, 256)
    assert k400.data.test_pipeline == "tsn_test_tencrop"
    sth = load_recipe("recipes/sthv2_r50_1x1x8.yaml")
    assert (sth.train.epochs, sth.train.milestones, sth.model.num_classes, sth.model.dropout) == (
        50, [20, 40], 174, 0.5)
    assert sth.data.flip_label_map == {86: 87, 87: 86, 93: 94, 94: 93, 166: 167, 167: 166}
    assert load_recipe("recipes/sthv2_r50_1x1x16.yaml").data.train_pipeline == "tsn_train_13crop"
    dense = load_recipe("recipes/k400_r50_dense_1x1x5.yaml")
    assert (dense.train.lr, dense.model.dropout, dense.model.init_std) == (0.06, 0.5, 0.001)
    assert dense.data.train_pipeline == "dense_train" and dense.data.test_pipeline == "dense_test"
    assert load_recipe("recipes/k400_dense161_1x1x3.yaml").data.train_pipeline == "tsn_train_rrc"
    swin8 = load_recipe("recipes/k400_swin_b_1x1x8.yaml")
    assert (swin8.train.epochs, swin8.train.milestones) == (50, [20, 40])
    assert load_recipe("recipes/k400_mobileone_s4_1x1x8.yaml").loader.batch_size == 16


def test_shared_values_live_in_bases_not_in_rows():
    for path in list_recipes():
        text = path.read_text()
        assert "base:" in text, path
        assert "momentum" not in text and "weight_decay" not in text, path


def _write(tmp_path, body):
    p = tmp_path / "r.yaml"
    p.write_text(textwrap.dedent(body).replace("BASE", str(RECIPES_DIR / "k400_r50.yaml")))
    return p


def test_unknown_key_names_file_line_and_closest_key(tmp_path):
    p = _write(tmp_path, """\
        base: BASE
        train:
          lr: 0.02
          epoch: 3
        """)
    with pytest.raises(RecipeError) as err:
        load_recipe(p)
    msg = str(err.value)
    assert msg.startswith(f"{p}:4: train.epoch: unknown key")
    assert "did you mean 'train.epochs'" in msg
    assert "\n" not in msg


def test_wrong_type_names_file_and_key(tmp_path):
    p = _write(tmp_path, """\
        base: BASE
        data:
          num_segments: eight
        """)
    with pytest.raises(RecipeError, match=r"r\.yaml:3: data\.num_segments: expected int, got 'eight'"):
        load_recipe(p)


def test_bad_choice_and_missing_pipeline_and_missing_pretrained(tmp_path):
    p = _write(tmp_path, "base: BASE\nloader:\n  executor: gpu\n")
    with pytest.raises(RecipeError, match="loader.executor: expected one of auto, dali-gpu"):
        load_recipe(p)
    p = _write(tmp_path, "base: BASE\ndata:\n  train_pipeline: tsn_trian\n")
    with pytest.raises(RecipeError, match="did you mean 'tsn_train'"):
        load_recipe(p)
    p = _write(tmp_path, "base: BASE\nmodel:\n  pretrained: /nonexistent/r50.pth\n")
    with pytest.raises(RecipeError, match=r"r\.yaml:3: model\.pretrained: file not found"):
        load_recipe(p)


def test_error_in_a_base_names_the_base_file(tmp_path):
    base = tmp_path / "b.yaml"
    base.write_text(f"base: {RECIPES_DIR / 'k400_r50.yaml'}\nmodel:\n  dropuot: 0.1\n")
    child = tmp_path / "c.yaml"
    child.write_text("base: b.yaml\n")
    with pytest.raises(RecipeError) as err:
        load_recipe(child)
    assert str(err.value).startswith(f"{base.resolve()}:3: model.dropuot")


def test_invalid_yaml_and_missing_file(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("model:\n  backbone: [resnet50\n")
    with pytest.raises(RecipeError, match="not valid YAML"):
        load_recipe(p)
    with pytest.raises(RecipeError, match="recipe file not found"):
        load_recipe(tmp_path / "nope.yaml")


def test_set_overrides_any_field_and_is_validated():
    r = load_recipe("recipes/k400_r50.yaml", ["train.lr=0.02", "data.root=/mnt/k400",
                                              "train.milestones=[10, 20]", "model.pretrained=null"])
    assert (r.train.lr, r.data.root, r.train.milestones) == (0.02, "/mnt/k400", [10, 20])
    with pytest.raises(RecipeError, match=r"--set: train\.lr: expected float"):
        load_recipe("recipes/k400_r50.yaml", ["train.lr=fast"])
    with pytest.raises(RecipeError, match="unknown key"):
        load_recipe("recipes/k400_r50.yaml", ["train.learning_rate=0.1"])


def test_resolved_recipe_round_trips_through_yaml():
    r = load_recipe("recipes/sthv2_r50_1x1x16.yaml")
    again = recipe_from_dict(yaml.safe_load(recipe_to_yaml(r)))
    assert again.to_dict() | {"source": ""} == r.to_dict() | {"source": ""}


def test_cli_error_is_one_line(tmp_path):
    """A malformed recipe through a CLI entry point: one line, no traceback."""
    p = _write(tmp_path, "base: BASE\ntrain:\n  epoch: 3\n")
    out = subprocess.run([sys.executable, "-m", "tsn_dali.config", str(p)], capture_output=True,
                         text=True, cwd=Path(__file__).resolve().parents[1])
    assert out.returncode == 1
    lines = [l for l in out.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and "train.epoch: unknown key" in lines[0], out.stderr

"""FLOPs/params in MMAction2's convention: the counter's rules on a hand-worked model, meta vs
real tensors, every recipe's params from an independent formula, FLOPs within 1% of MMAction2's reported figures."""
import pytest
import torch
import torch.nn as nn

from tsn_dali.config import ModelConfig, RECIPES_DIR, list_recipes, load_recipe
from tsn_dali.flops import build_on_meta, count_flops, count_params, main, measure, recipe_rows
from tsn_dali.models import TSN, build_model

# Backbone parameters without the ImageNet classifier: the libraries' published totals
# minus in_features x 1000 + 1000 (torchvision docs: resnet50 25,557,032, resnet101
# 44,549,160, densenet161 28,681,000; timm: resnext101_32x4d 44,177,704,
# swin_base_patch4_window7_224 87,768,224, mobileone_s4 (train form) 14,951,248).
BACKBONE_PARAMS = {
    "resnet50": (25_557_032, 2048), "resnet101": (44_549_160, 2048),
    "resnext101_32x4d": (44_177_704, 2048), "densenet161": (28_681_000, 2208),
    "swin_base_patch4_window7_224": (87_768_224, 1024), "mobileone_s4": (14_951_248, 2048),
}


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def test_counter_rules_on_a_hand_worked_model():
    """conv 8x3x3x3 weights x 64 positions, eval BN 2/element, pooling 1/element, fc 8x4."""
    backbone = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                             nn.AdaptiveAvgPool2d(1), nn.Flatten())
    model = TSN(backbone, 8, num_classes=4)
    for device in ("cpu", "meta"):
        counts = count_flops(model.to(device), torch.zeros(1, 2, 3, 8, 8, device=device))
        assert counts["conv"] == 2 * 8 * 3 * 9 * 64
        assert counts["batch_norm"] == 2 * 2 * 8 * 64
        assert counts["linear/matmul"] == 8 * 4
        # spatial pooling of 2 frames + the consensus mean over 2 views
        assert counts["avg_pool"] == 2 * 8 * 64 + 2 * 8
    assert model.training  # count_flops restores the mode


def test_meta_count_equals_a_real_forward():
    torch.manual_seed(0)
    cfg = ModelConfig(backbone="resnet18", num_classes=5)
    real = count_flops(build_model(cfg), torch.randn(1, 1, 3, 64, 64))
    meta = count_flops(build_on_meta(cfg), torch.zeros(1, 1, 3, 64, 64, device="meta"))
    assert real == meta and real["conv"] > 0


REPORTED_ROW_RECIPES = [p for p in list_recipes() if load_recipe(p).reported.gflops is not None]


def test_every_reported_row_is_in_the_table():
    assert len(REPORTED_ROW_RECIPES) == 13  # 12 rows + k400_r50.yaml (the 1x1x8 row again)


@pytest.mark.parametrize("path", REPORTED_ROW_RECIPES, ids=lambda p: p.stem)
def test_params_of_every_recipe(path):
    recipe = load_recipe(path)
    m = recipe.model
    total, dim = BACKBONE_PARAMS[m.backbone]
    expected = total - (dim * 1000 + 1000) + dim * m.num_classes + m.num_classes
    assert count_params(build_on_meta(m)) == expected
    reported = recipe.reported.params_m
    if m.num_classes == 400:
        assert abs(expected / 1e6 - reported) / reported <= 0.005
    else:  # sthv2: MMAction2 repeats the 400-class figure
        as400 = total - 1000 * (dim + 1) + 400 * (dim + 1)
        assert abs(as400 / 1e6 - reported) / reported <= 0.005


@pytest.mark.parametrize("path", REPORTED_ROW_RECIPES, ids=lambda p: p.stem)
def test_flops_within_one_percent(path):
    """Every row (meta device: shapes only, so Swin-B and DenseNet-161 cost nothing)."""
    recipe = load_recipe(path)
    got = measure(recipe.model)["gflops"]
    assert abs(got - recipe.reported.gflops) / recipe.reported.gflops <= 0.01, got


def test_mobileone_deploy_form_counts_less():
    """MMAction2's reported 76G is the train form: fusing removes the BN and branch work (~2% less)."""
    train = measure(ModelConfig(backbone="mobileone_s4"))
    fused = measure(ModelConfig(backbone="mobileone_s4", deploy=True))
    assert fused["gflops"] < 0.99 * train["gflops"] and "batch_norm" not in fused["by_op"]
    assert fused["params"] < train["params"]


def test_table_marks_the_sthv2_row(tmp_path, capsys):
    rows = recipe_rows([RECIPES_DIR / "sthv2_r50_1x1x8.yaml"])
    (row,) = rows
    assert row["flops_ok"] and not row["params_ok"] and row["classes"] == 174
    assert abs(row["params_400_diff"]) < 0.5
    out = tmp_path / "flops.md"
    assert main([str(RECIPES_DIR / "sthv2_r50_1x1x8.yaml"), "--out", str(out)]) == 0
    text = out.read_text()
    assert "| sthv2_r50_1x1x8 | resnet50 | 174 | 102.74 | 102.7 |" in text
    assert "23.86 [1]" in text and "[1] sthv2_r50_1x1x8: MMAction2 reports 24.33M, the 400-class" in text
    assert "multiply-accumulates" in text

"""Every layout MMAction2 writes or releases for the recipes' rows loads through
``tsn_dali.test``'s path (``load_weights``) with the recipe itself, random weights, no
download (docs/training.md lists them):

- MMAction2's own ResNet-50 / ResNet-101 (mmcv ConvModule names; the 2022-09 R50/R101
  checkpoints and the 2023 SSv2 ones);
- mmcls ResNeXt-101 32x4d (torchvision's names; 2022-12), torchvision DenseNet-161 (2022-09);
- timm Swin-B in timm >= 0.9's layout and in timm 0.6's (the released 2022-09 file);
- mmpretrain MobileOne-S4 in its train form (2023-08) and in the deploy form MMAction2's
  ``tools/convert/reparameterize_model.py`` writes (message_hub kept).

Each file is a checkpoint dict as mmengine saves one (``meta``, ``state_dict``,
``message_hub``...; written by a Runner where mmengine is installed). Loaded, the model
holds the file's weights and computes what the source model computes.
"""
from __future__ import annotations

import pytest
import torch

from helpers.mmaction_layouts import (mmaction_tsn_state, mmpretrain_mobileone_features, mmpretrain_mobileone_tsn,
                                      timm06_swin_layout)
from helpers.mmengine_pickle import have_mmengine, runner_checkpoint
from tsn_dali.config import RECIPES_DIR, load_recipe
from tsn_dali.engine.checkpoint import CheckpointError
from tsn_dali.models import build_model
from tsn_dali.models.weights import mismatch_message
from tsn_dali.test import load_weights

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def recipe_for(name: str, *overrides: str):
    """A recipe of recipes/ as tsn_dali.test reads it, nothing pretrained."""
    recipe = load_recipe(RECIPES_DIR / f"{name}.yaml", ["model.pretrained=null", *overrides])
    assert recipe.model.pretrained is None
    return recipe


def save_as_mmaction(path, state, runner: bool = False):
    """``state`` as MMAction2 saves a TSN: by mmengine's Runner where asked and installed,
    else the same top-level keys with plain metadata."""
    if runner and have_mmengine():
        return runner_checkpoint(path, state=state)
    torch.save({"meta": {"epoch": 1, "mmengine_version": "0.10.7"}, "state_dict": state,
                "message_hub": {"log_scalars": {}, "runtime_info": {}, "resumed_keys": {}}}, path)
    return path


def fresh(recipe, seed: int = 123):
    torch.manual_seed(seed)
    return build_model(recipe.model).eval()


# (recipe, MMAction2's layout for its backbone, size of a test input)
LIBRARY_ROWS = [("k400_r50_1x1x3", "MMAction2 ResNet (ConvModule names)", 64),
                ("k400_r101_1x1x8", "MMAction2 ResNet (ConvModule names)", 64),
                ("sthv2_r50_1x1x8", "MMAction2 ResNet, 174 classes", 64),
                ("k400_rn101_32x4d_1x1x3", "mmcls ResNeXt (torchvision names)", 64),
                ("k400_dense161_1x1x3", "torchvision DenseNet", 64),
                ("k400_swin_b_1x1x8", "timm >= 0.9 Swin", 224)]


@pytest.mark.parametrize("name,layout,size", LIBRARY_ROWS, ids=[r[0] for r in LIBRARY_ROWS])
def test_each_rows_mmaction2_layout_loads_through_the_test_path(name, layout, size, tmp_path):
    recipe = recipe_for(name)
    source = fresh(recipe, seed=1)
    path = save_as_mmaction(tmp_path / "mm.pth", mmaction_tsn_state(source, recipe.model.backbone))
    model = fresh(recipe)
    assert load_weights(model, path, recipe) == "mmaction2"
    for key, value in source.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    clips = torch.randn(1, 1, 3, size, size, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(model.predict(clips), source.predict(clips), rtol=0, atol=1e-6)


@pytest.fixture(scope="module")
def swin():
    recipe = recipe_for("k400_swin_b_1x1x3")
    source = fresh(recipe, seed=2)
    old = {"backbone." + k: v for k, v in timm06_swin_layout(source.backbone).items()}
    old.update({"cls_head.fc_cls.weight": source.fc.weight.detach().clone(),
                "cls_head.fc_cls.bias": source.fc.bias.detach().clone()})
    return recipe, source, old


def test_timm06_swin_layout_is_what_the_released_file_holds(swin):
    """The check can fail: timm 0.6's keys do not fit the installed timm's Swin as they are
    (the error the released Swin-B checkpoint gave before)."""
    recipe, source, old = swin
    assert "backbone.layers.0.downsample.reduction.weight" in old
    assert "backbone.layers.3.downsample.reduction.weight" not in old
    assert any(k.endswith("attn_mask") for k in old) and any(k.endswith("relative_position_index") for k in old)
    raw = {k.replace("cls_head.fc_cls.", "fc."): v for k, v in old.items()}
    assert mismatch_message(source.state_dict(), raw) == \
        "backbone.layers.1.downsample.norm.weight has shape [1024], expected [512]"


def test_a_timm06_swin_checkpoint_loads_and_scores_as_the_source(swin, tmp_path):
    """Through timm's own swin_transformer.checkpoint_filter_fn: the loaded model is the
    source model, weight for weight and score for score."""
    recipe, source, old = swin
    path = save_as_mmaction(tmp_path / "swin_timm06.pth", old)
    model = fresh(recipe)
    assert load_weights(model, path, recipe) == "mmaction2"
    for key, value in source.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    clips = torch.randn(1, 2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(model.predict(clips), source.predict(clips), rtol=0, atol=0)


def test_a_timm06_swin_imagenet_file_loads_as_pretrained(swin, tmp_path):
    """timm 0.6's ImageNet Swin-B (``head`` a Linear, dropped) through model.pretrained."""
    recipe, source, old = swin
    imagenet = {k[len("backbone."):]: v for k, v in old.items() if k.startswith("backbone.")}
    imagenet.update({"head.weight": torch.zeros(1000, 1024), "head.bias": torch.zeros(1000)})
    path = tmp_path / "swin_base_patch4_window7_224_timm06.pth"
    torch.save(imagenet, path)
    from tsn_dali.models.weights import load_pretrained_backbone

    model = fresh(recipe)
    load_pretrained_backbone(model, path)
    for key, value in source.backbone.state_dict().items():
        assert torch.equal(model.backbone.state_dict()[key], value), key


@pytest.mark.parametrize("deploy", [False, True], ids=["train form", "deploy form"])
def test_mobileone_s4_as_mmaction2_writes_it_loads_and_computes_as_mmpretrain(deploy, tmp_path):
    """mmpretrain's names; the deploy form as reparameterize_model.py saves it: the whole
    training checkpoint with ``state_dict`` replaced (``message_hub`` kept: a Runner's
    where mmengine is installed). Loaded with the recipe (``model.deploy=true`` for the
    deploy form), the backbone computes mmpretrain's MobileOne (its rules, written out)."""
    recipe = recipe_for("k400_mobileone_s4_1x1x8", *(["model.deploy=true"] if deploy else []))
    mm = mmpretrain_mobileone_tsn("s4", num_classes=400, deploy=deploy)
    path = save_as_mmaction(tmp_path / "mobileone.pth", mm, runner=True)
    model = fresh(recipe)
    assert load_weights(model, path, recipe) == "mmaction2"
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        got, want = model.backbone(x), mmpretrain_mobileone_features(mm, "s4", x)
    scale = float(want.abs().max())
    torch.testing.assert_close(got / scale, want / scale, rtol=0, atol=1e-5)


def test_mobileone_deploy_file_with_the_train_recipe_is_one_line(tmp_path):
    """The check can fail: the deploy form does not load into the train form's model."""
    recipe = recipe_for("k400_mobileone_s4_1x1x8")
    path = save_as_mmaction(tmp_path / "deploy.pth", mmpretrain_mobileone_tsn("s4", num_classes=400, deploy=True))
    with pytest.raises(CheckpointError, match=r"weights do not match the recipe's model: .*missing"):
        load_weights(fresh(recipe), path, recipe)


def test_an_mmpretrain_mobileone_imagenet_file_loads_as_pretrained(tmp_path):
    """mmpretrain's ImageNet MobileOne (``backbone.stage*`` and ``head.fc``; MMAction2's
    config initialises from one) through model.pretrained, renamed to timm's names."""
    recipe = recipe_for("k400_mobileone_s4_1x1x8")
    mm = mmpretrain_mobileone_tsn("s4", num_classes=1000)
    imagenet = {k: v for k, v in mm.items() if k.startswith("backbone.")}
    imagenet.update({"head.fc.weight": mm["cls_head.fc_cls.weight"], "head.fc.bias": mm["cls_head.fc_cls.bias"]})
    path = tmp_path / "mobileone-s4_8xb32_in1k.pth"
    torch.save({"meta": {"epoch": 300}, "state_dict": imagenet}, path)
    from tsn_dali.models.weights import load_pretrained_backbone

    model = fresh(recipe)
    load_pretrained_backbone(model, path)
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        got, want = model.backbone(x), mmpretrain_mobileone_features(mm, "s4", x)
    scale = float(want.abs().max())
    torch.testing.assert_close(got / scale, want / scale, rtol=0, atol=1e-5)


def test_the_rows_cover_every_recipe_backbone():
    """A new recipe backbone needs a layout test here."""
    names = {p.stem for p in RECIPES_DIR.glob("*.yaml")} - {"demo"}
    backbones = {load_recipe(RECIPES_DIR / f"{n}.yaml").model.backbone for n in names}
    tested = {recipe_for(name).model.backbone for name, _, _ in LIBRARY_ROWS} | {"swin_base_patch4_window7_224",
                                                                               "mobileone_s4"}
    assert backbones <= tested, backbones - tested

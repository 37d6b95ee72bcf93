"""MMAction2 TSN checkpoints -> tsn_dali: key mapping, strict loading, the CLI."""

import pytest
import torch

from tsn_dali.config import ModelConfig, RECIPES_DIR, recipe_from_dict
from tsn_dali.convert import main as convert_main
from tsn_dali.models import build_model, convert_mmaction_state_dict

from helpers.mmaction_layouts import bn_state as _bn  # noqa: E402
from helpers.mmaction_layouts import mmpretrain_mobileone_features, mmpretrain_mobileone_tsn  # noqa: E402
from helpers.mmengine_pickle import have_mmengine, runner_checkpoint  # noqa: E402


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def mmaction_resnet_tsn(depth=50, num_classes=400, seed=0):
    """An MMAction2 TSN state dict written from MMAction2's naming rules (mmaction ResNet with
    mmcv ConvModules: convN.conv / convN.bn, downsample.conv / .bn; TSNHead.fc_cls), random
    tensors of the right shapes."""
    g = torch.Generator().manual_seed(seed)
    blocks = {18: (2, 2, 2, 2), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}[depth]
    bottleneck = depth >= 50
    expansion = 4 if bottleneck else 1
    sd = {"backbone.conv1.conv.weight": torch.randn(64, 3, 7, 7, generator=g)}
    sd.update(_bn("backbone.conv1.bn", 64, g))
    inplanes = 64
    for i, n in enumerate(blocks):
        planes = 64 * 2 ** i
        for j in range(n):
            p = f"backbone.layer{i + 1}.{j}"
            if bottleneck:
                convs = [(planes, inplanes, 1), (planes, planes, 3), (planes * 4, planes, 1)]
            else:
                convs = [(planes, inplanes, 3), (planes, planes, 3)]
            for z, (cout, cin, k) in enumerate(convs, 1):
                sd[f"{p}.conv{z}.conv.weight"] = torch.randn(cout, cin, k, k, generator=g)
                sd.update(_bn(f"{p}.conv{z}.bn", cout, g))
            if j == 0 and (i > 0 or inplanes != planes * expansion):
                sd[f"{p}.downsample.conv.weight"] = torch.randn(planes * expansion, inplanes, 1, 1, generator=g)
                sd.update(_bn(f"{p}.downsample.bn", planes * expansion, g))
            inplanes = planes * expansion
    sd["cls_head.fc_cls.weight"] = torch.randn(num_classes, inplanes, generator=g)
    sd["cls_head.fc_cls.bias"] = torch.randn(num_classes, generator=g)
    return sd


def test_tsn_r50_checkpoint_converts_and_loads_strict():
    mm = mmaction_resnet_tsn(50, 400)
    assert len(mm) == 53 * 6 + 2  # 49 convs + 4 downsample convs, each weight + 5 BN tensors; fc
    ours = convert_mmaction_state_dict(mm, "resnet50")
    model = build_model(ModelConfig(backbone="resnet50", num_classes=400))
    result = model.load_state_dict(ours, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert len(ours) == len(mm) == len(model.state_dict())
    b = model.backbone
    assert torch.equal(b.conv1.weight, mm["backbone.conv1.conv.weight"])
    assert torch.equal(b.bn1.running_var, mm["backbone.conv1.bn.running_var"])
    assert torch.equal(b.layer3[4].conv2.weight, mm["backbone.layer3.4.conv2.conv.weight"])
    assert torch.equal(b.layer2[0].bn3.bias, mm["backbone.layer2.0.conv3.bn.bias"])
    assert torch.equal(b.layer4[0].downsample[0].weight, mm["backbone.layer4.0.downsample.conv.weight"])
    assert torch.equal(b.layer4[0].downsample[1].running_mean, mm["backbone.layer4.0.downsample.bn.running_mean"])
    assert torch.equal(model.fc.weight, mm["cls_head.fc_cls.weight"])
    assert torch.equal(model.fc.bias, mm["cls_head.fc_cls.bias"])


def test_library_named_backbones_pass_through_and_bad_keys_fail():
    w = torch.zeros(1)
    sd = {"backbone.layer1.0.conv1.weight": w, "backbone.features.norm5.weight": w,
          "backbone.layers.0.blocks.0.attn.qkv.weight": w, "cls_head.fc_cls.weight": torch.zeros(3, 2),
          "cls_head.fc_cls.bias": torch.zeros(3), "data_preprocessor.mean": w}
    for backbone in ("resnext101_32x4d", "densenet161", "swin_base_patch4_window7_224"):
        out = convert_mmaction_state_dict(sd, backbone)
        assert set(out) == {"backbone.layer1.0.conv1.weight", "backbone.features.norm5.weight",
                            "backbone.layers.0.blocks.0.attn.qkv.weight", "fc.weight", "fc.bias"}
    with pytest.raises(ValueError, match="neck.x: expected keys under backbone."):
        convert_mmaction_state_dict({**sd, "neck.x": w}, "resnet50")
    with pytest.raises(ValueError, match="no cls_head.fc_cls.weight"):
        convert_mmaction_state_dict({"backbone.conv1.conv.weight": w}, "resnet50")
    with pytest.raises(ValueError, match="backbone.head.x: not a key of mmpretrain's MobileOne"):
        convert_mmaction_state_dict({"backbone.stage0.branch_norm.weight": w, "backbone.head.x": w,
                                     **sd}, "mobileone_s4")


@pytest.mark.parametrize("arch,deploy", [("s0", False), ("s4", False), ("s4", True)])
def test_mmaction_mobileone_checkpoint_converts_loads_and_computes_the_same(arch, deploy):
    mm = mmpretrain_mobileone_tsn(arch, num_classes=5, deploy=deploy)
    ours = convert_mmaction_state_dict(mm, f"mobileone_{arch}")
    model = build_model(ModelConfig(backbone=f"mobileone_{arch}", num_classes=5, deploy=deploy))
    result = model.load_state_dict(ours, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert len(ours) == len(mm) == len(model.state_dict())
    model.eval()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        got = model.backbone(x)
        want = mmpretrain_mobileone_features(mm, arch, x)
    scale = float(want.abs().max())  # random weights: features grow to O(100)
    assert scale > 0 and got.shape == want.shape
    torch.testing.assert_close(got / scale, want / scale, rtol=0, atol=1e-5)


def _tiny_recipe(tmp_path, classes, backbone="resnet18"):
    path = tmp_path / f"{backbone}_{classes}.yaml"
    path.write_text(f"base: {RECIPES_DIR / '_base' / 'tsn_k400.yaml'}\n"
                    f"model:\n  backbone: {backbone}\n  num_classes: {classes}\n")
    return path


def test_cli_writes_a_checkpoint_build_model_loads(tmp_path, capsys):
    mm = mmaction_resnet_tsn(18, 10)
    src, dst = tmp_path / "mm.pth", tmp_path / "ours.pth"
    torch.save({"state_dict": mm, "meta": {"epoch": 100}}, src)
    assert convert_main(["mmaction", str(src), str(dst), "--recipe", str(_tiny_recipe(tmp_path, 10))]) == 0
    out = torch.load(dst, weights_only=True)
    recipe = recipe_from_dict(out["recipe"])
    assert recipe.model.backbone == "resnet18" and out["format"] == "tsn_dali"
    model = build_model(recipe.model)
    model.load_state_dict(out["model"], strict=True)
    assert torch.equal(model.backbone.layer2[0].downsample[1].weight, mm["backbone.layer2.0.downsample.bn.weight"])
    # class count that does not match the recipe: one line naming the recipe key
    capsys.readouterr()
    assert convert_main(["mmaction", str(src), str(dst), "--recipe", str(_tiny_recipe(tmp_path, 11))]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "model.num_classes" in err and "10 classes" in err
    # wrong backbone for the recipe
    r50 = str(RECIPES_DIR / "k400_r50.yaml")
    assert convert_main(["mmaction", str(src), str(dst), "--recipe", r50, "--set", "model.num_classes=10"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"error: {src}: ")


def test_mmengine_metadata_converts_without_allow_pickle(tmp_path, capsys):
    """MMAction2 files pickle mmengine and numpy objects (and getattr calls) beside the
    weights: read as inert stand-ins (nothing of theirs imported or run), no flag needed.
    The file is written by mmengine's Runner.save_checkpoint, holding an MMAction2 TSN."""
    if not have_mmengine():
        pytest.skip("mmengine not installed: no Runner to write the file")
    src, dst = tmp_path / "mm.pth", tmp_path / "ours.pth"
    runner_checkpoint(src, state=mmaction_resnet_tsn(18, 10))
    recipe = str(_tiny_recipe(tmp_path, 10))
    assert convert_main(["mmaction", str(src), str(dst), "--recipe", recipe]) == 0
    assert capsys.readouterr().err == ""
    assert "fc.weight" in torch.load(dst, weights_only=True)["model"]
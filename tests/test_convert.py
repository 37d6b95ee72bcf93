"""MMAction2 TSN checkpoints -> tsn_dali: key mapping, strict loading, the CLI."""
import sys
import types

import pytest
import torch

from tsn_dali.config import ModelConfig, RECIPES_DIR, recipe_from_dict
from tsn_dali.convert import main as convert_main
from tsn_dali.models import build_model, convert_mmaction_state_dict


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def _bn(prefix, c, g):
    return {f"{prefix}.weight": torch.rand(c, generator=g), f"{prefix}.bias": torch.randn(c, generator=g),
            f"{prefix}.running_mean": torch.randn(c, generator=g),
            f"{prefix}.running_var": torch.rand(c, generator=g) + 0.5,
            f"{prefix}.num_batches_tracked": torch.tensor(7)}


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
    with pytest.raises(ValueError, match="mmpretrain"):
        convert_mmaction_state_dict({"backbone.stage0.0.x": w, **sd}, "mobileone_s4")


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


def test_pickled_meta_needs_allow_pickle(tmp_path, capsys):
    """MMAction2 files pickle mmengine objects; without that package, --allow-pickle reads them."""
    fake = types.ModuleType("fake_mmengine_for_test")

    class HistoryBuffer:
        def __init__(self):
            self.values = [1, 2]

    HistoryBuffer.__module__ = fake.__name__
    HistoryBuffer.__qualname__ = "HistoryBuffer"
    fake.HistoryBuffer = HistoryBuffer
    sys.modules[fake.__name__] = fake
    src, dst = tmp_path / "mm.pth", tmp_path / "ours.pth"
    try:
        torch.save({"state_dict": mmaction_resnet_tsn(18, 10), "message_hub": {"loss": HistoryBuffer()}}, src)
    finally:
        del sys.modules[fake.__name__]
    recipe = str(_tiny_recipe(tmp_path, 10))
    assert convert_main(["mmaction", str(src), str(dst), "--recipe", recipe]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--allow-pickle" in err
    assert convert_main(["mmaction", str(src), str(dst), "--recipe", recipe, "--allow-pickle"]) == 0
    assert "fc.weight" in torch.load(dst, weights_only=True)["model"]

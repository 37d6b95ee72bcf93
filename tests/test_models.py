"""TSN models: consensus rule, predict modes, channels_last, autocast, pretrained loading,
MobileOne reparameterisation (train form vs fused form)."""
import dataclasses

import pytest
import torch
import torch.nn as nn

from tsn_dali.config import ModelConfig, RecipeError, recipe_from_dict, Recipe
from tsn_dali.engine.checkpoint import CheckpointError
from tsn_dali.models import TSN, build_model, load_pretrained_backbone


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


class MeanColour(nn.Module):
    """Backbone stand-in with a known output: per-frame channel means [B, 3]."""

    def forward(self, x):
        return x.mean(dim=(2, 3))


def test_forward_averages_features_before_fc_and_predict_modes():
    torch.manual_seed(0)
    model = TSN(MeanColour(), 3, num_classes=4, dropout=0.5, init_std=1.0, test_average="feature")
    assert model.fc.bias.abs().sum() == 0
    clips = torch.randn(2, 5, 3, 4, 4)
    feats = clips.mean(dim=(3, 4))  # [N, V, 3]
    model.eval()
    with torch.no_grad():
        model.fc.bias.normal_()
    expected = (feats.mean(1) @ model.fc.weight.T + model.fc.bias).detach()
    torch.testing.assert_close(model(clips), expected)
    torch.testing.assert_close(model.predict(clips), expected.softmax(-1))
    model.test_average = "prob"
    per_view = (feats @ model.fc.weight.T + model.fc.bias).softmax(-1).mean(1).detach()
    torch.testing.assert_close(model.predict(clips), per_view)
    # Not the same rule: the two modes differ on these inputs.
    assert not torch.allclose(per_view, expected.softmax(-1), atol=1e-6)
    # Train mode: dropout acts on the consensus feature (zeros some of it, scales the rest).
    model.train()
    torch.manual_seed(1)
    out = model(clips)
    assert not torch.allclose(out, expected)


def test_fc_init_matches_tsn_head():
    torch.manual_seed(0)
    model = TSN(MeanColour(), 512, num_classes=400, init_std=0.01)
    std = model.fc.weight.std().item()
    assert 0.0095 < std < 0.0105 and abs(model.fc.weight.mean().item()) < 1e-3
    assert torch.count_nonzero(model.fc.bias) == 0


@pytest.mark.parametrize("backbone", ["resnet18", "mobileone_s0"])
def test_channels_last_and_bf16_autocast(backbone):
    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone=backbone, num_classes=7, dropout=0.0)).eval()
    _randomise_bn(model)
    nhwc = torch.randn(2, 2, 64, 64, 3)
    clips = nhwc.permute(0, 1, 4, 2, 3)  # [N, V, C, H, W] view of NVHWC memory, as the loader gives
    seen = []
    model.backbone.register_forward_pre_hook(
        lambda m, args: seen.append((args[0].is_contiguous(memory_format=torch.channels_last),
                                     args[0].data_ptr())))
    with torch.no_grad():
        ref = model(clips.contiguous())
        out = model(clips)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(clips)
    assert out.shape == (2, 7)
    # the frames reach the backbone as channels_last, without a copy
    assert seen[1] == (True, nhwc.data_ptr())
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
    assert low.dtype == torch.bfloat16
    scale = ref.abs().max()
    assert (low.float() - ref).abs().max() < 0.05 * scale
    # fp16 input outside autocast is cast to the model's dtype
    with torch.no_grad():
        half = model(clips.half())
    assert half.dtype == torch.float32
    probs = model.predict(clips)
    torch.testing.assert_close(probs.sum(-1), torch.ones(2))


def test_unknown_backbone_and_deploy_are_recipe_errors():
    with pytest.raises(RecipeError, match="model.backbone: unknown backbone 'resnet5'"):
        build_model(ModelConfig(backbone="resnet5"))
    with pytest.raises(RecipeError, match="model.deploy"):
        build_model(ModelConfig(backbone="resnet18", deploy=True))


def test_pretrained_imagenet_file(tmp_path):
    """A torchvision-layout ImageNet file (fc included) loads into the backbone; the TSN fc is
    untouched; a file for another backbone is a one-line error naming the file."""
    import torchvision

    torch.manual_seed(0)
    imagenet = torchvision.models.resnet18(num_classes=1000)
    sd = imagenet.state_dict()
    sd = {k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")}  # old files lack them
    path = tmp_path / "resnet18_imagenet.pth"
    torch.save(sd, path)
    model = build_model(ModelConfig(backbone="resnet18", num_classes=3, pretrained=str(path)))
    torch.testing.assert_close(model.backbone.layer3[1].conv2.weight, imagenet.layer3[1].conv2.weight)
    torch.testing.assert_close(model.backbone.bn1.running_var, imagenet.bn1.running_var)
    assert model.fc.weight.shape == (3, 512)
    # timm-style wrapper {'state_dict': ...} with module. prefixes
    torch.save({"state_dict": {"module." + k: v for k, v in sd.items()}}, path)
    model2 = build_model(ModelConfig(backbone="resnet18", num_classes=3))
    load_pretrained_backbone(model2, path)
    torch.testing.assert_close(model2.backbone.conv1.weight, imagenet.conv1.weight)
    # wrong backbone
    other = build_model(ModelConfig(backbone="mobileone_s0", num_classes=3))
    with pytest.raises(CheckpointError) as err:
        load_pretrained_backbone(other, path)
    msg = str(err.value)
    assert msg.startswith(f"{path}: does not fit backbone mobileone_s0") and "\n" not in msg
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="bad.pth: not a PyTorch checkpoint"):
        load_pretrained_backbone(model2, bad)


def _randomise_bn(model):
    """Non-trivial BN statistics and affine terms, so fusion errors would show."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                m.running_mean.copy_(torch.randn(c, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(c, generator=g) * 0.5 + 0.75)
                m.weight.copy_(torch.rand(c, generator=g) * 0.5 + 0.5)
                m.bias.copy_(torch.randn(c, generator=g) * 0.1)
            elif isinstance(m, nn.Conv2d):
                # keep activations O(1) through the deep multi-branch net
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) / fan_in ** 0.5 * 0.5)


def test_mobileone_reparameterisation_cli_matches_train_form(tmp_path):
    """Train-form checkpoint -> python -m tsn_dali.reparameterize -> deploy form built by
    build_model (model.deploy true): same outputs to 1e-4 in eval mode, fewer tensors."""
    from tsn_dali.reparameterize import main as reparam_main

    torch.manual_seed(0)
    cfg = ModelConfig(backbone="mobileone_s0", num_classes=5)
    model = build_model(cfg).eval()
    _randomise_bn(model)
    recipe = Recipe(name="tiny_mobileone", model=cfg)
    src, dst = tmp_path / "train.pth", tmp_path / "deploy.pth"
    torch.save({"model": model.state_dict(), "recipe": recipe.to_dict()}, src)
    assert reparam_main([str(src), str(dst)]) == 0
    out = torch.load(dst, weights_only=True)
    fused_recipe = recipe_from_dict(out["recipe"])
    assert fused_recipe.model.deploy is True
    fused = build_model(fused_recipe.model)
    fused.load_state_dict(out["model"], strict=True)
    fused.eval()
    assert len(out["model"]) < len(model.state_dict())
    assert not any("conv_scale" in k for k in out["model"])
    clips = torch.randn(1, 2, 3, 64, 64)
    with torch.no_grad():
        a, b = model(clips), fused(clips)
    assert a.abs().max() > 1e-3  # outputs are not trivially zero
    torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4)

    # a bare state dict needs --backbone; with it, the same result
    bare, dst2 = tmp_path / "bare.pth", tmp_path / "deploy2.pth"
    torch.save(model.state_dict(), bare)
    assert reparam_main([str(bare), str(dst2)]) == 1
    assert reparam_main([str(bare), str(dst2), "--backbone", "mobileone_s0"]) == 0
    out2 = torch.load(dst2, weights_only=True)
    for k, v in out["model"].items():
        torch.testing.assert_close(out2["model"][k], v)
    # a ResNet cannot be reparameterised
    res = build_model(ModelConfig(backbone="resnet18", num_classes=5))
    torch.save({"model": res.state_dict(),
                "recipe": Recipe(model=dataclasses.replace(cfg, backbone="resnet18")).to_dict()}, src)
    assert reparam_main([str(src), str(dst)]) == 1


def test_recipe_backbone_choices_are_the_models_backbones():
    """config.BACKBONE_NAMES (checked at recipe load) is the one list: every name has a
    builder, and no builder is left that a recipe could not name."""
    from tsn_dali.config import BACKBONE_NAMES
    from tsn_dali.models import backbones

    assert list(backbones.BACKBONES) == list(BACKBONE_NAMES)
    assert set(backbones._BUILDERS) == set(BACKBONE_NAMES)

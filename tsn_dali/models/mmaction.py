"""MMAction2 TSN state dicts -> tsn_dali TSN state dicts.

MMAction2 names (mmaction/models/backbones/resnet.py, heads/tsn_head.py): its own ResNet
wraps conv+BN(+ReLU) in mmcv ``ConvModule``s, so torchvision's ``conv1`` / ``bn1`` are
``conv1.conv`` / ``conv1.bn``, a block's ``convZ`` / ``bnZ`` are ``convZ.conv`` / ``convZ.bn``
and ``downsample.0`` / ``.1`` are ``downsample.conv`` / ``.bn``; the classifier is
``cls_head.fc_cls``. Backbones taken from torchvision, timm or mmcls (ResNeXt) keep those
libraries' names under ``backbone.`` already, and their classifiers are Identity.

MobileOne rows use mmpretrain's MobileOne (mmpretrain/models/backbones/mobileone.py), which
timm's ``mobileone_s*`` (byobnet) builds block for block under other names: ``stage0`` is
timm's ``stem``; ``stageN.J`` (J over the depthwise/pointwise block pairs) is
``stages.{N-1}.J``; inside a block ``branch_conv_list.I.{conv,norm}`` is
``conv_kxk.I.{conv,bn}``, ``branch_scale`` (the 1x1 branch of a kxk block) is
``conv_scale``, ``branch_norm`` (the BN identity branch) is ``identity``, the SE layer's
``se.conv1.conv`` / ``se.conv2.conv`` are ``attn.fc1`` / ``attn.fc2``, and the fused
deploy conv ``branch_reparam`` is ``reparam_conv``.

Swin rows: MMAction2's released Swin-B TSN checkpoint (2022-09-06, timm 0.6) keeps timm
0.6's layout: each stage's PatchMerging at its end (``layers.{0,1,2}.downsample``) and the
``relative_position_index`` / ``attn_mask`` buffers. timm >= 0.9 merges at a stage's start
(``layers.{1,2,3}.downsample``) and no longer saves those buffers; such backbone keys go
through timm's own ``swin_transformer.checkpoint_filter_fn`` (``swin_timm_layout``).
"""
from __future__ import annotations

import re
from typing import Dict

import torch

from tsn_dali.models.backbones import BACKBONES, CLASSIFIER_PREFIXES

# MMAction2's own ResNet (ConvModule names) -> torchvision ResNet names.
_RESNET_RULES = [
    (re.compile(r"^conv1\.conv\."), "conv1."),
    (re.compile(r"^conv1\.bn\."), "bn1."),
    (re.compile(r"^(layer\d+\.\d+)\.conv(\d)\.conv\."), r"\1.conv\2."),
    (re.compile(r"^(layer\d+\.\d+)\.conv(\d)\.bn\."), r"\1.bn\2."),
    (re.compile(r"^(layer\d+\.\d+)\.downsample\.conv\."), r"\1.downsample.0."),
    (re.compile(r"^(layer\d+\.\d+)\.downsample\.bn\."), r"\1.downsample.1."),
]

# mmpretrain MobileOne -> timm mobileone (byobnet) names; block-level rules after the stage rule.
_MOBILEONE_STAGE_RULES = [
    (re.compile(r"^stage0\."), "stem."),
    (re.compile(r"^stage(\d)\.(\d+)\."), lambda m: f"stages.{int(m.group(1)) - 1}.{m.group(2)}."),
]
_MOBILEONE_BLOCK_RULES = [
    (re.compile(r"\.branch_conv_list\.(\d+)\.conv\."), r".conv_kxk.\1.conv."),
    (re.compile(r"\.branch_conv_list\.(\d+)\.norm\."), r".conv_kxk.\1.bn."),
    (re.compile(r"\.branch_scale\.conv\."), ".conv_scale.conv."),
    (re.compile(r"\.branch_scale\.norm\."), ".conv_scale.bn."),
    (re.compile(r"\.branch_norm\."), ".identity."),
    (re.compile(r"\.se\.conv(\d)\.conv\."), r".attn.fc\1."),
    (re.compile(r"\.branch_reparam\."), ".reparam_conv."),
]

# timm Swin buffers that timm >= 0.9 recomputes and no longer saves (non-persistent)
_SWIN_OLD_BUFFERS = ("relative_position_index", "attn_mask")

# Rows whose MMAction2 config uses mmaction's own ResNet (type='ResNet').
MMACTION_RESNETS = ("resnet18", "resnet50", "resnet101")


def _first_rule(rules, key: str):
    """(key rewritten by the first rule whose pattern matches, whether one matched)."""
    for pattern, repl in rules:
        new, n = pattern.subn(repl, key)
        if n:
            return new, True
    return key, False


def mmaction_resnet_key(key: str) -> str:
    """One MMAction2 ResNet backbone key (without ``backbone.``) in torchvision's name."""
    return _first_rule(_RESNET_RULES, key)[0]


def mmpretrain_mobileone_key(key: str) -> str:
    """One mmpretrain MobileOne backbone key (without ``backbone.``) in timm's name.
    Raises ValueError for a key outside stage0..stage4."""
    key, matched = _first_rule(_MOBILEONE_STAGE_RULES, key)
    if not matched:
        raise ValueError(f"backbone.{key}: not a key of mmpretrain's MobileOne (stage0..stage4)")
    return _first_rule(_MOBILEONE_BLOCK_RULES, key)[0]


def is_timm06_swin(state: Dict[str, torch.Tensor]) -> bool:
    """timm 0.6's Swin layout: stage 0 ends in a PatchMerging (``layers.0.downsample``),
    which timm >= 0.9 never has (its stage 0 starts without one)."""
    return any(k.startswith("layers.0.downsample.") for k in state)


def swin_timm_layout(state: Dict[str, torch.Tensor], name: str) -> Dict[str, torch.Tensor]:
    """A timm Swin backbone state dict (no ``backbone.``) in the installed timm's layout:
    timm 0.6's through timm's own ``checkpoint_filter_fn`` (downsample keys one stage on,
    buffers dropped), built against the model on the meta device (no compute); otherwise
    only the non-persistent buffers an older file may hold are dropped."""
    if not is_timm06_swin(state):
        return {k: v for k, v in state.items() if not k.endswith(_SWIN_OLD_BUFFERS)}
    import timm
    from timm.models.swin_transformer import checkpoint_filter_fn

    with torch.device("meta"):
        model = timm.create_model(name, pretrained=False, num_classes=0)
    return checkpoint_filter_fn(state, model)


def backbone_in_our_names(state: Dict[str, torch.Tensor], backbone: str) -> Dict[str, torch.Tensor]:
    """A backbone state dict (keys without ``backbone.``, classifier keys already dropped)
    in the names ``BACKBONES[backbone]`` builds: MMAction2's ResNet names -> torchvision's,
    mmpretrain's MobileOne -> timm's, timm 0.6's Swin -> the installed timm's layout;
    torchvision / timm >= 0.9 / mmcls names unchanged."""
    if backbone in MMACTION_RESNETS:
        return {mmaction_resnet_key(k): v for k, v in state.items()}
    if backbone.startswith("mobileone") and any(k.startswith("stage0.") for k in state):
        return {mmpretrain_mobileone_key(k): v for k, v in state.items()}
    if backbone.startswith("swin"):
        return swin_timm_layout(state, backbone)
    return state


def convert_mmaction_state_dict(state_dict: Dict[str, torch.Tensor], backbone: str) -> Dict[str, torch.Tensor]:
    """Our TSN state dict (``backbone.*`` in torchvision/timm names, ``fc.*``) from an
    MMAction2 TSN ``state_dict``. Raises ``ValueError`` (one line) for keys that are not a
    TSN's or a backbone this does not convert."""
    if backbone not in BACKBONES:
        raise ValueError(f"unknown backbone {backbone!r}; expected one of {', '.join(BACKBONES)}")
    head: Dict[str, torch.Tensor] = {}
    trunk: Dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"{key} is not a tensor (a {type(value).__name__})")
        if key.startswith("data_preprocessor."):
            continue  # mean/std buffers: the loader normalises
        if key.startswith("cls_head."):
            rest = key[len("cls_head."):]
            if not rest.startswith("fc_cls."):
                raise ValueError(f"{key}: expected only cls_head.fc_cls.weight/bias in a TSN head")
            head["fc." + rest[len("fc_cls."):]] = value
        elif key.startswith("backbone."):
            rest = key[len("backbone."):]
            if not rest.startswith(CLASSIFIER_PREFIXES):  # else Identity in MMAction2: an ImageNet classifier left in
                trunk[rest] = value
        else:
            raise ValueError(f"{key}: expected keys under backbone., cls_head. or data_preprocessor.")
    if "fc.weight" not in head:
        raise ValueError("no cls_head.fc_cls.weight: not an MMAction2 TSN state dict")
    return {**{"backbone." + k: v for k, v in backbone_in_our_names(trunk, backbone).items()}, **head}

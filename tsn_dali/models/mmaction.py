"""MMAction2 TSN state dicts -> tsn_dali TSN state dicts.

MMAction2 names (mmaction/models/backbones/resnet.py, heads/tsn_head.py): its own ResNet
wraps conv+BN(+ReLU) in mmcv ``ConvModule``s, so torchvision's ``conv1`` / ``bn1`` are
``conv1.conv`` / ``conv1.bn``, a block's ``convZ`` / ``bnZ`` are ``convZ.conv`` / ``convZ.bn``
and ``downsample.0`` / ``.1`` are ``downsample.conv`` / ``.bn``; the classifier is
``cls_head.fc_cls``. Backbones taken from torchvision, timm or mmcls (ResNeXt) keep those
libraries' names under ``backbone.`` already, and their classifiers are Identity.
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

# Rows whose MMAction2 config uses mmaction's own ResNet (type='ResNet').
MMACTION_RESNETS = ("resnet18", "resnet50", "resnet101")


def mmaction_resnet_key(key: str) -> str:
    """One MMAction2 ResNet backbone key (without ``backbone.``) in torchvision's name."""
    for pattern, repl in _RESNET_RULES:
        key, n = pattern.subn(repl, key)
        if n:
            break
    return key


def convert_mmaction_state_dict(state_dict: Dict[str, torch.Tensor], backbone: str) -> Dict[str, torch.Tensor]:
    """Our TSN state dict (``backbone.*`` in torchvision/timm names, ``fc.*``) from an
    MMAction2 TSN ``state_dict``. Raises ``ValueError`` (one line) for keys that are not a
    TSN's or a backbone this does not convert."""
    if backbone not in BACKBONES:
        raise ValueError(f"unknown backbone {backbone!r}; expected one of {', '.join(BACKBONES)}")
    if any(k.startswith("backbone.stage0.") for k in state_dict) and backbone.startswith("mobileone"):
        raise ValueError("MMAction2's MobileOne checkpoints use mmpretrain's MobileOne names "
                         "(backbone.stage0...), which are not converted to timm's; only "
                         "ResNet, ResNeXt, DenseNet and Swin rows convert")
    out: Dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if key.startswith("data_preprocessor."):
            continue  # mean/std buffers: the loader normalises
        if key.startswith("cls_head."):
            rest = key[len("cls_head."):]
            if not rest.startswith("fc_cls."):
                raise ValueError(f"{key}: expected only cls_head.fc_cls.weight/bias in a TSN head")
            out["fc." + rest[len("fc_cls."):]] = value
        elif key.startswith("backbone."):
            rest = key[len("backbone."):]
            if rest.startswith(CLASSIFIER_PREFIXES):
                continue  # Identity in MMAction2; an ImageNet classifier left in a file
            if backbone in MMACTION_RESNETS:
                rest = mmaction_resnet_key(rest)
            out["backbone." + rest] = value
        else:
            raise ValueError(f"{key}: expected keys under backbone., cls_head. or data_preprocessor.")
    if "fc.weight" not in out:
        raise ValueError("no cls_head.fc_cls.weight: not an MMAction2 TSN state dict")
    return out

"""Per-frame 2D backbones, built offline, each returning pooled features ``[B, C]``.

One explicit dict, ``BACKBONES``: name -> builder. A builder takes ``deploy`` (MobileOne's
fused inference form) and returns ``(module, feature_dim)``; the module's forward maps
frames ``[B, 3, H, W]`` to globally average-pooled features ``[B, feature_dim]``.

State-dict names are the libraries' own (torchvision / timm), so their ImageNet files and
the backbone part of MMAction2 checkpoints for these rows load by name. Where MMAction2
differs from the library's classifier path, MMAction2 is followed:

- torchvision DenseNet: MMAction2's Recognizer2D calls ``backbone.features(x)`` and
  average-pools it, so the ReLU that torchvision's ``DenseNet.forward`` applies after
  ``norm5`` is not applied (mmaction/models/recognizers/recognizer2d.py).
- timm models are created with ``num_classes=0`` (as MMAction2 does) and pooled by timm's
  own head (average over H, W), which is what MMAction2 computes for NHWC/NCHW features.
"""
from __future__ import annotations

from typing import Callable, Dict, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

from tsn_dali.config import BACKBONE_NAMES

Builder = Callable[[bool], Tuple[nn.Module, int]]


class DenseNetFeatures(torchvision.models.DenseNet):
    """torchvision DenseNet without the classifier and without the final ReLU: pooled
    ``features(x)``, as MMAction2's Recognizer2D uses torchvision backbones."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.classifier = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(F.adaptive_avg_pool2d(self.features(x), 1), 1)


def _torchvision_resnet(block, layers, **kwargs) -> Builder:
    """torchvision ResNet with ``fc`` replaced by Identity: forward gives pooled features."""

    def build(deploy: bool = False):
        model = torchvision.models.ResNet(block, layers, **kwargs)
        dim = model.fc.in_features
        model.fc = nn.Identity()
        return model, dim

    return build


def _torchvision_densenet(growth_rate, block_config, num_init_features) -> Builder:
    def build(deploy: bool = False):
        model = DenseNetFeatures(growth_rate=growth_rate, block_config=block_config,
                                 num_init_features=num_init_features)
        return model, model.features.norm5.num_features

    return build


def _timm(name: str, reparameterizable: bool = False) -> Builder:
    """timm model with ``num_classes=0`` (its head pools and flattens). ``deploy`` builds the
    train form and fuses it with timm's ``reparameterize_model`` (MobileOne)."""

    def build(deploy: bool = False):
        import timm

        model = timm.create_model(name, pretrained=False, num_classes=0)
        if deploy:
            from timm.utils.model import reparameterize_model
            model = reparameterize_model(model, inplace=True)
        return model, model.num_features

    build.reparameterizable = reparameterizable
    return build


_Basic = torchvision.models.resnet.BasicBlock
_Bottleneck = torchvision.models.resnet.Bottleneck

_BUILDERS: Dict[str, Builder] = {
    # The rows of MMAction2's tables.
    "resnet50": _torchvision_resnet(_Bottleneck, [3, 4, 6, 3]),
    "resnet101": _torchvision_resnet(_Bottleneck, [3, 4, 23, 3]),
    # mmcls ResNeXt-101 32x4d (MMAction2's custom-backbone row) has torchvision's names.
    "resnext101_32x4d": _torchvision_resnet(_Bottleneck, [3, 4, 23, 3], groups=32, width_per_group=4),
    "densenet161": _torchvision_densenet(48, (6, 12, 36, 24), 96),
    "swin_base_patch4_window7_224": _timm("swin_base_patch4_window7_224"),
    "mobileone_s4": _timm("mobileone_s4", reparameterizable=True),
    # Small ones for the demo and the tests.
    "resnet18": _torchvision_resnet(_Basic, [2, 2, 2, 2]),
    "mobileone_s0": _timm("mobileone_s0", reparameterizable=True),
}
# name -> builder, for exactly the names recipes accept (tsn_dali.config.BACKBONE_NAMES, the one list)
BACKBONES: Dict[str, Builder] = {name: _BUILDERS[name] for name in BACKBONE_NAMES}


def has_deploy_form(name: str) -> bool:
    """Whether ``name`` has a fused inference form (``model.deploy: true``)."""
    return bool(getattr(BACKBONES.get(name), "reparameterizable", False))


# State-dict prefixes of the libraries' ImageNet classifiers (torchvision ResNet ``fc``,
# DenseNet ``classifier``, timm ``head.fc``): dropped when an ImageNet file is loaded.
CLASSIFIER_PREFIXES = ("fc.", "classifier.", "head.fc.")

"""TSN: per-frame backbone, average consensus over views, dropout, linear classifier.

MMAction2 Recognizer2D + TSNHead (mmaction/models/recognizers/recognizer2d.py,
mmaction/models/heads/tsn_head.py): every view goes through the backbone and is average
pooled; the head averages those *features* over all views of a clip (AvgConsensus, dim 1),
applies dropout, then ``fc_cls``. At test time MMAction2 puts all views of a video (e.g.
25 clips x 10 crops = 250) through one consensus and takes a softmax
(``average_clips='prob'`` over a single score).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from tsn_dali.config import ModelConfig, RecipeError
from tsn_dali.models.backbones import BACKBONES, has_deploy_form


class TSN(nn.Module):
    """``forward(clips [N, V, C, H, W]) -> logits [N, num_classes]``; ``predict`` -> probabilities.

    ``fc`` is initialised normal(0, init_std) with zero bias, as TSNHead.init_weights.
    """

    def __init__(self, backbone: nn.Module, feature_dim: int, num_classes: int,
                 dropout: float = 0.4, init_std: float = 0.01, test_average: str = "feature",
                 backbone_name: str = ""):
        super().__init__()
        if test_average not in ("feature", "prob"):
            raise ValueError(f"model.test_average: expected feature or prob, got {test_average!r}")
        self.backbone = backbone
        self.dropout = nn.Dropout(p=dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(feature_dim, num_classes)
        nn.init.normal_(self.fc.weight, 0.0, init_std)
        nn.init.zeros_(self.fc.bias)
        self.feature_dim = feature_dim
        self.num_classes = num_classes
        self.test_average = test_average
        self.backbone_name = backbone_name

    def view_features(self, clips: torch.Tensor) -> torch.Tensor:
        """Pooled backbone features of every view: ``[N, V, C, H, W] -> [N, V, D]``.

        Merging N and V is a view for channels_last frames, so the memory format is kept.
        Outside autocast, inputs are cast to the parameters' dtype (e.g. fp16 batches
        into an fp32 model).
        """
        if clips.dim() != 5:
            raise ValueError(f"TSN expects clips [N, V, C, H, W], got shape {list(clips.shape)}")
        n, v = clips.shape[:2]
        frames = clips.flatten(0, 1)
        dtype = self.fc.weight.dtype
        if frames.dtype != dtype and not _autocast_on(frames.device.type):
            frames = frames.to(dtype)
        return self.backbone(frames).reshape(n, v, -1)

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        """Consensus (mean over views) of the features, dropout, fc: logits ``[N, classes]``."""
        return self.fc(self.dropout(self.view_features(clips).mean(dim=1)))

    @torch.no_grad()
    def predict(self, clips: torch.Tensor) -> torch.Tensor:
        """Class probabilities ``[N, classes]`` (float32), no dropout.

        ``feature``: softmax of the logits of the feature consensus over all views
        (MMAction2-exact). ``prob``: mean over views of each view's softmax.
        """
        feats = self.view_features(clips)
        if self.test_average == "feature":
            return self.fc(feats.mean(dim=1)).float().softmax(dim=-1)
        return self.fc(feats).float().softmax(dim=-1).mean(dim=1)


def _autocast_on(device_type: str) -> bool:
    try:
        return torch.is_autocast_enabled(device_type)
    except RuntimeError:  # a device type without autocast (meta)
        return False


def build_model(model_cfg: ModelConfig, source: str = "recipe") -> TSN:
    """The recipe's TSN. ``pretrained`` loads a local ImageNet backbone file (train form);
    ``deploy`` then fuses MobileOne into its inference form."""
    name = model_cfg.backbone
    if name not in BACKBONES:
        raise RecipeError(source, "model.backbone",
                          f"unknown backbone {name!r}; expected one of {', '.join(BACKBONES)}")
    if model_cfg.deploy and not has_deploy_form(name):
        raise RecipeError(source, "model.deploy",
                          f"backbone {name} has no deploy (reparameterised) form; expected "
                          f"false, or a MobileOne backbone")
    backbone, dim = BACKBONES[name]()
    model = TSN(backbone, dim, model_cfg.num_classes, dropout=model_cfg.dropout,
                init_std=model_cfg.init_std, test_average=model_cfg.test_average,
                backbone_name=name)
    if model_cfg.pretrained:
        from tsn_dali.models.weights import load_pretrained_backbone

        load_pretrained_backbone(model, model_cfg.pretrained)
    if model_cfg.deploy:
        from tsn_dali.models.reparam import reparameterize_backbone
        reparameterize_backbone(model)
    return model

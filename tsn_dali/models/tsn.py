"""TSN: per-frame backbone, average consensus over views, dropout, linear classifier.

MMAction2 Recognizer2D + TSNHead (mmaction/models/recognizers/recognizer2d.py,
mmaction/models/heads/tsn_head.py): every view goes through the backbone and is average
pooled; the head averages those *features* over all views of a clip (AvgConsensus, dim 1),
applies dropout, then ``fc_cls``. At test time MMAction2 puts all views of a video (e.g.
25 clips x 10 crops = 250) through one consensus and takes a softmax
(``average_clips='prob'`` over a single score).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Dict

import torch
import torch.nn as nn

from tsn_dali.config import ModelConfig, RecipeError
from tsn_dali.models.backbones import BACKBONES, CLASSIFIER_PREFIXES, has_deploy_form


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
        load_pretrained_backbone(model, model_cfg.pretrained)
    if model_cfg.deploy:
        from tsn_dali.models.reparam import reparameterize_backbone
        reparameterize_backbone(model)
    return model


_DENSENET_OLD = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))\.([12]\.(?:weight|bias|running_mean|running_var))$")


def imagenet_state_dict(obj, path) -> Dict[str, torch.Tensor]:
    """The backbone tensors of a torchvision/timm/mmcls ImageNet file, library names:
    unwraps ``state_dict``/``model``, strips ``module.`` and (mmcls) ``backbone.``, renames
    old torchvision DenseNet keys (``norm.1`` -> ``norm1``)."""
    from tsn_dali.engine.checkpoint import CheckpointError

    for key in ("state_dict", "model", "state_dict_ema"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: expected a state dict of tensors (torchvision/timm ImageNet "
                              f"weights)")
    out = {}
    for k, v in obj.items():
        if k.startswith("module."):
            k = k[len("module."):]
        if k.startswith("backbone."):
            k = k[len("backbone."):]
        k = _DENSENET_OLD.sub(r"\1\2", k)
        out[k] = v
    return out


def load_pretrained_backbone(model: TSN, path) -> None:
    """Load a local torchvision/timm ImageNet state dict into ``model.backbone``
    (``torch.load(weights_only=True)``); classifier keys are dropped, a missing
    ``num_batches_tracked`` is tolerated, anything else that does not fit raises a
    one-line ``CheckpointError`` naming the file."""
    from tsn_dali.engine.checkpoint import CheckpointError

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: pretrained backbone file not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the user's to fix
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise CheckpointError(f"{path}: not a readable state dict ({first})") from None
    state = imagenet_state_dict(obj, path)
    own = model.backbone.state_dict()
    state = {k: v for k, v in state.items() if k in own or not k.startswith(CLASSIFIER_PREFIXES)}
    unexpected = [k for k in state if k not in own]
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    wrong = [k for k in state if k in own and state[k].shape != own[k].shape]
    if unexpected or missing or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[0]})")
        if wrong:
            k = wrong[0]
            parts.append(f"{k} has shape {list(state[k].shape)}, expected {list(own[k].shape)}")
        raise CheckpointError(f"{path}: does not fit backbone {model.backbone_name} (train form): "
                              + "; ".join(parts))
    for k in own:
        if k not in state:
            state[k] = own[k]
    model.backbone.load_state_dict(state, strict=True)

"""Putting weights into a TSN: checkpoints (tsn_dali or MMAction2) and ImageNet backbones.

Every mismatch is one CheckpointError line naming the file, from one rule
(``mismatch_message``): the first wrong shape, else how many keys are missing and
unexpected, each with an example.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Dict, Iterable, Optional

import torch

from tsn_dali.errors import CheckpointError, one_line
from tsn_dali.models.safe_load import Inert, load_checkpoint
from tsn_dali.models.backbones import CLASSIFIER_PREFIXES
from tsn_dali.models.mmaction import backbone_in_our_names, convert_mmaction_state_dict

_DENSENET_OLD = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))\.([12]\.(?:weight|bias|running_mean|running_var))$")


def mismatch_message(own: Dict[str, torch.Tensor], state: Dict[str, torch.Tensor],
                     optional: Iterable[str] = ()) -> Optional[str]:
    """Why ``state`` does not fit a module whose state dict is ``own`` (None where it fits).
    Keys in ``optional`` may be missing. A value that is not a tensor (e.g. an inert
    stand-in read from a file's pickle) is named first."""
    for k, v in state.items():
        if not isinstance(v, torch.Tensor):
            return f"{k} is not a tensor (a {_short_type(v)})"
    for k, v in state.items():
        if k in own and tuple(v.shape) != tuple(own[k].shape):
            return f"{k} has shape {list(v.shape)}, expected {list(own[k].shape)}"
    optional = set(optional)
    missing = [k for k in own if k not in state and k not in optional]
    unexpected = [k for k in state if k not in own]
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
    return "; ".join(parts) or None


def _short_type(value) -> str:
    text = repr(value) if isinstance(value, Inert) else type(value).__name__
    return text if len(text) <= 80 else text[:77] + "..."


def check_state_dict(model: torch.nn.Module, state: Dict[str, torch.Tensor], path, hint: str = "") -> None:
    """Raise a one-line CheckpointError when ``state`` does not fit ``model`` exactly."""
    why = mismatch_message(model.state_dict(), state)
    if why:
        raise CheckpointError(f"{path}: weights do not match the recipe's model: {why}{hint}")


def is_mmaction_checkpoint(ckpt: dict) -> bool:
    """MMAction2 layout: ``state_dict`` with ``backbone.*`` / ``cls_head.*`` keys."""
    sd = ckpt.get("state_dict")
    return isinstance(sd, dict) and any(k.startswith(("backbone.", "cls_head.")) for k in sd)


def model_state_from(ckpt: dict, path, backbone: str) -> Dict[str, torch.Tensor]:
    """The TSN state dict held by a tsn_dali or an MMAction2 checkpoint (converted)."""
    if isinstance(ckpt.get("model"), dict):
        return ckpt["model"]
    if is_mmaction_checkpoint(ckpt):
        try:
            return convert_mmaction_state_dict(ckpt["state_dict"], backbone)
        except (KeyError, ValueError) as exc:
            raise CheckpointError(f"{path}: MMAction2 checkpoint does not convert to a TSN "
                                  f"with backbone {backbone} ({one_line(exc)})") from None
    raise CheckpointError(f"{path}: expected a tsn_dali checkpoint (key 'model') or an MMAction2 "
                          f"one (key 'state_dict'), found keys {sorted(ckpt)[:6]}")


def imagenet_state_dict(obj, path) -> Dict[str, torch.Tensor]:
    """The backbone tensors of a torchvision/timm/mmcls ImageNet file, library names:
    unwraps ``state_dict``/``model``, strips ``module.`` and (mmcls) ``backbone.``, renames
    old torchvision DenseNet keys (``norm.1`` -> ``norm1``)."""
    for key in ("state_dict", "model", "state_dict_ema"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: expected a state dict of tensors (torchvision/timm ImageNet weights)")
    out = {}
    for k, v in obj.items():
        if k.startswith("module."):
            k = k[len("module."):]
        if k.startswith("backbone."):
            k = k[len("backbone."):]
        out[_DENSENET_OLD.sub(r"\1\2", k)] = v
    return out


def load_pretrained_backbone(model, path) -> None:
    """Load a local torchvision/timm/mmcls/mmpretrain ImageNet state dict into
    ``model.backbone`` (``safe_load.load_checkpoint``: weights only); classifier keys are
    dropped, mmpretrain's MobileOne and timm 0.6's Swin are renamed to the builder's names
    (``mmaction.backbone_in_our_names``), a missing ``num_batches_tracked`` is tolerated,
    anything else that does not fit raises a one-line ``CheckpointError`` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: pretrained backbone file not found")
    obj = load_checkpoint(path)  # never runs code from the file (models.safe_load)
    state = imagenet_state_dict(obj, path)
    own = model.backbone.state_dict()
    state = {k: v for k, v in state.items() if k in own or not k.startswith(CLASSIFIER_PREFIXES + ("head.",))}
    try:
        state = backbone_in_our_names(state, model.backbone_name)
    except ValueError as exc:
        raise CheckpointError(f"{path}: does not fit backbone {model.backbone_name} ({one_line(exc)})") from None
    state = {k: v for k, v in state.items() if k in own or not k.startswith(CLASSIFIER_PREFIXES)}
    why = mismatch_message(own, state, optional=[k for k in own if k.endswith("num_batches_tracked")])
    if why:
        raise CheckpointError(f"{path}: does not fit backbone {model.backbone_name} (train form): {why}")
    for k in own:
        state.setdefault(k, own[k])
    model.backbone.load_state_dict(state, strict=True)


__all__ = ["check_state_dict", "imagenet_state_dict", "is_mmaction_checkpoint", "load_pretrained_backbone",
           "mismatch_message", "model_state_from"]

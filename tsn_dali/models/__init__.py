"""TSN models: backbones (torchvision, timm), the TSN head, MobileOne reparameterisation and
MMAction2 checkpoint conversion. See docs/CONTRACTS.md (Models)."""
from tsn_dali.models.backbones import BACKBONES, has_deploy_form
from tsn_dali.models.mmaction import convert_mmaction_state_dict
from tsn_dali.models.reparam import reparameterize_backbone
from tsn_dali.models.tsn import TSN, build_model
from tsn_dali.models.weights import (check_state_dict, is_mmaction_checkpoint, load_pretrained_backbone,
                                     model_state_from)

__all__ = ["BACKBONES", "TSN", "build_model", "check_state_dict", "convert_mmaction_state_dict",
           "has_deploy_form", "is_mmaction_checkpoint", "load_pretrained_backbone", "model_state_from",
           "reparameterize_backbone"]

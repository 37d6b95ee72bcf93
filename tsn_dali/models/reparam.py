"""MobileOne reparameterisation: the multi-branch train form fused into single convs.

MMAction2 README note 4 / tools/convert/reparameterize_model.py: a trained MobileOne TSN
is converted once and tested with the deploy config (``backbone.deploy=True``). Here the
fusion is timm's ``reparameterize_model`` (each MobileOne block folds its kxk, 1x1 and
identity-BN branches, BN included, into one conv with bias); the TSN head is unchanged.
"""
from __future__ import annotations

import torch

from tsn_dali.models.backbones import has_deploy_form


@torch.no_grad()
def reparameterize_backbone(model) -> None:
    """Fuse ``model.backbone`` in place (a TSN whose backbone has a deploy form)."""
    from timm.utils.model import reparameterize_model

    if not has_deploy_form(model.backbone_name):
        raise ValueError(f"backbone {model.backbone_name} has no deploy (reparameterised) form")
    model.backbone = reparameterize_model(model.backbone, inplace=True)

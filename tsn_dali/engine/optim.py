"""SGD and the MultiStep schedule of MMAction2's sgd_100e / sgd_50e configs."""
from __future__ import annotations

import bisect
from collections import Counter
from typing import List

import torch


def scaled_lr(train_cfg, batch_size: int, world_size: int, auto_scale: bool) -> float:
    """``--auto-scale-lr`` (mmengine's linear rule): lr * (batch_size * world_size) / base_batch_size.

    Without the flag the recipe's lr is used as is, whatever the total batch.
    """
    if not auto_scale:
        return float(train_cfg.lr)
    return float(train_cfg.lr) * batch_size * world_size / train_cfg.base_batch_size


def param_groups(model: torch.nn.Module, weight_decay: float) -> List[dict]:
    """One group, weight decay on every parameter (biases and norm layers included).

    This is mmengine's DefaultOptimWrapperConstructor without ``paramwise_cfg`` (the
    TSN configs set none): it hands ``model.parameters()`` to SGD with one weight_decay.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    return [{"params": params, "weight_decay": float(weight_decay)}]


def build_optimizer(model: torch.nn.Module, train_cfg, lr: float, device: torch.device):
    """SGD(momentum, weight_decay) with the fused kernel on CUDA, foreach elsewhere."""
    kwargs = {"fused": True} if device.type == "cuda" else {"foreach": True}
    return torch.optim.SGD(param_groups(model, train_cfg.weight_decay), lr=lr,
                           momentum=train_cfg.momentum, **kwargs)


def build_scheduler(optimizer, train_cfg):
    """MultiStepLR stepped once per epoch (mmengine MultiStepLR, by_epoch=True)."""
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(train_cfg.milestones),
                                                gamma=train_cfg.gamma)


def lr_at_epoch(base_lr: float, train_cfg, epoch: int) -> float:
    """The MultiStep rule in closed form: base_lr * gamma ** (milestones passed by ``epoch``)."""
    return base_lr * train_cfg.gamma ** bisect.bisect_right(list(train_cfg.milestones), epoch)


def set_lr(optimizer, scheduler, base_lr: float, train_cfg, epoch: int) -> None:
    """Point optimiser and scheduler at ``base_lr`` (e.g. after resuming with another total
    batch under --auto-scale-lr) at ``epoch`` of the schedule, with ``train_cfg``'s milestones
    and gamma (not those of the checkpoint a resumed scheduler was loaded from)."""
    lr = lr_at_epoch(base_lr, train_cfg, epoch)
    for group in optimizer.param_groups:
        group["initial_lr"] = base_lr
        group["lr"] = lr
    n = len(optimizer.param_groups)
    state = scheduler.state_dict()  # torch's own format: milestones, gamma, base_lrs, last_epoch, _last_lr
    state.update(milestones=Counter(train_cfg.milestones), gamma=train_cfg.gamma, base_lrs=[base_lr] * n,
                 last_epoch=epoch, _last_lr=[lr] * n)
    scheduler.load_state_dict(state)

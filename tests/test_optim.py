"""engine.optim: MMAction2's optimiser rules (weight decay on every parameter), the MultiStep
schedule, --auto-scale-lr and re-pointing a resumed run at another base lr."""
from __future__ import annotations

import pytest
import torch

from tsn_dali.config import load_recipe
from tsn_dali.engine.optim import build_optimizer, build_scheduler, lr_at_epoch, param_groups, scaled_lr, set_lr


def test_weight_decay_on_every_parameter_as_mmengine_default():
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Linear(4, 2))
    groups = param_groups(net, 1e-4)
    assert len(groups) == 1 and groups[0]["weight_decay"] == 1e-4
    # conv weight+bias, BN weight+bias, linear weight+bias: all decayed
    assert [p.shape for p in groups[0]["params"]] == [p.shape for p in net.parameters()]
    assert len(groups[0]["params"]) == 6


def test_multistep_schedule_and_auto_scale_lr():
    cfg = load_recipe("k400_r50.yaml").train  # lr 0.01, milestones [40, 80], gamma 0.1
    assert scaled_lr(cfg, 32, 8, auto_scale=False) == 0.01
    assert scaled_lr(cfg, 2, 2, auto_scale=True) == pytest.approx(0.01 * 4 / 256)
    net = torch.nn.Linear(3, 2)
    opt = build_optimizer(net, cfg, 0.01, torch.device("cpu"))
    assert opt.defaults["momentum"] == 0.9 and opt.param_groups[0]["weight_decay"] == 1e-4
    sched = build_scheduler(opt, cfg)
    lrs = []
    for epoch in range(100):
        lrs.append(opt.param_groups[0]["lr"])
        assert lrs[-1] == pytest.approx(lr_at_epoch(0.01, cfg, epoch))
        opt.step()
        sched.step()
    assert lrs[39] == pytest.approx(0.01) and lrs[40] == pytest.approx(0.001)
    assert lrs[79] == pytest.approx(0.001) and lrs[80] == pytest.approx(0.0001)
    # a resumed run re-pointed at another base lr (auto-scale with another world size)
    set_lr(opt, sched, 0.02, cfg, 50)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.002)
    for _ in range(30):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.0002)


def test_resumed_schedule_takes_the_recipes_milestones_and_gamma():
    """A scheduler loaded from a checkpoint of milestones [2, 4] / gamma 0.5, resumed at epoch 3
    with milestones [5, 8] / gamma 0.1: the lr decays at 5 and 8, by 0.1."""
    old = load_recipe("k400_r50.yaml", ["train.milestones=[2, 4]", "train.gamma=0.5"]).train
    new = load_recipe("k400_r50.yaml", ["train.milestones=[5, 8]", "train.gamma=0.1"]).train
    net = torch.nn.Linear(3, 2)
    opt = build_optimizer(net, old, 1.0, torch.device("cpu"))
    sched = build_scheduler(opt, old)
    for _ in range(3):
        opt.step()
        sched.step()
    opt2 = build_optimizer(net, new, 1.0, torch.device("cpu"))
    sched2 = build_scheduler(opt2, new)
    opt2.load_state_dict(opt.state_dict())
    sched2.load_state_dict(sched.state_dict())  # as train.resume_from does
    set_lr(opt2, sched2, 1.0, new, 3)
    lrs = []
    for _ in range(3, 10):
        lrs.append(opt2.param_groups[0]["lr"])
        opt2.step()
        sched2.step()
    assert lrs == pytest.approx([1.0, 1.0, 0.1, 0.1, 0.1, 0.01, 0.01])  # epochs 3..9

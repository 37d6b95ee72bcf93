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

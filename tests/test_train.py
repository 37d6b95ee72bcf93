"""tsn_dali.train and its engine: optimiser rules, LR schedule, metrics, atomic checkpoints,
a real (tiny) CPU training run, and the non-finite loss policies."""
from __future__ import annotations

import errno
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

HERE = Path(__file__).resolve().parent
from helpers.tiny_train import make_videos, train_recipe  # noqa: E402

from tsn_dali.models import build_model  # noqa: E402

import tsn_dali.train as train_mod  # noqa: E402
from tsn_dali.config import load_recipe  # noqa: E402
from tsn_dali.engine import checkpoint as ckpt_mod  # noqa: E402
from tsn_dali.engine.checkpoint import CheckpointError, load_checkpoint, save_checkpoint  # noqa: E402
from tsn_dali.engine.metrics import mean_class_accuracy, top_k_accuracy  # noqa: E402
from tsn_dali.engine.optim import (build_optimizer, build_scheduler, lr_at_epoch, param_groups,  # noqa: E402
                                   scaled_lr, set_lr)


@pytest.fixture
def model_builder():
    return build_model


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return make_videos(tmp_path_factory.mktemp("tiny_train"), num_videos=6)


def _sha(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# --------------------------------------------------------------------------- optimiser and LR


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


# --------------------------------------------------------------------------- metrics


def test_top_k_and_mean_class_accuracy_follow_mmaction2():
    scores = np.array([[0.1, 0.7, 0.2, 0.0],   # pred 1, label 1: hit
                       [0.5, 0.1, 0.4, 0.0],   # pred 0, label 2: top-2 hit
                       [0.2, 0.3, 0.1, 0.4],   # pred 3, label 0: miss (top-3 has 0 at rank 3)
                       [0.6, 0.3, 0.05, 0.05]])  # pred 0, label 0: hit
    labels = np.array([1, 2, 0, 0])
    acc = top_k_accuracy(scores, labels, [1, 2, 3])
    assert acc == {1: 0.5, 2: 0.75, 3: 1.0}
    # classes seen (label or prediction): 0, 1, 2, 3 -> recalls 1/2, 1, 0, 0 (3 only predicted)
    assert mean_class_accuracy(scores, labels) == pytest.approx((0.5 + 1 + 0 + 0) / 4)


# --------------------------------------------------------------------------- checkpoints


def test_atomic_checkpoint_failure_keeps_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "latest.pth"
    save_checkpoint({"model": {"w": torch.ones(3)}, "epoch": 1}, path)
    before = _sha(path)

    def full_disk(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ckpt_mod.os, "fsync", full_disk)
    with pytest.raises(CheckpointError) as err:
        save_checkpoint({"model": {"w": torch.zeros(3)}, "epoch": 2}, path)
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg and "No space left" in msg
    assert _sha(path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest.pth"]  # temp file removed
    monkeypatch.undo()
    assert torch.equal(load_checkpoint(path)["model"]["w"], torch.ones(3))


def test_truncated_or_missing_checkpoint_is_one_line_error(tmp_path):
    path = tmp_path / "ok.pth"
    save_checkpoint({"model": {"w": torch.arange(1000.0)}}, path)
    cut = tmp_path / "cut.pth"
    cut.write_bytes(path.read_bytes()[:300])
    for bad in (cut, tmp_path / "absent.pth"):
        with pytest.raises(CheckpointError) as err:
            load_checkpoint(bad)
        assert str(err.value).startswith(str(bad)) and "\n" not in str(err.value)


def test_rng_state_round_trip():
    state = ckpt_mod.rng_state()
    a = (torch.rand(3), np.random.rand(3), __import__("random").random())
    ckpt_mod.set_rng_state(state)
    b = (torch.rand(3), np.random.rand(3), __import__("random").random())
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]


# --------------------------------------------------------------------------- a real run


def test_train_run_writes_checkpoints_and_logs(tmp_path, data_root, model_builder):
    recipe = train_recipe(data_root, epochs=2)
    work = tmp_path / "work"
    summary = train_mod.run([str(recipe), "--work-dir", str(work), "--device", "cpu",
                              "--seed", "0", "--no-progress"])
    assert summary["work_dir"] == str(work) and summary["checkpoint"] == str(work / "latest.pth")
    hist = summary["history"]
    assert [h["epoch"] for h in hist] == [1, 2]
    assert [h["lr"] for h in hist] == pytest.approx([0.01, 0.001])  # milestone [1], gamma 0.1
    for h in hist:
        assert np.isfinite(h["loss"]) and 0 <= h["top1"] <= 100 and h["clips_per_s"] > 0
        assert 0 <= h["data_wait_share"] <= 1
    assert summary["best_top1"] == max(h["top1"] for h in hist)
    names = {p.name for p in work.iterdir()}
    assert {"latest.pth", "best.pth", "epoch_1.pth", "epoch_2.pth", "recipe.yaml"} <= names

    ckpt = load_checkpoint(work / "latest.pth")  # weights_only=True reads our format
    assert ckpt["format"] == "tsn_dali" and ckpt["epoch"] == 2 and ckpt["step"] == 6
    assert ckpt["loader"] is None and ckpt["world_size"] == 1 and ckpt["batch_size"] == 2
    assert ckpt["recipe"]["model"]["num_classes"] == 3
    assert set(ckpt) >= {"model", "optimizer", "scheduler", "scaler", "rng", "best_top1"}
    first = load_checkpoint(work / "epoch_1.pth")
    assert first["epoch"] == 1 and first["step"] == 3 and first["history"][0]["epoch"] == 1
    assert _sha(work / "epoch_2.pth") == _sha(work / "latest.pth")
    best_epoch = 1 + [h["top1"] for h in hist].index(summary["best_top1"])
    assert load_checkpoint(work / "best.pth")["epoch"] == best_epoch

    lines = [json.loads(x) for x in Path(summary["log"]).read_text().splitlines()]
    steps = [x for x in lines if x["kind"] == "train"]
    epochs = [x for x in lines if x["kind"] == "epoch"]
    assert len(steps) == 6 and [x["step"] for x in steps] == [1, 2, 3, 4, 5, 6]  # log_interval 1
    assert [x["epoch"] for x in epochs] == [1, 2]
    assert epochs[1]["loss"] == pytest.approx(hist[1]["loss"])


@pytest.fixture(scope="module")
def one_epoch(data_root, tmp_path_factory):
    """A work dir after one finished epoch of a 2-epoch recipe (copied by the tests that use it)."""
    recipe = train_recipe(data_root, epochs=2)
    work = tmp_path_factory.mktemp("one_epoch") / "work"
    train_mod.run([str(recipe), "--work-dir", str(work), "--device", "cpu", "--epochs", "1",
                   "--no-progress"])
    return recipe, work


@pytest.mark.parametrize("log_interval", [1, 3])
def test_nan_loss_stops_without_touching_checkpoints(one_epoch, tmp_path, model_builder, capsys,
                                                     log_interval):
    recipe, trained = one_epoch
    work = tmp_path / "work"
    shutil.copytree(trained, work)
    trained_logs = {p.name for p in work.glob("train_*.jsonl")}
    latest, best = _sha(work / "latest.pth"), _sha(work / "best.pth")
    # lr = inf: the first step of epoch 2 makes the weights inf/nan, the second loss is nan.
    # With log_interval 3 the losses are read back at step 3 only: the report still names
    # step 2, the first non-finite one.
    assert train_mod.main([str(recipe), "--work-dir", str(work), "--device", "cpu", "--resume",
                           "--set", "train.lr=.inf", "--set", f"train.log_interval={log_interval}",
                           "--no-progress"]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: loss is nan at epoch 2, step 2/3 (global step 5)"), err
    assert "nan_policy=stop" in err
    logs = [p for p in work.glob("train_*.jsonl") if p.name not in trained_logs]
    assert len(logs) == 1  # the log of this (resumed) run
    bad = [r for r in map(json.loads, logs[0].read_text().splitlines()) if r["kind"] == "nonfinite"]
    assert [(r["epoch"], r["iter"], r["step"]) for r in bad] == [(2, 2, 5)]
    assert _sha(work / "latest.pth") == latest and _sha(work / "best.pth") == best
    assert not (work / "epoch_2.pth").exists()


def test_checkpoint_write_failure_in_a_run_keeps_latest(one_epoch, tmp_path, model_builder,
                                                        monkeypatch, capsys):
    recipe, trained = one_epoch
    work = tmp_path / "work"
    shutil.copytree(trained, work)
    latest = _sha(work / "latest.pth")

    def full_disk(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ckpt_mod.os, "fsync", full_disk)
    assert train_mod.main([str(recipe), "--work-dir", str(work), "--device", "cpu", "--resume",
                           "--no-progress"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == (f"error: {work / 'latest.pth'}: could not write the checkpoint (No space "
                       "left on device); the previous file there is unchanged")
    assert _sha(work / "latest.pth") == latest and not (work / "epoch_2.pth").exists()
    assert not [p for p in work.iterdir() if p.name.startswith(".")]  # no temp file left


def test_nan_loss_skip_policy_counts_skipped_steps(tmp_path, data_root, model_builder):
    recipe = train_recipe(data_root, epochs=1)
    summary = train_mod.run([str(recipe), "--work-dir", str(tmp_path / "w"), "--device", "cpu",
                              "--set", "train.lr=.inf", "--set", "train.nan_policy=skip",
                              "--no-progress"])
    # step 1 is applied (finite loss, weights become inf/nan), steps 2 and 3 are skipped
    assert summary["history"][0]["skipped_steps"] == 2 and summary["steps"] == 1

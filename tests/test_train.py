"""tsn_dali.train: a real (tiny) CPU training run, its checkpoints and logs, a failed
checkpoint write, and the non-finite loss policies (engine units: test_optim, test_metrics,
test_checkpoint)."""
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
from tsn_dali.engine import checkpoint as ckpt_mod  # noqa: E402
from tsn_dali.engine.checkpoint import load_checkpoint  # noqa: E402


@pytest.fixture
def model_builder():
    return build_model


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return make_videos(tmp_path_factory.mktemp("tiny_train"), num_videos=6)


def nan_from_step(monkeypatch, first: int, last: float = float("inf")) -> None:
    """The model's training forward gets NaN pixels in its ``first``-th to ``last``-th calls
    (1-based): the loss turns non-finite, and batch norm's running statistics would too, as
    with a zero std or a diverging lr."""
    calls = {"n": 0}

    def builder(cfg):
        model = build_model(cfg)
        forward = model.forward

        def poisoned(x):
            if model.training:
                calls["n"] += 1
                if first <= calls["n"] <= last:
                    return forward(x * float("nan"))
            return forward(x)

        model.forward = poisoned
        return model

    monkeypatch.setattr(train_mod, "build_model", builder)


def _sha(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


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
                                                     log_interval, monkeypatch):
    recipe, trained = one_epoch
    work = tmp_path / "work"
    shutil.copytree(trained, work)
    trained_logs = {p.name for p in work.glob("train_*.jsonl")}
    latest, best = _sha(work / "latest.pth"), _sha(work / "best.pth")
    # The second loss of epoch 2 is NaN (as an lr that makes the weights inf would make it).
    # With log_interval 3 the losses are read back at step 3 only: the report still names
    # step 2, the first non-finite one.
    nan_from_step(monkeypatch, 2)
    assert train_mod.main([str(recipe), "--work-dir", str(work), "--device", "cpu", "--resume",
                           "--set", f"train.log_interval={log_interval}",
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
    assert err[-1].startswith(f"error: {work / 'latest.pth'}: could not write the checkpoint (no space left "
                              "on device (needed ~")
    assert err[-1].endswith("MB free)); the previous file there is unchanged")
    assert _sha(work / "latest.pth") == latest and not (work / "epoch_2.pth").exists()
    assert not [p for p in work.iterdir() if p.name.startswith(".")]  # no temp file left


def test_nan_loss_skip_policy_counts_skipped_steps(tmp_path, data_root, model_builder, monkeypatch):
    recipe = train_recipe(data_root, epochs=1)
    nan_from_step(monkeypatch, 2)
    summary = train_mod.run([str(recipe), "--work-dir", str(tmp_path / "w"), "--device", "cpu",
                              "--set", "train.nan_policy=skip",
                              "--no-progress"])
    # step 1 is applied (finite loss), steps 2 and 3 (NaN losses) are skipped
    assert summary["history"][0]["skipped_steps"] == 2 and summary["steps"] == 1
    # the log names each skipped step by its own number, with the updates applied before it
    (log,) = (tmp_path / "w").glob("train_*.jsonl")
    bad = [r for r in map(json.loads, log.read_text().splitlines()) if r["kind"] == "nonfinite"]
    assert [(r["iter"], r["step"], r["updates"]) for r in bad] == [(2, 2, 1), (3, 3, 1)]


# --------------------------------------------------------------------------- stopping and the command line


def test_a_signal_during_validation_stops_at_the_epochs_end(tmp_path, data_root, model_builder, monkeypatch,
                                                           capsys):
    import os
    import signal

    recipe = train_recipe(data_root, epochs=2)
    work = tmp_path / "work"
    real_validate = train_mod.validate

    def validate_and_signal(run):
        os.kill(os.getpid(), signal.SIGTERM)  # after the epoch's last step: the epoch-end check stops
        return real_validate(run)

    monkeypatch.setattr(train_mod, "validate", validate_and_signal)
    assert train_mod.main([str(recipe), "--work-dir", str(work), "--device", "cpu", "--no-progress"]) == 143
    assert "stopped by SIGTERM" in capsys.readouterr().err
    ckpt = load_checkpoint(work / "latest.pth")
    assert ckpt["epoch"] == 1 and len(ckpt["history"]) == 1 and not (work / "epoch_2.pth").exists()


def test_a_bug_in_the_last_validation_is_raised_after_keeping_the_training(tmp_path, data_root, monkeypatch,
                                                                          capsys):
    """Not a user error: raised as it was (its traceback is the report), after one line saying
    the trained model was saved and how to score it (the last epoch: nothing left to resume)."""
    recipe = train_recipe(data_root, epochs=1)
    work = tmp_path / "work"

    def validate_with_a_bug(run):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(train_mod, "validate", validate_with_a_bug)
    with pytest.raises(ZeroDivisionError):
        train_mod.main([str(recipe), "--work-dir", str(work), "--device", "cpu", "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"validation after epoch 1 failed (ZeroDivisionError); epoch 1's training is kept (saved "
                   f"{work / 'latest.pth'}); score it with: python -m tsn_dali.test {recipe} {work / 'latest.pth'}"]
    ckpt = load_checkpoint(work / "latest.pth")
    assert ckpt["epoch"] == 1 and ckpt["history"][0]["val_failed"] == "division by zero"


def test_a_failed_validation_whose_save_fails_too_says_both(tmp_path, data_root, monkeypatch, capsys):
    from tsn_dali.data.errors import PipelineFailure

    recipe = train_recipe(data_root, epochs=2)
    work = tmp_path / "work"

    def validate_failing(run):
        raise PipelineFailure("dali-cpu", "render", "decoder start-up failed")

    def full_disk(state, path):
        raise ckpt_mod.CheckpointError(f"{path}: no space left on device (needed ~45 MB, 0 MB free)")

    monkeypatch.setattr(train_mod, "validate", validate_failing)
    monkeypatch.setattr("tsn_dali.engine.saver.save_checkpoint", full_disk)
    assert train_mod.main([str(recipe), "--work-dir", str(work), "--device", "cpu", "--no-progress"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "validation after epoch 1 failed" in err[0] and "decoder start-up failed" in err[0]
    assert err[0].endswith("epoch 1's training could not be kept: "
                           f"{work / 'latest.pth'}: no space left on device (needed ~45 MB, 0 MB free)")
    assert not (work / "latest.pth").exists()


def test_a_signal_on_one_rank_stops_every_rank_at_the_same_epoch(tmp_path):
    """Two gloo ranks, SIGTERM on rank 1 only: both stop after the first epoch (before the fix
    rank 0 went on to the next epoch alone)."""
    from helpers.gloo_ranks import run_ranks

    res = run_ranks(tmp_path, "signal_on_rank1")
    assert res == {r: {"epochs": [0], "stopped": "SIGTERM", "signum": 15} for r in range(2)}, res


def test_command_line_errors_are_returned_not_raised(capsys):
    assert train_mod.main(["recipes/demo.yaml", "--bogus-flag"]) == 2  # argparse's status, returned
    assert "unrecognized arguments: --bogus-flag" in capsys.readouterr().err
    assert train_mod.main(["--bogus-flag"]) == 2
    assert "arguments are required: recipe" in capsys.readouterr().err
    assert train_mod.main(["--help"]) == 0
    assert "usage: python -m tsn_dali.train" in capsys.readouterr().out


def test_a_run_whose_every_step_is_skipped_says_so_and_fails(tmp_path, data_root, model_builder, capsys,
                                                             monkeypatch):
    """Every loss NaN: the run stops at the end of the first epoch, status 1, and no
    checkpoint holds a NaN (batch-norm buffers included)."""
    recipe = train_recipe(data_root, epochs=2)
    work = tmp_path / "w"
    nan_from_step(monkeypatch, 1)
    assert train_mod.main([str(recipe), "--work-dir", str(work), "--device", "cpu",
                           "--set", "train.nan_policy=skip", "--no-progress"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: every step of epoch 1 (3) had a non-finite loss")
    for ckpt in work.glob("*.pth"):
        state = torch.load(ckpt, weights_only=True)["model"]
        assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point()), ckpt


def test_checkpoints_after_skipped_steps_hold_no_nan(tmp_path, data_root, model_builder, monkeypatch):
    """NaN pixels in step 2 of 3: skipped, and its batch-norm statistics put back, so the
    epoch's checkpoint is finite everywhere (before, 40 buffers of it were NaN)."""
    recipe = train_recipe(data_root, epochs=1)
    work = tmp_path / "w"
    nan_from_step(monkeypatch, 2, 2)
    summary = train_mod.run([str(recipe), "--work-dir", str(work), "--device", "cpu",
                             "--set", "train.nan_policy=skip", "--no-progress"])
    assert summary["history"][0]["skipped_steps"] == 1 and summary["steps"] == 2
    state = torch.load(work / "latest.pth", weights_only=True)["model"]
    buffers = [k for k in state if "running_" in k]
    assert buffers and all(torch.isfinite(state[k]).all() for k in buffers)


def test_a_log_line_that_cannot_be_written_is_said_once_and_training_goes_on(tmp_path, capsys):
    """A full disk under the JSONL log: one warning line, later lines dropped, nothing raised
    (the checkpoint write then says the disk is full and stops the run)."""
    from tsn_dali.engine.logs import RunLog

    log = RunLog(tmp_path, enabled=True)
    log.write({"kind": "epoch", "loss": 1.0})

    class FullDisk:
        def write(self, text):
            raise OSError(errno.ENOSPC, "No space left on device")

        def close(self):
            pass

    log._file.close()
    log._file = FullDisk()
    log.write({"kind": "epoch", "loss": 0.5})
    log.write({"kind": "epoch", "loss": 0.25})
    log.close()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0] == (f"warning: {log.path}: could not write the run log (No space left on "
                                        "device); it stops here, training goes on")
    assert [json.loads(x)["loss"] for x in log.path.read_text().splitlines()] == [1.0]


def test_a_recipe_copy_that_cannot_be_written_is_one_line_before_any_step(tmp_path, data_root, monkeypatch,
                                                                          capsys):
    recipe = train_recipe(data_root, epochs=1)
    work = tmp_path / "w"
    write_text = Path.write_text

    def full_disk_for_the_recipe(self, *args, **kwargs):
        if self.name == "recipe.yaml" and self.parent == work:
            raise OSError(errno.ENOSPC, "No space left on device")
        return write_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", full_disk_for_the_recipe)
    assert train_mod.main([str(recipe), "--work-dir", str(work), "--device", "cpu", "--no-progress"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {work / 'recipe.yaml'}: could not write the run's recipe copy (No space left on "
                   "device); nothing trained"], err
    assert not list(work.glob("*.pth"))

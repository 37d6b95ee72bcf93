"""Resuming: a run stopped mid-epoch (--max-steps, or SIGTERM) and continued with --resume
ends bitwise equal to an uninterrupted run under --seed 0 --deterministic."""
from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).resolve().parent
from helpers.tiny_train import make_videos, train_recipe  # noqa: E402

from tsn_dali.models import build_model  # noqa: E402

import tsn_dali.train as train_mod  # noqa: E402
from tsn_dali.engine.checkpoint import load_checkpoint  # noqa: E402

EPOCHS = 2  # 4 videos, batch 2: 2 steps per epoch, 4 in all


def _args(recipe, work, *extra):
    return [str(recipe), "--work-dir", str(work), "--device", "cpu", "--seed", "0",
            "--deterministic", "--no-progress", *extra]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = make_videos(tmp_path_factory.mktemp("resume"), num_videos=4)
    recipe = train_recipe(root, epochs=EPOCHS)
    work = root / "uninterrupted"
    summary = train_mod.run(_args(recipe, work))
    return recipe, build_model, load_checkpoint(work / "latest.pth"), summary


@pytest.fixture
def builder(setup):
    return setup[1]


def _assert_same_run(ckpt, reference):
    assert ckpt["epoch"] == reference["epoch"] == EPOCHS and ckpt["step"] == reference["step"] == 4
    assert ckpt["model"].keys() == reference["model"].keys()
    for k, v in reference["model"].items():
        assert torch.equal(ckpt["model"][k], v), k  # bitwise
    ref_opt, opt = reference["optimizer"]["state"], ckpt["optimizer"]["state"]
    assert ref_opt.keys() == opt.keys()
    for k in ref_opt:
        assert torch.equal(opt[k]["momentum_buffer"], ref_opt[k]["momentum_buffer"])
    assert [h["loss"] for h in ckpt["history"]] == [h["loss"] for h in reference["history"]]


def test_max_steps_then_resume_is_bitwise_equal(setup, builder, tmp_path):
    recipe, _, reference, _ = setup
    work = tmp_path / "w"
    first = train_mod.run(_args(recipe, work, "--max-steps", "3"))
    assert first["stopped"] == "max_steps" and first["steps"] == 3
    mid = load_checkpoint(work / "latest.pth")
    # stopped after batch 1 of epoch 2 (0-based epoch 1): the loader state says so
    assert mid["epoch"] == 1 and mid["loader"]["epoch"] == 1 and mid["loader"]["batches_done"] == 1
    assert len(mid["history"]) == 1
    second = train_mod.run(_args(recipe, work, "--resume"))
    assert second["stopped"] is None and [h["epoch"] for h in second["history"]] == [1, 2]
    _assert_same_run(load_checkpoint(work / "latest.pth"), reference)


def test_sigterm_saves_mid_epoch_and_resume_is_bitwise_equal(setup, monkeypatch, tmp_path, capsys):
    recipe, real_builder, reference, _ = setup
    calls = {"n": 0}

    def builder_that_signals(cfg):
        model = real_builder(cfg)
        forward = model.forward

        def forward_and_signal(x):
            calls["n"] += 1
            if calls["n"] == 2:  # during the 2nd training step, the last of epoch 1
                os.kill(os.getpid(), signal.SIGTERM)
            return forward(x)

        model.forward = forward_and_signal
        return model

    monkeypatch.setattr(train_mod, "build_model", builder_that_signals)
    work = tmp_path / "w"
    assert train_mod.main(_args(recipe, work)) == 143
    err = capsys.readouterr().err
    assert "stopped by SIGTERM" in err and "--resume" in err
    mid = load_checkpoint(work / "latest.pth")
    # saved after the epoch's last batch but before its validation and LR step: the resumed
    # run skips the finished batches, then validates and moves on
    assert mid["step"] == 2 and mid["loader"] == dict(mid["loader"], epoch=0, batches_done=2)
    assert mid["epoch"] == 0 and mid["history"] == []
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers put back

    monkeypatch.setattr(train_mod, "build_model", real_builder)
    train_mod.run(_args(recipe, work, "--resume"))
    _assert_same_run(load_checkpoint(work / "latest.pth"), reference)


def test_a_failed_validation_keeps_the_epochs_training_and_resume_is_bitwise_equal(setup, monkeypatch, tmp_path,
                                                                                  capsys):
    """Out of memory in epoch 1's validation: one line, status 1, latest.pth holds epoch 1's
    training (before, the run wrote nothing and the epoch was lost); --resume trains epoch 2 only
    and ends bitwise equal to the uninterrupted run."""
    recipe, _, reference, _ = setup
    real_validate = train_mod.validate

    def validate_out_of_memory(run):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(train_mod, "validate", validate_out_of_memory)
    work = tmp_path / "w"
    assert train_mod.main(_args(recipe, work)) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: validation after epoch 1 failed: CUDA out of memory")
    assert f"saved {work / 'latest.pth'}" in err[0] and err[0].endswith("--resume (epoch 1 is not validated again)")
    kept = load_checkpoint(work / "latest.pth")
    assert kept["epoch"] == 1 and kept["step"] == 2 and kept["loader"] is None
    assert kept["history"][0]["top1"] is None and kept["history"][0]["val_failed"].startswith("CUDA out of memory")
    logged = [json.loads(line) for log in work.glob("train_*.jsonl") for line in log.read_text().splitlines()]
    assert [e["epoch"] for e in logged if e["kind"] == "val_failed"] == [1]

    monkeypatch.setattr(train_mod, "validate", real_validate)
    second = train_mod.run(_args(recipe, work, "--resume"))
    assert [h["epoch"] for h in second["history"]] == [1, 2] and second["history"][1]["top1"] is not None
    _assert_same_run(load_checkpoint(work / "latest.pth"), reference)


def test_resume_auto_without_checkpoint_starts_fresh_and_bad_path_errors(setup, builder, tmp_path,
                                                                         capsys):
    recipe = setup[0]
    fresh = train_mod.run(_args(recipe, tmp_path / "empty", "--resume", "--max-steps", "1"))
    assert fresh["steps"] == 1 and fresh["history"] == []  # no latest.pth there: a new run
    assert train_mod.main(_args(recipe, tmp_path / "w", "--resume", str(tmp_path / "nope.pth"))) == 1
    line = capsys.readouterr().err.strip()
    assert line == f"error: {tmp_path / 'nope.pth'}: --resume checkpoint file not found"


def test_loader_state_maps_to_another_world_size():
    class Loader:  # what map_loader_state reads of a ClipLoader
        batch_size, world_size = 2, 1

        def __len__(self):
            return 9

    saved = {"epoch": 3, "batches_done": 2, "num_batches": 4, "world_size": 2, "seed": 0}
    mapped = train_mod.map_loader_state(saved, old_batch=2, old_world=2, loader=Loader())
    # 2 batches x 2 clips x 2 ranks = 8 samples done -> 4 batches of 2 on one rank
    assert mapped == {"epoch": 3, "batches_done": 4, "num_batches": 9, "world_size": 1, "seed": 0}
    saved = dict(saved, batches_done=3, world_size=1)
    Loader.world_size = 2
    # 3 x 2 x 1 = 6 samples -> 1 batch of 2 x 2 ranks done (rounded down: none left out)
    assert train_mod.map_loader_state(saved, 2, 1, Loader())["batches_done"] == 1


def test_temp_checkpoints_a_killed_write_left_are_promoted_or_removed(tmp_path):
    """A complete latest.pth temp further on than latest.pth is promoted; a partial one, a
    complete one behind latest.pth and a best.pth link temp are removed; a live writer's
    recent temp is left alone, saying so; one whose pid is running but that has not changed
    for longer than a write takes (a pid reused after a restart) is promoted. One line each."""
    import subprocess
    import sys

    from tsn_dali.engine.checkpoint import FORMAT, recover_temp_checkpoints

    def ckpt(epoch, step):
        return {"format": FORMAT, "model": {"w": torch.full((2,), float(step))}, "optimizer": {}, "epoch": epoch,
                "step": step}

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    work = tmp_path / "w"
    work.mkdir()
    torch.save(ckpt(1, 10), work / "latest.pth")
    torch.save(ckpt(2, 20), work / f".latest.pth.tmp{dead}")
    lines = recover_temp_checkpoints(work)
    assert len(lines) == 1 and "promoted" in lines[0]
    assert torch.load(work / "latest.pth", weights_only=True)["step"] == 20

    torch.save(ckpt(3, 30), work / "partial")
    data = (work / "partial").read_bytes()
    (work / f".latest.pth.tmp{dead}").write_bytes(data[: len(data) // 2])  # killed mid-write
    (work / "partial").unlink()
    torch.save(ckpt(1, 5), work / f".latest.pth.tmp{int(dead) + 0}x")  # not a temp name: left
    (work / f".best.pth.tmp{dead}").write_bytes(b"")
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        (work / f".latest.pth.tmp{live.pid}").write_bytes(b"being written")
        lines = recover_temp_checkpoints(work)
        assert sorted(("incomplete" in x, ".best.pth" in x, "left alone" in x) for x in lines) == [
            (False, False, True), (False, True, False), (True, False, False)]
        assert (work / f".latest.pth.tmp{live.pid}").exists()  # its writer is running
        # the same pid running, the file untouched for an hour: an orphan whose pid was reused
        torch.save(ckpt(4, 40), work / f".latest.pth.tmp{live.pid}")
        hour_ago = time.time() - 3600
        os.utime(work / f".latest.pth.tmp{live.pid}", (hour_ago, hour_ago))
        lines = recover_temp_checkpoints(work)
        assert len(lines) == 1 and "promoted" in lines[0], lines
        assert torch.load(work / "latest.pth", weights_only=True)["step"] == 40
        torch.save(ckpt(2, 20), work / "latest.pth")
    finally:
        live.kill()
        live.wait()
    assert torch.load(work / "latest.pth", weights_only=True)["step"] == 20
    behind = work / f".latest.pth.tmp{dead}"
    torch.save(ckpt(1, 10), behind)
    assert "not further on" in recover_temp_checkpoints(work)[0] and not behind.exists()


def test_a_complete_temp_checkpoint_that_carries_code_is_said_refused(tmp_path):
    """A temp latest.pth whose pickle names os.system is never loaded or promoted, and the
    line says it was refused and why, not that its write was stopped."""
    import subprocess
    import sys

    from helpers.evil_checkpoints import Payload
    from tsn_dali.engine.checkpoint import FORMAT, recover_temp_checkpoints

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    marker = tmp_path / "ran"
    work = tmp_path / "w"
    work.mkdir()
    evil = {"format": FORMAT, "model": {}, "optimizer": {}, "epoch": 9, "step": 90, "x": Payload(marker)}
    torch.save(evil, work / f".latest.pth.tmp{dead}")
    (line,) = recover_temp_checkpoints(work)
    assert "refused, as it carries code (it names posix.system" in line and "removed, never loaded" in line
    assert "incomplete" not in line and not marker.exists() and not (work / "latest.pth").exists()


def test_resuming_a_finished_run_says_so_and_trains_nothing(setup, tmp_path, capsys):
    import shutil

    recipe = setup[0]
    work = tmp_path / "done"
    shutil.copytree(Path(setup[3]["work_dir"]), work)
    before = (work / "latest.pth").read_bytes()
    assert train_mod.main(_args(recipe, work, "--resume")) == 0
    out = capsys.readouterr().out
    assert "already finished (epoch 2 done, train.epochs is 2)" in out
    assert (work / "latest.pth").read_bytes() == before


def test_resume_without_latest_takes_the_last_epoch_checkpoint(setup, tmp_path, capsys):
    import shutil

    recipe = setup[0]
    work = tmp_path / "lost_latest"
    shutil.copytree(Path(setup[3]["work_dir"]), work)
    (work / "latest.pth").unlink()
    assert train_mod.resolve_resume("auto", work) == work / f"epoch_{EPOCHS}.pth"
    assert train_mod.main(_args(recipe, work, "--resume")) == 0
    assert f"epoch_{EPOCHS}.pth: already finished" in capsys.readouterr().out


def test_sigterm_exits_143_even_when_its_save_fails(setup, monkeypatch, tmp_path, capsys):
    import errno

    import tsn_dali.engine.checkpoint as ckpt_mod

    recipe, real_builder, _, _ = setup

    def builder_that_signals(cfg):
        model = real_builder(cfg)
        forward = model.forward

        def forward_and_signal(x):
            os.kill(os.getpid(), signal.SIGTERM)
            return forward(x)

        model.forward = forward_and_signal
        return model

    def full_disk(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(train_mod, "build_model", builder_that_signals)
    monkeypatch.setattr(ckpt_mod.os, "fsync", full_disk)
    assert train_mod.main(_args(recipe, tmp_path / "w")) == 143
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "stopped by SIGTERM, but the checkpoint was not saved" in err[0]
    assert "no space left on device" in err[0]


KILLED_WRITE = """
import io, os, sys
import torch
import tsn_dali.train as train_mod

mode, argv = sys.argv[1], sys.argv[2:]
if mode == "complete":  # killed after the temp file was written and synced, before its rename
    real_replace = os.replace

    def replace(src, dst, *args, **kwargs):
        if str(dst).endswith("latest.pth"):
            os._exit(137)
        return real_replace(src, dst, *args, **kwargs)

    os.replace = replace
else:  # killed half-way through writing the temp file
    real_save = torch.save

    def save(obj, f, *args, **kwargs):
        buffer = io.BytesIO()
        real_save(obj, buffer, *args, **kwargs)
        f.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
        f.flush()
        os._exit(137)

    torch.save = save
train_mod.main(argv)
os._exit(0)
"""


@pytest.mark.parametrize("mode", ["complete", "partial"])
def test_a_run_killed_in_its_first_checkpoint_write_resumes_from_what_it_wrote(setup, tmp_path, capsys, mode):
    """A process killed (os._exit, no clean-up) during the first write of latest.pth leaves
    its temp file. ``--resume`` then promotes a complete one, saying so, and continues from
    it (not from scratch: the second run trains epoch 2 only); a partial one is removed,
    saying so, and the run starts over. Both end bitwise equal to an uninterrupted run."""
    import subprocess
    import sys

    recipe, _, reference, _ = setup
    work = tmp_path / "w"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE.parent), os.environ.get("PYTHONPATH", "")]))
    killed = subprocess.run([sys.executable, "-c", KILLED_WRITE, mode, *_args(recipe, work)], env=env,
                            capture_output=True, text=True, timeout=600)
    temps = [p for p in work.iterdir() if p.name.startswith(".latest.pth.tmp")]
    assert killed.returncode == 137 and len(temps) == 1 and not (work / "latest.pth").exists(), killed.stderr
    assert train_mod.main(_args(recipe, work, "--resume")) == 0
    out = capsys.readouterr().out
    said = [line for line in out.splitlines() if str(temps[0]) in line]
    if mode == "complete":
        assert len(said) == 1 and "promoted to" in said[0] and "(epoch 1, step 2)" in said[0], out
        assert "resumed from" in out and "at epoch 2" in out
    else:
        assert len(said) == 1 and "removed (incomplete" in said[0], out
        assert "resumed from" not in out
    assert not temps[0].exists()
    _assert_same_run(load_checkpoint(work / "latest.pth"), reference)

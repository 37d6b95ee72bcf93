"""engine.checkpoint and engine.saver: atomic writes, one-line load errors, RNG state, and the
saver that owns latest, best and epoch_N."""
from __future__ import annotations

import errno
import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from tsn_dali.engine import checkpoint as ckpt_mod
from tsn_dali.engine.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from tsn_dali.engine.distributed import DistInfo
from tsn_dali.engine.saver import CheckpointSaver


def _sha(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


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
    assert "\n" not in msg and str(path) in msg and "no space left on device (needed ~1 MB" in msg
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


def test_saver_owns_latest_best_and_epoch_files(tmp_path):
    info = DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"), initialized=False)
    saver = CheckpointSaver(tmp_path, info, checkpoint_interval=2, epochs=3)
    saver.save_epoch(lambda: {"epoch": 1}, 1, improved=True)
    assert load_checkpoint(saver.best)["epoch"] == 1 and not (tmp_path / "epoch_1.pth").exists()
    saver.save_epoch(lambda: {"epoch": 2}, 2, improved=False)
    assert load_checkpoint(saver.best)["epoch"] == 1 and load_checkpoint(tmp_path / "epoch_2.pth")["epoch"] == 2
    saver.save_epoch(lambda: {"epoch": 3}, 3, improved=False)  # the last epoch is kept too
    assert load_checkpoint(tmp_path / "epoch_3.pth")["epoch"] == 3 and load_checkpoint(saver.latest)["epoch"] == 3
    assert saver.save_alone(lambda: {"epoch": 9}, losses_finite=False).endswith("not finite)")
    assert load_checkpoint(saver.latest)["epoch"] == 3  # nothing written over a bad loss
    assert saver.save_alone(lambda: {"epoch": 4}, losses_finite=True) == f"saved {saver.latest}"


def test_a_failed_best_link_raises_the_same_error_on_every_rank(tmp_path):
    """Two gloo ranks: rank 0's best.pth link fails; both raise its CheckpointError (before the
    fix rank 0 alone raised, after the success broadcast, and rank 1 went on to a barrier)."""
    from helpers.gloo_ranks import run_ranks

    res = run_ranks(tmp_path, "link_fails")
    assert set(res) == {0, 1}, res
    assert res[0] == res[1] and "best.pth: could not write the checkpoint" in (res[0].get("error") or ""), res
    assert (tmp_path / "ckpt" / "latest.pth").is_file()


def test_torch_writer_full_disk_is_said_as_such(tmp_path, monkeypatch):
    """torch's zip writer reports a short write as '[enforce fail at inline_container.cc:672]
    . unexpected pos ...': said as a full disk with the size needed; other errors as they are."""
    path = tmp_path / "latest.pth"

    def short_write(obj, f):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")

    monkeypatch.setattr(ckpt_mod.torch, "save", short_write)
    state = {"model": {"w": torch.zeros(3 * 2 ** 20)}}  # 12 MB
    with pytest.raises(CheckpointError, match=r"no space left on device \(needed ~12 MB, \d+ MB free\)"):
        save_checkpoint(state, path)

    def other(obj, f):
        raise RuntimeError("Parent directory does not exist.\nmore")

    monkeypatch.setattr(ckpt_mod.torch, "save", other)
    with pytest.raises(CheckpointError, match=r"\(Parent directory does not exist.\); the previous"):
        save_checkpoint(state, path)


def test_an_interrupt_while_saving_leaves_no_temp_file(tmp_path, monkeypatch):
    """A second Ctrl-C during a save (KeyboardInterrupt from inside torch.save): the temp file
    is removed, the previous checkpoint intact, the interrupt goes on (before, the temp file
    stayed for the next start to clean up)."""
    path = tmp_path / "latest.pth"
    save_checkpoint({"model": {"w": torch.ones(3)}, "epoch": 1}, path)
    before = _sha(path)
    real_save = torch.save

    def interrupted(obj, f):
        real_save(obj, f)  # the temp file holds a complete write, then the signal lands
        raise KeyboardInterrupt

    monkeypatch.setattr(ckpt_mod.torch, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint({"model": {"w": torch.zeros(3)}, "epoch": 2}, path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest.pth"] and _sha(path) == before


def test_a_full_disk_while_linking_best_is_said_as_such(tmp_path, monkeypatch):
    """best.pth / epoch_N.pth where hard links fail and the copy meets a full disk: the same
    words as a checkpoint write, with latest.pth's size; the old file stays. The wording can
    fail: another error is said as it is."""
    src, dst = tmp_path / "latest.pth", tmp_path / "best.pth"
    save_checkpoint({"model": {"w": torch.zeros(2 ** 20)}}, src)  # 4 MB
    dst.write_bytes(b"old best")

    def no_links(a, b):
        raise OSError(errno.EPERM, "Operation not permitted")

    def full_disk(a, b):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ckpt_mod.os, "link", no_links)
    monkeypatch.setattr(ckpt_mod.shutil, "copyfile", full_disk)
    with pytest.raises(CheckpointError, match=r"best.pth: could not write the checkpoint \(no space left on device "
                                              r"\(needed ~4 MB, \d+ MB free\)\); the previous file"):
        ckpt_mod.link_or_copy(src, dst)
    assert dst.read_bytes() == b"old best" and sorted(p.name for p in tmp_path.iterdir()) == ["best.pth", "latest.pth"]
    monkeypatch.setattr(ckpt_mod.shutil, "copyfile", no_links)
    with pytest.raises(CheckpointError, match=r"\(Operation not permitted\)"):
        ckpt_mod.link_or_copy(src, dst)

"""No command runs code hidden in a checkpoint (issue: a checkpoint never runs code).

For every command that reads a checkpoint (test, train --resume, train --pretrained,
convert, reparameterize), each malicious file of helpers.evil_checkpoints: the payload
never runs, the command exits non-zero with one line on stderr. MMAction2's own metadata
(mmengine objects, numpy values) is read as inert stand-ins without --allow-pickle; only
--allow-pickle unpickles fully, after one line naming the risk."""

import pytest
import torch

from helpers.evil_checkpoints import write_all
from helpers.mmengine_pickle import save_mmengine_checkpoint
from helpers.tiny_train import make_videos, train_recipe
from tsn_dali.convert import main as convert_main
from tsn_dali.engine.checkpoint import Inert, load_checkpoint
from tsn_dali.reparameterize import main as reparameterize_main
from tsn_dali.test import main as tsn_test_main
from tsn_dali.train import main as train_main

KINDS = ["zip", "legacy", "raw_pickle", "mmaction_like", "mmengine_named", "tiny", "random_bytes"]


@pytest.fixture(scope="module")
def evil(tmp_path_factory):
    root = tmp_path_factory.mktemp("evil")
    make_videos(root, num_videos=3)
    recipe = train_recipe(root, epochs=1)
    marker = root / "PAYLOAD_RAN"
    state = {"fc.weight": torch.zeros(3, 512), "fc.bias": torch.zeros(3)}
    return {"root": root, "recipe": str(recipe), "marker": marker, "files": write_all(root / "ckpt", marker, state)}


def commands(evil, path):
    root, recipe = evil["root"], evil["recipe"]
    return {
        "test": lambda: tsn_test_main([recipe, path, "--device", "cpu", "--no-progress"]),
        "train --resume": lambda: train_main([recipe, "--resume", path, "--device", "cpu", "--no-progress",
                                              "--work-dir", str(root / "work_resume")]),
        "train --pretrained": lambda: train_main([recipe, "--pretrained", path, "--device", "cpu", "--no-progress",
                                                  "--work-dir", str(root / "work_pre")]),
        "convert": lambda: convert_main(["mmaction", path, str(root / "out.pth"), "--recipe", recipe]),
        "reparameterize": lambda: reparameterize_main([path, str(root / "out_deploy.pth")]),
    }


COMMANDS = ["test", "train --resume", "train --pretrained", "convert", "reparameterize"]


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("kind", KINDS)
def test_no_command_runs_a_checkpoint_payload(evil, command, kind, capsys):
    status = commands(evil, evil["files"][kind])[command]()
    err = capsys.readouterr().err.strip()
    assert not evil["marker"].exists(), f"{command} ran the payload of {kind}"
    assert status != 0
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err


def test_the_payloads_are_real(evil, tmp_path):
    """The check can fail: full unpickling of the zip file does run its payload."""
    marker = tmp_path / "ran"
    files = write_all(tmp_path / "c", marker, {"w": torch.zeros(1)})
    torch.load(files["zip"], weights_only=False)
    assert marker.exists()


def test_allow_pickle_is_the_one_way_to_full_unpickling(tmp_path, capsys):
    marker = tmp_path / "ran"
    files = write_all(tmp_path / "c", marker, {"w": torch.zeros(1)})
    load_checkpoint(files["zip"], allow_pickle=True)
    err = capsys.readouterr().err.strip().splitlines()
    assert marker.exists()
    assert len(err) == 1 and "full unpickling" in err[0] and "trust" in err[0]


def test_mmaction_metadata_reads_as_inert_stand_ins(tmp_path):
    path = save_mmengine_checkpoint(tmp_path / "mm.pth", {"backbone.w": torch.ones(2)})
    ckpt = load_checkpoint(path)
    assert torch.equal(ckpt["state_dict"]["backbone.w"], torch.ones(2))
    buffer = ckpt["message_hub"]["log_scalars"]["train/loss"]
    assert isinstance(buffer, Inert) and "mmengine.logging.history_buffer.HistoryBuffer" in repr(buffer)
    assert isinstance(buffer.state["_log_history"], Inert)  # numpy's arrays: not rebuilt either
    assert ckpt["meta"]["epoch"] == 100


def test_a_foreign_global_is_named_in_one_line(evil):
    from tsn_dali.engine.checkpoint import CheckpointError

    with pytest.raises(CheckpointError) as err:
        load_checkpoint(evil["files"]["zip"])
    assert "posix.system" in str(err.value) or "nt.system" in str(err.value)
    assert "--allow-pickle" in str(err.value) and "\n" not in str(err.value)

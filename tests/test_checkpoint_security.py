"""No command runs code hidden in a checkpoint (issue: a checkpoint never runs code).

For every command that reads a checkpoint (test, train --resume, train --pretrained,
convert, reparameterize, and train's start, which verifies the temp files a killed write
left), each malicious file of helpers.evil_checkpoints: the payload never runs, the command
exits non-zero with one line on stderr, in process and through ``python -m`` (where any
warning or traceback would show). MMAction2's own metadata (mmengine objects, numpy
values), in a zip or in torch's pre-1.6 format, is read as inert stand-ins without
--allow-pickle; only --allow-pickle unpickles fully, after one line naming the risk."""

import os
import subprocess
import sys
from pathlib import Path

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

KINDS = ["zip", "legacy", "raw_pickle", "mmaction_like", "legacy_mmaction_like", "mmengine_named", "tiny",
         "random_bytes"]


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
    """The check can fail: full unpickling of each file with a payload does run it."""
    import pickle

    marker = tmp_path / "ran"
    files = write_all(tmp_path / "c", marker, {"w": torch.zeros(1)})
    for kind in ("zip", "legacy", "mmaction_like", "legacy_mmaction_like", "raw_pickle", "tiny"):
        marker.unlink(missing_ok=True)
        if kind in ("raw_pickle", "tiny"):
            with open(files[kind], "rb") as f:
                pickle.load(f)
        else:
            torch.load(files[kind], weights_only=False)
        assert marker.exists(), kind


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


def test_mmaction_metadata_in_torchs_old_format_reads_as_inert_stand_ins(tmp_path):
    """A pre-1.6 file (MMAction2's 2020 checkpoints) cannot be listed without unpickling:
    its numpy and mmengine globals are learnt from weights-only refusals, one at a time."""
    path = save_mmengine_checkpoint(tmp_path / "mm_legacy.pth", {"backbone.w": torch.ones(2)}, legacy=True)
    ckpt = load_checkpoint(path)
    assert torch.equal(ckpt["state_dict"]["backbone.w"], torch.ones(2)) and ckpt["meta"]["epoch"] == 100
    assert isinstance(ckpt["message_hub"]["log_scalars"]["train/loss"], Inert)
    assert isinstance(ckpt["meta"]["seed"], Inert)  # a numpy scalar: not rebuilt


def test_a_payload_after_metadata_in_the_old_format_is_still_refused(evil):
    """The one-at-a-time learning admits metadata names only: the payload behind numpy's
    values is refused by name (the check can fail: the file does hold a payload)."""
    from tsn_dali.engine.checkpoint import CheckpointError

    with pytest.raises(CheckpointError, match=r"names (posix|nt)\.system, which loading would import"):
        load_checkpoint(evil["files"]["legacy_mmaction_like"])
    assert not evil["marker"].exists()


def test_train_start_never_runs_a_temp_file_it_verifies(evil, capsys):
    """A malicious '.latest.pth.tmp<pid>' of a finished process in the work dir: read
    weights-only to verify it, removed with one line, its payload never run."""
    work = evil["root"] / "work_temp"
    work.mkdir(exist_ok=True)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    temp = work / f".latest.pth.tmp{dead}"
    temp.write_bytes(Path(evil["files"]["zip"]).read_bytes())
    status = train_main([evil["recipe"], "--work-dir", str(work), "--device", "cpu", "--no-progress",
                         "--max-steps", "1"])
    out = capsys.readouterr().out
    assert status == 0 and not evil["marker"].exists() and not temp.exists()
    assert [line for line in out.splitlines() if str(temp) in line and "removed" in line]


ENTRY_POINTS = {  # command -> (module and arguments, the malicious file it gets)
    "test": (lambda e, p: ["tsn_dali.test", e["recipe"], p, "--device", "cpu", "--no-progress"], "mmaction_like"),
    "train --resume": (lambda e, p: ["tsn_dali.train", e["recipe"], "--resume", p, "--device", "cpu",
                                     "--work-dir", str(e["root"] / "cli_resume")], "zip"),
    "train --pretrained": (lambda e, p: ["tsn_dali.train", e["recipe"], "--pretrained", p, "--device", "cpu",
                                         "--work-dir", str(e["root"] / "cli_pre")], "legacy_mmaction_like"),
    "convert": (lambda e, p: ["tsn_dali.convert", "mmaction", p, str(e["root"] / "cli_out.pth"),
                              "--recipe", e["recipe"]], "legacy"),
    "reparameterize": (lambda e, p: ["tsn_dali.reparameterize", p, str(e["root"] / "cli_deploy.pth")], "tiny"),
}


@pytest.mark.parametrize("command", list(ENTRY_POINTS))
def test_the_real_entry_points_say_one_line_and_run_nothing(evil, command):
    """``python -m ...`` as a user runs it: stderr is exactly one line (no warning, no
    traceback), status 1, no payload run."""
    argv, kind = ENTRY_POINTS[command]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).resolve().parents[1]),
                                                       os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, "-m", *argv(evil, evil["files"][kind])], capture_output=True,
                         text=True, env=env, cwd=evil["root"], timeout=300)
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert not evil["marker"].exists(), f"{command} ran the payload of {kind}"
    assert out.returncode == 1 and len(lines) == 1 and lines[0].startswith("error: "), out.stderr
    assert "Traceback" not in out.stderr


UNPICKLING = {("torch", "load"), ("pickle", "load"), ("pickle", "loads"), ("pickle", "Unpickler"),
              ("serialization", "load"), ("numpy", "load"), ("np", "load")}


def unpickling_calls(root: Path):
    """(file, line, call) of every torch.load / pickle.load(s) / pickle.Unpickler / np.load
    call in the Python files under ``root`` (read from the syntax tree: docstrings and
    comments do not count)."""
    import ast

    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            func = node.func if isinstance(node, ast.Call) else None
            if isinstance(func, ast.Attribute) and isinstance(func.value, (ast.Name, ast.Attribute)):
                owner = func.value.id if isinstance(func.value, ast.Name) else func.value.attr
                if (owner, func.attr) in UNPICKLING:
                    yield path, node.lineno, f"{owner}.{func.attr}"


def test_one_function_reads_checkpoints(tmp_path):
    """Every command that reads a checkpoint (test, train --resume / --pretrained and its
    temp-file check, convert, reparameterize, and demo / bench / soak through
    model.pretrained) reads it through models.safe_load.load_checkpoint: no other torch.load
    or unpickling call in the package, the benchmarks or the examples. The check can fail:
    a file with such a call is found."""
    project = Path(__file__).resolve().parents[1]
    found = [(str(p.relative_to(project)), line, call) for folder in ("tsn_dali", "benchmarks", "examples")
             for p, line, call in unpickling_calls(project / folder)]
    assert [f for f, _, _ in found] and all(f == "tsn_dali/models/safe_load.py" for f, _, _ in found), found
    (tmp_path / "sneaky.py").write_text("import torch\n\ndef f(p):\n    return torch.load(p, weights_only=False)\n")
    assert list(unpickling_calls(tmp_path)) == [(tmp_path / "sneaky.py", 4, "torch.load")]

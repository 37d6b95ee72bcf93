"""No command runs code hidden in a checkpoint (issue: a checkpoint never runs code).

For every command that reads a checkpoint (test, train --resume, train --pretrained,
convert, reparameterize, and train's start, which verifies the temp files a killed write
left), each malicious file of helpers.evil_checkpoints: the payload never runs, the command
exits non-zero with one line on stderr, in process and through ``python -m`` (where any
warning or traceback would show). MMAction2's own metadata (mmengine objects, numpy
values, the ``builtins.getattr`` calls of mmengine >= 0.7.3's HistoryBuffers), in a zip or
in torch's pre-1.6 format, is read as inert stand-ins without --allow-pickle, from files
mmengine itself wrote (a Runner in a subprocess where mmengine is installed, else the
committed tests/data/mmengine_0.10.7_runner_tiny.pth); only --allow-pickle unpickles
fully, after one line naming the risk."""

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from helpers.evil_checkpoints import Call, save_in_message_hub, write_all
from helpers.mmengine_pickle import TINY_CLASSES, TINY_FILE, have_mmengine, runner_checkpoint
from helpers.tiny_train import make_videos, train_recipe
from tsn_dali.convert import main as convert_main
from tsn_dali.engine.checkpoint import CheckpointError, Inert, load_checkpoint
from tsn_dali.models.safe_load import InertGetattr
from tsn_dali.reparameterize import main as reparameterize_main
from tsn_dali.test import main as tsn_test_main
from tsn_dali.train import main as train_main

GETATTR_KINDS = ["getattr_os_system", "getattr_eval", "getattr_import_chain"]
KINDS = ["zip", "legacy", "raw_pickle", "mmaction_like", "legacy_mmaction_like", "mmengine_named", "tiny",
         "random_bytes"] + GETATTR_KINDS


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
    for kind in ["zip", "legacy", "mmaction_like", "legacy_mmaction_like", "raw_pickle", "tiny"] + GETATTR_KINDS:
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


@pytest.fixture(scope="module")
def runner_file(tmp_path_factory):
    """A checkpoint mmengine's Runner wrote: made now where mmengine is installed, else the
    committed one (made the same way by mmengine 0.10.7)."""
    if not have_mmengine():
        return TINY_FILE
    return runner_checkpoint(tmp_path_factory.mktemp("runner") / "epoch_1.pth")


def check_runner_checkpoint(ckpt: dict) -> None:
    """What Runner.save_checkpoint writes, read as data: weights, inert HistoryBuffers whose
    statistics methods are inert getattr records (the real getattr, which the file names,
    would have raised on an inert class: it has no attribute 'mean'), plain meta,
    optimizer and scheduler states."""
    assert set(ckpt) == {"meta", "state_dict", "message_hub", "optimizer", "param_schedulers"}
    assert ckpt["state_dict"]["cls_head.fc_cls.weight"].shape == (TINY_CLASSES, 4)
    buffer = ckpt["message_hub"]["log_scalars"]["train/loss"]
    assert isinstance(buffer, Inert) and "mmengine.logging.history_buffer.HistoryBuffer" in repr(buffer)
    assert isinstance(buffer.state["_log_history"], Inert)  # numpy's arrays: not rebuilt either
    mean = buffer.state["statistics_methods"]["mean"]
    assert isinstance(mean, InertGetattr) and mean.args[1] == "mean"
    assert isinstance(mean.args[0], type) and issubclass(mean.args[0], Inert)  # the inert HistoryBuffer class
    assert ckpt["meta"]["epoch"] == 1 and ckpt["meta"]["mmengine_version"].startswith("0.10.")
    assert ckpt["optimizer"]["param_groups"][0]["lr"] == 0.01
    assert ckpt["param_schedulers"][0]["milestones"] == {40: 1, 80: 1}


def test_mmengine_runner_checkpoint_reads_as_inert_data(runner_file):
    """Since mmengine 0.7.3 a Runner's checkpoint names builtins.getattr (the check can
    fail: the file does name it), and loads without --allow-pickle."""
    assert "builtins.getattr" in torch.serialization.get_unsafe_globals_in_checkpoint(str(runner_file))
    check_runner_checkpoint(load_checkpoint(runner_file))


def test_the_committed_runner_checkpoint_reads_as_inert_data():
    """tests/data's file, written by mmengine 0.10.7's Runner, for runs without mmengine."""
    ckpt = load_checkpoint(TINY_FILE)
    check_runner_checkpoint(ckpt)
    assert ckpt["meta"]["mmengine_version"].startswith("0.10.7")


def test_a_runner_checkpoint_in_torchs_old_format_reads_as_inert_data(tmp_path):
    """A pre-1.6 file (MMAction2's 2020 checkpoints) cannot be listed without unpickling:
    its numpy, mmengine and getattr globals are learnt from weights-only refusals, one at a time."""
    if not have_mmengine():
        pytest.skip("mmengine not installed: no Runner to write the file")
    path = runner_checkpoint(tmp_path / "legacy.pth", legacy=True)
    assert not zipfile.is_zipfile(path)  # the check can fail: not a zip torch could list
    check_runner_checkpoint(load_checkpoint(path))


def test_a_lone_getattr_reads_no_attribute(tmp_path):
    """``getattr(getattr, '__self__')`` would give the builtins module: read, it is an inert
    record of its arguments, the stand-in itself among them."""
    path = tmp_path / "lone.pth"
    save_in_message_hub(path, {"w": torch.zeros(1)}, Call(getattr, getattr, "__self__"))
    record = load_checkpoint(path)["message_hub"]["log_scalars"]["train/loss"]
    assert type(record) is InertGetattr and record.args == (InertGetattr, "__self__")
    assert "getattr(<inert class builtins.getattr>, '__self__')" in repr(record)


def test_inert_values_in_place_of_weights_are_one_line_errors(evil, tmp_path, capsys):
    """A file whose weights are getattr records instead of tensors: every command says so in
    one line, naming the key (no AttributeError from a missing .shape)."""
    path = tmp_path / "inert_weights.pth"
    state = {"backbone.conv1.conv.weight": Call(getattr, getattr, "__self__"),
             "cls_head.fc_cls.weight": torch.zeros(3, 512), "cls_head.fc_cls.bias": torch.zeros(3)}
    save_in_message_hub(path, state, {})
    for name, command in commands(evil, str(path)).items():
        assert command() == 1, name
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and err.startswith("error: "), (name, err)
        if name in ("test", "convert"):
            assert "not a tensor" in err and "conv1" in err, (name, err)


def test_a_foreign_global_is_named_in_one_line(evil):
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(evil["files"]["zip"])
    assert "posix.system" in str(err.value) or "nt.system" in str(err.value)
    assert "--allow-pickle" in str(err.value) and "\n" not in str(err.value)


def test_a_payload_after_metadata_in_the_old_format_is_still_refused(evil):
    """The one-at-a-time learning admits metadata names only: the payload behind numpy's
    values is refused by name (the check can fail: the file does hold a payload)."""
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
    "test (getattr chain)": (lambda e, p: ["tsn_dali.test", e["recipe"], p, "--device", "cpu", "--no-progress"],
                             "getattr_import_chain"),
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

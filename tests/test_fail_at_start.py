"""A bad run setting fails at start, in one line, with the documented status (2: the
command line; 1: data or settings), and nothing is trained or written first."""
from pathlib import Path

import pytest
import torch

from helpers.tiny_train import make_videos, train_recipe
import tsn_dali.train as train_mod

BOMB = "".join(f"{c}: &{c} [" + ",".join([f"*{p}"] * 9 if p else ['"lol"'] * 9) + "]\n"
               for p, c in zip([None] + list("abcdefgh"), "abcdefghi"))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = make_videos(tmp_path_factory.mktemp("start"), num_videos=4)
    return root, train_recipe(root, epochs=1)


def run(args, capsys):
    status = train_mod.main([*args, "--device", "cpu", "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    return status, err


@pytest.mark.parametrize("extra, status, says", [
    (["--set", "garbage"], 2, "--set 'garbage': expected key=value"),
    (["--max-steps", "0"], 2, "--max-steps: expected a positive integer, got 0"),
    (["--max-steps", "-5"], 2, "expected a positive integer, got -5"),
    (["--set", "train.lr=-1"], 1, "train.lr: expected a finite learning rate > 0, got -1.0"),
    (["--set", "train.lr=.nan"], 1, "train.lr: expected a finite learning rate > 0, got nan"),
    (["--set", "train.epochs=1e23"], 1, "train.epochs: expected int, got 1e+23"),  # a float in YAML 1.2
    (["--set", "data.std=[0,0,0]"], 1, "data.std: expected 3 finite values > 0"),
    (["--set", "loader.batch_size=100000"], 1, "loader.batch_size 100000 x 1 rank(s) is more than its 4 usable"),
    (["--set", "data.val_list=nope.txt"], 1, "nope.txt: annotation file not found"),
])
def test_a_bad_setting_is_one_line_before_any_step(tiny, tmp_path, capsys, extra, status, says):
    root, recipe = tiny
    work = tmp_path / "w"
    got, err = run([str(recipe), "--work-dir", str(work), *extra], capsys)
    assert got == status and len(err) == 1, err
    assert says in err[-1], err
    assert not list(work.glob("*.pth"))  # nothing trained, nothing saved


@pytest.mark.parametrize("where", ["file", "proc", "readonly"])
def test_a_work_dir_that_cannot_be_written_is_a_bad_command_line(tiny, tmp_path, capsys, where):
    root, recipe = tiny
    if where == "file":
        work = tmp_path / "a_file"
        work.write_text("x")
    elif where == "proc":
        work = "/proc/tsn_dali_work"
    else:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        work = ro / "w"
        import os
        if os.access(ro, os.W_OK):  # root ignores the mode bits
            pytest.skip("this user can write in a read-only folder")
    status, err = run([str(recipe), "--work-dir", str(work)], capsys)
    assert status == 2 and len(err) == 1 and err[0].startswith(f"error: --work-dir {work}: "), err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without a GPU")
def test_dali_gpu_without_a_gpu_is_one_line(tiny, tmp_path, capsys):
    root, recipe = tiny
    status, err = run([str(recipe), "--work-dir", str(tmp_path / "w"), "--executor", "dali-gpu"], capsys)
    assert status == 2 and len(err) == 1 and "dali-gpu: this machine has no CUDA device" in err[0], err


@pytest.mark.parametrize("content, says", [
    (b"\x89PNG\r\n\x1a\n\x00\x00binary", "expected UTF-8 text, got byte 0x89"),
    (BOMB.encode() + b"name: *i\n", "its aliases expand to more than 100,000 values"),
    (b"# padding\n" * 120_000, "a recipe is at most 1 MB"),
])
def test_a_recipe_that_is_not_one_is_refused_at_once(tmp_path, capsys, content, says):
    """Refused before anything is expanded: the peak of Python memory while the command runs
    stays far below what the bomb would take (gigabytes; 8 GB before the fix)."""
    import tracemalloc

    path = tmp_path / "recipe.yaml"
    path.write_bytes(content)
    tracemalloc.start()
    try:
        status, err = run([str(path), "--work-dir", str(tmp_path / "w")], capsys)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 * 2 ** 20, f"{peak / 2 ** 20:.0f} MB"
    assert status == 1 and len(err) == 1 and err[0].startswith(f"error: {path}") and says in err[0], err


SUB_BUDGET = ("name: [&a [" + ", ".join(["lol"] * 10) + "], &b [" + ", ".join(["*a"] * 10) + "], &c ["
              + ", ".join(["*b"] * 10) + "], &d [" + ", ".join(["*c"] * 10) + "]]\n")


@pytest.mark.parametrize("where", ["recipe", "--set"])
def test_a_message_never_shows_an_expanded_alias_whole(tmp_path, capsys, where):
    """Aliases under the budget (11,000 values) in a string field: the message names the key
    and shows the value cut short (``config.show``), not its 60 KB expansion."""
    recipe = train_recipe(make_videos(tmp_path, num_videos=2), epochs=1)
    if where == "recipe":
        recipe.write_text(recipe.read_text().replace("name: tiny\n", SUB_BUDGET))
        extra = []
    else:
        extra = ["--set", SUB_BUDGET.strip().replace(": ", "=", 1)]
    status, err = run([str(recipe), "--work-dir", str(tmp_path / "w"), *extra], capsys)
    assert status == 1 and len(err) == 1 and "name: expected str, got [[" in err[0], err
    assert "..." in err[0] and len(err[0]) < 400, len(err[0])


def test_an_alias_bomb_is_named_as_the_kind_of_file_it_is_in(tmp_path):
    from tsn_dali.config import DataConfig, RecipeError, load_recipe
    from tsn_dali.data.errors import PipelineError
    from tsn_dali.data.plan.planner import load_pipeline

    levels = list(zip([None] + list("abcdefgh"), "abcdefghi"))
    nested = ", ".join(f"&{c} [" + ", ".join([f"*{p}"] * 9 if p else ["lol"] * 9) + "]" for p, c in levels)
    path = tmp_path / "p.yaml"
    path.write_text("".join(f"- {c}: &{c} [" + ", ".join([f"*{p}"] * 9 if p else ["lol"] * 9) + "]\n"
                            for p, c in levels))
    with pytest.raises(PipelineError, match=r"p\.yaml: its aliases expand to more than 100,000 values \(an alias "
                                            r"bomb\?\); a pipeline needs a few hundred$"):
        load_pipeline(path, DataConfig())
    with pytest.raises(RecipeError, match=r"a --set value needs a few hundred$"):
        load_recipe("recipes/demo.yaml", [f"name=[{nested}]"])


def test_the_alias_count_can_fail_and_pass():
    import yaml

    from tsn_dali.config import MAX_YAML_NODES, expanded_size

    assert expanded_size(yaml.compose("a: [1, 2]\nb: 3\n")) == 1 + (1 + 3) + (1 + 1)
    bomb = yaml.compose(BOMB)
    assert expanded_size(bomb) > MAX_YAML_NODES
    assert expanded_size(yaml.compose("a: &x [1, 2]\nb: *x\nc: *x\n")) == 1 + 3 * (1 + 3)


def test_a_key_given_twice_is_refused(tmp_path):
    from tsn_dali.config import RecipeError, load_recipe

    path = tmp_path / "r.yaml"
    path.write_text("base: " + str(Path(__file__).resolve().parents[1] / "recipes" / "demo.yaml")
                    + "\nloader:\n  batch_size: 2\ntrain:\n  lr: 0.1\nloader:\n  prefetch: 1\n")
    with pytest.raises(RecipeError, match=r"r.yaml:6: loader: given twice \(first at line 2\)"):
        load_recipe(path)


def test_a_recipe_mean_std_scaled_to_0_1_is_refused(tmp_path):
    from tsn_dali.config import RecipeError, load_recipe

    with pytest.raises(RecipeError, match=r"data.mean: \[0.485, 0.456, 0.406\] and std .* look scaled to 0-1"):
        load_recipe("recipes/demo.yaml", ["data.mean=[0.485,0.456,0.406]", "data.std=[0.229,0.224,0.225]"])
    load_recipe("recipes/demo.yaml", ["data.mean=[0,0,0]", "data.std=[1,1,1]"])  # float pixels: as given


@pytest.mark.parametrize("bad_line, says", [
    ("v000.mp4", ":3: expected 2 fields"),  # no label
    ("missing.mp4 1", ":3: expected an existing video file, not found"),
])
def test_a_bad_val_line_under_on_bad_video_error_stops_before_training(tiny, tmp_path, capsys, bad_line, says):
    """The val list is read at start as its loader will read it (before, a bad val line
    under on_bad_video: error was found at the first validation and cost a whole epoch).
    Under the default skip policy the same line is left out."""
    root, recipe = tiny
    lines = (root / "val.txt").read_text().splitlines()
    (root / "val_bad.txt").write_text("\n".join(lines[:2] + [bad_line] + lines[2:]) + "\n")
    work = tmp_path / "w"
    status, err = run([str(recipe), "--work-dir", str(work), "--set", "data.val_list=val_bad.txt",
                       "--set", "data.on_bad_video=error"], capsys)
    assert status == 1 and len(err) == 1 and err[0].startswith(f"error: {root / 'val_bad.txt'}{says}"), err
    assert not list(work.glob("*.pth")) and not list(work.glob("train_*.jsonl"))  # no step was run
    summary = train_mod.run([str(recipe), "--work-dir", str(tmp_path / "skip"), "--device", "cpu",
                             "--no-progress", "--set", "data.val_list=val_bad.txt"])
    assert len(summary["history"]) == 1


@pytest.mark.parametrize("case, says", [
    ("not_a_video_error", "1 bad video(s) (data.on_bad_video is error): "),
    ("none_usable_skip", "no usable videos left after dropping bad ones"),
    ("bad_pipeline", "CenterCrop.crop_sise: unknown parameter (did you mean 'crop_size'?)"),
])
def test_what_val_needs_is_checked_before_the_first_step(tiny, tmp_path, capsys, monkeypatch, case, says):
    """What only indexing or planning val can tell (a listed file that is not a video, no
    usable val video, a val pipeline that does not validate) is one line before any step:
    train builds the val loader at start (before, at the first validation: an epoch lost,
    no checkpoint written)."""
    import shutil

    import tsn_dali.config as config_mod
    import tsn_dali.data.plan.planner as planner_mod

    root, recipe = tiny
    (root / "videos" / "text.mp4").write_text("not a video")
    extra = []
    if case == "not_a_video_error":
        (root / "val_text.txt").write_text((root / "val.txt").read_text() + "text.mp4 1\n")
        extra = ["--set", "data.val_list=val_text.txt", "--set", "data.on_bad_video=error"]
    elif case == "none_usable_skip":
        (root / "val_text.txt").write_text("text.mp4 1\n")
        extra = ["--set", "data.val_list=val_text.txt"]
    else:
        pipelines = tmp_path / "pipelines"
        shutil.copytree(config_mod.PIPELINES_DIR, pipelines)
        (pipelines / "bad_val.yaml").write_text(
            (pipelines / "tsn_val.yaml").read_text().replace("crop_size:", "crop_sise:"))
        monkeypatch.setattr(config_mod, "PIPELINES_DIR", pipelines)
        monkeypatch.setattr(planner_mod, "PIPELINES_DIR", pipelines)
        extra = ["--set", "data.val_pipeline=bad_val"]
    work = tmp_path / "w"
    status, err = run([str(recipe), "--work-dir", str(work), *extra], capsys)
    assert status == 1 and err and err[-1].startswith("error: ") and says in err[-1], err
    assert not any(line.startswith("Traceback") for line in err)
    assert not list(work.glob("*.pth")) and not list(work.glob("train_*.jsonl"))  # no step was run

"""Values read as written: ``off``, ``on``, ``yes`` and ``no`` are strings in recipe files,
pipeline files and ``--set`` (YAML 1.2 booleans: only true/false), every choice field takes
each of its choices both ways, and a boolean field still takes true/false and only those."""
from __future__ import annotations

import textwrap

import pytest

from tsn_dali.data.errors import PipelineError

from tsn_dali.config import CHOICES, RECIPES_DIR, DataConfig, RecipeError, load_recipe, load_yaml
from tsn_dali.data.plan.planner import load_pipeline

WORDS = ("off", "on", "yes", "no", "y", "n", "Off", "NO")


def _recipe(tmp_path, body: str):
    path = tmp_path / "r.yaml"
    path.write_text(f"base: {RECIPES_DIR / 'k400_r50.yaml'}\n" + textwrap.dedent(body))
    return path


def test_yaml_1_1_boolean_words_are_strings():
    data = load_yaml("\n".join(f"k{i}: {w}" for i, w in enumerate(WORDS)) + "\nt: true\nf: False\nx: TRUE\n")
    assert [data[f"k{i}"] for i in range(len(WORDS))] == list(WORDS)
    assert (data["t"], data["f"], data["x"]) == (True, False, True)
    import yaml
    assert yaml.safe_load("a: off") == {"a": False}  # PyYAML's own SafeLoader is left alone


def test_amp_off_in_a_recipe_file(tmp_path):
    assert load_recipe(_recipe(tmp_path, "train:\n  amp: off\n")).train.amp == "off"
    with pytest.raises(RecipeError) as err:
        load_recipe(_recipe(tmp_path, "train:\n  amp: on\n"))
    assert str(err.value) == (f"{tmp_path / 'r.yaml'}:3: train.amp: expected one of auto, bf16, "
                              "fp16, off, got 'on'")


def test_amp_off_and_on_in_set():
    assert load_recipe("recipes/demo.yaml", ["train.amp=off"]).train.amp == "off"
    with pytest.raises(RecipeError, match=r"^--set: train\.amp: expected one of auto, bf16, fp16, off, "
                                          r"got 'on'$"):
        load_recipe("recipes/demo.yaml", ["train.amp=on"])


@pytest.mark.parametrize("key", sorted(CHOICES))
def test_every_choice_field_takes_each_choice_in_a_file_and_in_set(tmp_path, key):
    section, name = key.split(".")
    for value in CHOICES[key]:
        by_set = load_recipe(RECIPES_DIR / "k400_r50.yaml", [f"{key}={value}"])
        by_file = load_recipe(_recipe(tmp_path, f"{section}:\n  {name}: {value}\n"))
        for recipe in (by_set, by_file):
            assert getattr(getattr(recipe, section), name) == value, (key, value)
    # a YAML 1.1 boolean word is reported as the word the user wrote
    with pytest.raises(RecipeError, match=rf"{key}: expected one of .*, got 'no'"):
        load_recipe(RECIPES_DIR / "k400_r50.yaml", [f"{key}=no"])


def test_boolean_fields_take_true_false_only(tmp_path):
    r = load_recipe(_recipe(tmp_path, "train:\n  channels_last: false\n  compile: True\n"))
    assert r.train.channels_last is False and r.train.compile is True
    assert load_recipe("recipes/demo.yaml", ["model.deploy=true"]).model.deploy is True
    with pytest.raises(RecipeError, match=r"r\.yaml:3: train\.channels_last: expected bool, got 'no'"):
        load_recipe(_recipe(tmp_path, "train:\n  channels_last: no\n"))
    with pytest.raises(RecipeError, match=r"--set: train\.compile: expected bool, got 'yes'"):
        load_recipe("recipes/demo.yaml", ["train.compile=yes"])


def test_pipeline_values_read_as_written(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("- SampleFrames: {clip_len: 1, num_clips: 3, test_mode: yes}\n")
    with pytest.raises(PipelineError) as err:
        load_pipeline(path, DataConfig())
    assert str(err.value) == f"{path}:1: SampleFrames.test_mode: expected true or false, got 'yes'"
    path.write_text("- SampleFrames:\n    clip_len: 1\n    out_of_bound_opt: off\n")
    with pytest.raises(PipelineError, match=r"p\.yaml:1: SampleFrames: .*'off'"):
        load_pipeline(path, DataConfig())
    path.write_text("- SampleFrames: {clip_len: 1, num_clips: 3, test_mode: true}\n")
    assert load_pipeline(path, DataConfig())[0].test_mode is True


NUMBERS = {"1e-3": 0.001, "5e-4": 0.0005, "1E+2": 100.0, ".5": 0.5, "1.5e3": 1500.0, "2.": 2.0,
           "0.01": 0.01}


@pytest.mark.parametrize("written, value", sorted(NUMBERS.items()))
def test_floats_as_people_write_them_in_a_file_and_in_set(tmp_path, written, value):
    """YAML 1.2's float rule: an exponent needs no dot (YAML 1.1 read ``1e-3`` as a string)."""
    assert load_yaml(f"lr: {written}") == {"lr": value}
    assert load_recipe(_recipe(tmp_path, f"train:\n  lr: {written}\n")).train.lr == value
    assert load_recipe("recipes/demo.yaml", [f"train.lr={written}"]).train.lr == value


def test_ints_and_lists_as_people_write_them(tmp_path):
    assert load_yaml("a: 1_000\nb: 0x10\nc: -3\nf: -.5\ng: +1E-2\nd: [40, 80]\ne: [ 40 ,80 ]") == {
        "a": 1000, "b": 16, "c": -3, "f": -0.5, "g": 0.01, "d": [40, 80], "e": [40, 80]}
    r = load_recipe(_recipe(tmp_path, "train:\n  epochs: 1_000\n  milestones: [ 40, 80 ]\n"))
    assert (r.train.epochs, r.train.milestones) == (1000, [40, 80])
    r = load_recipe("recipes/demo.yaml", ["train.milestones=[40, 80]", "train.epochs=1_000"])
    assert (r.train.epochs, r.train.milestones) == (1000, [40, 80])
    # YAML 1.1's sexagesimal and leading-zero octal ints are not numbers in YAML 1.2: said as written
    assert load_yaml("a: 1:30\nb: 017") == {"a": "1:30", "b": "017"}
    with pytest.raises(RecipeError, match=r"--set: train\.epochs: expected int, got '1:30'$"):
        load_recipe("recipes/demo.yaml", ["train.epochs=1:30"])
    with pytest.raises(RecipeError, match=r"--set: train\.lr: expected float, got '1e-3x'$"):
        load_recipe("recipes/demo.yaml", ["train.lr=1e-3x"])


def test_a_list_the_shell_split_at_a_space_is_named():
    import subprocess
    import sys
    proc = subprocess.run([sys.executable, "-m", "tsn_dali.config", "recipes/demo.yaml", "--set",
                           "train.milestones=[40,", "80]"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [
        "python -m tsn_dali.config: error: unrecognized arguments: 80]; the shell split --set "
        "'train.milestones=[40,' at a space: quote the whole value, e.g. --set \"train.milestones=[40, 80]\" "
        "(see python -m tsn_dali.config --help)"]


def test_pipeline_floats_as_people_write_them(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("- SampleFrames: {clip_len: 1, num_clips: 3}\n- Resize: {scale: [-1, 256]}\n"
                    "- RandomResizedCrop: {area_range: [8e-2, 1], aspect_ratio_range: [.75, 1.3333333333333333]}\n"
                    "- Flip: {flip_ratio: 5E-1}\n")
    steps = load_pipeline(path, DataConfig())
    crop, flip = steps[2], steps[3]
    assert tuple(crop.area_range) == (0.08, 1.0) and tuple(crop.aspect_ratio_range)[0] == 0.75
    assert flip.flip_ratio == 0.5

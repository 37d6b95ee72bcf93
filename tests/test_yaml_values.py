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

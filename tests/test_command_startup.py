"""Commands answer at once: ``--help``, a bad command line and a recipe error are answered
before torch, DALI, timm, matplotlib or the model zoo is imported, for every
``python -m tsn_dali.<command>`` and every script in benchmarks/. Checked by what each
imported (``sys.modules`` in a subprocess), not by timing it (benchmarks/ab.py measures the
time: docs/measurements.md, "Command start-up")."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import List

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "torchvision", "nvidia.dali", "timm", "matplotlib", "tsn_dali.models")

# Runs one command in this process as ``python -m``/``python SCRIPT`` would, then says on its last
# stderr line which heavy modules it imported and the status it ended with.
PROBE = textwrap.dedent("""
    import json, runpy, sys
    heavy, target, args = sys.argv[1].split(","), sys.argv[2], sys.argv[3:]
    sys.argv = [target] + args
    try:
        if target.endswith(".py"):
            runpy.run_path(target, run_name="__main__")
        else:
            runpy.run_module(target, run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) or exc.code is None else 1
    sys.stdout.flush()
    print(json.dumps({"code": code or 0, "imported": [m for m in heavy if m in sys.modules]}), file=sys.stderr)
""")


def commands() -> List[str]:
    """Every ``python -m`` target of the package: modules with a ``__main__`` block, and packages
    with a ``__main__.py`` (the old paths of moved modules are the same modules)."""
    found = []
    for path in sorted((ROOT / "tsn_dali").rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__main__":
            found.append(".".join(parts[:-1]))
        elif parts[-1] != "__init__" and 'if __name__ == "__main__":' in path.read_text():
            found.append(".".join(parts))
    return found


COMMANDS = commands()
SCRIPTS = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "benchmarks").glob("*.py"))


def probe(target: str, *args: str, cwd: Path = ROOT) -> dict:
    """The status of ``target args`` and the heavy modules it imported, with its output."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    run = subprocess.run([sys.executable, "-c", PROBE, ",".join(HEAVY), target, *args], capture_output=True,
                         text=True, timeout=120, cwd=cwd, env=env)
    lines = run.stderr.strip().splitlines()
    assert lines, f"{target}: no report (status {run.returncode})"
    return dict(json.loads(lines[-1]), out=run.stdout, err="\n".join(lines[:-1]))


def test_every_command_is_found():
    assert {"tsn_dali.train", "tsn_dali.test", "tsn_dali.demo", "tsn_dali.bench", "tsn_dali.prepare",
            "tsn_dali.config", "tsn_dali.flops", "tsn_dali.index"} <= set(COMMANDS)


def test_the_probe_sees_an_early_torch_import(tmp_path):
    """The check can fail: a command that imports torch before reading its arguments is seen."""
    script = tmp_path / "eager.py"
    script.write_text("import argparse\nimport torch\nargparse.ArgumentParser().parse_args()\n")
    report = probe(str(script), "--help")
    assert report["code"] == 0 and report["imported"] == ["torch"]
    script.write_text("import argparse\nargparse.ArgumentParser().parse_args()\nimport torch\n")
    assert probe(str(script), "--help")["imported"] == []


@pytest.mark.parametrize("target", COMMANDS + SCRIPTS)
def test_help_answers_before_torch_is_imported(target):
    report = probe(target, "--help")
    assert report["imported"] == [], f"{target} --help imported {report['imported']}"
    assert report["code"] == 0 and "usage" in (report["out"] + report["err"]).lower(), report["err"]


@pytest.mark.parametrize("target", COMMANDS + SCRIPTS)
def test_a_bad_command_line_answers_before_torch_is_imported(target):
    report = probe(target, "--no-such-option")
    assert report["code"] == 2, report["err"]
    assert report["imported"] == [], f"{target}: a bad command line imported {report['imported']}"


@pytest.fixture(scope="module")
def bad_recipe(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("recipe") / "typo.yaml"
    path.write_text(f"base: {ROOT / 'recipes' / 'demo.yaml'}\ntrain:\n  lrr: 0.1\n")
    return path


RECIPE_ERRORS = {  # command -> its arguments with RECIPE where the recipe goes
    "tsn_dali.train": ["RECIPE"],
    "tsn_dali.test": ["RECIPE", "missing.pth"],
    "tsn_dali.flops": ["RECIPE"],
    "tsn_dali.bench": ["RECIPE"],
    "tsn_dali.config": ["RECIPE"],
    "tsn_dali.index": ["RECIPE"],
    "tsn_dali.inspect": ["RECIPE", "--video", "missing.mp4"],
    "tsn_dali.convert": ["mmaction", "in.pth", "out.pth", "--recipe", "RECIPE"],
    "tsn_dali.demo": ["--set", "train.lrr=0.1"],
}


@pytest.mark.parametrize("target", sorted(RECIPE_ERRORS))
def test_a_recipe_error_answers_before_torch_is_imported(target, bad_recipe, tmp_path):
    args = [str(bad_recipe) if a == "RECIPE" else a for a in RECIPE_ERRORS[target]]
    report = probe(target, *args, cwd=tmp_path)
    assert report["code"] == 1, report["err"]
    assert "train.lrr: unknown key" in report["err"]
    assert report["imported"] == [], f"{target}: a recipe error imported {report['imported']}"

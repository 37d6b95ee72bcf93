"""setup.cfg: lower bounds where the code needs them, no caps that only mirror a build machine."""
from __future__ import annotations

from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version
from setuptools.config.setupcfg import read_configuration

SETUP_CFG = Path(__file__).resolve().parents[1] / "setup.cfg"


@pytest.fixture(scope="module")
def requirements():
    reqs = [Requirement(r) for r in read_configuration(str(SETUP_CFG))["options"]["install_requires"]]
    return {r.name: r for r in reqs}


def test_torch_and_torchvision_have_lower_bounds_only(requirements):
    for name in ("torch", "torchvision"):
        spec = requirements[name].specifier
        assert all(s.operator == ">=" for s in spec) and len(spec) == 1, (name, str(spec))


def test_dali_lower_bound_has_the_video_decoder_the_executor_calls(requirements):
    """fn.decoders.video with frames= (and pad_mode) is DALI 2.0's; earlier releases had it only
    as fn.experimental.decoders.video (frames= since 1.48)."""
    spec = requirements["nvidia-dali-cuda120"].specifier
    lower = [Version(s.version) for s in spec if s.operator == ">="]
    assert lower and lower[0] >= Version("2.0")
    dali = pytest.importorskip("nvidia.dali")
    from nvidia.dali import backend

    assert Version(dali.__version__) in spec  # the installed DALI is one setup.cfg allows
    schema = backend.GetSchema("decoders__Video")
    assert schema.HasArgument("frames") and schema.HasArgument("pad_mode")


# Import names -> the distribution setup.cfg must name for them; OPTIONAL are the peers of the
# benchmark (the ``bench`` extra), each imported inside a guard that says where it is missing.
DISTRIBUTIONS = {"PIL": "pillow", "av": "av", "cv2": "opencv-python-headless", "decord": "decord",
                 "matplotlib": "matplotlib", "numpy": "numpy", "nvidia": "nvidia-dali-cuda120",
                 "pynvml": "nvidia-ml-py", "timm": "timm", "torch": "torch", "torchvision": "torchvision",
                 "tqdm": "tqdm", "yaml": "pyyaml"}
OPTIONAL = {"mmaction", "mmengine", "mmcv", "mmpretrain", "torchcodec"}


def undeclared_imports(sources, declared) -> list:
    """Third-party modules the package imports (at any depth of the code) that no
    install_requires entry provides, as ``module (file)``."""
    import ast
    import sys

    missing = []
    for path, text in sources:
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Import):
                tops = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                tops = [node.module.split(".")[0]]
            else:
                continue
            for top in tops:
                if top in sys.stdlib_module_names or top == "tsn_dali" or top in OPTIONAL:
                    continue
                if DISTRIBUTIONS.get(top) not in declared:
                    missing.append(f"{top} ({path})")
    return sorted(set(missing))


def test_every_module_the_package_imports_is_installed_by_it(requirements):
    """A fresh ``pip install -e .`` gives every module the package imports (a fresh venv once
    lacked cv2, which only the bench extra had brought)."""
    root = SETUP_CFG.parent
    sources = [(str(p.relative_to(root)), p.read_text()) for p in sorted((root / "tsn_dali").rglob("*.py"))]
    assert undeclared_imports(sources, set(requirements)) == []


def test_an_undeclared_import_is_caught():
    declared = {"numpy", "torch"}
    sources = [("a.py", "import numpy\nimport os\n\ndef f():\n    import cv2\n"), ("b.py", "from mmaction import x\n")]
    assert undeclared_imports(sources, declared) == ["cv2 (a.py)"]

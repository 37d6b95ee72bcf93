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
